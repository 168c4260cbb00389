#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Constants and fixed-size structures of FORMAT.md: file header, record frame, trailer.
public enum TraceFormat {
    /// "STARKVTR"
    public static let magic: [UInt8] = Array("STARKVTR".utf8)
    /// "STKV_END"
    public static let trailerMagic: [UInt8] = Array("STKV_END".utf8)
    public static let majorVersion: UInt16 = 1
    public static let minorVersion: UInt16 = 0
    public static let fileHeaderBytes = 16
    public static let frameHeaderBytes = 24
    public static let trailerBytes = 24
    /// Frame flag: readers that do not know the record kind skip it.
    public static let skippableFlag: UInt32 = 1
}

/// The four record kinds of format 1.0.
enum RecordKind: String {
    case head = "HEAD", step = "STEP", chunk = "CHNK", foot = "FOOT"

    var bytes: [UInt8] { Array(rawValue.utf8) }
}

/// Overflow-safe arithmetic on sizes and offsets read from a file: nil instead of a trap.
enum Checked {
    static func add(_ a: UInt64, _ b: UInt64) -> UInt64? {
        let (r, o) = a.addingReportingOverflow(b)
        return o ? nil : r
    }

    static func add(_ a: UInt64, _ b: UInt64, _ c: UInt64) -> UInt64? {
        add(a, b).flatMap { add($0, c) }
    }

    /// Sum of `values`, or nil on overflow.
    static func sum<S: Sequence>(_ values: S) -> UInt64? where S.Element == UInt64 {
        var total: UInt64 = 0
        for v in values {
            guard let t = add(total, v) else { return nil }
            total = t
        }
        return total
    }
}

/// A decoded 24-byte record frame header.
struct FrameHeader {
    var kind: [UInt8]
    var flags: UInt32
    var length: UInt64
    var payloadCRC: UInt32

    var kindName: String { String(decoding: kind, as: UTF8.self) }
    var recordKind: RecordKind? { RecordKind(rawValue: kindName) }

    static func encode(kind: RecordKind, flags: UInt32 = 0, payload: UnsafeRawBufferPointer) -> [UInt8] {
        encode(kind: kind, flags: flags, length: UInt64(payload.count), payloadCRC: CRC32C.checksum(payload))
    }

    static func encode(kind: RecordKind, flags: UInt32 = 0, length: UInt64, payloadCRC: UInt32) -> [UInt8] {
        var out = kind.bytes
        out.appendLE(flags)
        out.appendLE(length)
        out.appendLE(payloadCRC)
        out.appendLE(CRC32C.checksum(out))
        return out
    }

    /// Decodes 24 bytes; nil when the frame's own CRC does not match.
    static func decode(_ b: [UInt8]) -> FrameHeader? {
        guard b.count == TraceFormat.frameHeaderBytes else { return nil }
        let own = CRC32C.checksum(Array(b[0..<20]))
        guard own == b.readLE(UInt32.self, at: 20) else { return nil }
        return FrameHeader(
            kind: Array(b[0..<4]), flags: b.readLE(UInt32.self, at: 4), length: b.readLE(UInt64.self, at: 8),
            payloadCRC: b.readLE(UInt32.self, at: 16))
    }
}

extension Array where Element == UInt8 {
    mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        var le = v.littleEndian
        Swift.withUnsafeBytes(of: &le) { append(contentsOf: $0) }
    }

    func readLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
    }
}

/// A POSIX file descriptor with positioned reads and buffered appends.
final class TraceFile {
    let path: String
    private var fd: Int32
    private(set) var size: UInt64

    private init(path: String, fd: Int32, size: UInt64) {
        self.path = path
        self.fd = fd
        self.size = size
    }

    static func openForReading(_ path: String) throws -> TraceFile {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw TraceError.io(TraceLocation(path: path), "cannot open for reading: \(errnoText())") }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            posixClose(fd)
            throw TraceError.io(TraceLocation(path: path), "cannot stat: \(errnoText())")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            posixClose(fd)
            throw TraceError.io(TraceLocation(path: path), "not a regular file")
        }
        return TraceFile(path: path, fd: fd, size: UInt64(st.st_size))
    }

    /// Creates a new file; fails when `path` exists (outputs always go to a fresh temporary name).
    static func create(_ path: String) throws -> TraceFile {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw TraceError.io(TraceLocation(path: path), "cannot create: \(errnoText())") }
        return TraceFile(path: path, fd: fd, size: 0)
    }

    static func openForAppending(_ path: String) throws -> TraceFile {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw TraceError.io(TraceLocation(path: path), "cannot open for writing: \(errnoText())") }
        let end = lseek(fd, 0, SEEK_END)
        return TraceFile(path: path, fd: fd, size: UInt64(max(0, end)))
    }

    /// Whether `count` bytes starting at `offset` lie inside the file (overflow-safe).
    func contains(offset: UInt64, count: UInt64) -> Bool {
        offset <= size && count <= size - offset
    }

    /// Reads exactly `count` bytes at `offset`. The range is checked against the file size with
    /// overflow-safe arithmetic before anything is allocated.
    func read(_ count: Int, at offset: UInt64) throws -> [UInt8] {
        guard count >= 0, contains(offset: offset, count: UInt64(count)) else {
            throw TraceError.truncated(TraceLocation(path: path, offset: offset), "needs \(count) bytes, file has \(size - min(size, offset)) left")
        }
        if count == 0 { return [] }
        // No zero-fill: pread fills every byte, or the read throws and the array is dropped.
        return try [UInt8](unsafeUninitializedCapacity: count) { buf, initialized in
            var done = 0
            while done < count {
                let n = pread(fd, buf.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw TraceError.io(TraceLocation(path: path, offset: offset), "read failed: \(errnoText())")
                }
                if n == 0 { throw TraceError.truncated(TraceLocation(path: path, offset: offset), "unexpected end of file") }
                done += n
            }
            initialized = count
        }
    }

    /// Reads `count` bytes at `offset` into `buffer` (which holds at least `count` bytes); the
    /// caller has checked the range with `contains`.
    func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: UInt64) throws {
        var done = 0
        while done < count {
            let n = pread(fd, buffer + done, count - done, off_t(offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw TraceError.io(TraceLocation(path: path, offset: offset), "read failed: \(errnoText())")
            }
            if n == 0 { throw TraceError.truncated(TraceLocation(path: path, offset: offset), "unexpected end of file") }
            done += n
        }
    }

    func write(_ bytes: [UInt8]) throws {
        var done = 0
        try bytes.withUnsafeBytes { buf in
            while done < bytes.count {
                let n = posixWrite(fd, buf.baseAddress! + done, bytes.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw TraceError.io(TraceLocation(path: path, offset: size), "write failed: \(errnoText())")
                }
                done += n
            }
        }
        size += UInt64(bytes.count)
    }

    func truncate(to length: UInt64) throws {
        guard ftruncate(fd, off_t(length)) == 0 else {
            throw TraceError.io(TraceLocation(path: path), "truncate failed: \(errnoText())")
        }
        _ = lseek(fd, off_t(length), SEEK_SET)
        size = length
    }

    func sync() throws {
        guard fsync(fd) == 0 else { throw TraceError.io(TraceLocation(path: path), "fsync failed: \(errnoText())") }
    }

    func close() {
        if fd >= 0 { posixClose(fd) }
        fd = -1
    }

    deinit { close() }
}

func errnoText() -> String { String(cString: strerror(errno)) }

private func posixClose(_ fd: Int32) { _ = close(fd) }

private func posixWrite(_ fd: Int32, _ buf: UnsafeRawPointer, _ n: Int) -> Int { write(fd, buf, n) }
