import Foundation
@testable import StarKVTrace

/// Takes a trace apart into its records and puts it back together with chosen changes, so that
/// tests can craft damaged and hostile files whose checksums are otherwise right.
struct TraceSurgery {
    struct Record {
        var kind: [UInt8]
        var flags: UInt32
        var payload: [UInt8]
        /// When set, the frame declares this length instead of `payload.count`.
        var declaredLength: UInt64? = nil
        var kindName: String { String(decoding: kind, as: UTF8.self) }
    }

    var fileHeader: [UInt8]
    var records: [Record]

    /// Splits a complete trace: file header, then every record up to (not including) the trailer.
    init(_ bytes: [UInt8]) {
        fileHeader = Array(bytes[0..<16])
        records = []
        var pos = 16
        let end = bytes.count - TraceFormat.trailerBytes
        while pos + 24 <= end {
            let length = Int(bytes.readLE(UInt64.self, at: pos + 8))
            records.append(
                Record(kind: Array(bytes[pos..<(pos + 4)]), flags: bytes.readLE(UInt32.self, at: pos + 4),
                       payload: Array(bytes[(pos + 24)..<(pos + 24 + length)])))
            pos += 24 + length
        }
    }

    static func frame(_ r: Record) -> [UInt8] {
        var out = r.kind
        out.appendLE(r.flags)
        out.appendLE(r.declaredLength ?? UInt64(r.payload.count))
        out.appendLE(CRC32C.checksum(r.payload))
        out.appendLE(CRC32C.checksum(out))
        return out
    }

    /// The records without a footer (as a killed recorder leaves them).
    func footerless() -> [UInt8] {
        var out = fileHeader
        for r in records where r.kindName != "FOOT" {
            out += Self.frame(r)
            out += r.payload
        }
        return out
    }

    /// The records with a footer rebuilt from the steps' real offsets (or `footer` when given),
    /// and a valid trailer.
    func complete(footer: [UInt8]? = nil) -> [UInt8] {
        var out = fileHeader
        var entries: [StepIndexEntry] = []
        var stepStart = 0
        var current: StepMeta? = nil
        func closeStep(at end: Int) {
            if let m = current {
                entries.append(StepIndexEntry(
                    offset: UInt64(stepStart), stepIndex: m.record.stepIndex, episodeID: m.record.episodeID,
                    promptLength: m.record.promptLength, length: UInt64(end - stepStart)))
            }
            current = nil
        }
        for r in records where r.kindName != "FOOT" {
            if r.kindName == "STEP" {
                closeStep(at: out.count)
                stepStart = out.count
                current = try? ProtoBridge.unpackStep(r.payload, at: TraceLocation(path: "surgery"))
            }
            out += Self.frame(r)
            out += r.payload
        }
        closeStep(at: out.count)
        let footerOffset = UInt64(out.count)
        let payload = footer ?? ProtoBridge.packFooter(entries, totalRaw: 0, totalStored: 0, recovered: false)
        out += Self.frame(Record(kind: Array("FOOT".utf8), flags: 0, payload: payload))
        out += payload
        var trailer: [UInt8] = []
        trailer.appendLE(footerOffset)
        trailer.appendLE(UInt32(0))
        trailer.appendLE(CRC32C.checksum(trailer))
        trailer += TraceFormat.trailerMagic
        return out + trailer
    }

    /// Index of the `n`-th record of `kind`.
    func index(of kind: String, _ n: Int = 0) -> Int {
        records.indices.filter { records[$0].kindName == kind }[n]
    }

    /// Decodes the STEP record at `i`, lets `change` edit its descriptors, and re-encodes it.
    mutating func editStep(_ i: Int, _ change: (inout StepRecord, inout [ChunkDescriptor]) -> Void) throws {
        var meta = try ProtoBridge.unpackStep(records[i].payload, at: TraceLocation(path: "surgery"))
        change(&meta.record, &meta.descriptors)
        records[i].payload = ProtoBridge.packStep(meta.record, descriptors: meta.descriptors)
    }

    /// Varint encoding (protobuf wire format).
    static func varint(_ v: UInt64) -> [UInt8] {
        var v = v
        var out: [UInt8] = []
        while v >= 0x80 {
            out.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
        return out
    }

    /// `count` copies of an empty length-delimited field `number` (2 bytes each for small numbers).
    static func emptyRepeated(field number: UInt64, count: Int) -> [UInt8] {
        var out = varint(number << 3 | 2) + [0]
        let total = out.count * count
        // Doubling copies (memcpy) keep this fast in debug builds too.
        while out.count < total { out += out.prefix(total - out.count) }
        return out
    }
}
