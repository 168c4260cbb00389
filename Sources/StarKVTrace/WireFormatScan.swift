/// A cheap pass over protobuf wire format that bounds what protobuf-c would allocate, run on
/// every HEAD, STEP and FOOT payload before it is unpacked (FORMAT.md "Limits").
///
/// protobuf-c allocates one structure per occurrence of a repeated message field, one array slot
/// per repeated scalar element and one record per unknown field, so a 64 MiB payload of two-byte
/// entries would cost gigabytes. This scan walks the tags (recursing into the message fields the
/// schema knows), checks every varint and length against the bytes that remain, and refuses a
/// payload whose repeated fields exceed their caps or whose total tag count exceeds `maxTags`.
struct WireSchema: Sendable {
    enum Field: Sendable {
        /// A (possibly repeated) submessage; `cap` bounds its occurrences when repeated.
        case message(WireSchemaRef, cap: Int?)
        /// A repeated scalar (packed or not) with at most `cap` elements.
        case repeatedScalar(cap: Int, name: String)
        /// A repeated string / bytes field with at most `cap` elements.
        case repeatedBytes(cap: Int, name: String)
    }

    var name: String
    var fields: [UInt64: Field]
}

/// A reference to a schema (so that schemas can nest).
final class WireSchemaRef: Sendable {
    let schema: WireSchema
    init(_ schema: WireSchema) { self.schema = schema }
}

struct WireScanError: Error, Equatable {
    var message: String
}

enum WireFormatScan {
    /// Hard ceiling on tags in one record, whatever the caps say.
    static let defaultMaxTags = 1 << 20

    static let leaf = WireSchemaRef(WireSchema(name: "message", fields: [:]))
    static let mapEntry = WireSchemaRef(WireSchema(name: "metadata entry", fields: [:]))

    static func header() -> WireSchema {
        WireSchema(
            name: "TraceHeader",
            fields: [
                1: .message(leaf, cap: nil), 2: .message(leaf, cap: nil), 6: .message(leaf, cap: nil),
                4: .repeatedBytes(cap: 4096, name: "fields"),
                5: .repeatedScalar(cap: 64, name: "window_sizes"),
                7: .message(mapEntry, cap: 4096),
            ])
    }

    static func step(maxPromptLength: Int, maxChunks: Int) -> WireSchema {
        let descriptor = WireSchemaRef(
            WireSchema(name: "ChunkDescriptor", fields: [4: .repeatedScalar(cap: 8, name: "shape")]))
        return WireSchema(
            name: "StepRecord",
            fields: [
                7: .repeatedScalar(cap: maxPromptLength, name: "token_ids"),
                8: .message(WireSchemaRef(WireSchema(name: "ImageEntry", fields: [:])), cap: 4096),
                9: .message(descriptor, cap: maxChunks),
                10: .message(mapEntry, cap: 4096),
            ])
    }

    static func footer(maxSteps: Int) -> WireSchema {
        WireSchema(name: "TraceFooter", fields: [1: .message(leaf, cap: maxSteps)])
    }

    /// Checks `bytes` against `schema`; throws with a reason naming the field that is over its cap.
    static func check(_ bytes: UnsafeRawBufferPointer, schema: WireSchema, maxTags: Int = defaultMaxTags) throws(WireScanError) {
        var tags = 0
        try walk(bytes, 0, bytes.count, schema: schema, depth: 0, tags: &tags, maxTags: maxTags)
    }

    static func check(_ bytes: [UInt8], schema: WireSchema, maxTags: Int = defaultMaxTags) throws(WireScanError) {
        var result: WireScanError? = nil
        bytes.withUnsafeBytes { raw in
            do throws(WireScanError) { try check(raw, schema: schema, maxTags: maxTags) } catch { result = error }
        }
        if let result { throw result }
    }

    /// Reads a varint at `pos` (at most 10 bytes, inside `end`).
    @inline(__always)
    static func varint(_ b: UnsafeRawBufferPointer, _ pos: inout Int, _ end: Int) throws(WireScanError) -> UInt64 {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard pos < end else { throw WireScanError(message: "varint runs past the end of the message") }
            let byte = b[pos]
            pos += 1
            guard shift < 64 else { throw WireScanError(message: "varint longer than 10 bytes") }
            value |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
    }

    private static func walk(
        _ b: UnsafeRawBufferPointer, _ start: Int, _ end: Int, schema: WireSchema, depth: Int, tags: inout Int, maxTags: Int
    ) throws(WireScanError) {
        guard depth <= 8 else { throw WireScanError(message: "messages nested too deeply") }
        var counts: [UInt64: Int] = [:]
        var pos = start
        func bump(_ number: UInt64, _ n: Int, cap: Int, name: String) throws(WireScanError) {
            let c = (counts[number] ?? 0) + n
            counts[number] = c
            guard c <= cap else {
                throw WireScanError(message: "\(schema.name).\(name) has more than \(cap) entries")
            }
        }
        while pos < end {
            let key = try varint(b, &pos, end)
            tags += 1
            guard tags <= maxTags else {
                throw WireScanError(message: "\(schema.name) has more than \(maxTags) protobuf fields")
            }
            let number = key >> 3
            let wireType = key & 7
            guard number >= 1, number <= 536_870_911 else { throw WireScanError(message: "field number \(number) out of range") }
            let field = schema.fields[number]
            switch wireType {
            case 0:
                _ = try varint(b, &pos, end)
                if case .repeatedScalar(let cap, let name)? = field { try bump(number, 1, cap: cap, name: name) }
            case 1, 5:
                let width = wireType == 1 ? 8 : 4
                guard end - pos >= width else { throw WireScanError(message: "fixed-width field runs past the end") }
                pos += width
                if case .repeatedScalar(let cap, let name)? = field { try bump(number, 1, cap: cap, name: name) }
            case 2:
                let length = try varint(b, &pos, end)
                guard length <= UInt64(end - pos) else {
                    throw WireScanError(message: "length-delimited field of \(length) bytes runs past the end")
                }
                let fieldEnd = pos + Int(length)
                switch field {
                case .message(let sub, let cap)?:
                    if let cap { try bump(number, 1, cap: cap, name: "field \(number)") }
                    try walk(b, pos, fieldEnd, schema: sub.schema, depth: depth + 1, tags: &tags, maxTags: maxTags)
                case .repeatedScalar(let cap, let name)?:
                    // Packed: count elements without decoding them (one varint ends at each byte
                    // whose high bit is clear; protobuf-c counts them the same way).
                    var n = 0
                    for i in pos..<fieldEnd where b[i] & 0x80 == 0 { n += 1 }
                    try bump(number, n, cap: cap, name: name)
                case .repeatedBytes(let cap, let name)?:
                    try bump(number, 1, cap: cap, name: name)
                case nil:
                    break
                }
                pos = fieldEnd
            default:
                throw WireScanError(message: "wire type \(wireType) is not valid in proto3")
            }
        }
    }
}
