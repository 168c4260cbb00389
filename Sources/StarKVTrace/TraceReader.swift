/// Limits a reader enforces before it allocates anything sized by the file.
public struct TraceReadLimits: Sendable {
    /// Largest HEAD / STEP / FOOT payload.
    public var maxRecordBytes: UInt64
    /// Largest decompressed (raw) chunk.
    public var maxChunkRawBytes: UInt64
    public var maxLayers: Int
    public var maxHeads: Int
    public var maxPromptLength: Int

    public init(
        maxRecordBytes: UInt64 = 64 << 20, maxChunkRawBytes: UInt64 = 4 << 30, maxLayers: Int = 1024, maxHeads: Int = 1024,
        maxPromptLength: Int = 4 << 20
    ) {
        self.maxRecordBytes = maxRecordBytes
        self.maxChunkRawBytes = maxChunkRawBytes
        self.maxLayers = maxLayers
        self.maxHeads = maxHeads
        self.maxPromptLength = maxPromptLength
    }

    public static let `default` = TraceReadLimits()
}

/// How the reader found the step index.
public enum FooterStatus: Sendable, Hashable {
    /// The trailer and footer are intact.
    case present
    /// No valid trailer/footer: the steps were found by scanning. `note` says why and what, if
    /// anything, was left at the end of the file.
    case missing(note: String)
}

/// A step's size and layout, read from its STEP record without decompressing anything.
public struct StepSummary: Sendable, Hashable {
    public var stepIndex: Int
    public var episodeID: String
    public var reset: Bool
    public var promptLength: Int
    public var generatedTokens: Int
    public var images: Int
    public var visualTokens: Int
    public var chunks: Int
    public var fields: [String]
    public var rawBytes: UInt64
    public var storedBytes: UInt64
}

/// What `TraceReader.validate()` checked.
public struct TraceValidationReport: Sendable, Hashable {
    public var steps: Int
    public var chunks: Int
    public var rawBytes: UInt64
    public var storedBytes: UInt64
    public var footer: FooterStatus
}

/// Reads a trace (FORMAT.md): sequentially or by step index through the footer, and — when the
/// footer is missing because a recorder was killed — by scanning for every complete step.
/// Every size is checked against the file and `TraceReadLimits` before anything is allocated.
public final class TraceReader {
    public let path: String
    public let header: TraceHeader
    public let minorVersion: Int
    public let footer: FooterStatus
    /// One entry per readable step, in order.
    public let index: [StepIndexEntry]
    public let limits: TraceReadLimits
    /// Byte offset just past the last complete step (where a footer belongs).
    public let endOfSteps: UInt64
    private let file: TraceFile

    public var stepCount: Int { index.count }

    public init(path: String, limits: TraceReadLimits = .default) throws {
        self.path = path
        self.limits = limits
        let file = try TraceFile.openForReading(path)
        self.file = file
        let loc = TraceLocation(path: path, offset: 0)
        guard file.size >= UInt64(TraceFormat.fileHeaderBytes) else {
            if file.size >= 8, try file.read(8, at: 0) != TraceFormat.magic { throw TraceError.badMagic(loc) }
            throw TraceError.truncated(loc, "file is \(file.size) bytes, shorter than the 16-byte file header")
        }
        let fh = try file.read(TraceFormat.fileHeaderBytes, at: 0)
        guard Array(fh[0..<8]) == TraceFormat.magic else { throw TraceError.badMagic(loc) }
        let major = fh.readLE(UInt16.self, at: 8)
        let minor = fh.readLE(UInt16.self, at: 10)
        guard major == TraceFormat.majorVersion else {
            throw TraceError.unsupportedVersion(loc, major: Int(major), minor: Int(minor))
        }
        self.minorVersion = Int(minor)

        // HEAD record.
        let headOffset = UInt64(TraceFormat.fileHeaderBytes)
        let (headFrame, headPayload) = try TraceReader.readRecord(file, at: headOffset, limit: limits.maxRecordBytes)
        guard headFrame.recordKind == .head else {
            throw TraceError.malformed(
                TraceLocation(path: path, offset: headOffset), "first record is '\(headFrame.kindName)', expected HEAD")
        }
        guard let header = ProtoBridge.unpackHeader(headPayload) else {
            throw TraceError.malformed(TraceLocation(path: path, offset: headOffset), "HEAD payload is not a valid TraceHeader")
        }
        try TraceReader.checkHeader(header, limits: limits, location: TraceLocation(path: path, offset: headOffset))
        self.header = header
        let firstStep = headOffset + UInt64(TraceFormat.frameHeaderBytes) + headFrame.length

        // Footer through the trailer, else scan.
        let trailerResult = TraceReader.readFooter(file, firstStep: firstStep, limits: limits)
        switch trailerResult {
        case .success(let (entries, footerOffset)):
            self.index = entries
            self.footer = .present
            self.endOfSteps = footerOffset
        case .failure(let why):
            let scan = try TraceReader.scan(file, from: firstStep, limits: limits)
            self.index = scan.entries
            self.endOfSteps = scan.end
            var note = why.message
            if let tail = scan.tailNote { note += "; \(tail)" }
            self.footer = .missing(note: note)
        }
    }

    // MARK: reading steps

    /// Reads step `i` (0-based position in the index). `fields` limits which chunks are
    /// decompressed (nil = all); skipped chunks are not checksummed.
    public func readStep(at i: Int, fields: Set<String>? = nil) throws -> StepRecord {
        guard i >= 0, i < index.count else {
            throw TraceError.notFound(TraceLocation(path: path), "step \(i) is not in the trace (it has \(index.count) steps)")
        }
        let entry = index[i]
        var (meta, pos) = try readStepMeta(at: entry.offset)
        var record = meta.record
        for d in meta.descriptors {
            let loc = TraceLocation(path: path, offset: pos, step: record.stepIndex, layer: d.layer, field: d.field)
            let frame = try readChunkFrame(at: pos, descriptor: d, location: loc)
            let payloadOffset = pos + UInt64(TraceFormat.frameHeaderBytes)
            pos = payloadOffset + frame.length
            if let fields, !fields.contains(d.field) { continue }
            try checkDescriptor(d, step: record, location: loc)
            let stored = try file.read(Int(frame.length), at: payloadOffset)
            guard CRC32C.checksum(stored) == d.crc32c else {
                throw TraceError.checksumMismatch(loc, "CRC32C of the chunk's stored bytes differs from its descriptor")
            }
            let raw: [UInt8]
            do {
                raw = try ChunkCoder.decode(
                    stored, rawBytes: Int(d.rawBytes), elementWidth: d.dtype.byteWidth, filter: d.filter, codec: d.codec)
            } catch ChunkCoder.ZstdError.message(let m) {
                throw TraceError.checksumMismatch(loc, "decompression failed: \(m)")
            }
            record.chunks.append(TensorChunk(field: d.field, layer: d.layer, tensor: Tensor(dtype: d.dtype, shape: d.shape, bytes: raw)))
        }
        _ = meta
        meta.descriptors = []
        return record
    }

    /// Calls `body` with every step in order.
    public func forEachStep(fields: Set<String>? = nil, _ body: (StepRecord) throws -> Void) throws {
        for i in 0..<index.count { try body(try readStep(at: i, fields: fields)) }
    }

    /// Per-step sizes and layout, without decompressing chunks.
    public func summaries() throws -> [StepSummary] {
        try index.map { entry in
            let (meta, _) = try readStepMeta(at: entry.offset)
            let r = meta.record
            var fields: [String] = []
            for d in meta.descriptors where !fields.contains(d.field) { fields.append(d.field) }
            return StepSummary(
                stepIndex: r.stepIndex, episodeID: r.episodeID, reset: r.reset, promptLength: r.promptLength,
                generatedTokens: r.generatedTokens, images: r.images.count, visualTokens: r.visualTokenCount,
                chunks: meta.descriptors.count, fields: fields, rawBytes: meta.descriptors.reduce(0) { $0 + $1.rawBytes },
                storedBytes: meta.descriptors.reduce(0) { $0 + $1.storedBytes })
        }
    }

    /// Verifies every checksum (frames, chunks, zstd frames) and every shape; throws the first
    /// problem found.
    public func validate() throws -> TraceValidationReport {
        var chunks = 0
        var raw: UInt64 = 0
        var stored: UInt64 = 0
        for i in 0..<index.count {
            let step = try readStep(at: i)
            chunks += step.chunks.count
            raw += step.chunks.reduce(0) { $0 + UInt64($1.tensor.bytes.count) }
            stored += index[i].length
        }
        return TraceValidationReport(steps: index.count, chunks: chunks, rawBytes: raw, storedBytes: stored, footer: footer)
    }

    // MARK: internals

    private func readStepMeta(at offset: UInt64) throws -> (StepMeta, UInt64) {
        let (frame, payload) = try TraceReader.readRecord(file, at: offset, limit: limits.maxRecordBytes)
        let loc = TraceLocation(path: path, offset: offset)
        guard frame.recordKind == .step else {
            throw TraceError.malformed(loc, "expected a STEP record, found '\(frame.kindName)'")
        }
        let meta = try ProtoBridge.unpackStep(payload, at: loc)
        var sloc = loc
        sloc.step = meta.record.stepIndex
        try TraceReader.checkStep(meta.record, header: header, limits: limits, location: sloc)
        return (meta, offset + UInt64(TraceFormat.frameHeaderBytes) + frame.length)
    }

    private func readChunkFrame(at pos: UInt64, descriptor d: ChunkDescriptor, location loc: TraceLocation) throws -> FrameHeader {
        let bytes = try file.read(TraceFormat.frameHeaderBytes, at: pos)
        guard let frame = FrameHeader.decode(bytes) else {
            throw TraceError.checksumMismatch(loc, "chunk frame header CRC does not match")
        }
        guard frame.recordKind == .chunk else {
            throw TraceError.malformed(loc, "expected a CHNK record, found '\(frame.kindName)'")
        }
        guard frame.length == d.storedBytes, frame.payloadCRC == d.crc32c else {
            throw TraceError.malformed(loc, "chunk frame disagrees with its descriptor (length or CRC)")
        }
        guard pos + UInt64(TraceFormat.frameHeaderBytes) + frame.length <= file.size else {
            throw TraceError.truncated(loc, "chunk of \(frame.length) bytes runs past the end of the file")
        }
        return frame
    }

    private func checkDescriptor(_ d: ChunkDescriptor, step: StepRecord, location loc: TraceLocation) throws {
        guard let bytes = FieldRules.byteCount(shape: d.shape, dtype: d.dtype), bytes == d.rawBytes else {
            throw TraceError.shapeMismatch(loc, "raw_bytes \(d.rawBytes) does not equal shape \(d.shape) × \(d.dtype)")
        }
        guard d.rawBytes <= limits.maxChunkRawBytes else {
            throw TraceError.limitExceeded(loc, "chunk of \(d.rawBytes) raw bytes (limit \(limits.maxChunkRawBytes))")
        }
        if let reason = FieldRules.check(field: d.field, layer: d.layer, dtype: d.dtype, shape: d.shape, header: header, step: step) {
            throw TraceError.shapeMismatch(loc, reason)
        }
    }

    static func readRecord(_ file: TraceFile, at offset: UInt64, limit: UInt64) throws -> (FrameHeader, [UInt8]) {
        let loc = TraceLocation(path: file.path, offset: offset)
        guard offset + UInt64(TraceFormat.frameHeaderBytes) <= file.size else {
            throw TraceError.truncated(loc, "record frame header cut off")
        }
        guard let frame = FrameHeader.decode(try file.read(TraceFormat.frameHeaderBytes, at: offset)) else {
            throw TraceError.checksumMismatch(loc, "record frame header CRC does not match")
        }
        guard frame.length <= limit else {
            throw TraceError.limitExceeded(loc, "\(frame.kindName) record of \(frame.length) bytes (limit \(limit))")
        }
        let payloadOffset = offset + UInt64(TraceFormat.frameHeaderBytes)
        guard payloadOffset + frame.length <= file.size else {
            throw TraceError.truncated(loc, "\(frame.kindName) record of \(frame.length) bytes runs past the end of the file")
        }
        let payload = try file.read(Int(frame.length), at: payloadOffset)
        guard CRC32C.checksum(payload) == frame.payloadCRC else {
            throw TraceError.checksumMismatch(loc, "\(frame.kindName) payload CRC32C does not match")
        }
        return (frame, payload)
    }

    static func checkHeader(_ h: TraceHeader, limits: TraceReadLimits, location loc: TraceLocation) throws {
        let m = h.model
        guard (1...limits.maxLayers).contains(m.numLayers), (1...limits.maxHeads).contains(m.numQueryHeads),
            (1...limits.maxHeads).contains(m.numKVHeads), m.numQueryHeads % m.numKVHeads == 0
        else {
            throw TraceError.limitExceeded(
                loc, "header geometry \(m.numLayers) layers × \(m.numQueryHeads) heads / \(m.numKVHeads) KV heads is out of range")
        }
        guard h.windowSizes.count <= 64, h.winRowsMax <= 4096 else {
            throw TraceError.limitExceeded(loc, "header declares \(h.windowSizes.count) windows / \(h.winRowsMax) window rows")
        }
    }

    static func checkStep(_ s: StepRecord, header: TraceHeader, limits: TraceReadLimits, location loc: TraceLocation) throws {
        guard s.promptLength >= 1, s.promptLength <= limits.maxPromptLength else {
            throw TraceError.limitExceeded(loc, "prompt length \(s.promptLength) (limit \(limits.maxPromptLength))")
        }
        guard s.tokenTypes.count == s.promptLength else {
            throw TraceError.malformed(loc, "\(s.tokenTypes.count) token types for prompt length \(s.promptLength)")
        }
        var previousEnd = 0
        for (i, img) in s.images.enumerated() {
            guard img.spanStart >= previousEnd, img.spanStart <= img.spanEnd, img.spanEnd <= s.promptLength else {
                throw TraceError.malformed(loc, "image \(i) span [\(img.spanStart), \(img.spanEnd)) is not ordered inside the prompt")
            }
            previousEnd = img.spanEnd
        }
    }

    struct FooterFailure: Error { var message: String }

    static func readFooter(_ file: TraceFile, firstStep: UInt64, limits: TraceReadLimits)
        -> Result<([StepIndexEntry], UInt64), FooterFailure>
    {
        let trailerBytes = UInt64(TraceFormat.trailerBytes)
        guard file.size >= firstStep + trailerBytes + UInt64(TraceFormat.frameHeaderBytes) else {
            return .failure(FooterFailure(message: "no footer (file ends before a trailer)"))
        }
        guard let t = try? file.read(TraceFormat.trailerBytes, at: file.size - trailerBytes),
            Array(t[16..<24]) == TraceFormat.trailerMagic
        else { return .failure(FooterFailure(message: "no footer (trailer magic missing)")) }
        guard CRC32C.checksum(Array(t[0..<12])) == t.readLE(UInt32.self, at: 12) else {
            return .failure(FooterFailure(message: "trailer CRC does not match"))
        }
        let footerOffset = t.readLE(UInt64.self, at: 0)
        guard footerOffset >= firstStep, footerOffset < file.size - trailerBytes,
            let (frame, payload) = try? readRecord(file, at: footerOffset, limit: limits.maxRecordBytes),
            frame.recordKind == .foot, footerOffset + UInt64(TraceFormat.frameHeaderBytes) + frame.length == file.size - trailerBytes,
            let footer = ProtoBridge.unpackFooter(payload)
        else { return .failure(FooterFailure(message: "footer record unreadable")) }
        var expected = firstStep
        for e in footer.entries {
            guard e.offset == expected, e.length > 0, e.offset + e.length <= footerOffset else {
                return .failure(FooterFailure(message: "footer index inconsistent with the file"))
            }
            expected = e.offset + e.length
        }
        guard expected == footerOffset else {
            return .failure(FooterFailure(message: "footer index does not cover the file"))
        }
        return .success((footer.entries, footerOffset))
    }

    struct ScanResult {
        var entries: [StepIndexEntry]
        var end: UInt64
        var tailNote: String?
    }

    /// Walks the records after HEAD and keeps every step whose STEP record and chunk frames are
    /// complete and whose frame headers check out. Payload CRCs of chunks are checked later, on read.
    static func scan(_ file: TraceFile, from start: UInt64, limits: TraceReadLimits) throws -> ScanResult {
        var entries: [StepIndexEntry] = []
        var pos = start
        let frameBytes = UInt64(TraceFormat.frameHeaderBytes)
        func stop(_ note: String) -> ScanResult {
            ScanResult(entries: entries, end: pos, tailNote: note + " (\(file.size - pos) bytes from offset \(pos) ignored)")
        }
        while pos < file.size {
            guard pos + frameBytes <= file.size else { return stop("incomplete record frame at the end") }
            guard let frame = FrameHeader.decode(try file.read(TraceFormat.frameHeaderBytes, at: pos)) else {
                return stop("corrupt record frame at offset \(pos)")
            }
            switch frame.recordKind {
            case .step:
                guard frame.length <= limits.maxRecordBytes, pos + frameBytes + frame.length <= file.size else {
                    return stop("incomplete STEP record")
                }
                let payload = try file.read(Int(frame.length), at: pos + frameBytes)
                guard CRC32C.checksum(payload) == frame.payloadCRC,
                    let meta = try? ProtoBridge.unpackStep(payload, at: TraceLocation(path: file.path, offset: pos))
                else { return stop("corrupt STEP record at offset \(pos)") }
                var cpos = pos + frameBytes + frame.length
                for _ in meta.descriptors {
                    guard cpos + frameBytes <= file.size,
                        let cf = FrameHeader.decode(try file.read(TraceFormat.frameHeaderBytes, at: cpos)),
                        cf.recordKind == .chunk, cpos + frameBytes + cf.length <= file.size
                    else { return stop("step \(meta.record.stepIndex) is incomplete") }
                    cpos += frameBytes + cf.length
                }
                entries.append(
                    StepIndexEntry(
                        offset: pos, stepIndex: meta.record.stepIndex, episodeID: meta.record.episodeID,
                        promptLength: meta.record.promptLength, length: cpos - pos))
                pos = cpos
            case .foot:
                return stop("footer present without a valid trailer")
            case .head, .chunk:
                return stop("unexpected \(frame.kindName) record at offset \(pos)")
            case nil:
                guard frame.flags & TraceFormat.skippableFlag != 0, pos + frameBytes + frame.length <= file.size else {
                    throw TraceError.malformed(
                        TraceLocation(path: file.path, offset: pos),
                        "unknown record kind '\(frame.kindName)' (written by a newer StarKV?)")
                }
                pos += frameBytes + frame.length
            }
        }
        return ScanResult(entries: entries, end: pos, tailNote: nil)
    }
}
