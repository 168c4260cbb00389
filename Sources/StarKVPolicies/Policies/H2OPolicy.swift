import StarKVModel
import StarKVTrace

/// H2O, prefill one-shot (KVCache-Factory `H2OKVCluster`; docs/algorithms.md §6.2): column sums of the
/// causal attention over all L queries (`colsum_all`), no pooling, per query head top-(C − w_eff)
/// over [0, L − w_eff) plus the window, `w_eff = min(w, C − 2)`. Variant `variant=observed`:
/// kvpress `ObservedAttentionPress` (§6.3) — sums divided by the number of queries that see the
/// key (L − j), averaged over each KV head's query heads, top-C per KV head, no window.
public struct H2OPolicy: KVPolicy {
    public static let policyName = "h2o"
    public static let summary = "H2O prefill one-shot: all-query column sums per head (KVCache-Factory H2OKVCluster)"
    public static let optionSpecs: [PolicyOptionSpec] = [
        PolicyOptionSpec("window", "8", "recent window w (KVCache-Factory runner: 8)"),
        PolicyOptionSpec("variant", "kvcache-factory", "kvcache-factory or observed (kvpress ObservedAttentionPress)"),
    ]

    public var window: Int
    public var observed: Bool

    public init(options o: PolicyOptions) throws {
        window = try o.int("window", policy: Self.policyName, default: 8, range: 0...1_000_000)
        observed = try o.string("variant", policy: Self.policyName, default: "kvcache-factory", choices: ["kvcache-factory", "observed"]) == "observed"
    }

    public init(window: Int = 8, observed: Bool = false) {
        self.window = window
        self.observed = observed
    }

    public var requiredFields: [String] { [TraceField.colsumAll] }

    public func compress(_ input: PolicyStepInput, state: PolicyState) throws -> PolicyStepOutput {
        let fields = try StepFields(policy: Self.policyName, input: input)
        let l = input.step.promptLength
        let m = input.header.model
        let plan = BudgetPlan(promptLength: l, budget: input.budget, window: observed ? 0 : window, clamp: observed ? .none : .reference)
        guard plan.compresses, plan.capacity < l || !observed else {
            return PolicyStepOutput(layers: (0..<fields.numLayers).map { LayerSelection.keepAll(layer: $0, promptLength: l) }, scoringFLOPs: 0, state: state)
        }
        var layers: [LayerSelection] = []
        for layer in 0..<fields.numLayers {
            if observed {
                let rows = try fields.headRows(TraceField.colsumAll, layer: layer, columns: l)
                let normalized = rows.map { r in (0..<l).map { r[$0] / Float(l - $0) } }
                let groups = groupMeans(normalized, kvHeads: fields.numKVHeads)
                let kept = groups.map { topKAscending($0, count: plan.capacity) }
                layers.append(LayerSelection(layer: layer, granularity: .kvHead, keptIndices: kept, capacityTokens: plan.capacity, windowTokens: 0, compressed: true))
            } else {
                var rows = try fields.headRows(TraceField.colsumAll, layer: layer, columns: plan.past)
                // bf16-reference: the column sums are bf16 (recorded so; rounded if an fp32 trace
                // is replayed in this numerics), docs/algorithms.md §12.
                if input.numerics == .bf16Reference { rows = rows.map { $0.map(bf16Round) } }
                let k = min(plan.capacity - plan.window, plan.past)
                let kept = rows.map { topKWithWindow($0, count: k, promptLength: l) }
                layers.append(LayerSelection(layer: layer, granularity: .queryHead, keptIndices: kept, capacityTokens: plan.capacity, windowTokens: plan.window, compressed: true))
            }
        }
        // §11: N_l·[2·H·L²·d (full QK, as coded) + ≈3·H·L²].
        let L = Double(l), h = Double(m.numQueryHeads)
        let flops = Double(m.numLayers) * (2 * h * L * L * Double(m.headDim) + 3 * h * L * L)
        return PolicyStepOutput(layers: layers, scoringFLOPs: flops, state: state)
    }

    /// Scores (the column sums, or the observed variant's normalized group means) do not depend
    /// on the budget: budgets with the same clamped window share them and one radix select per
    /// row gives every budget's cut (docs/policies.md "Sweeps").
    public var sharesScoresAcrossBudgets: Bool { true }

    public func compressMany(_ inputs: [PolicyStepInput], states: [PolicyState]) -> [Result<PolicyStepOutput, any Error>] {
        sharingScores(
            inputs, states: states, window: observed ? 0 : window, clamp: observed ? .none : .reference,
            compresses: { [observed] in $0.compresses && ($0.capacity < $0.promptLength || !observed) }
        ) { fields, plans, state in
            let l = fields.promptLength
            let m = fields.header.model
            var layers = [[LayerSelection]](repeating: [], count: plans.count)
            for layer in 0..<fields.numLayers {
                if observed {
                    let rows = try fields.headRows(TraceField.colsumAll, layer: layer, columns: l)
                    let normalized = rows.map { r in (0..<l).map { r[$0] / Float(l - $0) } }
                    let counts = plans.map(\.capacity)
                    let ranked = groupMeans(normalized, kvHeads: fields.numKVHeads).map { ScoreRanking($0, counts: counts) }
                    for (b, plan) in plans.enumerated() {
                        layers[b].append(LayerSelection(
                            layer: layer, granularity: .kvHead,
                            keptBitmaps: KeptBitmaps(ranked: ranked, count: plan.capacity, promptLength: l, window: false),
                            capacityTokens: plan.capacity, windowTokens: 0, compressed: true))
                    }
                } else {
                    let past = plans[0].past
                    var rows = try fields.headRows(TraceField.colsumAll, layer: layer, columns: past)
                    if fields.numerics == .bf16Reference { rows = rows.map { $0.map(bf16Round) } }
                    let counts = plans.map { min($0.capacity - $0.window, $0.past) }
                    let ranked = rows.map { ScoreRanking($0, counts: counts) }
                    for (b, plan) in plans.enumerated() {
                        layers[b].append(LayerSelection(
                            layer: layer, granularity: .queryHead, keptBitmaps: KeptBitmaps(ranked: ranked, count: counts[b], promptLength: l),
                            capacityTokens: plan.capacity, windowTokens: plan.window, compressed: true))
                    }
                }
            }
            let L = Double(l), h = Double(m.numQueryHeads)
            let flops = Double(m.numLayers) * (2 * h * L * L * Double(m.headDim) + 3 * h * L * L)
            return layers.map { PolicyStepOutput(layers: $0, scoringFLOPs: flops, state: state) }
        }
    }
}
