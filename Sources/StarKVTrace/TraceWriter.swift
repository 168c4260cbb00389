import Dispatch
import Foundation
import StarKVModel

/// Settings of a `TraceWriter`.
public struct TraceWriteOptions: Sendable {
    /// zstd level (1–19); 3 is zstd's default.
    public var zstdLevel: Int32
    /// Byte-plane shuffle before compression (FORMAT.md `FILTER_BYTE_SHUFFLE`).
    public var byteShuffle: Bool
    /// zstd-compress chunks (else stored raw).
    public var compress: Bool
    /// fsync the file when closing.
    public var fsyncOnClose: Bool

    public init(zstdLevel: Int32 = 3, byteShuffle: Bool = true, compress: Bool = true, fsyncOnClose: Bool = true) {
        self.zstdLevel = zstdLevel
        self.byteShuffle = byteShuffle
        self.compress = compress
        self.fsyncOnClose = fsyncOnClose
    }
}

/// What a closed writer wrote.
public struct TraceWriteSummary: Sendable, Hashable {
    public var steps: Int
    public var chunks: Int
    public var rawBytes: UInt64
    public var storedBytes: UInt64
    public var fileBytes: UInt64
}

/// Streams a trace to disk, one step at a time (FORMAT.md). Memory is bounded by one step:
/// each `append` encodes the step's chunks, writes the STEP and CHNK records and flushes them,
/// so a recorder killed mid-run leaves every completed step readable. `close` writes the
/// footer index and trailer and fsyncs.
public final class TraceWriter {
    public let path: String
    public let header: TraceHeader
    public let options: TraceWriteOptions
    private let file: TraceFile
    private var index: [StepIndexEntry] = []
    private var chunkCount = 0
    private var rawBytes: UInt64 = 0
    private var storedBytes: UInt64 = 0
    private var closed = false

    /// Where the trace is written until `close()` renames it to `path`: `PATH.tmp-PID-N` in the
    /// same folder. A recorder killed before `close()` leaves this file, which `starkv recover`
    /// turns into a complete trace.
    public let temporaryPath: String
    private let overwrite: Bool
    private let inputs: [String]

    /// Starts a trace that will appear at `path` when `close()` succeeds: writes the file header
    /// and the HEAD record to `temporaryPath`. Refuses, before creating anything, a `path` that is
    /// the same file as one of `inputs`, or that exists when `overwrite` is false.
    public init(
        path: String, header: TraceHeader, options: TraceWriteOptions = TraceWriteOptions(), overwrite: Bool = true,
        inputs: [String] = []
    ) throws {
        try TraceWriter.check(header, path: path)
        do { try OutputFile.checkWritable(path, inputs: inputs, overwrite: overwrite) } catch {
            throw TraceError.invalidInput(TraceLocation(path: path), error.description)
        }
        self.path = path
        self.header = header
        self.options = options
        self.overwrite = overwrite
        self.inputs = inputs
        self.temporaryPath = OutputFile.temporaryPath(for: path)
        self.file = try TraceFile.create(temporaryPath)
        var fileHeader = TraceFormat.magic
        fileHeader.appendLE(TraceFormat.majorVersion)
        fileHeader.appendLE(TraceFormat.minorVersion)
        fileHeader.appendLE(UInt32(0))
        let payload = ProtoBridge.packHeader(header)
        var out = fileHeader
        out += payload.withUnsafeBytes { FrameHeader.encode(kind: .head, payload: $0) }
        out += payload
        try file.write(out)
    }

    /// Gives up: closes and removes the temporary file (nothing appears at `path`).
    public func abandon() {
        guard !closed else { return }
        closed = true
        file.close()
        unlink(temporaryPath)
    }

    /// Validates, encodes and writes one step. Steps must come in order: `stepIndex` equals the
    /// number of steps written before.
    public func append(_ step: StepRecord) throws {
        let loc = TraceLocation(path: path, step: step.stepIndex)
        guard !closed else { throw TraceError.invalidInput(loc, "writer is closed") }
        guard step.stepIndex == index.count else {
            throw TraceError.invalidInput(loc, "step index \(step.stepIndex) out of order (expected \(index.count))")
        }
        try TraceWriter.check(step, header: header, location: loc)

        // Encode chunks independently (in parallel); results land in fixed slots, so the bytes
        // written do not depend on scheduling.
        let chunks = step.chunks
        let level = options.zstdLevel
        let filter: ChunkFilter = options.byteShuffle ? .byteShuffle : .none
        let codec: ChunkCodec = options.compress ? .zstd : .none
        let encoded = DeterministicParallel.map(count: chunks.count, workers: chunks.count) { i -> Result<[UInt8], any Error> in
            let t = chunks[i].tensor
            return Result {
                try ChunkCoder.encode(t.bytes, elementWidth: t.dtype.byteWidth, filter: filter, codec: codec, level: level)
            }
        }
        var descriptors: [ChunkDescriptor] = []
        var payloads: [[UInt8]] = []
        for (i, c) in chunks.enumerated() {
            let stored: [UInt8]
            do { stored = try encoded[i].get() } catch {
                throw TraceError.io(
                    TraceLocation(path: path, step: step.stepIndex, layer: c.layer, field: c.field), "compression failed: \(error)")
            }
            descriptors.append(
                ChunkDescriptor(
                    field: c.field, layer: c.layer, dtype: c.tensor.dtype, shape: c.tensor.shape,
                    filter: c.tensor.dtype.byteWidth > 1 ? filter : .none, codec: codec,
                    rawBytes: UInt64(c.tensor.bytes.count), storedBytes: UInt64(stored.count),
                    crc32c: CRC32C.checksum(stored)))
            payloads.append(stored)
        }
        let offset = file.size
        let meta = ProtoBridge.packStep(step, descriptors: descriptors)
        var out = meta.withUnsafeBytes { FrameHeader.encode(kind: .step, payload: $0) }
        out += meta
        try file.write(out)
        for (d, p) in zip(descriptors, payloads) {
            try file.write(FrameHeader.encode(kind: .chunk, length: d.storedBytes, payloadCRC: d.crc32c))
            try file.write(p)
            rawBytes += d.rawBytes
            storedBytes += d.storedBytes
        }
        chunkCount += descriptors.count
        index.append(
            StepIndexEntry(
                offset: offset, stepIndex: step.stepIndex, episodeID: step.episodeID, promptLength: step.promptLength,
                length: file.size - offset))
    }

    /// Writes the footer and trailer, fsyncs (unless disabled), closes the file and renames it
    /// from `temporaryPath` to `path`. On failure the temporary file is removed.
    @discardableResult
    public func close() throws -> TraceWriteSummary {
        guard !closed else { throw TraceError.invalidInput(TraceLocation(path: path), "writer already closed") }
        closed = true
        do {
            try TraceWriter.writeFooter(
                to: file, entries: index, totalRaw: rawBytes, totalStored: storedBytes, recovered: false)
            if options.fsyncOnClose { try file.sync() }
            file.close()
        } catch {
            file.close()
            unlink(temporaryPath)
            throw error
        }
        do { try OutputFile.commit(temporary: temporaryPath, to: path, inputs: inputs, overwrite: overwrite) } catch {
            throw TraceError.io(TraceLocation(path: path), error.description)
        }
        return TraceWriteSummary(
            steps: index.count, chunks: chunkCount, rawBytes: rawBytes, storedBytes: storedBytes, fileBytes: file.size)
    }

    static func writeFooter(to file: TraceFile, entries: [StepIndexEntry], totalRaw: UInt64, totalStored: UInt64, recovered: Bool)
        throws
    {
        let footerOffset = file.size
        let payload = ProtoBridge.packFooter(entries, totalRaw: totalRaw, totalStored: totalStored, recovered: recovered)
        var out = payload.withUnsafeBytes { FrameHeader.encode(kind: .foot, payload: $0) }
        out += payload
        var trailer: [UInt8] = []
        trailer.appendLE(footerOffset)
        trailer.appendLE(UInt32(0))
        trailer.appendLE(CRC32C.checksum(trailer))
        trailer += TraceFormat.trailerMagic
        out += trailer
        try file.write(out)
    }

    // MARK: validation

    static func check(_ h: TraceHeader, path: String) throws {
        let loc = TraceLocation(path: path)
        let m = h.model
        func bad(_ s: String) -> TraceError { .invalidInput(loc, "header: \(s)") }
        guard (1...TraceReadLimits.default.maxLayers).contains(m.numLayers) else { throw bad("num_layers \(m.numLayers)") }
        guard (1...TraceReadLimits.default.maxHeads).contains(m.numQueryHeads) else {
            throw bad("num_query_heads \(m.numQueryHeads)")
        }
        guard m.numKVHeads >= 1, m.numQueryHeads % m.numKVHeads == 0 else {
            throw bad("num_kv_heads \(m.numKVHeads) must divide num_query_heads \(m.numQueryHeads)")
        }
        guard h.windowSizes.allSatisfy({ $0 > 0 }), h.windowSizes == h.windowSizes.sorted(),
            Set(h.windowSizes).count == h.windowSizes.count
        else { throw bad("window_sizes \(h.windowSizes) must be positive, distinct and ascending") }
        if h.fields.contains(TraceField.winSum) && h.windowSizes.isEmpty {
            throw bad("win_sum is declared but window_sizes is empty")
        }
        guard Set(h.fields).count == h.fields.count else { throw bad("fields listed twice") }
    }

    static func check(_ s: StepRecord, header: TraceHeader, location loc: TraceLocation) throws {
        let L = s.promptLength
        guard L >= 1, L <= TraceReadLimits.default.maxPromptLength else {
            throw TraceError.invalidInput(loc, "prompt length \(L) outside 1...\(TraceReadLimits.default.maxPromptLength)")
        }
        guard s.tokenTypes.count == L else {
            throw TraceError.invalidInput(loc, "\(s.tokenTypes.count) token types for prompt length \(L)")
        }
        guard s.tokenIDs.isEmpty || s.tokenIDs.count == L else {
            throw TraceError.invalidInput(loc, "\(s.tokenIDs.count) token ids for prompt length \(L)")
        }
        var previousEnd = 0
        for (i, img) in s.images.enumerated() {
            guard img.spanStart >= previousEnd, img.spanStart <= img.spanEnd, img.spanEnd <= L else {
                throw TraceError.invalidInput(
                    loc, "image \(i) span [\(img.spanStart), \(img.spanEnd)) is not ordered inside [0, \(L))")
            }
            guard img.gridT * img.gridH * img.gridW == img.length else {
                throw TraceError.invalidInput(
                    loc, "image \(i) grid \(img.gridT)x\(img.gridH)x\(img.gridW) does not match span length \(img.length)")
            }
            previousEnd = img.spanEnd
        }
        var seen = Set<String>()
        for c in s.chunks {
            var cl = loc
            cl.layer = c.layer
            cl.field = c.field
            guard header.has(c.field) else {
                throw TraceError.invalidInput(cl, "field is not declared in the header's field list")
            }
            guard seen.insert("\(c.field)@\(c.layer ?? -1)").inserted else {
                throw TraceError.invalidInput(cl, "chunk written twice in one step")
            }
            guard FieldRules.byteCount(shape: c.tensor.shape, dtype: c.tensor.dtype) == UInt64(c.tensor.bytes.count) else {
                throw TraceError.invalidInput(
                    cl, "\(c.tensor.bytes.count) bytes do not match shape \(c.tensor.shape) of \(c.tensor.dtype)")
            }
            if let reason = FieldRules.check(
                field: c.field, layer: c.layer, dtype: c.tensor.dtype, shape: c.tensor.shape, header: header, step: s)
            {
                throw TraceError.shapeMismatch(cl, reason)
            }
        }
    }
}
