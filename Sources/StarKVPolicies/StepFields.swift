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
    let numerics: ReplayNumerics
    let notes: PolicyNotes?
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
        numerics = input.numerics
        notes = input.notes
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

    /// Window sums of the last `window` query rows, `columns` columns per head, when the trace
    /// holds them exactly: the recorded `win_sum` row of that window, or the sum of the last
    /// `window` rows of `win_rows` (fp32, in row order) when `window ≤ W`. nil otherwise. In
    /// bf16-reference numerics the sums are rounded to bf16, as the reference's `.sum()` on a
    /// bf16 tensor returns them (docs/algorithms.md §1.4 step 3).
    func exactWindowSums(layer: Int, window: Int, columns: Int) throws -> [[Float]]? {
        let n = min(columns, promptLength)
        var rows: [[Float]]
        // A window of ≥ L rows sums every row, so any recorded window ≥ L stands for it exactly.
        let stored = header.windowSizes.firstIndex(of: window)
            ?? (window >= promptLength ? header.windowSizes.firstIndex { $0 >= promptLength } : nil)
        if let k = stored, index[ChunkKey(field: TraceField.winSum, layer: layer)] != nil {
            let t = try chunk(TraceField.winSum, layer: layer)
            try checkFloat(t, TraceField.winSum, layer)
            try checkShape(t, TraceField.winSum, layer, [header.windowSizes.count, numHeads, promptLength])
            rows = (0..<numHeads).map { h in t.floats(from: (k * numHeads + h) * promptLength, count: n) }
        } else if window > 0, header.winRowsMax >= window, index[ChunkKey(field: TraceField.winRows, layer: layer)] != nil {
            let w = header.winRowsMax
            let t = try chunk(TraceField.winRows, layer: layer)
            try checkFloat(t, TraceField.winRows, layer)
            try checkShape(t, TraceField.winRows, layer, [numHeads, w, promptLength])
            rows = (0..<numHeads).map { h in
                var acc = [Float](repeating: 0, count: n)
                for r in (w - window)..<w {
                    let row = t.floats(from: (h * w + r) * promptLength, count: n)
                    for j in 0..<n { acc[j] += row[j] }
                }
                return acc
            }
        } else {
            return nil
        }
        if numerics == .bf16Reference { rows = rows.map { $0.map(bf16Round) } }
        return rows
    }

    /// `win_sum` rows of `window` for every head (H rows of `columns` values): exact when the trace
    /// holds them (`exactWindowSums`). Otherwise — a short prompt whose budget clamps the window
    /// below every recorded size — the nearest recorded window (the smallest one above `window`,
    /// else the largest) stands in, and a note says so (docs/policies.md "Windows that were not
    /// recorded"). A trace without any `win_sum` window still fails with `windowNotRecorded`.
    func windowSums(layer: Int, window: Int, columns: Int) throws -> [[Float]] {
        if let rows = try exactWindowSums(layer: layer, window: window, columns: columns) { return rows }
        let recorded = header.windowSizes
        if recorded.contains(window) { _ = try chunk(TraceField.winSum, layer: layer) }  // missingChunk
        guard let substitute = recorded.first(where: { $0 > window }) ?? recorded.last else {
            throw PolicyError.windowNotRecorded(policy: policy, window: window, recorded: recorded, episode: step.episodeID, step: step.stepIndex)
        }
        notes?.add(
            "\(policy): window \(window) is not among the recorded win_sum windows (\(recorded.map(String.init).joined(separator: ", ")))"
                + (header.winRowsMax > 0 ? " and win_rows holds only \(header.winRowsMax) rows" : " and the trace has no win_rows")
                + "; steps whose budget clamps the window to \(window) score with the window-\(substitute) sums instead (an approximation). For exact replay record win_rows with W ≥ \(window) or add \(window) to the window sizes.")
        if let rows = try exactWindowSums(layer: layer, window: substitute, columns: columns) { return rows }
        _ = try chunk(TraceField.winSum, layer: layer)  // the step lacks win_sum: missingChunk
        throw PolicyError.windowNotRecorded(policy: policy, window: window, recorded: recorded, episode: step.episodeID, step: step.stepIndex)
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

