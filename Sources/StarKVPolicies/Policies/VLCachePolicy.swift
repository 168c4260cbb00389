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

    /// Per-layer token budgets from per-layer densities `1 − γ_ℓ` (docs/algorithms.md §9).
    static func layerBudgets(densities: [Double], capacity c: Int) -> [Int] {
        let n = densities.count
        var total = 0.0
        for d in densities { total += d }
        return densities.map { d in
            let share = total > 0 ? min(1, max(0.001, d / total)) : 1 / Double(n)
            let b = (Double(c) * Double(n) * share).rounded(.down)
            return b.isFinite ? Int(b) : 0
        }
    }

    public func compress(_ input: PolicyStepInput, state: PolicyState) throws -> PolicyStepOutput {
        let fields = try StepFields(policy: Self.policyName, input: input)
        let step = input.step
        let l = step.promptLength
        let m = input.header.model
        let nl = fields.numLayers, h = fields.numHeads
        let c = input.budget.capacity(promptLength: l)
        guard c < l else {
            return PolicyStepOutput(layers: (0..<nl).map { LayerSelection.keepAll(layer: $0, promptLength: l) }, scoringFLOPs: 0, state: state)
        }
        // e*: the last image's <|vision_end|> position (its span end); no image → a plain window.
        let visionEnd = step.images.last.map(\.spanEnd) ?? max(0, l - min(fallbackWindow, l))
        var densities: [Double] = []
        for layer in 0..<nl {
            let counts = try fields.integers(TraceField.countGt001, layer: layer, count: h)
            let valid = try fields.integers(TraceField.nValid, layer: layer, count: 1)[0]
            guard valid > 0 else {
                throw PolicyError.badValue(policy: Self.policyName, field: TraceField.nValid, layer: layer, episode: step.episodeID, step: step.stepIndex, reason: "n_valid is \(valid); need a positive count of causal post-vision entries")
            }
            var sum = 0.0
            for x in counts { sum += Double(x) / Double(valid) }
            densities.append(sum / Double(h))
        }
        let budgets = Self.layerBudgets(densities: densities, capacity: c)
        var layers: [LayerSelection] = []
        let fullWindow = l - visionEnd
        for layer in 0..<nl {
            let budget = budgets[layer]
            if budget >= l {
                layers.append(LayerSelection.keepAll(layer: layer, promptLength: l))
                continue
            }
            var win = fullWindow
            var cap: Int
            if budget > win {
                cap = budget - win
            } else {
                // Reference: capacity 1 and window budget − 1 (scores then come from the last
                // budget − 1 rows; here from the post-vision sums truncated to [0, L − w)).
                cap = 1
                win = max(0, budget - 1)
            }
            let past = l - win
            cap = max(0, cap)
            let rows = try fields.headRows(TraceField.colsumPostvis, layer: layer, columns: past)
            let kept = rows.map { r -> [Int32] in
                let pooled = pool(r, kernel: kernel, pooling: pooling)
                return withWindow(topKAscending(pooled, count: min(cap, past)), past: past, promptLength: l)
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
