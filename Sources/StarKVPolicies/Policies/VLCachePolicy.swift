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

    public func compress(_ input: PolicyStepInput, state: PolicyState) throws -> PolicyStepOutput {
        let fields = try StepFields(policy: Self.policyName, input: input)
        let step = input.step
        let l = step.promptLength
        let m = input.header.model
        let nl = fields.numLayers, h = fields.numHeads
        let bf16 = input.numerics == .bf16Reference
        // No early exit: the reference compresses every layer whose budget is below L, even at
        // budgets ≥ 100 % (docs/algorithms.md §9 step 3).
        let c = input.budget.capacity(promptLength: l)
        // e*: the last image's <|vision_end|> position (its span end); no image → a plain window.
        let visionEnd = step.images.last.map(\.spanEnd) ?? max(0, l - min(fallbackWindow, l))
        var counts: [[Int64]] = []
        var valids: [Int64] = []
        for layer in 0..<nl {
            let cnt = try fields.integers(TraceField.countGt001, layer: layer, count: h)
            let valid = try fields.integers(TraceField.nValid, layer: layer, count: 1)[0]
            guard valid > 0 else {
                throw PolicyError.badValue(policy: Self.policyName, field: TraceField.nValid, layer: layer, episode: step.episodeID, step: step.stepIndex, reason: "n_valid is \(valid); need a positive count of causal post-vision entries")
            }
            counts.append(cnt)
            valids.append(valid)
        }
        let budgets = Self.layerBudgets(counts: counts, valid: valids, capacity: c)
        var layers: [LayerSelection] = []
        let fullWindow = l - visionEnd
        for layer in 0..<nl {
            let budget = budgets[layer]
            if budget >= l {
                layers.append(LayerSelection.keepAll(layer: layer, promptLength: l))
                continue
            }
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
                        input.notes?.add(
                            "vlcache: some layers fall back to a window of budget − 1 rows that the trace does not hold (record win_rows with W at least the post-vision length); they score with the post-vision column sums truncated to [0, L − w) instead (an approximation).")
                    }
                } else {
                    input.notes?.add(
                        "vlcache: some layer budgets are ≤ 1 token, where the reference fails (a window of budget − 1 ≤ 0 rows); StarKV keeps the top-1 position by post-vision column sums there.")
                }
            }
            let past = l - win
            let scores = try rows ?? fields.headRows(TraceField.colsumPostvis, layer: layer, columns: past).map { r in
                bf16 ? r.map(bf16Round) : r
            }
            let kept = scores.map { r -> [Int32] in
                let pooled = pool(r, kernel: kernel, pooling: pooling, numerics: input.numerics)
                return withWindow(topKAscending(pooled, count: min(max(0, cap), past)), past: past, promptLength: l)
            }
            layers.append(LayerSelection(layer: layer, granularity: .queryHead, keptIndices: kept, capacityTokens: budget, windowTokens: win, compressed: true))
        }
        // §11: extra prefill pass 2·N_params·L + 2·N_l·H·d·L², plus per layer
        // 2·H·P_v·L·d + 7·H·P_v·L + H·L·k.
        let L = Double(l), pv = Double(fullWindow), hh = Double(h), d = Double(m.headDim), nlD = Double(nl)
        let params = Double(m.geometry.parametersPerDecoderLayer) * nlD
        let flops = 2 * params * L + 2 * nlD * hh * d * L * L + nlD * (2 * hh * pv * L * d + 7 * hh * pv * L + hh * L * Double(kernel))
        return PolicyStepOutput(layers: layers, scoringFLOPs: flops, state: state)
    }
}
