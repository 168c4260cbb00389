import Foundation
import Testing
@testable import StarKVTrace

/// Replays, through the normal build, every input in Fuzz/regressions (inputs a fuzz run crashed
/// or stalled on, kept after the fix) and the seed corpus Fuzz/corpus, with and without CRC
/// repair — the same harness `make fuzz` drives.
@Suite struct FuzzRegressionTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func inputs(_ folder: String) -> [String] {
        let dir = root.appendingPathComponent(folder).path
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.filter { !$0.hasPrefix(".") && $0 != "README.md" }.sorted().map { dir + "/" + $0 }
    }

    @Test func seedCorpusAndRegressionInputsRunWithoutACrash() throws {
        let files = Self.inputs("Fuzz/corpus") + Self.inputs("Fuzz/regressions")
        #expect(Self.inputs("Fuzz/corpus").count >= 3, "seed corpus missing")
        let work = TraceFixtures.temporaryPath("fuzz-regress")
        for f in files {
            let bytes = TraceFixtures.bytes(f)
            TraceFuzzing.exercise(bytes, workPath: work, repairChecksums: false)
            TraceFuzzing.exercise(bytes, workPath: work, repairChecksums: true)
        }
    }

    @Test func checksumRepairMakesAMutatedHeadReachTheProtobufChecks() throws {
        let bytes = TraceFixtures.bytes(try TraceFixtures.write(steps: 1, to: TraceFixtures.temporaryPath("repair")))
        var b = bytes
        b[16 + 24 + 3] ^= 0x40  // inside the HEAD payload
        let path = TraceFixtures.temporaryPath("repair-mut")
        TraceFixtures.store(b, path)
        do { _ = try TraceReader(path: path); Issue.record("mutation not noticed") } catch let e as TraceError {
            guard case .checksumMismatch = e else { Issue.record("\(e)"); return }
        }
        TraceFixtures.store(TraceFuzzing.repairChecksums(b), path)
        do { _ = try TraceReader(path: path) } catch let e as TraceError {
            if case .checksumMismatch = e { Issue.record("repair left a CRC error: \(e)") }
        }
        // Repairing an intact file changes nothing.
        #expect(TraceFuzzing.repairChecksums(bytes) == bytes)
    }
}
