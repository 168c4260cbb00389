import Foundation

/// Where a replay's results came from beyond the flags in `ReplayResults.Settings`: the trace
/// as the run named it and its SHA-256, and, for a sweep unit, the unit ID and the sweep plan's
/// fingerprint (docs/sweeps.md "Provenance"). Optional in `results.json`; older files lack it.
public struct Provenance: Sendable, Codable, Equatable {
    /// The trace path as given on the command line or in the sweep plan.
    public var tracePath: String
    /// SHA-256 (hex) of the trace file's bytes.
    public var traceSHA256: String
    /// The sweep unit these results are (nil outside a sweep).
    public var sweepUnit: String?
    /// The fingerprint of the sweep plan the unit belongs to (nil outside a sweep).
    public var sweepFingerprint: String?

    public init(tracePath: String, traceSHA256: String, sweepUnit: String? = nil, sweepFingerprint: String? = nil) {
        self.tracePath = tracePath
        self.traceSHA256 = traceSHA256
        self.sweepUnit = sweepUnit
        self.sweepFingerprint = sweepFingerprint
    }

    /// SHA-256 of a file, read in 4 MiB blocks into one reused buffer (memory does not grow with
    /// the file, and no fresh pages are touched per block).
    public static func sha256(ofFile path: String) throws -> String {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw ReplayError.io("cannot open \(path) to hash it: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var h = SHA256()
        var buffer = [UInt8](repeating: 0, count: 4 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw ReplayError.io("cannot read \(path) while hashing it: \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            buffer.withUnsafeBytes { h.update(raw: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        }
        return h.finalize()
    }
}

/// A file's SHA-256 computed on a background thread, so hashing a large trace overlaps the replay
/// that reads it (docs/sweeps.md "Provenance"), or — with `background: false`, for a replay
/// asked to use one thread — on the caller's thread in `wait()`. `wait()` returns the digest or
/// the read error.
public final class PendingFileHash: @unchecked Sendable {
    private let lock = NSCondition()
    private var result: Result<String, any Error>?
    private let path: String
    /// Whether a background thread computes the hash (else `wait()` does).
    private let background: Bool

    public init(path: String, background: Bool = true) {
        self.path = path
        self.background = background
        guard background else { return }
        let thread = Thread { [self] in
            let r = Result { try Provenance.sha256(ofFile: path) }
            lock.lock()
            result = r
            lock.broadcast()
            lock.unlock()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    public func wait() throws -> String {
        lock.lock()
        defer { lock.unlock() }
        if !background, result == nil { result = Result { try Provenance.sha256(ofFile: path) } }
        while result == nil { lock.wait() }
        return try result!.get()
    }
}
