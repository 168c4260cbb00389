import StarKVModel
import StarKVTrace

/// Checked, indexed access to one step's recorded fields for one policy: looks chunks up by
/// (field, layer), checks their shapes against the header geometry and the prompt length
/// (schemas/FORMAT.md "Field catalog"), and decodes only the rows a policy reads. Every failure
/// is a `PolicyError` naming the policy, episode, step, layer and field.
struct StepFields {
    let policy: String
    let header: TraceHeader
    let step: StepRecord
    let numLayers: Int
    let numHeads: Int
    let numKVHeads: Int
    let promptLength: Int
    private let index: [ChunkKey: Int]

    private struct ChunkKey: Hashable {
        var field: String
        var layer: Int
    }

    init(policy: String, input: PolicyStepInput) throws {
        self.policy = policy
        self.header = input.header
        self.step = input.step
        let m = input.header.model
        numLayers = m.numLayers
        numHeads = m.numQueryHeads
        numKVHeads = m.numKVHeads
        promptLength = input.step.promptLength
        var idx: [ChunkKey: Int] = [:]
        for (i, c) in input.step.chunks.enumerated() {
            let key = ChunkKey(field: c.field, layer: c.layer ?? -1)
            if idx[key] == nil { idx[key] = i }
        }
        index = idx
        try Self.checkStep(policy: policy, input: input)
    }

    /// Basic consistency of the step's layout (never trust the file).
    static func checkStep(policy: String, input: PolicyStepInput) throws {
        let s = input.step
        let m = input.header.model
        func bad(_ r: String) -> PolicyError { .invalidStep(policy: policy, episode: s.episodeID, step: s.stepIndex, reason: r) }
        guard m.numLayers > 0, m.numQueryHeads > 0, m.numKVHeads > 0, m.numQueryHeads % m.numKVHeads == 0 else {
            throw bad("header geometry has \(m.numLayers) layers, \(m.numQueryHeads) query heads, \(m.numKVHeads) KV heads; need positive counts with H divisible by H_kv")
        }
        guard s.promptLength > 0 else { throw bad("prompt length is \(s.promptLength); need at least 1 token") }
        guard s.promptLength <= Int(Int32.max) else { throw bad("prompt length \(s.promptLength) exceeds Int32 positions") }
        var prevEnd = 0
        for (i, img) in s.images.enumerated() {
            guard img.spanStart >= prevEnd, img.spanEnd >= img.spanStart, img.spanEnd <= s.promptLength else {
                throw bad("image \(i) span [\(img.spanStart), \(img.spanEnd)) is not ordered, non-overlapping and inside [0, \(s.promptLength))")
            }
            prevEnd = img.spanEnd
        }
    }

    private func chunk(_ field: String, layer: Int?) throws -> Tensor {
        guard let i = index[ChunkKey(field: field, layer: layer ?? -1)] else {
            throw PolicyError.missingChunk(policy: policy, field: field, layer: layer, episode: step.episodeID, step: step.stepIndex)
        }
        return step.chunks[i].tensor
    }

    private func checkShape(_ t: Tensor, _ field: String, _ layer: Int?, _ expected: [Int]) throws {
        guard t.shape == expected, t.bytes.count == expected.reduce(1, *) * t.dtype.byteWidth else {
            throw PolicyError.badShape(
                policy: policy, field: field, layer: layer, episode: step.episodeID, step: step.stepIndex,
                expected: expected, found: t.shape)
        }
    }

    private func checkFloat(_ t: Tensor, _ field: String, _ layer: Int?) throws {
        guard t.dtype.isFloatingPoint else {
            throw PolicyError.badValue(policy: policy, field: field, layer: layer, episode: step.episodeID, step: step.stepIndex, reason: "dtype \(t.dtype) is not floating point")
        }
    }

    /// Index of `window` among the recorded `win_sum` windows.
    func windowIndex(_ window: Int) throws -> Int {
        guard let k = header.windowSizes.firstIndex(of: window) else {
            throw PolicyError.windowNotRecorded(policy: policy, window: window, recorded: header.windowSizes, episode: step.episodeID, step: step.stepIndex)
        }
        return k
    }

    /// `win_sum[k(window), h, 0..<columns]` for every head h: H rows of `columns` values.
    func windowSums(layer: Int, window: Int, columns: Int) throws -> [[Float]] {
        let k = try windowIndex(window)
        let t = try chunk(TraceField.winSum, layer: layer)
        try checkFloat(t, TraceField.winSum, layer)
        try checkShape(t, TraceField.winSum, layer, [header.windowSizes.count, numHeads, promptLength])
        return (0..<numHeads).map { h in
            t.floats(from: (k * numHeads + h) * promptLength, count: min(columns, promptLength))
        }
    }

    /// A [H, L] per-head field (colsum_all, colsum_postvis, decode_attn_sum), first `columns` columns.
    func headRows(_ field: String, layer: Int, columns: Int) throws -> [[Float]] {
        let t = try chunk(field, layer: layer)
        try checkFloat(t, field, layer)
        try checkShape(t, field, layer, [numHeads, promptLength])
        return (0..<numHeads).map { h in t.floats(from: h * promptLength, count: min(columns, promptLength)) }
    }

    /// `hid_norm[V]` (all visual tokens of the step, span order).
    func hiddenNorms(layer: Int) throws -> [Float] {
        let t = try chunk(TraceField.hidNorm, layer: layer)
        try checkFloat(t, TraceField.hidNorm, layer)
        try checkShape(t, TraceField.hidNorm, layer, [step.visualTokenCount])
        return t.floats(from: 0, count: step.visualTokenCount)
    }

    /// `guikv_resid[Hkv, Vprev]`.
    func guikvResiduals(layer: Int) throws -> [[Float]] {
        let vPrev = step.images.dropLast().reduce(0) { $0 + $1.length }
        let t = try chunk(TraceField.guikvResid, layer: layer)
        try checkFloat(t, TraceField.guikvResid, layer)
        try checkShape(t, TraceField.guikvResid, layer, [numKVHeads, vPrev])
        return (0..<numKVHeads).map { g in t.floats(from: g * vPrev, count: vPrev) }
    }

    /// An integer field of `count` elements (count_gt_001 [H], n_valid [1]).
    func integers(_ field: String, layer: Int, count: Int) throws -> [Int64] {
        let t = try chunk(field, layer: layer)
        try checkShape(t, field, layer, [count])
        return t.int64s()
    }
}
