import StarKVModel
import StarKVTrace

/// kvpress `SnapKVPress` (NVIDIA/kvpress; docs/algorithms.md §4.3): window-mean attention (w = 64),
/// avg-pooled (k = 5), averaged over the G query heads of each KV head; window positions are
/// forced in; per KV head the top `n_kept = C` positions including the window. No `C − 2` clamp;
/// when C < w only the first C window positions fit (ties among the forced scores go to the
/// lower position) and `windowTokens` is reported as 0.
public struct SnapKVPressPolicy: KVPolicy {
    public static let policyName = "snapkv-kvpress"
    public static let summary = "SnapKV per KV head (kvpress SnapKVPress: w=64, k=5, group-mean scores)"
    public static let optionSpecs: [PolicyOptionSpec] = [
        PolicyOptionSpec("window", "64", "observation window w"),
        PolicyOptionSpec("kernel", "5", "pooling kernel k"),
    ]

    public var window: Int
    public var kernel: Int

    public init(options o: PolicyOptions) throws {
        window = try o.int("window", policy: Self.policyName, default: 64, range: 1...1_000_000)
        kernel = try o.int("kernel", policy: Self.policyName, default: 5, range: 1...1001)
    }

    public init(window: Int = 64, kernel: Int = 5) {
        self.window = window
        self.kernel = kernel
    }

    public var requiredFields: [String] { [TraceField.winSum] }

    public func compress(_ input: PolicyStepInput, state: PolicyState) throws -> PolicyStepOutput {
        let fields = try StepFields(policy: Self.policyName, input: input)
        let l = input.step.promptLength
        let plan = BudgetPlan(promptLength: l, budget: input.budget, window: window, clamp: .none)
        guard plan.capacity < l else {
            return PolicyStepOutput(layers: (0..<fields.numLayers).map { LayerSelection.keepAll(layer: $0, promptLength: l) }, scoringFLOPs: 0, state: state)
        }
        let past = plan.past, c = plan.capacity
        let inv = Float(plan.window)
        var layers: [LayerSelection] = []
        for layer in 0..<fields.numLayers {
            let sums = try fields.windowSums(layer: layer, window: plan.window, columns: past)
            let pooled = sums.map { row in pool(row.map { $0 / inv }, kernel: kernel, pooling: .avg) }
            let groups = groupMeans(pooled, kvHeads: fields.numKVHeads)
            let rows: [[Int32]] = groups.map { scores in
                if c >= plan.window {
                    return withWindow(topKAscending(scores, count: c - plan.window), past: past, promptLength: l)
                }
                return (past..<(past + c)).map { Int32($0) }
            }
            layers.append(LayerSelection(layer: layer, granularity: .kvHead, keptIndices: rows, capacityTokens: c, windowTokens: c >= plan.window ? plan.window : 0, compressed: true))
        }
        let m = input.header.model
        let flops = snapKVScoringFLOPs(m, promptLength: l, window: plan.window, kernel: kernel) + Double(m.numLayers * m.numQueryHeads * l)
        return PolicyStepOutput(layers: layers, scoringFLOPs: flops, state: state)
    }
}
