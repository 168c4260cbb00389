import StarKVModel
import StarKVTrace

/// GUI-KV (SalesforceAIResearch/GUI-KV `GUIKVCluster.update_kv`; docs/algorithms.md §3): SnapKV window
/// scores per query head (w = 8, k = 5 avg), plus the hidden-norm spatial boost on the current
/// screenshot (α = 2, T_s = 3.5, every head), plus QR-residual temporal redundancy on steps with
/// ≥ 2 images: per KV head, the `⌊(1 − C/L)·V_prev⌋` previous-frame tokens with the smallest
/// residual ‖k − UUᵀk‖ (recorded as `guikv_resid`) get score 0. Then per-head top-(C − w_eff)
/// plus the window, `w_eff = min(w, C − 2)`.
public struct GUIKVPolicy: KVPolicy {
    public static let policyName = "guikv"
    public static let summary = "GUI-KV: spatial hidden-norm boost + QR-residual temporal redundancy, per query head"
    public static let optionSpecs: [PolicyOptionSpec] = [
        PolicyOptionSpec("window", "8", "observation window w"),
        PolicyOptionSpec("kernel", "5", "pooling kernel k"),
        PolicyOptionSpec("pooling", "avgpool", "avgpool or maxpool"),
        PolicyOptionSpec("alpha", "2", "spatial boost weight α (0 = off)"),
        PolicyOptionSpec("temperature", "3.5", "spatial softmax temperature T_s"),
        PolicyOptionSpec("temporal", "on", "QR-residual temporal redundancy on/off"),
        PolicyOptionSpec("granularity", "query_head", "query_head (UI-TARS path) or kv_head (OpenCUA path: head g·G's set)"),
        PolicyOptionSpec("flops_qr", "per_head", "per_head (as coded: QR per query head) or per_kv_head (deduplicated) for the FLOP count"),
    ]

    public var window: Int
    public var kernel: Int
    public var pooling: Pooling
    public var alpha: Double
    public var temperature: Double
    public var temporal: Bool
    public var granularity: HeadGranularity
    public var qrPerQueryHead: Bool

    public init(options o: PolicyOptions) throws {
        let p = Self.policyName
        window = try o.int("window", policy: p, default: 8, range: 1...1_000_000)
        kernel = try o.int("kernel", policy: p, default: 5, range: 1...1001)
        pooling = Pooling(rawValue: try o.string("pooling", policy: p, default: "avgpool", choices: ["avgpool", "maxpool"]))!
        alpha = try o.double("alpha", policy: p, default: 2, range: 0...1e9)
        temperature = try o.double("temperature", policy: p, default: 3.5, range: 1e-9...1e9)
        temporal = try o.bool("temporal", policy: p, default: true)
        granularity = try o.string("granularity", policy: p, default: "query_head", choices: ["query_head", "kv_head"]) == "kv_head" ? .kvHead : .queryHead
        qrPerQueryHead = try o.string("flops_qr", policy: p, default: "per_head", choices: ["per_head", "per_kv_head"]) == "per_head"
    }

    public init(window: Int = 8, kernel: Int = 5, pooling: Pooling = .avg, alpha: Double = 2, temperature: Double = 3.5,
                temporal: Bool = true, granularity: HeadGranularity = .queryHead) {
        self.window = window
        self.kernel = kernel
        self.pooling = pooling
        self.alpha = alpha
        self.temperature = temperature
        self.temporal = temporal
        self.granularity = granularity
        self.qrPerQueryHead = true
    }

    public var requiredFields: [String] {
        var f = [TraceField.winSum]
        if alpha > 0 { f.append(TraceField.hidNorm) }
        if temporal { f.append(TraceField.guikvResid) }
        return f
    }

    /// Scoring FLOPs of one step (docs/algorithms.md §11): SnapKV + spatial `2·V_c·D + (5+H)·V_c` per
    /// layer + on multi-image steps, per head (H as coded, or H_kv deduplicated) and layer,
    /// `2·d²·V_c − ⅔·d³` (QR) `+ 4·r·d·V_p + 3·d·V_p` (project, reconstruct, residual norm).
    public static func scoringFLOPs(
        model m: RecordedModel, promptLength l: Int, window: Int, kernel: Int, currentVisual: Int, previousVisual: Int,
        spatial: Bool, temporal: Bool, qrPerQueryHead: Bool = true
    ) -> Double {
        var flops = snapKVScoringFLOPs(m, promptLength: l, window: window, kernel: kernel)
        let nl = Double(m.numLayers), d = Double(m.headDim), h = Double(m.numQueryHeads)
        let vc = Double(currentVisual), vp = Double(previousVisual)
        if spatial { flops += nl * (2 * vc * Double(m.hiddenSize) + (5 + h) * vc) }
        if temporal {
            let r = Double(min(32, currentVisual, m.headDim))
            let perHead = max(0, 2 * d * d * vc - 2.0 / 3.0 * d * d * d) + 4 * r * d * vp + 3 * d * vp
            flops += nl * perHead * (qrPerQueryHead ? h : Double(m.numKVHeads))
        }
        return flops
    }

    public func compress(_ input: PolicyStepInput, state: PolicyState) throws -> PolicyStepOutput {
        let fields = try StepFields(policy: Self.policyName, input: input)
        let step = input.step
        let l = step.promptLength
        let plan = BudgetPlan(promptLength: l, budget: input.budget, window: window, clamp: .reference)
        guard plan.compresses else {
            return PolicyStepOutput(layers: (0..<fields.numLayers).map { LayerSelection.keepAll(layer: $0, promptLength: l) }, scoringFLOPs: 0, state: state)
        }
        let m = input.header.model
        let h = fields.numHeads, hkv = fields.numKVHeads, g = h / hkv
        let past = plan.past
        let k = min(plan.capacity - plan.window, past)
        let budgetRatio = Double(plan.capacity) / Double(l)
        let current = step.images.last
        let multiImage = step.images.count > 1
        // Previous-frame positions in span order (the order of guikv_resid's columns).
        var prevPositions: [Int] = []
        for img in step.images.dropLast() { prevPositions.append(contentsOf: img.spanStart..<img.spanEnd) }
        let zeroCount = Int(((1.0 - budgetRatio) * Double(prevPositions.count)).rounded(.towardZero))
        var layers: [LayerSelection] = []
        for layer in 0..<fields.numLayers {
            var heads = try pooledWindowScores(fields, layer: layer, window: plan.window, past: past, kernel: kernel, pooling: pooling)
            if alpha > 0, let cur = current, cur.length > 0 {
                let norms = try fields.hiddenNorms(layer: layer)
                let off = currentFrameNormOffset(step)
                addSpatialBoost(to: &heads, norms: norms[off..<(off + cur.length)], current: cur, past: past, numerics: input.numerics)
            }
            if temporal, multiImage, zeroCount > 0 {
                let resid = try fields.guikvResiduals(layer: layer)
                for grp in 0..<hkv {
                    // The zeroCount smallest residuals (most redundant), ties to the lower position.
                    let negated = resid[grp].map { -$0 }
                    let chosen = topKAscending(negated, count: zeroCount)
                    for hh in (grp * g)..<((grp + 1) * g) {
                        for idx in chosen {
                            let pos = prevPositions[Int(idx)]
                            if pos < past { heads[hh][pos] = 0 }
                        }
                    }
                }
            }
            var rows = heads.map { topKWithWindow($0, count: k, promptLength: l) }
            if granularity == .kvHead { rows = (0..<hkv).map { rows[$0 * g] } }
            layers.append(LayerSelection(layer: layer, granularity: granularity, keptIndices: rows, capacityTokens: plan.capacity, windowTokens: plan.window, compressed: true))
        }
        let flops = Self.scoringFLOPs(
            model: m, promptLength: l, window: plan.window, kernel: kernel, currentVisual: current?.length ?? 0,
            previousVisual: prevPositions.count, spatial: alpha > 0, temporal: temporal && multiImage, qrPerQueryHead: qrPerQueryHead)
        return PolicyStepOutput(layers: layers, scoringFLOPs: flops, state: state)
    }

    /// Budgets whose clamp gives the same window share the pooled scores, the spatial boost and
    /// the ordering of the temporal residuals; the temporal step zeroes `⌊(1 − C/L)·V_prev⌋`
    /// tokens, a budget-dependent count, so each budget zeroes its own copy and selects from it
    /// (a budget with nothing to zero selects from one shared ordering). docs/policies.md "Sweeps".
    public var sharesScoresAcrossBudgets: Bool { true }

    /// Adds the spatial boost of the current screenshot's tokens (docs/algorithms.md §2.3) to every
    /// head's pooled scores at positions before `past`: in fp32, or in the reference's bf16 flow
    /// (boost computed in bf16, each sum rounded once).
    private func addSpatialBoost(
        to heads: inout [[Float]], norms: ArraySlice<Float>, current cur: ImageEntry, past: Int, numerics: ReplayNumerics
    ) {
        let bf16 = numerics == .bf16Reference
        let beta = bf16
            ? spatialBoostBF16(norms: norms, alpha: alpha, temperature: temperature)
            : spatialBoost(norms: norms, alpha: alpha, temperature: temperature)
        for hh in heads.indices {
            for u in 0..<cur.length where cur.spanStart + u < past {
                let i = cur.spanStart + u
                heads[hh][i] = bf16 ? bf16Round(heads[hh][i] + beta[u]) : heads[hh][i] + beta[u]
            }
        }
    }

    public func compressMany(_ inputs: [PolicyStepInput], states: [PolicyState]) -> [Result<PolicyStepOutput, any Error>] {
        sharingScores(inputs, states: states, window: window, clamp: .reference) { fields, plans, state in
            let step = fields.step
            let l = step.promptLength
            let m = fields.header.model
            let h = fields.numHeads, hkv = fields.numKVHeads, g = h / hkv
            let w = plans[0].window, past = plans[0].past
            let current = step.images.last
            let multiImage = step.images.count > 1
            var prevPositions: [Int] = []
            for img in step.images.dropLast() { prevPositions.append(contentsOf: img.spanStart..<img.spanEnd) }
            let zeroCounts = plans.map { plan -> Int in
                let budgetRatio = Double(plan.capacity) / Double(l)
                return Int(((1.0 - budgetRatio) * Double(prevPositions.count)).rounded(.towardZero))
            }
            var layers = [[LayerSelection]](repeating: [], count: plans.count)
            for layer in 0..<fields.numLayers {
                var heads = try pooledWindowScores(fields, layer: layer, window: w, past: past, kernel: kernel, pooling: pooling)
                if alpha > 0, let cur = current, cur.length > 0 {
                    let norms = try fields.hiddenNorms(layer: layer)
                    let off = currentFrameNormOffset(step)
                    addSpatialBoost(to: &heads, norms: norms[off..<(off + cur.length)], current: cur, past: past, numerics: fields.numerics)
                }
                let zeroing = temporal && multiImage
                let counts = plans.map { min($0.capacity - $0.window, past) }
                // The residual rows (most redundant first) prepared once for every budget's count.
                let residRanks = zeroing && zeroCounts.contains(where: { $0 > 0 })
                    ? try fields.guikvResiduals(layer: layer).map { row in ScoreRanking(row.map { -$0 }, counts: zeroCounts) } : []
                // Each head's order keys once; budgets with nothing to zero select from them directly.
                let plainCounts = plans.indices.filter { !(zeroing && zeroCounts[$0] > 0) }.map { counts[$0] }
                let ranked = heads.map { ScoreRanking($0, counts: plainCounts) }
                let zeroKey = Float(0).orderKey
                // The KV-head path keeps head g·G's set for each KV head (only those rows are built).
                let keptHeads = granularity == .kvHead ? (0..<hkv).map { $0 * g } : Array(0..<h)
                for (b, plan) in plans.enumerated() {
                    let k = counts[b]
                    let rows: KeptBitmaps
                    if zeroing, zeroCounts[b] > 0 {
                        let zeroed = (0..<hkv).map { grp in
                            residRanks[grp].topKAscending(count: zeroCounts[b]).map { prevPositions[Int($0)] }.filter { $0 < past }
                        }
                        // Each head's keys with its group's zeroed positions at the key of 0, in
                        // one reused buffer (each ranking is done with before the next copy).
                        var scratch = [UInt32](repeating: 0, count: past)
                        rows = KeptBitmaps(length: l, rowCount: keptHeads.count) { r, words in
                            let hh = keptHeads[r]
                            scratch.withUnsafeMutableBufferPointer { kb in
                                ranked[hh].keys.withUnsafeBufferPointer { src in
                                    for i in 0..<min(src.count, kb.count) { kb[i] = src[i] }
                                }
                                for pos in zeroed[hh / g] { kb[pos] = zeroKey }
                            }
                            let zeroedRank = ScoreRanking<Float>(keys: scratch, counts: [k])
                            return zeroedRank.keptBitmap(count: k, then: past..<max(past, l), length: l, into: words)
                        }
                    } else {
                        rows = KeptBitmaps(ranked: keptHeads.map { ranked[$0] }, count: k, promptLength: l)
                    }
                    layers[b].append(LayerSelection(
                        layer: layer, granularity: granularity, keptBitmaps: rows, capacityTokens: plan.capacity, windowTokens: plan.window,
                        compressed: true))
                }
            }
            let flops = Self.scoringFLOPs(
                model: m, promptLength: l, window: w, kernel: kernel, currentVisual: current?.length ?? 0,
                previousVisual: prevPositions.count, spatial: alpha > 0, temporal: temporal && multiImage, qrPerQueryHead: qrPerQueryHead)
            return layers.map { PolicyStepOutput(layers: $0, scoringFLOPs: flops, state: state) }
        }
    }
}
