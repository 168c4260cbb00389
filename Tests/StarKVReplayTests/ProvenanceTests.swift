import Foundation
import Testing
@testable import StarKVReplay

/// The provenance hash of a trace (`PendingFileHash`) is the file's SHA-256 whether it is computed
/// on a background thread or, for one-thread replays, in `wait()`; a missing file fails `wait()`.
@Suite struct ProvenanceTests {
    @Test func bothModesGiveTheFilesSHA256AndAMissingFileFailsTheWait() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("starkv-provenance-\(getpid()).bin").path
        defer { unlink(path) }
        // "abc" repeated past one 4 MiB read block.
        let pattern = Array("abc".utf8)
        let bytes = (0..<((4 << 20) + 3)).map { pattern[$0 % 3] }
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        var h = SHA256()
        h.update(bytes)
        let expected = h.finalize()
        #expect(try PendingFileHash(path: path, background: true).wait() == expected)
        #expect(try PendingFileHash(path: path, background: false).wait() == expected)
        // The empty file: SHA-256 of no bytes.
        let empty = path + ".empty"
        defer { unlink(empty) }
        FileManager.default.createFile(atPath: empty, contents: Data())
        #expect(try PendingFileHash(path: empty, background: false).wait() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        for background in [true, false] {
            #expect(throws: ReplayError.self) { try PendingFileHash(path: path + ".missing", background: background).wait() }
        }
    }
}
