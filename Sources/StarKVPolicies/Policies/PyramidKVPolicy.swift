import StarKVModel
import StarKVTrace

/// PyramidKV (KVCache-Factory `PyramidKVCluster`, identical GUI-KV copy; docs/algorithms.md §5):
/// SnapKV scores per query head, per-layer past capacities on a linear pyramid with β = 20
/// (lower layers keep more), `w_eff = min(w, C − 2)`.
public struct PyramidKVPolicy: KVPolicy {
    public static let policyName = "pyramidkv"
    public static let summary = "PyramidKV per query head, layer pyramid with beta=20 (KVCache-Factory / GUI-KV copy)"
    public static let optionSpecs: [PolicyOptionSpec] = [
        PolicyOptionSpec("window", "8", "observation window w"),
        PolicyOptionSpec("kernel", "5", "pooling kernel k"),
        PolicyOptionSpec("pooling", "avgpool", "avgpool or maxpool"),
        PolicyOptionSpec("beta", "20", "pyramid β (min = ⌊C_w/β⌋)"),
    ]

    public var window: Int
    public var kernel: Int
    public var pooling: Pooling
    public var beta: Int

    public init(options o: PolicyOptions) throws {
        let p = Self.policyName
        window = try o.int("window", policy: p, default: 8, range: 1...1_000_000)
        kernel = try o.int("kernel", policy: p, default: 5, range: 1...1001)
        pooling = Pooling(rawValue: try o.string("pooling", policy: p, default: "avgpool", choices: ["avgpool", "maxpool"]))!
        beta = try o.int("beta", policy: p, default: 20, range: 1...1_000_000)
    }

    public init(window: Int = 8, kernel: Int = 5, pooling: Pooling = .avg, beta: Int = 20) {
        self.window = window
        self.kernel = kernel
        self.pooling = pooling
        self.beta = beta
    }

    public var requiredFields: [String] { [TraceField.winSum] }

    /// Past capacity of every layer (without the window), as `PyramidKVCluster.update_kv`.
    static func layerCapacities(promptLength l: Int, capacity c: Int, window w: Int, layers n: Int, beta: Int) -> [Int] {
        let cw = c - w
        if l < 2 * cw { return Array(repeating: min(cw, l - w), count: n) }
        var minNum = cw / beta
        var maxNum = 2 * cw - minNum
        if maxNum >= l - w {
            maxNum = l - w
            minNum = 2 * cw - maxNum
        }
        let steps = n > 1 ? (maxNum - minNum) / (n - 1) : 0
        return (0..<n).map { max(0, min(l - w, maxNum - $0 * steps)) }
    }

    public func compress(_ input: PolicyStepInput, state: PolicyState) throws -> PolicyStepOutput {
        let fields = try StepFields(policy: Self.policyName, input: input)
        let l = input.step.promptLength
        let plan = BudgetPlan(promptLength: l, budget: input.budget, window: window, clamp: .reference)
        guard plan.compresses else {
            return PolicyStepOutput(layers: (0..<fields.numLayers).map { LayerSelection.keepAll(layer: $0, promptLength: l) }, scoringFLOPs: 0, state: state)
        }
        let caps = Self.layerCapacities(promptLength: l, capacity: plan.capacity, window: plan.window, layers: fields.numLayers, beta: beta)
        var layers: [LayerSelection] = []
        for layer in 0..<fields.numLayers {
            let scores = try pooledWindowScores(fields, layer: layer, window: plan.window, past: plan.past, kernel: kernel, pooling: pooling)
            let rows = scores.map { topKWithWindow($0, count: caps[layer], promptLength: l) }
            layers.append(LayerSelection(layer: layer, granularity: .queryHead, keptIndices: rows, capacityTokens: caps[layer] + plan.window, windowTokens: plan.window, compressed: true))
        }
        let flops = snapKVScoringFLOPs(input.header.model, promptLength: l, window: plan.window, kernel: kernel)
        return PolicyStepOutput(layers: layers, scoringFLOPs: flops, state: state)
    }

    /// Every budget whose clamp gives the same window shares the pooled scores: one ordering per
    /// head, every budget's (pyramid) top-k from it (docs/policies.md "Sweeps").
    public var sharesScoresAcrossBudgets: Bool { true }

    public func compressMany(_ inputs: [PolicyStepInput], states: [PolicyState]) -> [Result<PolicyStepOutput, any Error>] {
        sharingScores(inputs, states: states, window: window, clamp: .reference) { fields, plans, state in
            let l = fields.promptLength
            let w = plans[0].window, past = plans[0].past
            let caps = plans.map {
                Self.layerCapacities(promptLength: l, capacity: $0.capacity, window: $0.window, layers: fields.numLayers, beta: beta)
            }
            var layers = [[LayerSelection]](repeating: [], count: plans.count)
            for layer in 0..<fields.numLayers {
                let scores = try pooledWindowScores(fields, layer: layer, window: w, past: past, kernel: kernel, pooling: pooling)
                let ranked = scores.map { row in ScoreRanking(row, counts: caps.map { $0[layer] }) }
                for (g, plan) in plans.enumerated() {
                    layers[g].append(LayerSelection(
                        layer: layer, granularity: .queryHead, keptBitmaps: KeptBitmaps(ranked: ranked, count: caps[g][layer], promptLength: l),
                        capacityTokens: caps[g][layer] + plan.window,
                        windowTokens: plan.window, compressed: true))
                }
            }
            let flops = snapKVScoringFLOPs(fields.header.model, promptLength: l, window: w, kernel: kernel)
            return layers.map { PolicyStepOutput(layers: $0, scoringFLOPs: flops, state: state) }
        }
    }
}
