import StarKVModel
import StarKVTrace

/// SnapKV as the GUI baselines use it (GUI-KV repo `SnapKVCluster`, docs/algorithms.md §4.1–4.2):
/// per query head, pooled window sums over the past (avg, k = 5), top-(C − w_eff) plus the last
/// w_eff tokens, with `w_eff = min(w, C − 2)`. Selections are per query head (the UI-TARS path
/// caches K/V repeated to 28 heads).
public struct SnapKVPolicy: KVPolicy {
    public static let policyName = "snapkv"
    public static let summary = "SnapKV per query head (GUI-KV repo SnapKVCluster: w=8, k=5 avgpool)"
    public static let optionSpecs: [PolicyOptionSpec] = [
        PolicyOptionSpec("window", "8", "observation window w (must be a recorded win_sum window)"),
        PolicyOptionSpec("kernel", "5", "pooling kernel k"),
        PolicyOptionSpec("pooling", "avgpool", "avgpool or maxpool"),
    ]

    public var window: Int
    public var kernel: Int
    public var pooling: Pooling

    public init(options: PolicyOptions) throws {
        let p = Self.policyName
        window = try options.int("window", policy: p, default: 8, range: 1...1_000_000)
        kernel = try options.int("kernel", policy: p, default: 5, range: 1...1001)
        pooling = Pooling(rawValue: try options.string("pooling", policy: p, default: "avgpool", choices: ["avgpool", "maxpool"]))!
    }

    public init(window: Int = 8, kernel: Int = 5, pooling: Pooling = .avg) {
        self.window = window
        self.kernel = kernel
        self.pooling = pooling
    }

    public var requiredFields: [String] { [TraceField.winSum] }

    public func compress(_ input: PolicyStepInput, state: PolicyState) throws -> PolicyStepOutput {
        let fields = try StepFields(policy: Self.policyName, input: input)
        let l = input.step.promptLength
        let plan = BudgetPlan(promptLength: l, budget: input.budget, window: window, clamp: .reference)
        guard plan.compresses else {
            return PolicyStepOutput(
                layers: (0..<fields.numLayers).map { LayerSelection.keepAll(layer: $0, promptLength: l) },
                scoringFLOPs: 0, state: state)
        }
        let k = min(plan.capacity - plan.window, plan.past)
        var layers: [LayerSelection] = []
        for layer in 0..<fields.numLayers {
            let scores = try pooledWindowScores(fields, layer: layer, window: plan.window, past: plan.past, kernel: kernel, pooling: pooling)
            let rows = scores.map { topKWithWindow($0, count: k, promptLength: l) }
            layers.append(LayerSelection(
                layer: layer, granularity: .queryHead, keptIndices: rows, capacityTokens: plan.capacity,
                windowTokens: plan.window, compressed: true))
        }
        let flops = snapKVScoringFLOPs(input.header.model, promptLength: l, window: plan.window, kernel: kernel)
        return PolicyStepOutput(layers: layers, scoringFLOPs: flops, state: state)
    }

    /// Every budget whose clamp gives the same window shares the pooled scores: one ordering per
    /// head, every budget's top-k from it (docs/policies.md "Sweeps").
    public var sharesScoresAcrossBudgets: Bool { true }

    public func compressMany(_ inputs: [PolicyStepInput], states: [PolicyState]) -> [Result<PolicyStepOutput, any Error>] {
        sharingScores(inputs, states: states, window: window, clamp: .reference) { fields, plans, state in
            let l = fields.promptLength
            let w = plans[0].window, past = plans[0].past
            let counts = plans.map { min($0.capacity - $0.window, $0.past) }
            var layers = [[LayerSelection]](repeating: [], count: plans.count)
            for layer in 0..<fields.numLayers {
                let scores = try pooledWindowScores(fields, layer: layer, window: w, past: past, kernel: kernel, pooling: pooling)
                let ranked = scores.map { ScoreRanking($0, counts: counts) }
                for (g, plan) in plans.enumerated() {
                    layers[g].append(LayerSelection(
                        layer: layer, granularity: .queryHead, keptBitmaps: KeptBitmaps(ranked: ranked, count: counts[g], promptLength: l),
                        capacityTokens: plan.capacity,
                        windowTokens: plan.window, compressed: true))
                }
            }
            let flops = snapKVScoringFLOPs(fields.header.model, promptLength: l, window: w, kernel: kernel)
            return layers.map { PolicyStepOutput(layers: $0, scoringFLOPs: flops, state: state) }
        }
    }
}
