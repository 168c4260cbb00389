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
        let n = scores.count
        let p = scores.first?.count ?? 0
        var flat = [Float]()
        flat.reserveCapacity(n * p)
        for row in scores {
            var sorted = row.map { $0.isNaN ? -Float.infinity : $0 }
            sorted.sort(by: >)
            if normalize, bf16 {
                let ratio = bf16Round(bf16Sum(sorted.prefix(b0)) / bf16Sum(sorted))
                sorted = sorted.map { bf16Round($0 * ratio) }
            } else if normalize {
                var top = 0.0, all = 0.0
                for (i, v) in sorted.enumerated() { all += Double(v); if i < b0 { top += Double(v) } }
                let ratio = Float(all > 0 ? top / all : 0)
                sorted = sorted.map { $0 * ratio }
            }
            flat.append(contentsOf: sorted)
        }
        var counts = [Int](repeating: 0, count: n)
        for idx in topKAscending(flat, count: n * b0) { counts[Int(idx) / p] += 1 }
        let floorCap = Int((Double(b0) * floorRatio).rounded(.towardZero))
        let keep = Float(1) - Float(floorRatio)
        return counts.map { min(p, Int((Float($0) * keep + Float(floorCap)).rounded(.toNearestOrEven))) }
    }

    public func compress(_ input: PolicyStepInput, state: PolicyState) throws -> PolicyStepOutput {
        let fields = try StepFields(policy: Self.policyName, input: input)
        let l = input.step.promptLength
        let plan = BudgetPlan(promptLength: l, budget: input.budget, window: window, clamp: .reference)
        let b0 = plan.capacity - plan.window
        guard plan.compresses, b0 <= plan.past else {
            return PolicyStepOutput(layers: (0..<fields.numLayers).map { LayerSelection.keepAll(layer: $0, promptLength: l) }, scoringFLOPs: 0, state: state)
        }
        let inv = Float(plan.window)
        var layers: [LayerSelection] = []
        for layer in 0..<fields.numLayers {
            let sums = try fields.windowSums(layer: layer, window: plan.window, columns: plan.past)
            let scores: [[Float]]
            let caps: [Int]
            if input.numerics == .bf16Reference {
                // docs/algorithms.md §12: `.mean(dim=-2)` of the bf16 probabilities = fp32 sum ×
                // fl(1/w), one rounding (exactly bf16(win_sum)·(1/w) when w is a power of two),
                // bf16 pooling, bf16 group means, bf16 normalization.
                let recip = Float(1) / Float(plan.window)
                let pooled = sums.map { pool($0.map { bf16Round($0 * recip) }, kernel: kernel, pooling: pooling, numerics: .bf16Reference) }
                scores = granularity == .kvHead ? groupMeansBF16(pooled, kvHeads: fields.numKVHeads) : pooled
                caps = headCapacities(scores, base: b0, bf16: true)
            } else {
                let pooled = sums.map { pool($0.map { $0 / inv }, kernel: kernel, pooling: pooling) }
                scores = granularity == .kvHead ? groupMeans(pooled, kvHeads: fields.numKVHeads).map { $0.map { Float($0) } } : pooled
                caps = headCapacities(scores, base: b0)
            }
            let rows = (0..<scores.count).map { withWindow(topKAscending(scores[$0], count: caps[$0]), past: plan.past, promptLength: l) }
            layers.append(LayerSelection(layer: layer, granularity: granularity, keptIndices: rows, capacityTokens: plan.capacity, windowTokens: plan.window, compressed: true))
        }
        // §11: SnapKV + per layer H·L·log₂L (sort) + a linear pass for the global top-(H·B).
        let m = input.header.model
        let rows = Double(granularity == .kvHead ? m.numKVHeads : m.numQueryHeads)
        let L = Double(l)
        let flops = snapKVScoringFLOPs(m, promptLength: l, window: plan.window, kernel: kernel)
            + Double(m.numLayers) * (rows * L * log2Double(L) + rows * L)
        return PolicyStepOutput(layers: layers, scoringFLOPs: flops, state: state)
    }
}
