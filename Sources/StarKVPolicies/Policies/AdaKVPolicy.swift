import StarKVModel
import StarKVTrace

/// AdaKV head-adaptive budget (KVCache-Factory `AdaKVCluster`, adapted from FFY0/AdaKV;
/// docs/algorithms.md §8): window-mean attention pooled (maxpool k = 7, runner w = 8), per head sorted
/// descending; optional normalization by each head's top-B0 mass share; the global top-(n·B0)
/// over all heads' sorted scores gives per-head counts n_h; capacity
/// `round(n_h·(1 − f) + ⌊f·B0⌋)` (f = 0.2, round half to even, fp32) past tokens plus the window.
/// Heads are KV heads (GQA group-mean scores, KVCache-Factory `gqa_score_agg = mean`) by default,
/// or query heads.
public struct AdaKVPolicy: KVPolicy {
    public static let policyName = "adakv"
    public static let summary = "AdaKV head-adaptive budgets (KVCache-Factory AdaKVCluster: w=8, k=7 maxpool, floor 0.2)"
    public static let optionSpecs: [PolicyOptionSpec] = [
        PolicyOptionSpec("window", "8", "observation window w"),
        PolicyOptionSpec("kernel", "7", "pooling kernel k"),
        PolicyOptionSpec("pooling", "maxpool", "avgpool or maxpool"),
        PolicyOptionSpec("floor", "0.2", "floor ratio f"),
        PolicyOptionSpec("normalize", "off", "scale each head's sorted scores by its top-B0 mass share"),
        PolicyOptionSpec("granularity", "kv_head", "kv_head (group-mean scores) or query_head"),
    ]

    public var window: Int
    public var kernel: Int
    public var pooling: Pooling
    public var floorRatio: Double
    public var normalize: Bool
    public var granularity: HeadGranularity

    public init(options o: PolicyOptions) throws {
        let p = Self.policyName
        window = try o.int("window", policy: p, default: 8, range: 1...1_000_000)
        kernel = try o.int("kernel", policy: p, default: 7, range: 1...1001)
        pooling = Pooling(rawValue: try o.string("pooling", policy: p, default: "maxpool", choices: ["avgpool", "maxpool"]))!
        floorRatio = try o.double("floor", policy: p, default: 0.2, range: 0...1)
        normalize = try o.bool("normalize", policy: p, default: false)
        granularity = try o.string("granularity", policy: p, default: "kv_head", choices: ["kv_head", "query_head"]) == "kv_head" ? .kvHead : .queryHead
    }

    public init(window: Int = 8, kernel: Int = 7, pooling: Pooling = .max, floorRatio: Double = 0.2, normalize: Bool = false, granularity: HeadGranularity = .kvHead) {
        self.window = window
        self.kernel = kernel
        self.pooling = pooling
        self.floorRatio = floorRatio
        self.normalize = normalize
        self.granularity = granularity
    }

    public var requiredFields: [String] { [TraceField.winSum] }

    /// Per-head past capacities from per-head scores (each row length P) and base capacity B0.
    /// With `bf16`, the normalization is the reference's bf16 tensor ops (docs/algorithms.md §12):
    /// the top-B0 and total sums rounded to bf16, their quotient rounded, each product rounded.
    func headCapacities(_ scores: [[Float]], base b0: Int, bf16: Bool = false) -> [Int] {
        if !normalize { return headCapacities(keys: scores.map { orderKeys($0) }, bases: [b0])[0] }
        let n = scores.count
        let p = scores.first?.count ?? 0
        var flat = [Float]()
        flat.reserveCapacity(n * p)
        for row in scores {
            var sorted = row.map { $0.isNaN ? -Float.infinity : $0 }
            sorted.sort(by: >)
            if bf16 {
                let ratio = bf16Round(bf16Sum(sorted.prefix(max(0, b0))) / bf16Sum(sorted))
                sorted = sorted.map { bf16Round($0 * ratio) }
            } else {
                var top = 0.0, all = 0.0
                for (i, v) in sorted.enumerated() { all += Double(v); if i < b0 { top += Double(v) } }
                let ratio = Float(all > 0 ? top / all : 0)
                sorted = sorted.map { $0 * ratio }
            }
            flat.append(contentsOf: sorted)
        }
        var counts = [Int](repeating: 0, count: n)
        for idx in topKAscending(flat, count: n * b0) { counts[Int(idx) / p] += 1 }
        return capacities(counts: counts, base: b0, past: p)
    }

    /// `headCapacities` without normalization, for several base capacities at once, from each
    /// head's order keys (the reference sorts each head descending and takes the global top-(n·B0)
    /// of the concatenation, ties to the lower flat index). The sorted rows hold the same values
    /// as the unsorted ones, so no sort is needed: with the cut of rank n·B0 over all heads' keys
    /// (one shared radix select for every B0), head h gets its keys above the cut plus, heads in
    /// order, its keys equal to it until the cut's ties run out (a head's equal keys are
    /// contiguous in its sorted row, and lower heads come first in the flat order).
    func headCapacities(keys: [[UInt32]], bases: [Int]) -> [[Int]] {
        let n = keys.count
        let p = keys.first?.count ?? 0
        let total = n * p
        let ranks = bases.map { n * $0 }
        let wanted = ranks.filter { $0 > 0 && $0 < total }
        let cuts = wanted.isEmpty ? [] : kthLargestKeys(Array(keys.joined()), ranks: wanted)
        var next = 0
        return zip(bases, ranks).map { b0, rank -> [Int] in
            let counts: [Int]
            if rank <= 0 || total == 0 {
                counts = [Int](repeating: 0, count: n)
            } else if rank >= total {
                counts = [Int](repeating: p, count: n)
            } else {
                let cut = cuts[next]
                next += 1
                var ties = cut.ties
                counts = keys.map { row in
                    var above = 0, equal = 0
                    row.withUnsafeBufferPointer { kb in
                        for key in kb {
                            above &+= key > cut.key ? 1 : 0
                            equal &+= key == cut.key ? 1 : 0
                        }
                    }
                    let taken = Swift.min(equal, ties)
                    ties -= taken
                    return above + taken
                }
            }
            return capacities(counts: counts, base: b0, past: p)
        }
    }

    /// Capacity `round(n_h·(1 − f) + ⌊f·B0⌋)` (fp32, half to even) of every head, at most P.
    private func capacities(counts: [Int], base b0: Int, past p: Int) -> [Int] {
        let floorCap = Int((Double(b0) * floorRatio).rounded(.towardZero))
        let keep = Float(1) - Float(floorRatio)
        return counts.map { min(p, Int((Float($0) * keep + Float(floorCap)).rounded(.toNearestOrEven))) }
    }

    /// The pooled (and, at KV-head granularity, group-mean) window-mean scores of one layer over
    /// [0, P): they depend on the budget only through the clamped window.
    private func layerScores(_ fields: StepFields, layer: Int, plan: BudgetPlan) throws -> [[Float]] {
        let sums = try fields.windowSums(layer: layer, window: plan.window, columns: plan.past)
        if fields.numerics == .bf16Reference {
            // docs/algorithms.md §12: `.mean(dim=-2)` of the bf16 probabilities = fp32 sum ×
            // fl(1/w), one rounding (exactly bf16(win_sum)·(1/w) when w is a power of two),
            // bf16 pooling, bf16 group means, bf16 normalization.
            let recip = Float(1) / Float(plan.window)
            let pooled = sums.map { pool($0.map { bf16Round($0 * recip) }, kernel: kernel, pooling: pooling, numerics: .bf16Reference) }
            return granularity == .kvHead ? groupMeansBF16(pooled, kvHeads: fields.numKVHeads) : pooled
        }
        let inv = Float(plan.window)
        let pooled = sums.map { pool($0.map { $0 / inv }, kernel: kernel, pooling: pooling) }
        return granularity == .kvHead ? groupMeans(pooled, kvHeads: fields.numKVHeads).map { $0.map { Float($0) } } : pooled
    }

    /// §11: SnapKV + per layer H·L·log₂L (sort) + a linear pass for the global top-(H·B).
    private func scoringFLOPs(_ m: RecordedModel, promptLength l: Int, window: Int) -> Double {
        let rows = Double(granularity == .kvHead ? m.numKVHeads : m.numQueryHeads)
        let L = Double(l)
        return snapKVScoringFLOPs(m, promptLength: l, window: window, kernel: kernel)
            + Double(m.numLayers) * (rows * L * log2Double(L) + rows * L)
    }

    public func compress(_ input: PolicyStepInput, state: PolicyState) throws -> PolicyStepOutput {
        let fields = try StepFields(policy: Self.policyName, input: input)
        let l = input.step.promptLength
        let plan = BudgetPlan(promptLength: l, budget: input.budget, window: window, clamp: .reference)
        let b0 = plan.capacity - plan.window
        guard plan.compresses, b0 <= plan.past else {
            return PolicyStepOutput(layers: (0..<fields.numLayers).map { LayerSelection.keepAll(layer: $0, promptLength: l) }, scoringFLOPs: 0, state: state)
        }
        var layers: [LayerSelection] = []
        for layer in 0..<fields.numLayers {
            let scores = try layerScores(fields, layer: layer, plan: plan)
            let caps = headCapacities(scores, base: b0, bf16: input.numerics == .bf16Reference)
            let rows = (0..<scores.count).map { topKWithWindow(scores[$0], count: caps[$0], promptLength: l) }
            layers.append(LayerSelection(layer: layer, granularity: granularity, keptIndices: rows, capacityTokens: plan.capacity, windowTokens: plan.window, compressed: true))
        }
        let flops = scoringFLOPs(input.header.model, promptLength: l, window: plan.window)
        return PolicyStepOutput(layers: layers, scoringFLOPs: flops, state: state)
    }

    /// The scores depend on the budget only through the clamped window, so budgets with the same
    /// window share them; each head's keys are computed once, the head capacities of every
    /// budget come from one shared cut over all heads (without normalization; with it, the
    /// top-B0 mass share depends on the budget and each budget sorts its own rows), and each
    /// head's top-(capacity) of every budget from one shared select (docs/policies.md "Sweeps").
    public var sharesScoresAcrossBudgets: Bool { true }

    public func compressMany(_ inputs: [PolicyStepInput], states: [PolicyState]) -> [Result<PolicyStepOutput, any Error>] {
        sharingScores(
            inputs, states: states, window: window, clamp: .reference, compresses: { $0.compresses && $0.capacity - $0.window <= $0.past }
        ) { fields, plans, state in
            let l = fields.promptLength
            let bases = plans.map { $0.capacity - $0.window }
            var layers = [[LayerSelection]](repeating: [], count: plans.count)
            for layer in 0..<fields.numLayers {
                let scores = try layerScores(fields, layer: layer, plan: plans[0])
                let keys = scores.map { orderKeys($0) }
                let caps = normalize
                    ? bases.map { headCapacities(scores, base: $0, bf16: fields.numerics == .bf16Reference) }
                    : headCapacities(keys: keys, bases: bases)
                let ranked = keys.indices.map { h in ScoreRanking<Float>(keys: keys[h], counts: caps.map { $0[h] }) }
                for (b, plan) in plans.enumerated() {
                    layers[b].append(LayerSelection(
                        layer: layer, granularity: granularity, keptBitmaps: KeptBitmaps(ranked: ranked, counts: caps[b], promptLength: l),
                        capacityTokens: plan.capacity, windowTokens: plan.window,
                        compressed: true))
                }
            }
            let flops = scoringFLOPs(fields.header.model, promptLength: l, window: plans[0].window)
            return layers.map { PolicyStepOutput(layers: $0, scoringFLOPs: flops, state: state) }
        }
    }
}
