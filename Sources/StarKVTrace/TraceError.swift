/// Where in a trace something went wrong: file, byte offset, step, layer, field — whatever is
/// known. Every `TraceError` carries one so messages point at the exact place.
public struct TraceLocation: Sendable, Hashable, CustomStringConvertible {
    public var path: String
    public var offset: UInt64?
    public var step: Int?
    public var layer: Int?
    public var field: String?

    public init(path: String, offset: UInt64? = nil, step: Int? = nil, layer: Int? = nil, field: String? = nil) {
        self.path = path
        self.offset = offset
        self.step = step
        self.layer = layer
        self.field = field
    }

    public var description: String {
        var parts = [path]
        if let offset { parts.append("offset \(offset)") }
        if let step { parts.append("step \(step)") }
        if let layer { parts.append("layer \(layer)") }
        if let field { parts.append("field '\(field)'") }
        return parts.joined(separator: ", ")
    }
}

/// Errors reading or writing a trace (FORMAT.md). Messages say what is wrong, where, and what
/// the user can do about it.
public enum TraceError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The file could not be opened, read or written.
    case io(TraceLocation, String)
    /// The file does not start with the StarKV magic.
    case badMagic(TraceLocation)
    /// The file's major version is not one this reader understands.
    case unsupportedVersion(TraceLocation, major: Int, minor: Int)
    /// The file ends inside a record.
    case truncated(TraceLocation, String)
    /// A CRC32C or zstd checksum does not match.
    case checksumMismatch(TraceLocation, String)
    /// A record's structure is wrong (unknown kind, undecodable protobuf, out-of-order records).
    case malformed(TraceLocation, String)
    /// A tensor's shape or dtype does not fit the header's geometry or the step.
    case shapeMismatch(TraceLocation, String)
    /// A declared size is above the reader's limits; refused before allocating.
    case limitExceeded(TraceLocation, String)
    /// A step or header given to the writer is inconsistent.
    case invalidInput(TraceLocation, String)
    /// A requested step or field is not in the trace.
    case notFound(TraceLocation, String)
    /// A floating-point field holds NaN or ±infinity where a policy would read it.
    case nonFiniteValue(TraceLocation, String)

    public var location: TraceLocation {
        switch self {
        case .io(let l, _), .badMagic(let l), .unsupportedVersion(let l, _, _), .truncated(let l, _),
            .checksumMismatch(let l, _), .malformed(let l, _), .shapeMismatch(let l, _),
            .limitExceeded(let l, _), .invalidInput(let l, _), .notFound(let l, _), .nonFiniteValue(let l, _):
            return l
        }
    }

    public var description: String {
        switch self {
        case .io(let l, let m): return "\(l): \(m)"
        case .badMagic(let l): return "\(l): not a StarKV trace (bad magic; expected \"STARKVTR\")"
        case .unsupportedVersion(let l, let major, let minor):
            return "\(l): trace format version \(major).\(minor) is not supported by this reader (format 1.x); upgrade StarKV"
        case .truncated(let l, let m): return "\(l): truncated: \(m) (a recorder killed mid-write? try 'starkv recover')"
        case .checksumMismatch(let l, let m): return "\(l): checksum mismatch: \(m) (the file is corrupted)"
        case .malformed(let l, let m): return "\(l): malformed record: \(m)"
        case .shapeMismatch(let l, let m): return "\(l): shape mismatch: \(m)"
        case .limitExceeded(let l, let m): return "\(l): size limit exceeded: \(m)"
        case .invalidInput(let l, let m): return "\(l): invalid input: \(m)"
        case .notFound(let l, let m): return "\(l): \(m)"
        case .nonFiniteValue(let l, let m): return "\(l): non-finite value: \(m) (policies cannot score it; fix the recorder)"
        }
    }
}
