import StarKVModel
import StarKVTrace

/// VL-Cache as implemented in the GUI-KV repo (`VLCacheCluster` + the eval's budget pass;
/// docs/algorithms.md §9). Per layer, the sparsity γ_ℓ = 1 − mean_h(count_gt_001[h] / n_valid) of the
/// post-vision rows gives budget shares β_ℓ = (1 − γ_ℓ)/Σ(1 − γ), clipped to [0.001, 1], and
/// budgets `⌊C·N_l·β_ℓ⌋`. The scoring window is every post-vision token (from the last image's
/// `<|vision_end|>` e* on); per query head, the top-(budget_ℓ − (L − e*)) positions of the pooled
/// (k = 5 avg) post-vision column sums over [0, e*) plus the whole window. γ uses the recorded
/// (real, layer-by-layer) attention rather than the reference's buggy same-embedding pre-pass.
public struct VLCachePolicy: KVPolicy {
    public static let policyName = "vlcache"
    public static let summary = "VL-Cache: layer budgets from post-vision sparsity, post-vision window scores (GUI-KV repo)"
    public static let optionSpecs: [PolicyOptionSpec] = [
        PolicyOptionSpec("kernel", "5", "pooling kernel k"),
        PolicyOptionSpec("pooling", "avgpool", "avgpool or maxpool"),
        PolicyOptionSpec("fallback_window", "8", "window used when a step has no image (no post-vision split)"),
    ]

    public var kernel: Int
    public var pooling: Pooling
    public var fallbackWindow: Int

    public init(options o: PolicyOptions) throws {
        let p = Self.policyName
        kernel = try o.int("kernel", policy: p, default: 5, range: 1...1001)
        pooling = Pooling(rawValue: try o.string("pooling", policy: p, default: "avgpool", choices: ["avgpool", "maxpool"]))!
        fallbackWindow = try o.int("fallback_window", policy: p, default: 8, range: 0...1_000_000)
    }

    public init(kernel: Int = 5, pooling: Pooling = .avg, fallbackWindow: Int = 8) {
        self.kernel = kernel
        self.pooling = pooling
        self.fallbackWindow = fallbackWindow
    }

    public var requiredFields: [String] { [TraceField.colsumPostvis, TraceField.countGt001, TraceField.nValid] }

    /// Per-layer token budgets as the reference computes them (docs/algorithms.md §9 steps 1–3),
    /// in float32: per head the share of post-vision entries above 0.01 is `count × (1/n_valid)`
    /// (CUDA's mean: fp32 sum times the fp32 reciprocal), γ_h = 1 − share in Python floats, the
    /// layer's γ is the fp32 mean of the fp32-rounded γ_h; then `Z = Σ(1 − γ_ℓ)`,
    /// `β_ℓ = clamp((1 − γ_ℓ)/Z, 0.001, 1)` and `budget_ℓ = trunc(fp32(C·N_l) · β_ℓ)` — all fp32,
    /// sums in layer / head order. A degenerate Z (0 or not finite; the reference would produce
    /// NaN budgets) gives every layer the share 1/N_l.
    static func layerBudgets(counts: [[Int64]], valid: [Int64], capacity c: Int) -> [Int] {
        let n = counts.count
        var oneMinusGamma: [Float] = []
        for (layer, heads) in counts.enumerated() {
            let inv = Float(1) / Float(valid[layer])
            var sum: Float = 0
            for x in heads {
                let share = Float(x) * inv
                sum += Float(1.0 - Double(share))
            }
            let gamma = sum / Float(max(1, heads.count))
            oneMinusGamma.append(Float(1) - gamma)
        }
        var z: Float = 0
        for d in oneMinusGamma { z += d }
        let total = Float(c * n)
        return oneMinusGamma.map { d in
            let beta: Float = (z > 0 && z.isFinite) ? min(Float(1.0), max(Float(0.001), d / z)) : Float(1) / Float(n)
            let b = (total * beta).rounded(.towardZero)
            return b.isFinite ? Int(max(0, min(b, Float(Int32.max)))) : 0
        }
    }

    /// Per-layer `count_gt_001` and `n_valid` of the step (checked: n_valid > 0).
    private func sparsity(_ fields: StepFields) throws -> (counts: [[Int64]], valids: [Int64]) {
        let step = fields.step
        var counts: [[Int64]] = []
        var valids: [Int64] = []
        for layer in 0..<fields.numLayers {
            let cnt = try fields.integers(TraceField.countGt001, layer: layer, count: fields.numHeads)
            let valid = try fields.integers(TraceField.nValid, layer: layer, count: 1)[0]
            guard valid > 0 else {
                throw PolicyError.badValue(policy: Self.policyName, field: TraceField.nValid, layer: layer, episode: step.episodeID, step: step.stepIndex, reason: "n_valid is \(valid); need a positive count of causal post-vision entries")
            }
            counts.append(cnt)
            valids.append(valid)
        }
        return (counts, valids)
    }

    /// e*: the last image's <|vision_end|> position (its span end); no image → a plain window.
    private func visionEnd(_ step: StepRecord) -> Int {
        let l = step.promptLength
        return step.images.last.map(\.spanEnd) ?? max(0, l - min(fallbackWindow, l))
    }

    /// Pooled scores over [0, past) of every head: `rows` when given, else the post-vision
    /// column sums (bf16-rounded in bf16-reference numerics).
    private func pooledScores(_ fields: StepFields, layer: Int, past: Int, rows: [[Float]]?) throws -> [[Float]] {
        let bf16 = fields.numerics == .bf16Reference
        let scores = try rows ?? fields.headRows(TraceField.colsumPostvis, layer: layer, columns: past).map { r in
            bf16 ? r.map(bf16Round) : r
        }
        return scores.map { pool($0, kernel: kernel, pooling: pooling, numerics: fields.numerics) }
    }

    /// One layer whose budget is below L: the whole post-vision block as the window when the
    /// budget exceeds it, else the reference's fallback (capacity 1, a window of the last
    /// budget − 1 rows scored with those rows' sums; docs/algorithms.md §9 step 5).
    private func layerSelection(_ fields: StepFields, layer: Int, budget: Int, notes: PolicyNotes?) throws -> LayerSelection {
        let l = fields.promptLength
        let fullWindow = l - visionEnd(fields.step)
        let win: Int
        let cap: Int
        var rows: [[Float]]? = nil
        if budget > fullWindow {
            // The whole post-vision block is the window; its column sums score [0, e*).
            win = fullWindow
            cap = budget - fullWindow
        } else {
            // Reference fallback: capacity 1 and a window of the last budget − 1 rows, whose
            // attention is recomputed (docs/algorithms.md §9 step 5). The trace holds those
            // sums when budget − 1 is a recorded win_sum window or ≤ win_rows' W.
            win = max(0, budget - 1)
            cap = 1
            if win >= 1 {
                rows = try fields.exactWindowSums(layer: layer, window: win, columns: l - win)
                if rows == nil {
                    notes?.add(
                        "vlcache: some layers fall back to a window of budget − 1 rows that the trace does not hold (record win_rows with W at least the post-vision length); they score with the post-vision column sums truncated to [0, L − w) instead (an approximation).")
                }
            } else {
                notes?.add(
                    "vlcache: some layer budgets are ≤ 1 token, where the reference fails (a window of budget − 1 ≤ 0 rows); StarKV keeps the top-1 position by post-vision column sums there.")
            }
        }
        let past = l - win
        let kept = try pooledScores(fields, layer: layer, past: past, rows: rows).map {
            topKWithWindow($0, count: min(max(0, cap), past), promptLength: l)
        }
        return LayerSelection(layer: layer, granularity: .queryHead, keptIndices: kept, capacityTokens: budget, windowTokens: win, compressed: true)
    }

    /// §11: extra prefill pass 2·N_params·L + 2·N_l·H·d·L², plus per layer
    /// 2·H·P_v·L·d + 7·H·P_v·L + H·L·k.
    private func scoringFLOPs(_ fields: StepFields) -> Double {
        let m = fields.header.model
        let l = fields.promptLength
        let L = Double(l), pv = Double(l - visionEnd(fields.step)), hh = Double(fields.numHeads), d = Double(m.headDim), nlD = Double(fields.numLayers)
        let params = Double(m.geometry.parametersPerDecoderLayer) * nlD
        return 2 * params * L + 2 * nlD * hh * d * L * L + nlD * (2 * hh * pv * L * d + 7 * hh * pv * L + hh * L * Double(kernel))
    }

    public func compress(_ input: PolicyStepInput, state: PolicyState) throws -> PolicyStepOutput {
        let fields = try StepFields(policy: Self.policyName, input: input)
        let l = input.step.promptLength
        // No early exit: the reference compresses every layer whose budget is below L, even at
        // budgets ≥ 100 % (docs/algorithms.md §9 step 3).
        let c = input.budget.capacity(promptLength: l)
        let (counts, valids) = try sparsity(fields)
        let budgets = Self.layerBudgets(counts: counts, valid: valids, capacity: c)
        let layers = try (0..<fields.numLayers).map { layer in
            budgets[layer] >= l
                ? LayerSelection.keepAll(layer: layer, promptLength: l)
                : try layerSelection(fields, layer: layer, budget: budgets[layer], notes: input.notes)
        }
        return PolicyStepOutput(layers: layers, scoringFLOPs: scoringFLOPs(fields), state: state)
    }

    /// The sparsity inputs are read once for every budget, and every layer whose budget exceeds
    /// the post-vision window scores [0, e*) with the same pooled column sums whatever the
    /// budget: they are pooled once per layer and every budget's top-(budget − window) comes
    /// from one shared select. Layers that fall back to a budget − 1 window (a budget-dependent
    /// window) are scored per budget (docs/policies.md "Sweeps").
    public var sharesScoresAcrossBudgets: Bool { true }

    public func compressMany(_ inputs: [PolicyStepInput], states: [PolicyState]) -> [Result<PolicyStepOutput, any Error>] {
        guard let first = inputs.first else { return [] }
        let fields: StepFields
        let counts: [[Int64]], valids: [Int64]
        do {
            fields = try StepFields(policy: Self.policyName, input: first)
            (counts, valids) = try sparsity(fields)
        } catch {
            return inputs.map { _ in .failure(error) }
        }
        let l = fields.promptLength
        let fullWindow = l - visionEnd(fields.step)
        let past = l - fullWindow
        let budgets = inputs.map { Self.layerBudgets(counts: counts, valid: valids, capacity: $0.budget.capacity(promptLength: l)) }
        var failures = [(any Error)?](repeating: nil, count: inputs.count)
        var layers = [[LayerSelection]](repeating: [], count: inputs.count)
        for layer in 0..<fields.numLayers {
            // Budgets that keep the whole post-vision block as their window share its scores.
            let sharing = inputs.indices.filter { failures[$0] == nil && budgets[$0][layer] < l && budgets[$0][layer] > fullWindow }
            var ranked: Result<[ScoreRanking<Float>], any Error>? = nil
            if !sharing.isEmpty {
                let caps = sharing.map { min(budgets[$0][layer] - fullWindow, past) }
                ranked = Result { try pooledScores(fields, layer: layer, past: past, rows: nil).map { ScoreRanking($0, counts: caps) } }
            }
            for i in inputs.indices where failures[i] == nil {
                let budget = budgets[i][layer]
                if budget >= l {
                    layers[i].append(LayerSelection.keepAll(layer: layer, promptLength: l))
                } else if budget > fullWindow, let ranked {
                    switch ranked {
                    case .success(let rows):
                        let kept = KeptBitmaps(ranked: rows, count: min(budget - fullWindow, past), promptLength: l)
                        layers[i].append(LayerSelection(
                            layer: layer, granularity: .queryHead, keptBitmaps: kept, capacityTokens: budget, windowTokens: fullWindow, compressed: true))
                    case .failure(let error):
                        failures[i] = error
                    }
                } else {
                    do {
                        layers[i].append(try layerSelection(fields, layer: layer, budget: budget, notes: inputs[i].notes))
                    } catch {
                        failures[i] = error
                    }
                }
            }
        }
        let flops = scoringFLOPs(fields)
        return inputs.indices.map { i in
            if let error = failures[i] { return .failure(error) }
            return .success(PolicyStepOutput(layers: layers[i], scoringFLOPs: flops, state: states[i]))
        }
    }
}
