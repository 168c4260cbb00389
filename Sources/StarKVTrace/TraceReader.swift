/// Limits a reader enforces before it allocates anything sized by the file (FORMAT.md "Limits").
///
/// With the defaults, reading any file — however large the sizes it claims — stays within about
/// 2 × `maxChunkRawBytes` plus a few MiB for one chunk (validate, inspect, dump) and within
/// `maxStepRawBytes` plus that for a whole step (replay): under 1 GiB. Each decoding thread also
/// reuses buffers for chunks up to `ChunkCoder.smallChunk` (32 MiB): at most about 3 × that. `scaled(chunkMiB:)` raises
/// them together for traces with larger tensors (`--max-chunk-mib` on the CLI).
public struct TraceReadLimits: Sendable, Hashable {
    /// Largest HEAD / STEP / FOOT payload.
    public var maxRecordBytes: UInt64
    /// Largest decompressed (raw) chunk.
    public var maxChunkRawBytes: UInt64
    /// Largest sum of the decompressed chunks that one `readStep` call returns.
    public var maxStepRawBytes: UInt64
    public var maxLayers: Int
    public var maxHeads: Int
    public var maxPromptLength: Int
    /// Most steps a footer may index.
    public var maxSteps: Int

    public init(
        maxRecordBytes: UInt64 = 64 << 20, maxChunkRawBytes: UInt64 = 256 << 20, maxStepRawBytes: UInt64 = 512 << 20,
        maxLayers: Int = 1024, maxHeads: Int = 1024, maxPromptLength: Int = 4 << 20, maxSteps: Int = 1 << 20
    ) {
        self.maxRecordBytes = maxRecordBytes
        self.maxChunkRawBytes = maxChunkRawBytes
        self.maxStepRawBytes = maxStepRawBytes
        self.maxLayers = maxLayers
        self.maxHeads = maxHeads
        self.maxPromptLength = maxPromptLength
        self.maxSteps = maxSteps
    }

    public static let `default` = TraceReadLimits()

    /// The defaults with the chunk limit set to `chunkMiB` MiB and the step limit to twice that
    /// (never below the defaults' step limit).
    public static func scaled(chunkMiB: Int) -> TraceReadLimits {
        var l = TraceReadLimits()
        let chunk = UInt64(max(1, chunkMiB)) << 20
        l.maxChunkRawBytes = chunk
        l.maxStepRawBytes = max(l.maxStepRawBytes, chunk.multipliedReportingOverflow(by: 2).overflow ? UInt64.max : chunk * 2)
        return l
    }
}

/// How the reader found the step index.
public enum FooterStatus: Sendable, Hashable {
    /// The trailer and footer are intact.
    case present
    /// No valid trailer/footer: the steps were found by scanning. `note` says why and what, if
    /// anything, was left at the end of the file.
    case missing(note: String)
}

/// What the reader concluded about the file as a whole (FORMAT.md "Integrity and exit codes").
public enum TraceIntegrity: Sendable, Hashable {
    /// Footer and trailer intact (the steps themselves are verified by `validate()`).
    case intact
    /// No footer; every complete step was found and only a torn tail — bytes that are a prefix
    /// of a record — follows the last one (a recorder killed mid-write, or a trace in progress).
    /// `starkv recover` turns it into a complete trace.
    case incomplete(note: String)
    /// The structure is damaged: a checksum, a record out of place, a footer that does not fit
    /// the file, or a scan that stopped on bytes that are not a torn tail. `offset` is where.
    case corrupt(offset: UInt64, note: String)

    public var isIntact: Bool { self == .intact }
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
    public var integrity: TraceIntegrity
}

/// Reads a trace (FORMAT.md): sequentially or by step index through the footer, and — when the
/// footer is missing because a recorder was killed — by scanning for every complete step.
///
/// Every offset, length and count taken from the file is checked with overflow-safe arithmetic
/// against the bytes that remain and against `TraceReadLimits` before it is used; protobuf
/// payloads are pre-scanned (`WireFormatScan`) before protobuf-c allocates anything; a chunk's
/// declared sizes must equal the shape that the header's geometry and the step allow.
public final class TraceReader {
    public let path: String
    public let header: TraceHeader
    public let minorVersion: Int
    public let footer: FooterStatus
    /// Intact, incomplete (recoverable) or corrupt: see `TraceIntegrity`.
    public let integrity: TraceIntegrity
    /// One entry per readable step, in order.
    public let index: [StepIndexEntry]
    public let limits: TraceReadLimits
    /// Byte offset just past the last complete step (where a footer belongs).
    public let endOfSteps: UInt64
    /// Size of the file when it was opened.
    public var fileBytes: UInt64 { file.size }
    /// Refuse NaN and ±infinity in floating-point fields (the fields policies read); on by default.
    public var requireFiniteValues = true
    let file: TraceFile

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
        let reserved = fh.readLE(UInt32.self, at: 12)
        guard reserved == 0 else {
            throw TraceError.malformed(
                TraceLocation(path: path, offset: 12), "file header bytes 12–15 (reserved) are \(reserved), must be 0")
        }
        self.minorVersion = Int(minor)

        // HEAD record.
        let headOffset = UInt64(TraceFormat.fileHeaderBytes)
        let (headFrame, headPayload) = try TraceReader.readRecord(file, at: headOffset, limit: limits.maxRecordBytes)
        guard headFrame.recordKind == .head else {
            throw TraceError.malformed(
                TraceLocation(path: path, offset: headOffset), "first record is '\(headFrame.kindName)', expected HEAD")
        }
        let headLoc = TraceLocation(path: path, offset: headOffset)
        do { try WireFormatScan.check(headPayload, schema: WireFormatScan.header()) } catch {
            throw TraceError.limitExceeded(headLoc, "HEAD payload refused before decoding: \(error.message)")
        }
        guard let header = ProtoBridge.unpackHeader(headPayload) else {
            throw TraceError.malformed(headLoc, "HEAD payload is not a valid TraceHeader")
        }
        try TraceReader.checkHeader(header, limits: limits, location: headLoc)
        self.header = header
        // readRecord checked that the payload lies inside the file, so this cannot overflow.
        let firstStep = headOffset + UInt64(TraceFormat.frameHeaderBytes) + headFrame.length

        // Footer through the trailer, else scan.
        let context = ScanContext(file: file, header: header, limits: limits)
        switch TraceReader.readFooter(file, firstStep: firstStep, limits: limits) {
        case .success(let (entries, footerOffset)):
            self.index = entries
            self.footer = .present
            self.endOfSteps = footerOffset
            self.integrity = .intact
        case .failure(let why):
            let scan = try TraceReader.scan(context, from: firstStep)
            self.index = scan.entries
            self.endOfSteps = scan.end
            var note = why.message
            switch scan.stop {
            case .clean: note += "; the file ends after step \(scan.entries.count) of \(scan.entries.count)"
            case .torn(let tail), .corrupt(_, let tail): note += "; \(tail)"
            }
            self.footer = .missing(note: note)
            if why.trailerValid {
                // A valid trailer means the file was completed; a footer that does not fit is damage.
                self.integrity = .corrupt(offset: why.offset ?? file.size, note: note)
            } else if case .corrupt(let offset, _) = scan.stop {
                self.integrity = .corrupt(offset: offset, note: note)
            } else {
                self.integrity = .incomplete(note: note)
            }
        }
    }

    // MARK: reading steps

    /// Reads step `i` (0-based position in the index). `fields` limits which chunks are
    /// decompressed (nil = all) and `layers` which layers (nil = all); skipped chunks are not
    /// checksummed. The chunks returned total at most `limits.maxStepRawBytes`.
    public func readStep(at i: Int, fields: Set<String>? = nil, layers: Set<Int?>? = nil) throws -> StepRecord {
        try planStep(at: i, fields: fields, layers: layers).finish(threads: 1)
    }

    /// Calls `body` with every step in order.
    public func forEachStep(fields: Set<String>? = nil, _ body: (StepRecord) throws -> Void) throws {
        for i in 0..<index.count { try body(try readStep(at: i, fields: fields)) }
    }

    /// Per-step sizes and layout, without decompressing chunks.
    public func summaries() throws -> [StepSummary] {
        try index.indices.map { i in
            let (meta, _) = try readStepMeta(at: i)
            let r = meta.record
            var fields: [String] = []
            var seen = Set<String>()
            for d in meta.descriptors where seen.insert(d.field).inserted { fields.append(d.field) }
            // Each size was checked against the limits and the file, so the sums cannot overflow;
            // saturate anyway rather than trust that.
            return StepSummary(
                stepIndex: r.stepIndex, episodeID: r.episodeID, reset: r.reset, promptLength: r.promptLength,
                generatedTokens: r.generatedTokens, images: r.images.count, visualTokens: r.visualTokenCount,
                chunks: meta.descriptors.count, fields: fields,
                rawBytes: Checked.sum(meta.descriptors.lazy.map(\.rawBytes)) ?? .max,
                storedBytes: Checked.sum(meta.descriptors.lazy.map(\.storedBytes)) ?? .max)
        }
    }

    /// Verifies every checksum (frames, chunks, zstd frames), every shape, and that floating-point
    /// fields hold finite values; one chunk is in memory at a time. Throws the first problem found.
    /// The report's `integrity` says whether the footer was intact; a file this reader cannot
    /// certify (a newer minor version) is refused.
    public func validate() throws -> TraceValidationReport {
        guard minorVersion == Int(TraceFormat.minorVersion) else {
            throw TraceError.unsupportedVersion(
                TraceLocation(path: path, offset: 10), major: Int(TraceFormat.majorVersion), minor: minorVersion)
        }
        if case .corrupt(let offset, let note) = integrity {
            throw TraceError.malformed(TraceLocation(path: path, offset: offset), note)
        }
        return try validateSteps()
    }

    /// Verifies every indexed step (checksums, zstd frames, shapes, finite values) without
    /// judging the footer; `validate()` adds that.
    func validateSteps() throws -> TraceValidationReport {
        var chunks = 0
        var raw: UInt64 = 0
        var stored: UInt64 = 0
        for i in 0..<index.count {
            try visitStep(at: i, fields: nil, layers: nil) { _ in } chunk: { _, bytes, _ in
                chunks += 1
                raw = Checked.add(raw, UInt64(bytes.count)) ?? .max
            }
            stored = Checked.add(stored, index[i].length) ?? .max
        }
        return TraceValidationReport(
            steps: index.count, chunks: chunks, rawBytes: raw, storedBytes: stored, footer: footer, integrity: integrity)
    }

    // MARK: internals

    /// Reads step `i`'s metadata, then decodes each selected chunk and hands it to `chunk`
    /// (which may keep it or drop it). Checks that the step ends where the index says.
    private func visitStep(
        at i: Int, fields: Set<String>?, layers: Set<Int?>?, meta onMeta: (StepMeta) throws -> Void,
        chunk onChunk: (ChunkDescriptor, [UInt8], TraceLocation) throws -> Void
    ) throws {
        let (meta, metaEnd) = try readStepMeta(at: i)
        try onMeta(meta)
        let record = meta.record
        var pos = metaEnd
        let scratch = ChunkScratch()  // one per call: reads on other threads use their own
        for d in meta.descriptors {
            let loc = TraceLocation(path: path, offset: pos, step: record.stepIndex, layer: d.layer, field: d.field)
            let payloadOffset = try readChunkFrame(at: pos, descriptor: d, location: loc)
            pos = payloadOffset + d.storedBytes  // inside the file: checked by readChunkFrame
            if let fields, !fields.contains(d.field) { continue }
            if let layers, !layers.contains(d.layer) { continue }
            let decoded: ChunkCoder.Decoded
            do {
                decoded = try ChunkCoder.decode(file: file, offset: payloadOffset, descriptor: d, scratch: scratch)
            } catch let ChunkCoder.DecodeError.checksum(m) {
                throw TraceError.checksumMismatch(loc, m)
            } catch let ChunkCoder.DecodeError.malformed(m) {
                throw TraceError.checksumMismatch(loc, "decompression failed: \(m)")
            }
            let raw = decoded.bytes
            if requireFiniteValues, d.dtype.isFloatingPoint, decoded.mayBeNonFinite,
                let bad = ChunkCoder.firstNonFinite(raw, dtype: d.dtype)
            {
                throw TraceError.nonFiniteValue(loc, "element \(bad.index) of shape \(d.shape) is \(bad.value)")
            }
            try onChunk(d, raw, loc)
        }
        let entry = index[i]
        guard let expectedEnd = Checked.add(entry.offset, entry.length), pos == expectedEnd else {
            throw TraceError.malformed(
                TraceLocation(path: path, offset: entry.offset, step: record.stepIndex),
                "step ends at offset \(pos) but the index says \(entry.offset) + \(entry.length)")
        }
    }

    /// Reads and checks the STEP record of index entry `i`; returns it and the offset after it.
    func readStepMeta(at i: Int) throws -> (StepMeta, UInt64) {
        guard i >= 0, i < index.count else {
            throw TraceError.notFound(TraceLocation(path: path), "step \(i) is not in the trace (it has \(index.count) steps)")
        }
        let entry = index[i]
        let context = ScanContext(file: file, header: header, limits: limits)
        let (meta, end) = try TraceReader.readStepRecord(context, at: entry.offset)
        guard meta.record.stepIndex == entry.stepIndex else {
            throw TraceError.malformed(
                TraceLocation(path: path, offset: entry.offset, step: meta.record.stepIndex),
                "STEP record says step \(meta.record.stepIndex) but the index says \(entry.stepIndex)")
        }
        return (meta, end)
    }

    /// Checks a chunk's frame against its descriptor; returns the payload offset.
    func readChunkFrame(at pos: UInt64, descriptor d: ChunkDescriptor, location loc: TraceLocation) throws -> UInt64 {
        guard file.contains(offset: pos, count: UInt64(TraceFormat.frameHeaderBytes)) else {
            throw TraceError.truncated(loc, "chunk frame header cut off")
        }
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
        let payloadOffset = pos + UInt64(TraceFormat.frameHeaderBytes)
        guard file.contains(offset: payloadOffset, count: frame.length) else {
            throw TraceError.truncated(loc, "chunk of \(frame.length) bytes runs past the end of the file")
        }
        return payloadOffset
    }

    /// What the header-dependent checks of a STEP record need.
    struct ScanContext {
        var file: TraceFile
        var header: TraceHeader
        var limits: TraceReadLimits

        /// Most descriptors a step can carry: every declared field at every layer, plus step-level ones.
        var maxChunks: Int {
            let perLayer = header.fields.count.multipliedReportingOverflow(by: header.model.numLayers + 1)
            return perLayer.overflow ? Int.max : max(1, perLayer.partialValue)
        }
    }

    /// Reads the STEP record at `offset`: frame, payload CRC, wire-format pre-scan, protobuf,
    /// step checks and every descriptor's sizes. Returns the metadata and the offset after it.
    static func readStepRecord(_ c: ScanContext, at offset: UInt64) throws -> (StepMeta, UInt64) {
        let (frame, payload) = try readRecord(c.file, at: offset, limit: c.limits.maxRecordBytes)
        let loc = TraceLocation(path: c.file.path, offset: offset)
        guard frame.recordKind == .step else {
            throw TraceError.malformed(loc, "expected a STEP record, found '\(frame.kindName)'")
        }
        do {
            try WireFormatScan.check(
                payload, schema: WireFormatScan.step(maxPromptLength: c.limits.maxPromptLength, maxChunks: c.maxChunks))
        } catch {
            throw TraceError.limitExceeded(loc, "STEP payload refused before decoding: \(error.message)")
        }
        let meta = try ProtoBridge.unpackStep(payload, at: loc)
        var sloc = loc
        sloc.step = meta.record.stepIndex
        try checkStep(meta.record, header: c.header, limits: c.limits, location: sloc)
        var seen = Set<String>()
        for d in meta.descriptors {
            var dloc = sloc
            dloc.layer = d.layer
            dloc.field = d.field
            guard seen.insert("\(d.field)@\(d.layer ?? -1)").inserted else {
                throw TraceError.malformed(dloc, "chunk listed twice in one step")
            }
            try checkDescriptor(d, step: meta.record, header: c.header, limits: c.limits, location: dloc)
        }
        return (meta, offset + UInt64(TraceFormat.frameHeaderBytes) + frame.length)
    }

    /// A descriptor's sizes must equal its shape, fit the limits, and — for catalog fields — the
    /// shape must be the one the header's geometry and the step allow (FORMAT.md "Tensor chunks").
    static func checkDescriptor(
        _ d: ChunkDescriptor, step: StepRecord, header: TraceHeader, limits: TraceReadLimits, location loc: TraceLocation
    ) throws {
        guard header.has(d.field) else {
            throw TraceError.malformed(loc, "field is not declared in the header's field list")
        }
        if let reason = FieldRules.check(field: d.field, layer: d.layer, dtype: d.dtype, shape: d.shape, header: header, step: step) {
            throw TraceError.shapeMismatch(loc, reason)
        }
        guard let bytes = FieldRules.byteCount(shape: d.shape, dtype: d.dtype), bytes == d.rawBytes else {
            throw TraceError.shapeMismatch(loc, "raw_bytes \(d.rawBytes) does not equal shape \(d.shape) × \(d.dtype)")
        }
        guard d.rawBytes <= limits.maxChunkRawBytes else {
            throw TraceError.limitExceeded(
                loc, "chunk of \(d.rawBytes) raw bytes (limit \(limits.maxChunkRawBytes); raise it with --max-chunk-mib)")
        }
        let maxStored = d.codec == .none ? d.rawBytes : ChunkCoder.compressBound(d.rawBytes)
        guard d.storedBytes <= maxStored else {
            throw TraceError.malformed(loc, "stored_bytes \(d.storedBytes) exceeds what \(d.rawBytes) raw bytes can take (\(maxStored))")
        }
        if d.codec == .none, d.storedBytes != d.rawBytes {
            throw TraceError.malformed(loc, "uncompressed chunk stores \(d.storedBytes) bytes for \(d.rawBytes) raw bytes")
        }
    }

    static func readRecord(_ file: TraceFile, at offset: UInt64, limit: UInt64) throws -> (FrameHeader, [UInt8]) {
        let loc = TraceLocation(path: file.path, offset: offset)
        guard file.contains(offset: offset, count: UInt64(TraceFormat.frameHeaderBytes)) else {
            throw TraceError.truncated(loc, "record frame header cut off")
        }
        guard let frame = FrameHeader.decode(try file.read(TraceFormat.frameHeaderBytes, at: offset)) else {
            throw TraceError.checksumMismatch(loc, "record frame header CRC does not match")
        }
        guard frame.length <= limit else {
            throw TraceError.limitExceeded(loc, "\(frame.kindName) record of \(frame.length) bytes (limit \(limit))")
        }
        let payloadOffset = offset + UInt64(TraceFormat.frameHeaderBytes)
        guard file.contains(offset: payloadOffset, count: frame.length) else {
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
        guard Set(h.fields).count == h.fields.count else {
            throw TraceError.malformed(loc, "header lists a field twice")
        }
    }

    static func checkStep(_ s: StepRecord, header: TraceHeader, limits: TraceReadLimits, location loc: TraceLocation) throws {
        guard s.promptLength >= 1, s.promptLength <= limits.maxPromptLength else {
            throw TraceError.limitExceeded(loc, "prompt length \(s.promptLength) (limit \(limits.maxPromptLength))")
        }
        guard s.tokenTypes.count == s.promptLength else {
            throw TraceError.malformed(loc, "\(s.tokenTypes.count) token types for prompt length \(s.promptLength)")
        }
        guard s.tokenIDs.isEmpty || s.tokenIDs.count == s.promptLength else {
            throw TraceError.malformed(loc, "\(s.tokenIDs.count) token ids for prompt length \(s.promptLength)")
        }
        var previousEnd = 0
        for (i, img) in s.images.enumerated() {
            guard img.spanStart >= previousEnd, img.spanStart <= img.spanEnd, img.spanEnd <= s.promptLength else {
                throw TraceError.malformed(loc, "image \(i) span [\(img.spanStart), \(img.spanEnd)) is not ordered inside the prompt")
            }
            previousEnd = img.spanEnd
        }
    }

    struct FooterFailure: Error {
        var message: String
        /// The trailer's magic and CRC were valid (so the file had been completed).
        var trailerValid = false
        var offset: UInt64? = nil
    }

    static func readFooter(_ file: TraceFile, firstStep: UInt64, limits: TraceReadLimits)
        -> Result<([StepIndexEntry], UInt64), FooterFailure>
    {
        let trailerBytes = UInt64(TraceFormat.trailerBytes)
        guard let minimum = Checked.add(firstStep, trailerBytes, UInt64(TraceFormat.frameHeaderBytes)), file.size >= minimum else {
            return .failure(FooterFailure(message: "no footer (file ends before a trailer)"))
        }
        let trailerOffset = file.size - trailerBytes
        guard let t = try? file.read(TraceFormat.trailerBytes, at: trailerOffset),
            Array(t[16..<24]) == TraceFormat.trailerMagic
        else { return .failure(FooterFailure(message: "no footer (trailer magic missing)")) }
        guard CRC32C.checksum(Array(t[0..<12])) == t.readLE(UInt32.self, at: 12) else {
            return .failure(FooterFailure(message: "trailer CRC does not match", trailerValid: true, offset: trailerOffset))
        }
        func damaged(_ m: String, _ at: UInt64) -> Result<([StepIndexEntry], UInt64), FooterFailure> {
            .failure(FooterFailure(message: m, trailerValid: true, offset: at))
        }
        guard t.readLE(UInt32.self, at: 8) == 0 else { return damaged("trailer reserved bytes are not zero", trailerOffset) }
        let footerOffset = t.readLE(UInt64.self, at: 0)
        guard footerOffset >= firstStep, footerOffset < trailerOffset else {
            return damaged("trailer points at offset \(footerOffset), outside the steps", trailerOffset)
        }
        guard let (frame, payload) = try? readRecord(file, at: footerOffset, limit: limits.maxRecordBytes),
            frame.recordKind == .foot,
            Checked.add(footerOffset, UInt64(TraceFormat.frameHeaderBytes), frame.length) == trailerOffset
        else { return damaged("footer record unreadable", footerOffset) }
        // Every step takes at least a frame and a few payload bytes, so the file bounds the count.
        let maxSteps = min(UInt64(limits.maxSteps), (footerOffset - firstStep) / UInt64(TraceFormat.frameHeaderBytes + 2))
        do { try WireFormatScan.check(payload, schema: WireFormatScan.footer(maxSteps: Int(maxSteps))) } catch {
            return damaged("footer refused before decoding: \(error.message)", footerOffset)
        }
        guard let footer = ProtoBridge.unpackFooter(payload) else { return damaged("footer payload undecodable", footerOffset) }
        var expected = firstStep
        var lastStep = -1
        for e in footer.entries {
            guard e.offset == expected, e.length > 0, let end = Checked.add(e.offset, e.length), end <= footerOffset,
                e.stepIndex > lastStep
            else {
                return damaged("footer index inconsistent with the file", footerOffset)
            }
            expected = end
            lastStep = e.stepIndex
        }
        guard expected == footerOffset else {
            return damaged("footer index does not cover the file", footerOffset)
        }
        return .success((footer.entries, footerOffset))
    }

    /// How a footer-less scan ended.
    enum ScanStop {
        /// Exactly at the end of the file, after a complete step.
        case clean
        /// On a torn tail: bytes that are a prefix of a record.
        case torn(String)
        /// On bytes that are not a torn tail.
        case corrupt(UInt64, String)
    }

    struct ScanResult {
        var entries: [StepIndexEntry]
        var end: UInt64
        var stop: ScanStop
    }

    /// Walks the records after HEAD and keeps every step whose STEP record and chunk frames are
    /// complete and check out. Stops on the first record that does not, and says whether what
    /// follows is a torn tail (a prefix of a record running into the end of the file) or damage.
    /// Payload CRCs of chunks are checked later, on read.
    static func scan(_ c: ScanContext, from start: UInt64) throws -> ScanResult {
        let file = c.file
        var entries: [StepIndexEntry] = []
        var pos = start
        let frameBytes = UInt64(TraceFormat.frameHeaderBytes)
        var lastStep = -1
        func left(_ at: UInt64) -> String { "\(file.size - at) bytes from offset \(at) ignored" }
        func torn(_ note: String) -> ScanResult {
            ScanResult(entries: entries, end: pos, stop: .torn("torn tail: \(note) (\(left(pos)))"))
        }
        func corrupt(_ at: UInt64, _ note: String) -> ScanResult {
            ScanResult(entries: entries, end: pos, stop: .corrupt(at, "damaged at offset \(at): \(note) (\(left(pos)))"))
        }
        while pos < file.size {
            let remaining = file.size - pos
            guard remaining >= frameBytes else {
                // A partial frame header: its kind, when present, must be one that can follow a step.
                let partial = try file.read(Int(remaining), at: pos)
                let kind = Array(partial.prefix(4))
                if !kind.isEmpty, !RecordKind.step.bytes.starts(with: kind), !RecordKind.foot.bytes.starts(with: kind) {
                    return corrupt(pos, "\(remaining) trailing bytes that do not start a record")
                }
                return torn("incomplete record frame at the end")
            }
            guard let frame = FrameHeader.decode(try file.read(TraceFormat.frameHeaderBytes, at: pos)) else {
                return corrupt(pos, "record frame header CRC does not match")
            }
            let payloadEnd = Checked.add(pos, frameBytes, frame.length)
            switch frame.recordKind {
            case .step:
                guard frame.length <= c.limits.maxRecordBytes else {
                    return corrupt(pos, "STEP record of \(frame.length) bytes (limit \(c.limits.maxRecordBytes))")
                }
                guard let payloadEnd, payloadEnd <= file.size else { return torn("incomplete STEP record") }
                let meta: StepMeta
                do { (meta, _) = try readStepRecord(c, at: pos) } catch let e as TraceError {
                    return corrupt(pos, "\(e)")
                }
                guard meta.record.stepIndex > lastStep else {
                    return corrupt(pos, "step index \(meta.record.stepIndex) after step \(lastStep)")
                }
                var cpos = payloadEnd
                for d in meta.descriptors {
                    guard file.contains(offset: cpos, count: frameBytes) else {
                        return torn("step \(meta.record.stepIndex) is incomplete")
                    }
                    guard let cf = FrameHeader.decode(try file.read(TraceFormat.frameHeaderBytes, at: cpos)) else {
                        return corrupt(cpos, "chunk frame header CRC does not match (step \(meta.record.stepIndex))")
                    }
                    guard cf.recordKind == .chunk, cf.length == d.storedBytes, cf.payloadCRC == d.crc32c else {
                        return corrupt(cpos, "chunk frame disagrees with its descriptor (step \(meta.record.stepIndex), field '\(d.field)')")
                    }
                    guard let chunkEnd = Checked.add(cpos, frameBytes, cf.length), chunkEnd <= file.size else {
                        return torn("step \(meta.record.stepIndex) is incomplete")
                    }
                    cpos = chunkEnd
                }
                entries.append(
                    StepIndexEntry(
                        offset: pos, stepIndex: meta.record.stepIndex, episodeID: meta.record.episodeID,
                        promptLength: meta.record.promptLength, length: cpos - pos))
                lastStep = meta.record.stepIndex
                pos = cpos
            case .foot:
                guard frame.length <= c.limits.maxRecordBytes else {
                    return corrupt(pos, "FOOT record of \(frame.length) bytes (limit \(c.limits.maxRecordBytes))")
                }
                guard let payloadEnd, payloadEnd <= file.size else { return torn("incomplete footer") }
                let trailerBytes = UInt64(TraceFormat.trailerBytes)
                guard file.size - payloadEnd < trailerBytes else {
                    return corrupt(pos, "footer present but the trailer after it is invalid")
                }
                return torn("footer written, trailer incomplete")
            case .head, .chunk:
                return corrupt(pos, "unexpected \(frame.kindName) record")
            case nil:
                guard frame.flags & TraceFormat.skippableFlag != 0 else {
                    return corrupt(pos, "unknown record kind '\(frame.kindName)' (written by a newer StarKV?)")
                }
                let limit = max(c.limits.maxRecordBytes, ChunkCoder.compressBound(c.limits.maxChunkRawBytes))
                guard frame.length <= limit else {
                    return corrupt(pos, "\(frame.kindName) record of \(frame.length) bytes (limit \(limit))")
                }
                guard let payloadEnd, payloadEnd <= file.size else { return torn("incomplete \(frame.kindName) record") }
                pos = payloadEnd
            }
        }
        return ScanResult(entries: entries, end: pos, stop: .clean)
    }
}
