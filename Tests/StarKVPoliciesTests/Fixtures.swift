import StarKVModel
import StarKVTrace
@testable import StarKVPolicies

/// Small in-memory traces for policy tests: 2 layers, 4 query heads, 2 KV heads (G = 2).
enum Fixture {
    static let windows = [1, 2, 3, 4, 5, 6, 7, 8]

    static func model(layers: Int = 2, heads: Int = 4, kvHeads: Int = 2) -> RecordedModel {
        RecordedModel(id: "test-tiny", numLayers: layers, numQueryHeads: heads, numKVHeads: kvHeads, headDim: 4,
                      hiddenSize: 8, vocabSize: 16, intermediateSize: 16, dtype: .f32)
    }

    static func header(_ m: RecordedModel = model(), fields: [String] = TraceField.fields(at: .standard)) -> TraceHeader {
        TraceHeader(model: m, recorder: RecorderInfo(name: "test", version: "0"), fidelity: .standard, fields: fields,
                    windowSizes: windows, agent: AgentLoopInfo(storedKVHeads: m.numKVHeads, screenWidth: 0, screenHeight: 0))
    }

    static func image(_ start: Int, _ end: Int, gridH: Int = 1, gridW: Int? = nil, age: Int = 0) -> ImageEntry {
        ImageEntry(spanStart: start, spanEnd: end, gridH: gridH, gridW: gridW ?? (end - start), frameAge: age)
    }

    /// A step with token types derived from the images (visual inside spans, instruction elsewhere).
    static func step(length l: Int, images: [ImageEntry] = [], reset: Bool = false, index: Int = 0, episode: String = "ep") -> StepRecord {
        var types = [TokenType](repeating: .instruction, count: l)
        for img in images { for j in img.spanStart..<img.spanEnd { types[j] = .visual } }
        return StepRecord(episodeID: episode, stepIndex: index, stepInEpisode: index, reset: reset, promptLength: l,
                          generatedTokens: 1, tokenTypes: types, images: images)
    }

    /// `win_sum` where every recorded window holds the same per-head rows (each H × L).
    static func winSum(_ rows: [[Float]], windows: Int = Fixture.windows.count) -> Tensor {
        let h = rows.count, l = rows[0].count
        var flat: [Float] = []
        for _ in 0..<windows { for r in rows { flat += r } }
        return Tensor(floats: flat, shape: [windows, h, l])
    }

    static func rows(_ rows: [[Float]]) -> Tensor {
        Tensor(floats: rows.flatMap { $0 }, shape: [rows.count, rows[0].count])
    }

    static func add(_ s: inout StepRecord, _ field: String, layer: Int, _ t: Tensor) {
        s.chunks.append(TensorChunk(field: field, layer: layer, tensor: t))
    }

    /// Adds the same `win_sum` rows to every layer.
    static func addWinSum(_ s: inout StepRecord, _ rows: [[Float]], layers: Int = 2) {
        for l in 0..<layers { add(&s, TraceField.winSum, layer: l, winSum(rows)) }
    }

    static func addHidNorm(_ s: inout StepRecord, _ norms: [Float], layers: Int = 2) {
        for l in 0..<layers { add(&s, TraceField.hidNorm, layer: l, Tensor(floats: norms, shape: [norms.count])) }
    }

    /// A random step with every standard field, for property tests.
    static func randomStep(seed: UInt64, length l: Int, images: [ImageEntry], m: RecordedModel = model(), reset: Bool = false, index: Int = 0) -> StepRecord {
        var rng = SplitMix64(seed: seed)
        var s = step(length: l, images: images, reset: reset, index: index)
        let h = m.numQueryHeads
        let v = images.reduce(0) { $0 + $1.length }
        let vPrev = images.dropLast().reduce(0) { $0 + $1.length }
        for layer in 0..<m.numLayers {
            var flat: [Float] = []
            for _ in windows { for _ in 0..<h { for _ in 0..<l { flat.append(rng.nextFloat()) } } }
            add(&s, TraceField.winSum, layer: layer, Tensor(floats: flat, shape: [windows.count, h, l]))
            add(&s, TraceField.hidNorm, layer: layer, Tensor(floats: (0..<v).map { _ in 1 + rng.nextFloat() }, shape: [v]))
            if images.count > 1 {
                add(&s, TraceField.guikvResid, layer: layer, Tensor(floats: (0..<(m.numKVHeads * vPrev)).map { _ in rng.nextFloat() }, shape: [m.numKVHeads, vPrev]))
            }
            for f in [TraceField.colsumAll, TraceField.colsumPostvis, TraceField.decodeAttnSum] {
                add(&s, f, layer: layer, Tensor(floats: (0..<(h * l)).map { _ in rng.nextFloat() }, shape: [h, l]))
            }
            add(&s, TraceField.countGt001, layer: layer, Tensor(int64: (0..<h).map { _ in Int64(1 + rng.next() % 50) }, shape: [h]))
            add(&s, TraceField.nValid, layer: layer, Tensor(int64: [100], shape: [1]))
        }
        return s
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny seeded generator for test data.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 24 random bits (values repeat rarely, so ties stay rare).
    mutating func nextFloat() -> Float { Float(next() >> 40) / Float(1 << 24) }
}

func input(_ s: StepRecord, _ budget: KVBudget, header: TraceHeader = Fixture.header()) -> PolicyStepInput {
    PolicyStepInput(header: header, step: s, budget: budget)
}
