import StarKVModel
import StarKVTrace

/// kvpress `SnapKVPress` (NVIDIA/kvpress; docs/algorithms.md §4.3): window-mean attention (w = 64),
/// avg-pooled (k = 5), averaged over the G query heads of each KV head; the window positions get
/// the layer's maximum score (`F.pad(…, value=scores.max())`); per KV head the top `n_kept = C`
/// positions of all L, ties to the lower position (so past positions that tie with the maximum
/// come before the window). No `C − 2` clamp; when C ≤ w (or past ties with the maximum crowd
/// it out) not all of the window fits, and `windowTokens` is reported as 0.
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
        let layers = try (0..<fields.numLayers).map { layer in
            let ranked = try paddedScores(fields, layer: layer, plan: plan, counts: [plan.capacity])
            return selection(layer: layer, ranked: ranked, plan: plan, capacity: plan.capacity)
        }
        let m = input.header.model
        let flops = snapKVScoringFLOPs(m, promptLength: l, window: plan.window, kernel: kernel) + Double(m.numLayers * m.numQueryHeads * l)
        return PolicyStepOutput(layers: layers, scoringFLOPs: flops, state: state)
    }

    /// The padded scores of every KV head of one layer (`F.pad(scores, (0, w),
    /// value=scores.max().item())`: the window scores the layer's maximum), prepared for the
    /// top-C of every capacity in `counts`. They do not depend on the capacity.
    private func paddedScores(_ fields: StepFields, layer: Int, plan: BudgetPlan, counts: [Int]) throws -> [any TopKRow] {
        let l = fields.promptLength, past = plan.past
        let sums = try fields.windowSums(layer: layer, window: plan.window, columns: past)
        func pad<T: RadixOrderedFloat>(_ groups: [[T]]) -> [any TopKRow] {
            var top = -T.infinity
            for g in groups { for v in g where v > top { top = v } }
            return groups.map { scores in
                var padded = scores
                padded.append(contentsOf: repeatElement(top, count: l - past))
                return ScoreRanking(padded, counts: counts)
            }
        }
        if fields.numerics == .bf16Reference {
            // docs/algorithms.md §12: bf16 window mean (fp32 sum × fl(1/w), one rounding;
            // exact from the bf16 sums for w = 64), bf16 avg pooling, bf16 group means.
            let recip = Float(1) / Float(plan.window)
            let pooled = sums.map { row in pool(row.map { bf16Round($0 * recip) }, kernel: kernel, pooling: .avg, numerics: .bf16Reference) }
            return pad(groupMeansBF16(pooled, kvHeads: fields.numKVHeads))
        }
        let inv = Float(plan.window)
        let pooled = sums.map { row in pool(row.map { $0 / inv }, kernel: kernel, pooling: .avg) }
        return pad(groupMeans(pooled, kvHeads: fields.numKVHeads))
    }

    /// The top-`c` of every padded row over all L positions (lower position first among ties).
    /// The window counts as kept (`windowTokens` = w) only if every row holds all of it: at
    /// C ≤ w, or when past positions tie with the maximum, the reference's topk can drop its last
    /// positions.
    private func selection(layer: Int, ranked: [any TopKRow], plan: BudgetPlan, capacity c: Int) -> LayerSelection {
        let past = plan.past, l = plan.promptLength
        let rows = KeptBitmaps(ranked: ranked, count: c, promptLength: l, window: false)
        // The rows are ascending and the window is their last l − past positions: it is all kept
        // exactly when the row keeps every position of [past, l).
        let windowKept = (0..<rows.rowCount).allSatisfy { rows.count(row: $0, in: past..<l) == l - past }
        return LayerSelection(layer: layer, granularity: .kvHead, keptBitmaps: rows, capacityTokens: c, windowTokens: windowKept ? plan.window : 0, compressed: true)
    }

    /// The padded scores do not depend on the budget (no window clamp): every budget that
    /// compresses shares them (docs/policies.md "Sweeps").
    public var sharesScoresAcrossBudgets: Bool { true }

    public func compressMany(_ inputs: [PolicyStepInput], states: [PolicyState]) -> [Result<PolicyStepOutput, any Error>] {
        sharingScores(inputs, states: states, window: window, clamp: .none, compresses: { $0.capacity < $0.promptLength }) { fields, plans, state in
            let l = fields.promptLength
            let plan = plans[0]
            var layers = [[LayerSelection]](repeating: [], count: plans.count)
            for layer in 0..<fields.numLayers {
                let ranked = try paddedScores(fields, layer: layer, plan: plan, counts: plans.map(\.capacity))
                for (b, p) in plans.enumerated() { layers[b].append(selection(layer: layer, ranked: ranked, plan: p, capacity: p.capacity)) }
            }
            let m = fields.header.model
            let flops = snapKVScoringFLOPs(m, promptLength: l, window: plan.window, kernel: kernel) + Double(m.numLayers * m.numQueryHeads * l)
            return layers.map { PolicyStepOutput(layers: $0, scoringFLOPs: flops, state: state) }
        }
    }
}
