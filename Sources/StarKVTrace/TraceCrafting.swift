import Foundation

/// Small traces built in memory for the fuzz target's seed corpus and the hostile inputs of the
/// robustness tests and README figures (issue: damaged and hostile traces). Test support: the
/// hostile inputs are the findings of that issue, rebuilt with valid checksums around the damage.
extension TraceFuzzing {
    static let tinyModel = RecordedModel(
        id: "fuzz-tiny", numLayers: 2, numQueryHeads: 2, numKVHeads: 1, headDim: 4, hiddenSize: 8, vocabSize: 16,
        intermediateSize: 16)

    static func tinyHeader(_ fidelity: Fidelity) -> TraceHeader {
        var fields = TraceField.fields(at: fidelity)
        if fidelity == .full { fields.append("golden_kept.snapkv.50") }
        return TraceHeader(
            model: tinyModel, recorder: RecorderInfo(name: "fuzz-seed", version: "1"), fidelity: fidelity, fields: fields,
            windowSizes: [2], agent: AgentLoopInfo(storedKVHeads: 1, screenWidth: 28, screenHeight: 28), winRowsMax: 1)
    }

    /// Step `i`: min(2, i+1) screenshots of 2 tokens, every declared field.
    static func tinyStep(_ i: Int, _ h: TraceHeader, nanAt: (field: String, layer: Int)? = nil) -> StepRecord {
        let images = min(2, i + 1)
        var types: [TokenType] = [.system, .template]
        var entries: [ImageEntry] = []
        for f in 0..<images {
            types.append(.visionMarker)
            entries.append(ImageEntry(spanStart: types.count, spanEnd: types.count + 2, gridH: 1, gridW: 2, frameAge: images - 1 - f))
            types += [.visual, .visual, .visionMarker]
        }
        types += [.instruction, .generationPrompt]
        let L = types.count
        var s = StepRecord(
            episodeID: "e", stepIndex: i, stepInEpisode: i, reset: i == 0, promptLength: L, generatedTokens: 1,
            tokenTypes: types, tokenIDs: (0..<L).map { Int32($0) }, images: entries)
        let V = 2 * images
        for layer in 0..<h.model.numLayers {
            for field in h.fields {
                func values(_ n: Int) -> [Float] {
                    var v = (0..<n).map { Float(($0 * 7 + i + layer) % 5) / 4 }
                    if let nanAt, nanAt.field == field, nanAt.layer == layer, n > 1 { v[1] = .nan }
                    return v
                }
                let t: Tensor
                switch field {
                case TraceField.winSum: t = Tensor(floats: values(2 * L), shape: [1, 2, L], dtype: .f16)
                case TraceField.hidNorm: t = Tensor(floats: values(V), shape: [V])
                case TraceField.guikvResid:
                    guard V > 2 else { continue }
                    t = Tensor(floats: values(V - 2), shape: [1, V - 2], dtype: .f16)
                case TraceField.colsumAll, TraceField.colsumPostvis, TraceField.decodeAttnSum:
                    t = Tensor(floats: values(2 * L), shape: [2, L])
                case TraceField.countGt001: t = Tensor(int64: [1, 2], shape: [2])
                case TraceField.nValid: t = Tensor(int64: [3], shape: [1])
                case TraceField.winRows: t = Tensor(floats: values(2 * L), shape: [2, 1, L], dtype: .bf16)
                default: t = Tensor(int32: [0, Int32(L - 1)], shape: [1, 2])
                }
                s.chunks.append(TensorChunk(field: field, layer: layer, tensor: t))
            }
        }
        return s
    }

    /// Writes a tiny trace through the real writer and returns its bytes (`killed`: the
    /// temporary file before close, with its last 7 bytes torn off).
    public static func tinyTrace(
        _ fidelity: Fidelity, steps: Int, options: TraceWriteOptions = TraceWriteOptions(fsyncOnClose: false),
        killed: Bool = false, nanAt: (step: Int, field: String, layer: Int)? = nil
    ) throws -> [UInt8] {
        let h = tinyHeader(fidelity)
        let path = OutputFile.temporaryPath(for: NSTemporaryDirectory() + "/starkv-craft.starkv")
        let w = try TraceWriter(path: path, header: h, options: options)
        for i in 0..<steps {
            try w.append(tinyStep(i, h, nanAt: nanAt.flatMap { $0.step == i ? ($0.field, $0.layer) : nil }))
        }
        defer { unlink(path) }
        if killed {
            let data = try Data(contentsOf: URL(fileURLWithPath: w.temporaryPath))
            w.abandon()
            return Array([UInt8](data).dropLast(7))
        }
        try w.close()
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// The seed corpus of `make fuzz` (Fuzz/corpus): every field kind, compressed and raw
    /// chunks, and a torn footer-less trace.
    public static func seedTraces() throws -> [(name: String, bytes: [UInt8])] {
        [
            ("core-2step.starkv", try tinyTrace(.core, steps: 2)),
            ("standard-raw-1step.starkv",
             try tinyTrace(.standard, steps: 1, options: TraceWriteOptions(byteShuffle: false, compress: false, fsyncOnClose: false))),
            ("full-1step.starkv", try tinyTrace(.full, steps: 1)),
            ("torn-3step.starkv", try tinyTrace(.core, steps: 3, killed: true)),
        ]
    }

    // MARK: record surgery

    struct Record {
        var kind: String
        var flags: UInt32 = 0
        var payload: [UInt8]
        var declaredLength: UInt64? = nil
    }

    /// File header and records of a complete trace (footer and trailer dropped).
    static func records(of bytes: [UInt8]) -> (header: [UInt8], records: [Record]) {
        var out: [Record] = []
        var pos = TraceFormat.fileHeaderBytes
        let end = bytes.count - TraceFormat.trailerBytes
        while pos + TraceFormat.frameHeaderBytes <= end {
            let length = Int(bytes.readLE(UInt64.self, at: pos + 8))
            let kind = String(decoding: bytes[pos..<(pos + 4)], as: UTF8.self)
            let start = pos + TraceFormat.frameHeaderBytes
            if kind != "FOOT" { out.append(Record(kind: kind, payload: Array(bytes[start..<(start + length)]))) }
            pos = start + length
        }
        return (Array(bytes[0..<TraceFormat.fileHeaderBytes]), out)
    }

    /// Reassembles records; with `footer`, appends a footer indexing the steps as laid out
    /// (`footerPayload` replaces it) and a valid trailer.
    static func assemble(_ header: [UInt8], _ records: [Record], footer: Bool, footerPayload: [UInt8]? = nil) -> [UInt8] {
        var out = header
        var entries: [StepIndexEntry] = []
        var open: (offset: Int, meta: StepMeta)? = nil
        func close(at end: Int) {
            if let o = open {
                entries.append(StepIndexEntry(
                    offset: UInt64(o.offset), stepIndex: o.meta.record.stepIndex, episodeID: o.meta.record.episodeID,
                    promptLength: o.meta.record.promptLength, length: UInt64(end - o.offset)))
            }
            open = nil
        }
        for r in records {
            if r.kind == "STEP" {
                close(at: out.count)
                if let m = try? ProtoBridge.unpackStep(r.payload, at: TraceLocation(path: "craft")) { open = (out.count, m) }
            }
            var frame = Array(r.kind.utf8)
            frame.appendLE(r.flags)
            frame.appendLE(r.declaredLength ?? UInt64(r.payload.count))
            frame.appendLE(CRC32C.checksum(r.payload))
            frame.appendLE(CRC32C.checksum(frame))
            out += frame + r.payload
        }
        close(at: out.count)
        guard footer else { return out }
        let footerOffset = UInt64(out.count)
        let payload = footerPayload ?? ProtoBridge.packFooter(entries, totalRaw: 0, totalStored: 0, recovered: false)
        var frame = Array("FOOT".utf8)
        frame.appendLE(UInt32(0))
        frame.appendLE(UInt64(payload.count))
        frame.appendLE(CRC32C.checksum(payload))
        frame.appendLE(CRC32C.checksum(frame))
        out += frame + payload
        var trailer: [UInt8] = []
        trailer.appendLE(footerOffset)
        trailer.appendLE(UInt32(0))
        trailer.appendLE(CRC32C.checksum(trailer))
        return out + trailer + TraceFormat.trailerMagic
    }

    static func editStep(_ r: inout Record, _ change: (inout StepRecord, inout [ChunkDescriptor]) -> Void) throws {
        var meta = try ProtoBridge.unpackStep(r.payload, at: TraceLocation(path: "craft"))
        change(&meta.record, &meta.descriptors)
        r.payload = ProtoBridge.packStep(meta.record, descriptors: meta.descriptors)
    }

    /// `count` copies of an empty length-delimited field `number` (< 16: two bytes each).
    static func emptyRepeated(field number: UInt64, count: Int) -> [UInt8] {
        var out: [UInt8] = [UInt8(number << 3 | 2), 0]
        let total = 2 * count
        while out.count < total { out += out.prefix(total - out.count) }
        return out
    }

    /// The hostile inputs of the robustness issue, each named after what it claims. Every one
    /// must be refused with a clear error (or reported incomplete), quickly and in little memory.
    /// `shrink` divides the entry counts of the 64 MiB records (1 = the sizes of the findings).
    public static func hostileTraces(shrink: Int = 1) throws -> [(name: String, bytes: [UInt8])] {
        let mega = 1024 * 1024 / max(1, shrink)
        let base = try tinyTrace(.standard, steps: 2)
        let (fh, recs) = records(of: base)
        let step0 = recs.firstIndex { $0.kind == "STEP" }!
        let step1 = recs.lastIndex { $0.kind == "STEP" }!
        var out: [(String, [UInt8])] = []

        // 1. Footer entry of length 2^64-1.
        let reader = try TraceReader(path: { let p = OutputFile.temporaryPath(for: NSTemporaryDirectory() + "/starkv-craft.starkv"); _ = TraceFuzzing.store(base, at: p); return p }())
        var entries = reader.index
        unlink(reader.path)
        entries[0].length = .max
        out.append(("footer-entry-length-2^64", assemble(fh, recs, footer: true,
            footerPayload: ProtoBridge.packFooter(entries, totalRaw: 0, totalStored: 0, recovered: false))))

        // 2. Footer-less: CHNK frame length 2^64-1 (its descriptor says so too).
        var r2 = recs
        try editStep(&r2[step0]) { _, d in d[0].storedBytes = .max }
        r2[step0 + 1].declaredLength = .max
        out.append(("scan-chunk-length-2^64", assemble(fh, r2, footer: false)))
        // 4. The same with a footer (readChunkFrame's path).
        out.append(("descriptor-stored-bytes-2^64", assemble(fh, r2, footer: true)))

        // 3. Footer-less: a skippable unknown record of length 2^64-1.
        var r3 = recs
        r3.insert(Record(kind: "XTRA", flags: TraceFormat.skippableFlag, payload: [], declaredLength: .max), at: step1)
        out.append(("scan-skippable-length-2^64", assemble(fh, r3, footer: false)))

        // 5. Two descriptors whose raw_bytes and stored_bytes are 2^63.
        var r5 = recs
        try editStep(&r5[step0]) { _, d in
            for k in 0..<2 {
                d[k].rawBytes = 1 << 63
                d[k].storedBytes = 1 << 63
            }
        }
        out.append(("descriptors-raw-stored-2^63", assemble(fh, r5, footer: true)))

        // 6. A zstd frame declaring 4 GiB of content.
        var r6 = recs
        var zframe: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD, 0xA0]
        zframe.appendLE(UInt32.max)
        zframe += [1, 0, 0]
        r6[step0 + 1].payload = zframe
        try editStep(&r6[step0]) { _, d in
            d[0].storedBytes = UInt64(zframe.count)
            d[0].crc32c = CRC32C.checksum(zframe)
        }
        out.append(("zstd-declares-4GiB", assemble(fh, r6, footer: true)))

        // 7. A chunk whose shape and raw_bytes say 1 GiB (1024 heads, 64 windows, L = 8192).
        var bigHeader = tinyHeader(.core)
        bigHeader.model.numQueryHeads = 1024
        bigHeader.model.numKVHeads = 1024
        bigHeader.windowSizes = Array(1...64)
        var bigStep = StepRecord(
            episodeID: "e", stepIndex: 0, stepInEpisode: 0, reset: true, promptLength: 8192, generatedTokens: 1,
            tokenTypes: [TokenType](repeating: .system, count: 8192), tokenIDs: [], images: [])
        bigStep.chunks = []
        var zbig: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD, 0xC0]  // single segment, 8-byte content size
        zbig.appendLE(UInt64(1) << 30)
        zbig += [1, 0, 0]
        let bigDescriptor = ChunkDescriptor(
            field: TraceField.winSum, layer: 0, dtype: .f16, shape: [64, 1024, 8192], filter: .byteShuffle, codec: .zstd,
            rawBytes: 1 << 30, storedBytes: UInt64(zbig.count), crc32c: CRC32C.checksum(zbig))
        let r7 = [
            Record(kind: "HEAD", payload: ProtoBridge.packHeader(bigHeader)),
            Record(kind: "STEP", payload: ProtoBridge.packStep(bigStep, descriptors: [bigDescriptor])),
            Record(kind: "CHNK", payload: zbig),
        ]
        out.append(("chunk-declares-1GiB", assemble(fh, r7, footer: true)))

        // 8. A STEP with 32 M image entries (64 MiB), 9. with 16 M chunk descriptors.
        var r8 = recs
        r8[step1].payload += emptyRepeated(field: 8, count: 32 * mega - 4096)
        out.append(("step-32M-images", assemble(fh, r8, footer: false)))
        var r9 = recs
        r9[step1].payload += emptyRepeated(field: 9, count: 16 * mega)
        out.append(("step-16M-descriptors", assemble(fh, r9, footer: true)))

        // 10. A FOOT with 32 M entries.
        let footer = ProtoBridge.packFooter(reader.index, totalRaw: 0, totalStored: 0, recovered: false)
            + emptyRepeated(field: 1, count: 32 * mega - 4096)
        out.append(("foot-32M-entries", assemble(fh, recs, footer: true, footerPayload: footer)))

        // 11. A HEAD with 32 M field names.
        var r11 = recs
        r11[0].payload += emptyRepeated(field: 4, count: 32 * mega - 4096)
        out.append(("head-32M-fields", assemble(fh, r11, footer: true)))

        // 12. NaN in a field a policy reads.
        out.append(("nan-in-win-sum", try tinyTrace(.standard, steps: 2, nanAt: (1, TraceField.winSum, 1))))
        return out.map { ("\($0.0).starkv", $0.1) }
    }
}
