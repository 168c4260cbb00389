import CProtobufC
import CStarKVProto

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The descriptor of one tensor chunk, as the STEP record lists it (trace.proto ChunkDescriptor).
public struct ChunkDescriptor: Sendable, Hashable {
    public var field: String
    /// Decoder layer, or nil for a step-level field.
    public var layer: Int?
    public var dtype: TensorDType
    public var shape: [Int]
    public var filter: ChunkFilter
    public var codec: ChunkCodec
    public var rawBytes: UInt64
    public var storedBytes: UInt64
    public var crc32c: UInt32
}

/// One entry of the footer's step index (trace.proto StepIndexEntry).
public struct StepIndexEntry: Sendable, Hashable, Codable {
    /// File offset of the STEP record's frame.
    public var offset: UInt64
    public var stepIndex: Int
    public var episodeID: String
    public var promptLength: Int
    /// Bytes from `offset` to the end of the step's last chunk record.
    public var length: UInt64
}

/// A STEP record's decoded metadata (everything but the tensor data).
struct StepMeta {
    var record: StepRecord  // chunks empty
    var descriptors: [ChunkDescriptor]
}

/// Allocations for one protobuf-c message tree; freed together after packing.
private final class CArena {
    private var pointers: [UnsafeMutableRawPointer] = []

    func string(_ s: String) -> UnsafeMutablePointer<CChar> {
        let p = strdup(s)!
        pointers.append(UnsafeMutableRawPointer(p))
        return p
    }

    func array<T>(_ values: [T]) -> UnsafeMutablePointer<T>? {
        guard !values.isEmpty else { return nil }
        let raw = malloc(MemoryLayout<T>.stride * values.count)!
        pointers.append(raw)
        let p = raw.bindMemory(to: T.self, capacity: values.count)
        p.initialize(from: values, count: values.count)
        return p
    }

    func object<T>(_ value: T) -> UnsafeMutablePointer<T> {
        let raw = malloc(MemoryLayout<T>.stride)!
        pointers.append(raw)
        let p = raw.bindMemory(to: T.self, capacity: 1)
        p.initialize(to: value)
        return p
    }

    deinit { for p in pointers { free(p) } }
}

/// Packs and unpacks the protobuf messages of FORMAT.md through the generated protobuf-c code.
enum ProtoBridge {
    // MARK: enums

    static func cDType(_ d: TensorDType) -> Starkv__Trace__V1__DType {
        Starkv__Trace__V1__DType(rawValue: UInt32(d.rawValue))
    }

    static func dtype(_ raw: UInt32) -> TensorDType? { raw <= 255 ? TensorDType(rawValue: UInt8(raw)) : nil }

    private static func str(_ p: UnsafeMutablePointer<CChar>?) -> String { p.map { String(cString: $0) } ?? "" }

    /// Sorted map entries, so packed bytes do not depend on dictionary order.
    private static func sortedPairs(_ m: [String: String]) -> [(String, String)] {
        m.keys.sorted().map { ($0, m[$0]!) }
    }

    // MARK: header

    static func packHeader(_ h: TraceHeader) -> [UInt8] {
        let arena = CArena()
        var model = Starkv__Trace__V1__ModelGeometry()
        starkv__trace__v1__model_geometry__init(&model)
        model.model_id = arena.string(h.model.id)
        model.num_layers = UInt32(clamping: h.model.numLayers)
        model.num_query_heads = UInt32(clamping: h.model.numQueryHeads)
        model.num_kv_heads = UInt32(clamping: h.model.numKVHeads)
        model.head_dim = UInt32(clamping: h.model.headDim)
        model.hidden_size = UInt32(clamping: h.model.hiddenSize)
        model.vocab_size = UInt32(clamping: h.model.vocabSize)
        model.intermediate_size = UInt32(clamping: h.model.intermediateSize)
        model.dtype = cDType(h.model.dtype)

        var rec = Starkv__Trace__V1__RecorderInfo()
        starkv__trace__v1__recorder_info__init(&rec)
        rec.name = arena.string(h.recorder.name)
        rec.version = arena.string(h.recorder.version)
        rec.seed = h.recorder.seed
        rec.command_line = arena.string(h.recorder.commandLine)

        var agent = Starkv__Trace__V1__AgentLoop()
        starkv__trace__v1__agent_loop__init(&agent)
        agent.attn_implementation = arena.string(h.agent.attnImplementation)
        agent.vision_attn_implementation = arena.string(h.agent.visionAttnImplementation)
        agent.stored_kv_heads = UInt32(clamping: h.agent.storedKVHeads)
        agent.screen_width = UInt32(clamping: h.agent.screenWidth)
        agent.screen_height = UInt32(clamping: h.agent.screenHeight)
        agent.min_pixels = UInt64(clamping: h.agent.minPixels)
        agent.max_pixels = UInt64(clamping: h.agent.maxPixels)
        agent.image_slots = UInt32(clamping: h.agent.imageSlots)
        agent.max_new_tokens = UInt32(clamping: h.agent.maxNewTokens)
        agent.benchmark = arena.string(h.agent.benchmark)

        var msg = Starkv__Trace__V1__TraceHeader()
        starkv__trace__v1__trace_header__init(&msg)
        msg.model = arena.object(model)
        msg.recorder = arena.object(rec)
        msg.agent = arena.object(agent)
        msg.fidelity = Starkv__Trace__V1__Fidelity(rawValue: UInt32(h.fidelity.rawValue))
        let fieldPtrs: [UnsafeMutablePointer<CChar>?] = h.fields.map { arena.string($0) }
        msg.n_fields = fieldPtrs.count
        msg.fields = arena.array(fieldPtrs)
        let windows = h.windowSizes.map { UInt32(clamping: $0) }
        msg.n_window_sizes = windows.count
        msg.window_sizes = arena.array(windows)
        let entries: [UnsafeMutablePointer<Starkv__Trace__V1__TraceHeader__MetadataEntry>?] =
            sortedPairs(h.metadata).map { k, v in
                var e = Starkv__Trace__V1__TraceHeader__MetadataEntry()
                starkv__trace__v1__trace_header__metadata_entry__init(&e)
                e.key = arena.string(k)
                e.value = arena.string(v)
                return arena.object(e)
            }
        msg.n_metadata = entries.count
        msg.metadata = arena.array(entries)
        msg.win_rows_max = UInt32(clamping: h.winRowsMax)
        if let numerics = h.numerics, !numerics.isEmpty { msg.numerics = arena.string(numerics) }

        let size = starkv__trace__v1__trace_header__get_packed_size(&msg)
        var out = [UInt8](repeating: 0, count: size)
        _ = out.withUnsafeMutableBufferPointer { starkv__trace__v1__trace_header__pack(&msg, $0.baseAddress) }
        return out
    }

    static func unpackHeader(_ bytes: [UInt8]) -> TraceHeader? {
        guard let m = bytes.withUnsafeBufferPointer({ starkv__trace__v1__trace_header__unpack(nil, $0.count, $0.baseAddress) })
        else { return nil }
        defer { starkv__trace__v1__trace_header__free_unpacked(m, nil) }
        let h = m.pointee
        guard let model = h.model?.pointee else { return nil }
        let recorded = RecordedModel(
            id: str(model.model_id), numLayers: Int(model.num_layers), numQueryHeads: Int(model.num_query_heads),
            numKVHeads: Int(model.num_kv_heads), headDim: Int(model.head_dim), hiddenSize: Int(model.hidden_size),
            vocabSize: Int(model.vocab_size), intermediateSize: Int(model.intermediate_size),
            dtype: dtype(model.dtype.rawValue) ?? .bf16)
        let rec = h.recorder?.pointee
        let recorder = RecorderInfo(
            name: str(rec?.name), version: str(rec?.version), seed: rec?.seed ?? 0,
            commandLine: str(rec?.command_line))
        let a = h.agent?.pointee
        let agent = AgentLoopInfo(
            attnImplementation: str(a?.attn_implementation), visionAttnImplementation: str(a?.vision_attn_implementation),
            storedKVHeads: Int(a?.stored_kv_heads ?? 0), screenWidth: Int(a?.screen_width ?? 0),
            screenHeight: Int(a?.screen_height ?? 0), minPixels: Int(clamping: a?.min_pixels ?? 0),
            maxPixels: Int(clamping: a?.max_pixels ?? 0), imageSlots: Int(a?.image_slots ?? 0),
            maxNewTokens: Int(a?.max_new_tokens ?? 0), benchmark: str(a?.benchmark))
        var fields: [String] = []
        for i in 0..<h.n_fields { fields.append(str(h.fields[i])) }
        var windows: [Int] = []
        for i in 0..<h.n_window_sizes { windows.append(Int(h.window_sizes[i])) }
        var metadata: [String: String] = [:]
        for i in 0..<h.n_metadata {
            if let e = h.metadata[i]?.pointee { metadata[str(e.key)] = str(e.value) }
        }
        let fidelity = Fidelity(rawValue: Int(h.fidelity.rawValue)) ?? .core
        return TraceHeader(
            model: recorded, recorder: recorder, fidelity: fidelity, fields: fields, windowSizes: windows,
            agent: agent, metadata: metadata, winRowsMax: Int(h.win_rows_max),
            numerics: { let n = str(h.numerics); return n.isEmpty ? nil : n }())
    }

    // MARK: step

    static func packStep(_ s: StepRecord, descriptors: [ChunkDescriptor]) -> [UInt8] {
        let arena = CArena()
        var msg = Starkv__Trace__V1__StepRecord()
        starkv__trace__v1__step_record__init(&msg)
        msg.episode_id = arena.string(s.episodeID)
        msg.step_index = UInt32(clamping: s.stepIndex)
        msg.step_in_episode = UInt32(clamping: s.stepInEpisode)
        msg.reset = s.reset ? 1 : 0
        msg.prompt_length = UInt32(clamping: s.promptLength)
        msg.generated_tokens = UInt32(clamping: s.generatedTokens)
        let types = s.tokenTypes.map { $0.rawValue }
        msg.token_types = ProtobufCBinaryData(len: types.count, data: arena.array(types))
        msg.n_token_ids = s.tokenIDs.count
        msg.token_ids = arena.array(s.tokenIDs)
        let images: [UnsafeMutablePointer<Starkv__Trace__V1__ImageEntry>?] = s.images.map { img in
            var e = Starkv__Trace__V1__ImageEntry()
            starkv__trace__v1__image_entry__init(&e)
            e.span_start = UInt32(clamping: img.spanStart)
            e.span_end = UInt32(clamping: img.spanEnd)
            e.grid_t = UInt32(clamping: img.gridT)
            e.grid_h = UInt32(clamping: img.gridH)
            e.grid_w = UInt32(clamping: img.gridW)
            e.original_width = UInt32(clamping: img.originalWidth)
            e.original_height = UInt32(clamping: img.originalHeight)
            e.resized_width = UInt32(clamping: img.resizedWidth)
            e.resized_height = UInt32(clamping: img.resizedHeight)
            e.frame_age = UInt32(clamping: img.frameAge)
            return arena.object(e)
        }
        msg.n_images = images.count
        msg.images = arena.array(images)
        let chunks: [UnsafeMutablePointer<Starkv__Trace__V1__ChunkDescriptor>?] = descriptors.map { d in
            var c = Starkv__Trace__V1__ChunkDescriptor()
            starkv__trace__v1__chunk_descriptor__init(&c)
            c.field = arena.string(d.field)
            c.layer = Int32(clamping: d.layer ?? -1)
            c.dtype = cDType(d.dtype)
            let shape = d.shape.map { UInt64($0) }
            c.n_shape = shape.count
            c.shape = arena.array(shape)
            c.filter = Starkv__Trace__V1__Filter(rawValue: UInt32(d.filter.rawValue))
            c.codec = Starkv__Trace__V1__Codec(rawValue: UInt32(d.codec.rawValue))
            c.raw_bytes = d.rawBytes
            c.stored_bytes = d.storedBytes
            c.crc32c = d.crc32c
            return arena.object(c)
        }
        msg.n_chunks = chunks.count
        msg.chunks = arena.array(chunks)
        let entries: [UnsafeMutablePointer<Starkv__Trace__V1__StepRecord__MetadataEntry>?] =
            sortedPairs(s.metadata).map { k, v in
                var e = Starkv__Trace__V1__StepRecord__MetadataEntry()
                starkv__trace__v1__step_record__metadata_entry__init(&e)
                e.key = arena.string(k)
                e.value = arena.string(v)
                return arena.object(e)
            }
        msg.n_metadata = entries.count
        msg.metadata = arena.array(entries)
        let size = starkv__trace__v1__step_record__get_packed_size(&msg)
        var out = [UInt8](repeating: 0, count: size)
        _ = out.withUnsafeMutableBufferPointer { starkv__trace__v1__step_record__pack(&msg, $0.baseAddress) }
        return out
    }

    /// Decodes a STEP payload; throws `malformed` with a reason on an unknown dtype/codec/filter
    /// or an undecodable message.
    static func unpackStep(_ bytes: [UInt8], at location: TraceLocation) throws -> StepMeta {
        guard let m = bytes.withUnsafeBufferPointer({ starkv__trace__v1__step_record__unpack(nil, $0.count, $0.baseAddress) })
        else { throw TraceError.malformed(location, "STEP payload is not a valid StepRecord protobuf") }
        defer { starkv__trace__v1__step_record__free_unpacked(m, nil) }
        let s = m.pointee
        var types: [TokenType] = []
        types.reserveCapacity(s.token_types.len)
        for i in 0..<s.token_types.len {
            let raw = s.token_types.data[i]
            guard let t = TokenType(rawValue: raw) else {
                throw TraceError.malformed(location, "token \(i) has unknown token type \(raw)")
            }
            types.append(t)
        }
        var ids: [Int32] = []
        ids.reserveCapacity(s.n_token_ids)
        for i in 0..<s.n_token_ids { ids.append(s.token_ids[i]) }
        var images: [ImageEntry] = []
        for i in 0..<s.n_images {
            guard let e = s.images[i]?.pointee else { continue }
            images.append(
                ImageEntry(
                    spanStart: Int(e.span_start), spanEnd: Int(e.span_end), gridT: Int(e.grid_t), gridH: Int(e.grid_h),
                    gridW: Int(e.grid_w), originalWidth: Int(e.original_width), originalHeight: Int(e.original_height),
                    resizedWidth: Int(e.resized_width), resizedHeight: Int(e.resized_height), frameAge: Int(e.frame_age)))
        }
        var descriptors: [ChunkDescriptor] = []
        for i in 0..<s.n_chunks {
            guard let c = s.chunks[i]?.pointee else { continue }
            let field = str(c.field)
            let layer: Int? = c.layer < 0 ? nil : Int(c.layer)
            var loc = location
            loc.field = field
            loc.layer = layer
            guard let dt = dtype(c.dtype.rawValue) else {
                throw TraceError.malformed(loc, "unknown dtype \(c.dtype.rawValue)")
            }
            guard c.filter.rawValue <= 255, let filter = ChunkFilter(rawValue: UInt8(c.filter.rawValue)) else {
                throw TraceError.malformed(loc, "unknown filter \(c.filter.rawValue)")
            }
            guard c.codec.rawValue <= 255, let codec = ChunkCodec(rawValue: UInt8(c.codec.rawValue)) else {
                throw TraceError.malformed(loc, "unknown codec \(c.codec.rawValue)")
            }
            guard c.n_shape <= 8 else { throw TraceError.malformed(loc, "tensor of rank \(c.n_shape) (at most 8)") }
            var shape: [Int] = []
            for k in 0..<c.n_shape {
                guard c.shape[k] <= UInt64(Int32.max) else {
                    throw TraceError.limitExceeded(loc, "dimension \(k) is \(c.shape[k])")
                }
                shape.append(Int(c.shape[k]))
            }
            descriptors.append(
                ChunkDescriptor(
                    field: field, layer: layer, dtype: dt, shape: shape, filter: filter, codec: codec,
                    rawBytes: c.raw_bytes, storedBytes: c.stored_bytes, crc32c: c.crc32c))
        }
        var metadata: [String: String] = [:]
        for i in 0..<s.n_metadata {
            if let e = s.metadata[i]?.pointee { metadata[str(e.key)] = str(e.value) }
        }
        let record = StepRecord(
            episodeID: str(s.episode_id), stepIndex: Int(s.step_index), stepInEpisode: Int(s.step_in_episode),
            reset: s.reset != 0, promptLength: Int(s.prompt_length), generatedTokens: Int(s.generated_tokens),
            tokenTypes: types, tokenIDs: ids, images: images, chunks: [], metadata: metadata)
        return StepMeta(record: record, descriptors: descriptors)
    }

    // MARK: footer

    static func packFooter(_ entries: [StepIndexEntry], totalRaw: UInt64, totalStored: UInt64, recovered: Bool) -> [UInt8] {
        let arena = CArena()
        var msg = Starkv__Trace__V1__TraceFooter()
        starkv__trace__v1__trace_footer__init(&msg)
        let ptrs: [UnsafeMutablePointer<Starkv__Trace__V1__StepIndexEntry>?] = entries.map { e in
            var c = Starkv__Trace__V1__StepIndexEntry()
            starkv__trace__v1__step_index_entry__init(&c)
            c.offset = e.offset
            c.step_index = UInt32(clamping: e.stepIndex)
            c.episode_id = arena.string(e.episodeID)
            c.prompt_length = UInt32(clamping: e.promptLength)
            c.length = e.length
            return arena.object(c)
        }
        msg.n_steps = ptrs.count
        msg.steps = arena.array(ptrs)
        msg.total_raw_bytes = totalRaw
        msg.total_stored_bytes = totalStored
        msg.recovered = recovered ? 1 : 0
        let size = starkv__trace__v1__trace_footer__get_packed_size(&msg)
        var out = [UInt8](repeating: 0, count: size)
        _ = out.withUnsafeMutableBufferPointer { starkv__trace__v1__trace_footer__pack(&msg, $0.baseAddress) }
        return out
    }

    static func unpackFooter(_ bytes: [UInt8]) -> (entries: [StepIndexEntry], totalRaw: UInt64, totalStored: UInt64, recovered: Bool)? {
        guard let m = bytes.withUnsafeBufferPointer({ starkv__trace__v1__trace_footer__unpack(nil, $0.count, $0.baseAddress) })
        else { return nil }
        defer { starkv__trace__v1__trace_footer__free_unpacked(m, nil) }
        let f = m.pointee
        var entries: [StepIndexEntry] = []
        for i in 0..<f.n_steps {
            guard let e = f.steps[i]?.pointee else { continue }
            entries.append(
                StepIndexEntry(
                    offset: e.offset, stepIndex: Int(e.step_index), episodeID: str(e.episode_id),
                    promptLength: Int(e.prompt_length), length: e.length))
        }
        return (entries, f.total_raw_bytes, f.total_stored_bytes, f.recovered != 0)
    }
}
