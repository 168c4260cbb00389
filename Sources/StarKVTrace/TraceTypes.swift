import CStarKVSupport
import StarKVModel

/// The class of one prompt token (`schemas/trace.proto` TokenType; docs/algorithms.md §10.2).
public enum TokenType: UInt8, Sendable, CaseIterable, Codable, CustomStringConvertible {
    case system = 0
    case template = 1
    case visionMarker = 2
    case visual = 3
    case instruction = 4
    case history = 5
    case generationPrompt = 6

    public var description: String {
        switch self {
        case .system: return "system"
        case .template: return "template"
        case .visionMarker: return "vision_marker"
        case .visual: return "visual"
        case .instruction: return "instruction"
        case .history: return "history"
        case .generationPrompt: return "generation_prompt"
        }
    }
}

/// Element type of a stored tensor (`schemas/trace.proto` DType).
public enum TensorDType: UInt8, Sendable, CaseIterable, Codable, CustomStringConvertible {
    case f16 = 1, bf16 = 2, f32 = 3, f64 = 4, i32 = 5, i64 = 6, u8 = 7

    /// Bytes per element.
    public var byteWidth: Int {
        switch self {
        case .f16, .bf16: return 2
        case .f32, .i32: return 4
        case .f64, .i64: return 8
        case .u8: return 1
        }
    }

    /// Whether values are floating point.
    public var isFloatingPoint: Bool { self == .f16 || self == .bf16 || self == .f32 || self == .f64 }

    /// The float-format code the C kernels of CStarKVSupport take (`starkv_first_nonfinite`,
    /// `starkv_kept_sums`): 2 binary16, 3 bfloat16, 4 binary32, 8 binary64; 0 for integers.
    public var floatKernelCode: Int32 {
        switch self {
        case .f16: return 2
        case .bf16: return 3
        case .f32: return 4
        case .f64: return 8
        case .i32, .i64, .u8: return 0
        }
    }

    public var description: String {
        switch self {
        case .f16: return "f16"
        case .bf16: return "bf16"
        case .f32: return "f32"
        case .f64: return "f64"
        case .i32: return "i32"
        case .i64: return "i64"
        case .u8: return "u8"
        }
    }
}

/// How many fields a recorder wrote; each level includes the lower ones (FORMAT.md).
public enum Fidelity: Int, Sendable, CaseIterable, Codable, Comparable, CustomStringConvertible {
    case core = 1, standard = 2, full = 3

    public static func < (a: Fidelity, b: Fidelity) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .core: return "core"
        case .standard: return "standard"
        case .full: return "full"
        }
    }

    /// Parses `core`, `standard` or `full`.
    public init?(name: String) {
        guard let f = Fidelity.allCases.first(where: { $0.description == name.lowercased() }) else { return nil }
        self = f
    }
}

/// The trace field catalog (FORMAT.md "Field catalog"; docs/algorithms.md §10.2).
public enum TraceField {
    public static let winSum = "win_sum"
    public static let hidNorm = "hid_norm"
    public static let guikvResid = "guikv_resid"
    public static let colsumAll = "colsum_all"
    public static let colsumPostvis = "colsum_postvis"
    public static let countGt001 = "count_gt_001"
    public static let nValid = "n_valid"
    public static let decodeAttnSum = "decode_attn_sum"
    public static let winRows = "win_rows"
    /// Prefix of golden kept-set fields: `golden_kept.<policy>.<budget>`.
    public static let goldenKeptPrefix = "golden_kept."

    /// The lowest fidelity level that records `field` (nil for an unknown field).
    public static func fidelity(of field: String) -> Fidelity? {
        switch field {
        case winSum, hidNorm, guikvResid: return .core
        case colsumAll, colsumPostvis, countGt001, nValid, decodeAttnSum: return .standard
        case winRows: return .full
        default: return field.hasPrefix(goldenKeptPrefix) ? .full : nil
        }
    }

    /// Every named field recorded at `fidelity` (golden sets excluded: they are per policy).
    public static func fields(at fidelity: Fidelity) -> [String] {
        [winSum, hidNorm, guikvResid, colsumAll, colsumPostvis, countGt001, nValid, decodeAttnSum, winRows]
            .filter { (self.fidelity(of: $0) ?? .full) <= fidelity }
    }
}

/// The model a trace was recorded from, as the trace header stores it.
public struct RecordedModel: Sendable, Hashable, Codable {
    public var id: String
    public var numLayers: Int
    public var numQueryHeads: Int
    public var numKVHeads: Int
    public var headDim: Int
    public var hiddenSize: Int
    public var vocabSize: Int
    public var intermediateSize: Int
    /// Activation / KV dtype of the recorded run.
    public var dtype: TensorDType

    public init(
        id: String, numLayers: Int, numQueryHeads: Int, numKVHeads: Int, headDim: Int,
        hiddenSize: Int, vocabSize: Int, intermediateSize: Int, dtype: TensorDType = .bf16
    ) {
        self.id = id
        self.numLayers = numLayers
        self.numQueryHeads = numQueryHeads
        self.numKVHeads = numKVHeads
        self.headDim = headDim
        self.hiddenSize = hiddenSize
        self.vocabSize = vocabSize
        self.intermediateSize = intermediateSize
        self.dtype = dtype
    }

    /// The header entry for a known geometry.
    public init(_ g: ModelGeometry, dtype: TensorDType = .bf16) {
        self.init(
            id: g.id, numLayers: g.numLayers, numQueryHeads: g.numQueryHeads, numKVHeads: g.numKVHeads,
            headDim: g.headDim, hiddenSize: g.hiddenSize, vocabSize: g.vocabSize,
            intermediateSize: g.intermediateSize, dtype: dtype)
    }

    /// The matching preset when the id names one, else a geometry built from these fields
    /// (with the Qwen2.5-VL-7B vision tower).
    public var geometry: ModelGeometry {
        if let preset = ModelPresets.named(id), preset.numLayers == numLayers,
            preset.numQueryHeads == numQueryHeads, preset.numKVHeads == numKVHeads
        {
            return preset
        }
        return ModelGeometry(
            id: id, displayName: id, numLayers: numLayers, hiddenSize: hiddenSize,
            intermediateSize: intermediateSize, numQueryHeads: numQueryHeads, numKVHeads: numKVHeads,
            headDim: headDim, vocabSize: vocabSize, tiedEmbeddings: false,
            vision: ModelPresets.qwen25VisionSmall, source: "trace header")
    }
}

/// Who wrote a trace.
public struct RecorderInfo: Sendable, Hashable, Codable {
    public var name: String
    public var version: String
    public var seed: UInt64
    public var commandLine: String

    public init(name: String, version: String, seed: UInt64 = 0, commandLine: String = "") {
        self.name = name
        self.version = version
        self.seed = seed
        self.commandLine = commandLine
    }
}

/// Facts about the agent loop that produced a trace (`schemas/trace.proto` AgentLoop).
public struct AgentLoopInfo: Sendable, Hashable, Codable {
    public var attnImplementation: String
    public var visionAttnImplementation: String
    public var storedKVHeads: Int
    public var screenWidth: Int
    public var screenHeight: Int
    public var minPixels: Int
    public var maxPixels: Int
    public var imageSlots: Int
    public var maxNewTokens: Int
    public var benchmark: String

    public init(
        attnImplementation: String = "flash_attention_2", visionAttnImplementation: String = "flash_attention_2",
        storedKVHeads: Int, screenWidth: Int, screenHeight: Int, minPixels: Int = 78_400,
        maxPixels: Int = 12_845_056, imageSlots: Int = 5, maxNewTokens: Int = 1000, benchmark: String = ""
    ) {
        self.attnImplementation = attnImplementation
        self.visionAttnImplementation = visionAttnImplementation
        self.storedKVHeads = storedKVHeads
        self.screenWidth = screenWidth
        self.screenHeight = screenHeight
        self.minPixels = minPixels
        self.maxPixels = maxPixels
        self.imageSlots = imageSlots
        self.maxNewTokens = maxNewTokens
        self.benchmark = benchmark
    }
}

/// The first record of a trace (`schemas/trace.proto` TraceHeader).
public struct TraceHeader: Sendable, Hashable, Codable {
    public var model: RecordedModel
    public var recorder: RecorderInfo
    public var fidelity: Fidelity
    /// Every field name that steps may carry.
    public var fields: [String]
    /// Window sizes of `win_sum`'s first axis, ascending (e.g. [8, 16, 32, 64]).
    public var windowSizes: [Int]
    public var agent: AgentLoopInfo
    public var metadata: [String: String]
    /// Rows stored in `win_rows` (0 when absent).
    public var winRowsMax: Int
    /// Dtype flow the recorder followed (`schemas/trace.proto` TraceHeader.numerics): nil or
    /// "fp32", or "bf16-reference" (docs/algorithms.md §1.5).
    public var numerics: String?

    public init(
        model: RecordedModel, recorder: RecorderInfo, fidelity: Fidelity, fields: [String],
        windowSizes: [Int], agent: AgentLoopInfo, metadata: [String: String] = [:], winRowsMax: Int = 0,
        numerics: String? = nil
    ) {
        self.model = model
        self.recorder = recorder
        self.fidelity = fidelity
        self.fields = fields
        self.windowSizes = windowSizes
        self.agent = agent
        self.metadata = metadata
        self.winRowsMax = winRowsMax
        self.numerics = numerics
    }

    /// Whether steps may carry `field`.
    public func has(_ field: String) -> Bool { fields.contains(field) }
}

/// One screenshot in a step's prompt (`schemas/trace.proto` ImageEntry).
public struct ImageEntry: Sendable, Hashable, Codable {
    /// First `<|image_pad|>` position.
    public var spanStart: Int
    /// One past the last `<|image_pad|>` position.
    public var spanEnd: Int
    public var gridT: Int
    public var gridH: Int
    public var gridW: Int
    public var originalWidth: Int
    public var originalHeight: Int
    public var resizedWidth: Int
    public var resizedHeight: Int
    /// 0 = current screenshot, 1 = previous, ...
    public var frameAge: Int

    public init(
        spanStart: Int, spanEnd: Int, gridT: Int = 1, gridH: Int, gridW: Int, originalWidth: Int = 0,
        originalHeight: Int = 0, resizedWidth: Int = 0, resizedHeight: Int = 0, frameAge: Int
    ) {
        self.spanStart = spanStart
        self.spanEnd = spanEnd
        self.gridT = gridT
        self.gridH = gridH
        self.gridW = gridW
        self.originalWidth = originalWidth
        self.originalHeight = originalHeight
        self.resizedWidth = resizedWidth
        self.resizedHeight = resizedHeight
        self.frameAge = frameAge
    }

    /// Visual tokens in the span.
    public var length: Int { spanEnd - spanStart }
}

/// A dense little-endian tensor as stored in a chunk.
public struct Tensor: Sendable, Equatable {
    public var dtype: TensorDType
    public var shape: [Int]
    /// Raw little-endian element bytes, row-major.
    public var bytes: [UInt8]

    /// Wraps raw bytes; the caller guarantees `bytes.count == product(shape) * byteWidth`.
    public init(dtype: TensorDType, shape: [Int], bytes: [UInt8]) {
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
    }

    /// Elements (product of the shape).
    public var elementCount: Int { shape.reduce(1, *) }

    /// Stores `values` as f32 (or as f16/bf16 when `dtype` says so, rounding to nearest even).
    public init(floats values: [Float], shape: [Int], dtype: TensorDType = .f32) {
        precondition(dtype.isFloatingPoint, "Tensor(floats:) needs a floating-point dtype")
        self.dtype = dtype
        self.shape = shape
        var out = [UInt8]()
        out.reserveCapacity(values.count * dtype.byteWidth)
        for v in values {
            switch dtype {
            case .f32: Tensor.append(v.bitPattern, to: &out)
            case .f16: Tensor.append(Float16(v).bitPattern, to: &out)
            case .bf16: Tensor.append(Tensor.bfloat16Bits(v), to: &out)
            case .f64: Tensor.append(Double(v).bitPattern, to: &out)
            default: break
            }
        }
        self.bytes = out
    }

    /// Stores `values` as i32.
    public init(int32 values: [Int32], shape: [Int]) {
        self.dtype = .i32
        self.shape = shape
        var out = [UInt8]()
        out.reserveCapacity(values.count * 4)
        for v in values { Tensor.append(UInt32(bitPattern: v), to: &out) }
        self.bytes = out
    }

    /// Stores `values` as i64.
    public init(int64 values: [Int64], shape: [Int]) {
        self.dtype = .i64
        self.shape = shape
        var out = [UInt8]()
        out.reserveCapacity(values.count * 8)
        for v in values { Tensor.append(UInt64(bitPattern: v), to: &out) }
        self.bytes = out
    }

    /// The values as Float (f16/bf16/f32/f64 widen or narrow exactly as IEEE conversion does;
    /// integers convert). Deterministic.
    public func floats() -> [Float] { floats(from: 0, count: bytes.count / dtype.byteWidth) }

    /// `count` values from element `start` as Float, converted as `floats()`; the range is
    /// clipped to the tensor's elements.
    public func floats(from start: Int, count: Int) -> [Float] {
        let first = max(0, start)
        let n = max(0, min(count, bytes.count / dtype.byteWidth - first))
        #if _endian(little)
        let kind = dtype.floatKernelCode
        if kind >= 2 && kind <= 4 {
            // Float storage: one bulk widening (F16C for binary16 where the CPU has it).
            return [Float](unsafeUninitializedCapacity: n) { out, initialized in
                bytes.withUnsafeBufferPointer { raw in
                    HalfPrecision.table.withUnsafeBufferPointer { table in
                        starkv_widen_to_float(raw.baseAddress.map { $0 + first * dtype.byteWidth }, kind, table.baseAddress, Int64(n), out.baseAddress)
                    }
                }
                initialized = n
            }
        }
        #endif
        return bytes.withUnsafeBytes { raw -> [Float] in
            [Float](unsafeUninitializedCapacity: n) { out, initialized in
                func load<T: FixedWidthInteger>(_ i: Int, _: T.Type) -> T {
                    T(littleEndian: raw.loadUnaligned(fromByteOffset: (first + i) * MemoryLayout<T>.size, as: T.self))
                }
                switch dtype {
                case .f32: for i in 0..<n { out[i] = Float(bitPattern: load(i, UInt32.self)) }
                case .f16:
                    HalfPrecision.table.withUnsafeBufferPointer { table in
                        for i in 0..<n { out[i] = table[Int(load(i, UInt16.self))] }
                    }
                case .bf16: for i in 0..<n { out[i] = Float(bitPattern: UInt32(load(i, UInt16.self)) << 16) }
                case .f64: for i in 0..<n { out[i] = Float(Double(bitPattern: load(i, UInt64.self))) }
                case .i32: for i in 0..<n { out[i] = Float(Int32(bitPattern: load(i, UInt32.self))) }
                case .i64: for i in 0..<n { out[i] = Float(Int64(bitPattern: load(i, UInt64.self))) }
                case .u8: for i in 0..<n { out[i] = Float(load(i, UInt8.self)) }
                }
                initialized = n
            }
        }
    }

    /// The values as Int64 (integer dtypes; floating values truncate toward zero).
    public func int64s() -> [Int64] {
        let n = bytes.count / dtype.byteWidth
        return bytes.withUnsafeBytes { raw -> [Int64] in
            switch dtype {
            case .i64:
                return (0..<n).map { Int64(bitPattern: raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self).littleEndian) }
            case .i32:
                return (0..<n).map { Int64(Int32(bitPattern: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self).littleEndian)) }
            case .u8:
                return raw.map { Int64($0) }
            default:
                return floats().map { Int64($0) }
            }
        }
    }

    /// bfloat16 bits of `v`, rounding to nearest even (NaN stays NaN).
    public static func bfloat16Bits(_ v: Float) -> UInt16 {
        let bits = v.bitPattern
        if v.isNaN { return UInt16(truncatingIfNeeded: (bits >> 16) | 0x40) }
        let rounding = UInt32(0x7FFF) + ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
    }

    @inline(__always)
    static func append<T: FixedWidthInteger>(_ v: T, to out: inout [UInt8]) {
        var le = v.littleEndian
        withUnsafeBytes(of: &le) { out.append(contentsOf: $0) }
    }
}

/// One tensor of a step: a catalog field at a layer (nil = step-level).
public struct TensorChunk: Sendable, Equatable {
    public var field: String
    public var layer: Int?
    public var tensor: Tensor

    public init(field: String, layer: Int?, tensor: Tensor) {
        self.field = field
        self.layer = layer
        self.tensor = tensor
    }
}

/// One agent step: the prompt's token layout and the recorded per-layer fields
/// (`schemas/trace.proto` StepRecord).
public struct StepRecord: Sendable, Equatable {
    public var episodeID: String
    /// 0-based index within the trace.
    public var stepIndex: Int
    /// 0-based index within the episode.
    public var stepInEpisode: Int
    /// Policy state resets before this step (new episode or sample).
    public var reset: Bool
    /// Prompt length L.
    public var promptLength: Int
    /// Tokens generated by the recorded (full-cache) run.
    public var generatedTokens: Int
    /// One per prompt token.
    public var tokenTypes: [TokenType]
    /// Token ids (empty when not recorded).
    public var tokenIDs: [Int32]
    /// Screenshots in prompt order; the last is the current one.
    public var images: [ImageEntry]
    public var chunks: [TensorChunk]
    public var metadata: [String: String]

    public init(
        episodeID: String, stepIndex: Int, stepInEpisode: Int, reset: Bool, promptLength: Int,
        generatedTokens: Int, tokenTypes: [TokenType], tokenIDs: [Int32] = [], images: [ImageEntry],
        chunks: [TensorChunk] = [], metadata: [String: String] = [:]
    ) {
        self.episodeID = episodeID
        self.stepIndex = stepIndex
        self.stepInEpisode = stepInEpisode
        self.reset = reset
        self.promptLength = promptLength
        self.generatedTokens = generatedTokens
        self.tokenTypes = tokenTypes
        self.tokenIDs = tokenIDs
        self.images = images
        self.chunks = chunks
        self.metadata = metadata
    }

    /// The chunk of `field` at `layer` (nil = step-level), if recorded.
    public func chunk(_ field: String, layer: Int?) -> TensorChunk? {
        chunks.first { $0.field == field && $0.layer == layer }
    }

    /// Visual tokens of all screenshots.
    public var visualTokenCount: Int { images.reduce(0) { $0 + $1.length } }
}

/// IEEE binary16 → binary32 conversion through a table of all 65,536 bit patterns (exact, the
/// same values as `Float(Float16(bitPattern:))`). On x86 without F16C the Swift conversion is a
/// libgcc call per value; the f16 `win_sum` fields make this the hot path of a replay.
public enum HalfPrecision {
    /// `table[Int(bits)]` is the Float value of the binary16 bit pattern `bits`.
    public static let table: [Float] = (0...Int(UInt16.max)).map { Float(Float16(bitPattern: UInt16($0))) }

    /// The Float value of a binary16 bit pattern.
    @inline(__always) public static func float(_ bits: UInt16) -> Float { table[Int(bits)] }
}
