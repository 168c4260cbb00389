import StarKVModel
import StarKVTrace

/// STaR-KV exactly as released (kawhiiiileo/STaR-KV @ 9f36ecf3, `STARKVGroupCluster.update_kv`;
/// docs/algorithms.md §2.3–2.6): avg-pooled window scores, hidden-norm spatial boost on the current
/// frame, AEB entropy temperature, group (KV-head) scores, online spatial-MI prior on a 12×12
/// pseudo-grid with EMA and λ ramp, temporal stability discount with frame age, power
/// sharpening, and one shared top-K index set per layer. Every module can be switched off.
///
/// Two variants beyond the release (off by default): `mi_grid=true` (MI on the screenshot's real
/// rows × cols instead of the √V pseudo-grid, §2.6-5) and `budget_mode=entropy` (the AEB
/// temperature scales each layer's past budget, total kept tokens unchanged — the released
/// power transform cannot change a fixed top-K, §2.6-1).
///
/// Numerics: fp32 scores and fp64 statistics by default; in bf16-reference numerics every step
/// after the window sum runs in the reference's bf16 dtype flow as a CUDA run computes it
/// (`scoreLayerBF16`; docs/algorithms.md §12, §12.1).
public struct StarKVPolicy: KVPolicy {
    public static let policyName = "starkv"
    public static let summary = "STaR-KV as released (spatial boost, MI prior, temporal discount, AEB; shared set per layer)"
    public static let optionSpecs: [PolicyOptionSpec] = [
        PolicyOptionSpec("preset", "agentnetbench", "reference-driver defaults: agentnetbench, androidcontrol, screenspot-pro, screenspot-v2, cli-defaults"),
        PolicyOptionSpec("window", "8", "observation window w (clamped to max(1, min(w, C-2)))"),
        PolicyOptionSpec("kernel", "5", "pooling kernel k"),
        PolicyOptionSpec("pooling", "avgpool", "avgpool or maxpool"),
        PolicyOptionSpec("spatial", "on", "hidden-norm spatial boost (off = alpha 0)"),
        PolicyOptionSpec("alpha", "2", "spatial boost weight α"),
        PolicyOptionSpec("temperature", "", "spatial softmax temperature T_s (preset: 3.5, screenspot-v2 1.0)"),
        PolicyOptionSpec("mi", "on", "online MI group prior (off = uniform group weights)"),
        PolicyOptionSpec("mi_profile_steps", "", "N_prof (preset: 5; cli-defaults 0 = prior inactive)"),
        PolicyOptionSpec("mi_lambda", "0.5", "target prior strength λ"),
        PolicyOptionSpec("mi_decay", "0.9", "MI EMA decay δ_MI"),
        PolicyOptionSpec("mi_tau", "1.0", "group-weight softmax temperature τ_MI"),
        PolicyOptionSpec("mi_ramp_steps", "", "λ ramp steps R (0 = N_prof, as the reference)"),
        PolicyOptionSpec("mi_grid", "pseudo", "pseudo (released √V grid) or true (variant: real screenshot grid)"),
        PolicyOptionSpec("temporal", "", "temporal stability discount on/off (preset: on; cli-defaults off)"),
        PolicyOptionSpec("temporal_rho", "0.9", "pattern EMA ρ"),
        PolicyOptionSpec("temporal_delta", "0.1", "discount rate δ per frame of age"),
        PolicyOptionSpec("temporal_eps", "0.0", "stability floor ε"),
        PolicyOptionSpec("temporal_discount_min", "0.0", "discount floor d_min"),
        PolicyOptionSpec("temporal_warmup", "", "steps without discount (preset: 0; cli-defaults 20)"),
        PolicyOptionSpec("aeb", "", "entropy temperature + power sharpening on/off (preset: on; cli-defaults off)"),
        PolicyOptionSpec("aeb_min", "", "T_min (preset: 0.95; screenspot-pro 0.75; cli-defaults 0.5)"),
        PolicyOptionSpec("aeb_max", "", "T_max (preset: 1.05; screenspot-pro 1.25; cli-defaults 1.5)"),
        PolicyOptionSpec("aeb_smooth", "0.0", "temperature EMA s"),
        PolicyOptionSpec("budget_mode", "fixed", "fixed (released) or entropy (variant: T scales per-layer budget, total unchanged)"),
    ]

    /// All hyperparameters (docs/algorithms.md §2.5).
    public struct Config: Sendable, Equatable, Codable {
        public var window = 8
        public var kernel = 5
        public var pooling = Pooling.avg
        public var spatialEnabled = true
        public var alpha = 2.0
        public var spatialTemperature = 3.5
        public var miEnabled = true
        public var miProfileSteps = 5
        public var miLambda = 0.5
        public var miDecay = 0.9
        public var miTau = 1.0
        public var miRampSteps = 10
        public var miTrueGrid = false
        public var temporalEnabled = true
        public var temporalRho = 0.9
        public var temporalDelta = 0.1
        public var temporalEps = 0.0
        public var temporalDiscountMin = 0.0
        public var temporalWarmup = 0
        public var aebEnabled = true
        public var aebMin = 0.95
        public var aebMax = 1.05
        public var aebSmooth = 0.0
        public var entropyBudget = false

        public init() {}

        /// Reference-driver defaults (docs/algorithms.md §2.5 table).
        /// - `agentnetbench` / `androidcontrol`: driver defaults (temporal and AEB forced on,
        ///   N_prof 5, R 10, warmup 0, AEB 0.95/1.05).
        /// - `screenspot-pro`: examples/repro_ssp_kv.sh (same, AEB 0.75/1.25).
        /// - `cli-defaults`: `add_starkv_kv_arguments` defaults (N_prof 0, R 0, temporal off,
        ///   warmup 20, AEB off 0.5/1.5, T_s 3.5).
        /// - `screenspot-v2`: cli-defaults with T_s = 1.0.
        public static func preset(_ name: String) -> Config? {
            var c = Config()
            switch name {
            case "agentnetbench", "androidcontrol":
                return c
            case "screenspot-pro":
                c.aebMin = 0.75
                c.aebMax = 1.25
                return c
            case "cli-defaults", "screenspot-v2":
                c.miProfileSteps = 0
                c.miRampSteps = 0
                c.temporalEnabled = false
                c.temporalWarmup = 20
                c.aebEnabled = false
                c.aebMin = 0.5
                c.aebMax = 1.5
                if name == "screenspot-v2" { c.spatialTemperature = 1.0 }
                return c
            default:
                return nil
            }
        }

        static let presetNames = ["agentnetbench", "androidcontrol", "screenspot-pro", "screenspot-v2", "cli-defaults"]
    }

    public var config: Config

    public init(config: Config = Config()) { self.config = config }

    public init(options o: PolicyOptions) throws {
        let p = Self.policyName
        let presetName = try o.string("preset", policy: p, default: "agentnetbench", choices: Config.presetNames)
        var c = Config.preset(presetName)!
        c.window = try o.int("window", policy: p, default: c.window, range: 1...1_000_000)
        c.kernel = try o.int("kernel", policy: p, default: c.kernel, range: 1...1001)
        c.pooling = Pooling(rawValue: try o.string("pooling", policy: p, default: c.pooling.rawValue, choices: ["avgpool", "maxpool"]))!
        c.spatialEnabled = try o.bool("spatial", policy: p, default: c.spatialEnabled)
        c.alpha = try o.double("alpha", policy: p, default: c.alpha, range: 0...1e9)
        c.spatialTemperature = try o.double("temperature", policy: p, default: c.spatialTemperature, range: 1e-9...1e9)
        c.miEnabled = try o.bool("mi", policy: p, default: c.miEnabled)
        c.miProfileSteps = try o.int("mi_profile_steps", policy: p, default: c.miProfileSteps, range: 0...1_000_000)
        c.miLambda = try o.double("mi_lambda", policy: p, default: c.miLambda, range: 0...1)
        c.miDecay = try o.double("mi_decay", policy: p, default: c.miDecay, range: 0...0.9999)
        c.miTau = try o.double("mi_tau", policy: p, default: c.miTau, range: 0...1e9)
        c.miRampSteps = try o.int("mi_ramp_steps", policy: p, default: c.miRampSteps, range: 0...1_000_000)
        c.miTrueGrid = try o.string("mi_grid", policy: p, default: "pseudo", choices: ["pseudo", "true"]) == "true"
        c.temporalEnabled = try o.bool("temporal", policy: p, default: c.temporalEnabled)
        c.temporalRho = try o.double("temporal_rho", policy: p, default: c.temporalRho, range: 0...0.9999)
        c.temporalDelta = try o.double("temporal_delta", policy: p, default: c.temporalDelta, range: 0...1e9)
        c.temporalEps = try o.double("temporal_eps", policy: p, default: c.temporalEps, range: 0...1)
        c.temporalDiscountMin = try o.double("temporal_discount_min", policy: p, default: c.temporalDiscountMin, range: 0...1)
        c.temporalWarmup = try o.int("temporal_warmup", policy: p, default: c.temporalWarmup, range: 0...1_000_000)
        c.aebEnabled = try o.bool("aeb", policy: p, default: c.aebEnabled)
        c.aebMin = try o.double("aeb_min", policy: p, default: c.aebMin, range: 1e-6...1e6)
        c.aebMax = try o.double("aeb_max", policy: p, default: c.aebMax, range: 1e-6...1e6)
        c.aebSmooth = try o.double("aeb_smooth", policy: p, default: c.aebSmooth, range: 0...1)
        c.entropyBudget = try o.string("budget_mode", policy: p, default: "fixed", choices: ["fixed", "entropy"]) == "entropy"
        config = c
    }

    /// Per-layer state (docs/algorithms.md §2.2), one per decoder layer.
    public struct LayerState: Sendable, Equatable, Codable {
        /// τ_ℓ: agent steps seen since reset (counted only while temporal is enabled).
        public var temporalStep = 0
        /// μ_ℓ: MI profiling steps since reset.
        public var profileStep = 0
        /// M_ℓ: EMA of per-group spatial MI (nil until first measured).
        public var miEMA: [Double]? = nil
        /// E_ℓ: EMA of each group's normalized current-frame attention, H_kv × `patternWidth`.
        public var patternEMA: [Double]? = nil
        public var patternWidth = 0
        /// Last AEB temperature (the reference never resets it; it matters only with smoothing).
        public var aebTemperature: Double? = nil

        public init() {}
    }

    /// The policy's carried state: one `LayerState` per layer.
    public struct State: PolicyStateValue, Codable {
        public var layers: [LayerState]
        public init(layers: [LayerState]) { self.layers = layers }
    }

    public var requiredFields: [String] {
        config.spatialEnabled && config.alpha > 0 ? [TraceField.winSum, TraceField.hidNorm] : [TraceField.winSum]
    }

    /// A clipped image span: [start, end) inside [0, P) and the image it came from.
    struct Span: Equatable {
        var start: Int
        var end: Int
        var image: Int
        var length: Int { end - start }
    }

    /// The reference's `vision_spans_from_parent`: spans clipped to [0, P), empty ones dropped.
    static func clippedSpans(_ images: [ImageEntry], past p: Int) -> [Span] {
        var out: [Span] = []
        for (i, img) in images.enumerated() {
            let s = max(0, min(img.spanStart, p))
            let e = max(s, min(img.spanEnd, p))
            if e > s { out.append(Span(start: s, end: e, image: i)) }
        }
        return out
    }

    /// Result of scoring one layer before selection.
    struct LayerScore {
        var scores: [Double]
        var temperature: Double?
        var lambdaEff: Double
        var flops: Double
    }

    /// The carried state for this step: the previous step's (fresh when none), reset where the
    /// drivers reset (the AEB temperature survives, §2.2), τ_ℓ advanced when temporal is on.
    private func stepState(_ fields: StepFields, _ state: PolicyState) throws -> State {
        let nl = fields.numLayers
        var st = state.value(as: State.self) ?? State(layers: Array(repeating: LayerState(), count: nl))
        guard st.layers.count == nl else {
            throw PolicyError.invalidStep(policy: Self.policyName, episode: fields.step.episodeID, step: fields.step.stepIndex,
                                          reason: "carried state has \(st.layers.count) layers but the model has \(nl); start the replay from a fresh state")
        }
        if fields.step.reset {
            // Drivers reset the counters and EMAs per sample/episode (§2.8); the AEB temperature
            // lives on the cluster object and is never reset (§2.2).
            for l in 0..<nl {
                let t = st.layers[l].aebTemperature
                st.layers[l] = LayerState()
                st.layers[l].aebTemperature = t
            }
        }
        if config.temporalEnabled { for i in 0..<nl { st.layers[i].temporalStep += 1 } }
        return st
    }

    /// Steps 2–10 of every layer (updating `st`): the scores depend on the budget only through
    /// the clamped window (P and the clipped spans).
    private func scoreLayers(_ fields: StepFields, plan: BudgetPlan, state st: inout State) throws -> [LayerScore] {
        let spans = Self.clippedSpans(fields.step.images, past: plan.past)
        var scored: [LayerScore] = []
        scored.reserveCapacity(fields.numLayers)
        for layer in 0..<fields.numLayers {
            if fields.numerics == .bf16Reference {
                scored.append(try scoreLayerBF16(fields, layer: layer, plan: plan, spans: spans, state: &st.layers[layer]))
            } else {
                scored.append(try scoreLayer(fields, layer: layer, plan: plan, spans: spans, state: &st.layers[layer]))
            }
        }
        return scored
    }

    /// Each layer's past budget: K = max(1, min(C − w_eff, P)), or the entropy split of N_l·K.
    private func pastBudgets(plan: BudgetPlan, scored: [LayerScore]) -> [Int] {
        let k = max(1, min(plan.capacity - plan.window, plan.past))
        if config.entropyBudget {
            return Self.entropyBudgets(perLayer: k, temperatures: scored.map { $0.temperature ?? 1 }, cap: plan.past)
        }
        return Array(repeating: k, count: scored.count)
    }

    /// Step 11: one shared top-K per layer plus the window, FLOPs and diagnostics.
    private func output(
        _ fields: StepFields, plan: BudgetPlan, scored: [LayerScore], budgets: [Int], rows: [any TopKRow], state: State
    ) -> PolicyStepOutput {
        let l = fields.promptLength
        var layers: [LayerSelection] = []
        var flops = snapKVScoringFLOPs(fields.header.model, promptLength: l, window: plan.window, kernel: config.kernel)
        for layer in 0..<fields.numLayers {
            layers.append(LayerSelection(
                layer: layer, granularity: .shared, keptBitmaps: KeptBitmaps(ranked: [rows[layer]], count: budgets[layer], promptLength: l),
                capacityTokens: budgets[layer] + plan.window, windowTokens: plan.window, compressed: true))
            flops += scored[layer].flops
        }
        var diag: [String: [Double]] = ["lambda_eff": scored.map(\.lambdaEff), "past_budget": budgets.map(Double.init)]
        if config.aebEnabled || config.entropyBudget { diag["aeb_temperature"] = scored.map { $0.temperature ?? 0 } }
        return PolicyStepOutput(layers: layers, scoringFLOPs: flops, state: PolicyState(state), diagnostics: diag)
    }

    public func compress(_ input: PolicyStepInput, state: PolicyState) throws -> PolicyStepOutput {
        let fields = try StepFields(policy: Self.policyName, input: input)
        var st = try stepState(fields, state)
        let l = input.step.promptLength
        let plan = BudgetPlan(promptLength: l, budget: input.budget, window: config.window, clamp: .starKVQwen)
        guard plan.compresses else {
            return PolicyStepOutput(
                layers: (0..<fields.numLayers).map { LayerSelection.keepAll(layer: $0, promptLength: l) },
                scoringFLOPs: 0, state: PolicyState(st))
        }
        let scored = try scoreLayers(fields, plan: plan, state: &st)
        let budgets = pastBudgets(plan: plan, scored: scored)
        let rows = scored.indices.map { ScoreRanking(scored[$0].scores, counts: [budgets[$0]]) as any TopKRow }
        return output(fields, plan: plan, scored: scored, budgets: budgets, rows: rows, state: st)
    }

    /// The scores, the state update and the diagnostics other than the past budget depend on the
    /// budget only through the clamped window (P, the clipped spans) — the carried state is the
    /// same for budgets that compressed with the same window on every earlier step. Budgets with
    /// the same window and equal carried states are scored once and each layer's top-K of every
    /// budget comes from one shared select (docs/policies.md "Sweeps"); the entropy budget split
    /// reads only the shared temperatures.
    public var sharesScoresAcrossBudgets: Bool { true }

    public func compressMany(_ inputs: [PolicyStepInput], states: [PolicyState]) -> [Result<PolicyStepOutput, any Error>] {
        sharingScores(inputs, states: states, window: config.window, clamp: .starKVQwen, groupByState: true) { fields, plans, state in
            var st = try stepState(fields, state)
            let scored = try scoreLayers(fields, plan: plans[0], state: &st)
            let budgets = plans.map { pastBudgets(plan: $0, scored: scored) }
            let rows = scored.indices.map { layer in ScoreRanking(scored[layer].scores, counts: budgets.map { $0[layer] }) as any TopKRow }
            return plans.indices.map { output(fields, plan: plans[$0], scored: scored, budgets: budgets[$0], rows: rows, state: st) }
        }
    }

    /// Algorithm §2.3 steps 2–10 for one layer; updates the layer's state.
    func scoreLayer(_ fields: StepFields, layer: Int, plan: BudgetPlan, spans: [Span], state: inout LayerState) throws -> LayerScore {
        let c = config
        let past = plan.past
        let h = fields.numHeads, hkv = fields.numKVHeads
        let m = fields.header.model
        var flops = 2.0 * Double(h) * Double(fields.promptLength) + 20 * Double(fields.promptLength)
        // Step 2: pooled window scores (H × P).
        var heads = try pooledWindowScores(fields, layer: layer, window: plan.window, past: past, kernel: c.kernel, pooling: c.pooling)
        let current = spans.last
        // Step 3: spatial boost on the current frame, every head.
        if c.spatialEnabled, c.alpha > 0, let cur = current {
            let norms = try fields.hiddenNorms(layer: layer)
            let offset = fields.step.images[..<cur.image].reduce(0) { $0 + $1.length }
            let first = offset + (cur.start - fields.step.images[cur.image].spanStart)
            let beta = spatialBoost(norms: norms[first..<(first + cur.length)], alpha: c.alpha, temperature: c.spatialTemperature)
            for hh in 0..<h {
                heads[hh].withUnsafeMutableBufferPointer { row in
                    for u in 0..<cur.length { row[cur.start + u] += beta[u] }
                }
            }
            let vc = Double(cur.length)
            flops += 2 * vc * Double(m.hiddenSize) + 6 * vc + Double(h) * vc
        }
        // Step 6 (computed early, it only reads the boosted scores): head mean and group means.
        var base = [Double](repeating: 0, count: past)
        base.withUnsafeMutableBufferPointer { acc in
            for hh in 0..<h {
                heads[hh].withUnsafeBufferPointer { r in for j in 0..<past { acc[j] += Double(r[j]) } }
            }
            let invH = Double(h)
            for j in 0..<past { acc[j] /= invH }
        }
        let groups = groupMeans(heads, kvHeads: hkv)
        // Step 4: AEB temperature from the boosted head-mean scores.
        var temperature: Double? = nil
        if c.aebEnabled || c.entropyBudget {
            var t = Self.entropyTemperature(base, min: c.aebMin, max: c.aebMax)
            if c.aebSmooth > 0, let prev = state.aebTemperature { t = c.aebSmooth * prev + (1 - c.aebSmooth) * t }
            temperature = t
        }
        state.aebTemperature = c.aebEnabled ? temperature : nil
        // Step 7: online MI prior.
        var lambdaEff = 0.0
        var weights = [Double](repeating: 1 / Double(hkv), count: hkv)
        let miActive = c.miEnabled && c.miProfileSteps > 0
        if miActive {
            state.profileStep += 1
            if let cur = current {
                let img = fields.step.images[cur.image]
                let grid: (Int, Int) = c.miTrueGrid && img.gridW > 0 && img.gridH > 0 ? (img.gridH, img.gridW) : Self.pseudoGrid(cur.length)
                var mi = [Double](repeating: 0, count: hkv)
                for g in 0..<hkv {
                    mi[g] = Self.spatialMutualInformation(groups[g][cur.start..<cur.end], gridH: grid.0, gridW: grid.1)
                }
                if let prev = state.miEMA, prev.count == hkv {
                    state.miEMA = (0..<hkv).map { c.miDecay * prev[$0] + (1 - c.miDecay) * mi[$0] }
                } else {
                    state.miEMA = mi
                }
                let vc = Double(cur.length)
                flops += Double(hkv) * (vc * log2Double(vc) + 2 * vc + 16 * 144 * 5)
            }
            let ramp = max(1, c.miRampSteps == 0 ? c.miProfileSteps : c.miRampSteps)
            lambdaEff = state.profileStep <= c.miProfileSteps ? 0 : c.miLambda * min(1, Double(state.profileStep - c.miProfileSteps) / Double(ramp))
            if let ema = state.miEMA, ema.count == hkv { weights = Self.groupWeights(ema, tau: c.miTau) }
        }
        // Step 8: re-weight by the owning group's prior.
        var owner = [Int](repeating: 0, count: past)
        owner.withUnsafeMutableBufferPointer { own in
            var best = groups[0]
            for g in 1..<max(1, hkv) {
                groups[g].withUnsafeBufferPointer { row in
                    for j in 0..<past where row[j] > best[j] { best[j] = row[j]; own[j] = g }
                }
            }
        }
        var scores = base
        if miActive {
            let factor = (0..<hkv).map { (1 - lambdaEff) + lambdaEff * (weights[$0] * Double(hkv)) }
            scores.withUnsafeMutableBufferPointer { out in
                for j in 0..<past { out[j] = base[j] * factor[owner[j]] }
            }
        }
        // Step 9: temporal stability discount (needs ≥ 2 clipped spans).
        if c.temporalEnabled, past > 0, spans.count >= 2, let cur = current {
            let vc = cur.length
            var pattern = [Double](repeating: 0, count: hkv * vc)
            for g in 0..<hkv {
                var sum = 0.0
                for u in 0..<vc { let v = max(groups[g][cur.start + u], 0); pattern[g * vc + u] = v; sum += v }
                let d = max(sum, 1e-8)
                for u in 0..<vc { pattern[g * vc + u] /= d }
            }
            let ema: [Double]
            if let prev = state.patternEMA, state.patternWidth == vc, prev.count == pattern.count {
                ema = (0..<pattern.count).map { c.temporalRho * prev[$0] + (1 - c.temporalRho) * pattern[$0] }
            } else {
                ema = pattern
            }
            state.patternEMA = ema
            state.patternWidth = vc
            var stability = [Double](repeating: 0, count: hkv)
            for g in 0..<hkv {
                var dot = 0.0, na = 0.0, nb = 0.0
                for u in 0..<vc {
                    let a = pattern[g * vc + u], b = ema[g * vc + u]
                    dot += a * b; na += a * a; nb += b * b
                }
                stability[g] = min(1, max(0, dot / max(na.squareRoot() * nb.squareRoot(), 1e-8)))
            }
            if state.temporalStep > c.temporalWarmup {
                let f = spans.count
                for (i, s) in spans.enumerated() {
                    let age = Double(f - 1 - i)
                    guard age > 0 else { continue }
                    for j in s.start..<s.end {
                        let phi = c.temporalEps + (1 - c.temporalEps) * stability[owner[j]]
                        let d = c.temporalDiscountMin + (1 - c.temporalDiscountMin) * expDouble(-c.temporalDelta * age * phi)
                        scores[j] *= d
                    }
                }
            }
            flops += 6 * Double(hkv) * Double(vc)
        }
        // Step 10: power sharpening (order-preserving on m ≥ 0; fp64 so no new ties).
        if c.aebEnabled, let t = temperature, t > 0 {
            let e = 1 / t
            scores.withUnsafeMutableBufferPointer { out in
                for j in 0..<past { out[j] = powDouble(max(out[j], 0), e) }
            }
        }
        return LayerScore(scores: scores, temperature: temperature, lambdaEff: lambdaEff, flops: flops)
    }

    /// AEB temperature (docs/algorithms.md §2.3 step 4): normalized entropy of the head-mean scores
    /// mapped linearly onto [T_min, T_max].
    static func entropyTemperature(_ mean: [Double], min tMin: Double, max tMax: Double) -> Double {
        var sum = 0.0
        for v in mean { sum += v }
        let denom = max(sum, 1e-8)
        var ent = 0.0
        for v in mean { let p = v / denom; ent -= p * logDouble(p + 1e-8) }
        let maxEnt = logDouble(Double(max(1, mean.count)))
        let norm = ent / (maxEnt + 1e-8)
        return tMin + (tMax - tMin) * norm
    }

    /// The released MI grid: `gh = max(1, round(√V))`, `gw = ⌈V/gh⌉` (docs/algorithms.md §2.4-2).
    static func pseudoGrid(_ v: Int) -> (Int, Int) {
        let n = max(1, v)
        let gh = max(1, Int(Double(n).squareRoot().rounded(.toNearestOrEven)))
        return (gh, (n + gh - 1) / gh)
    }

    /// Spatial mutual information (nats) between 12×12 location cells and 16 equal-frequency
    /// attention bins of one group's current-frame scores (docs/algorithms.md §2.4), in fp64. Ranks
    /// use a stable sort (ties by index).
    static func spatialMutualInformation(_ y: ArraySlice<Double>, gridH: Int, gridW: Int) -> Double {
        let v = y.count
        if v <= 1 { return 0 }
        var p = y.map { max($0, 0) }
        var total = 0.0
        for x in p { total += x }
        if total <= 1e-12 { return 0 }
        for i in 0..<v { p[i] /= total }
        let gh = max(1, gridH), gw = max(1, gridW)
        var cell = [Int](repeating: 0, count: v)
        var firstCell = -1, manyCells = false
        for u in 0..<v {
            let row = u / gw, col = u % gw
            let rb = min(11, max(0, Int(((Double(row) + 0.5) / Double(gh) * 12).rounded(.down))))
            let cb = min(11, max(0, Int(((Double(col) + 0.5) / Double(gw) * 12).rounded(.down))))
            cell[u] = rb * 12 + cb
            if firstCell < 0 { firstCell = cell[u] } else if cell[u] != firstCell { manyCells = true }
        }
        if !manyCells { return 0 }
        let order = (0..<v).sorted { p[$0] < p[$1] || (p[$0] == p[$1] && $0 < $1) }
        var bin = [Int](repeating: 0, count: v)
        for (rank, u) in order.enumerated() { bin[u] = min(15, rank * 16 / v) }
        if Set(bin).count <= 1 { return 0 }
        var joint = [Double](repeating: 0, count: 16 * 144)
        for u in 0..<v { joint[bin[u] * 144 + cell[u]] += 1 }
        let n = Double(v)
        for i in 0..<joint.count { joint[i] /= n }
        var pa = [Double](repeating: 0, count: 16), py = [Double](repeating: 0, count: 144)
        for a in 0..<16 { for c in 0..<144 { pa[a] += joint[a * 144 + c]; py[c] += joint[a * 144 + c] } }
        let sa = pa.reduce(0, +), sy = py.reduce(0, +)
        if sa > 1e-12 { for a in 0..<16 { pa[a] /= sa } }
        if sy > 1e-12 { for c in 0..<144 { py[c] /= sy } }
        var mi = 0.0
        for a in 0..<16 {
            for c in 0..<144 {
                let j = joint[a * 144 + c]
                if j == 0 { continue }
                mi += j * (logDouble(j + 1e-12) - logDouble(pa[a] * py[c] + 1e-12))
            }
        }
        return max(0, mi)
    }

    /// Group weights from the MI EMA (docs/algorithms.md §2.3 step 7): min-max normalize (0.5 when
    /// the range < 1e−12), softmax with temperature τ (≥ 1e−6), renormalize.
    static func groupWeights(_ mi: [Double], tau: Double) -> [Double] {
        guard let lo = mi.min(), let hi = mi.max() else { return [] }
        let s = hi - lo < 1e-12 ? mi.map { _ in 0.5 } : mi.map { ($0 - lo) / (hi - lo) }
        let t = max(tau, 1e-6)
        let top = s.map { $0 / t }.max()!
        var w = s.map { expDouble($0 / t - top) }
        var sum = 0.0
        for x in w { sum += x }
        w = w.map { $0 / sum }
        var sum2 = 0.0
        for x in w { sum2 += x }
        return w.map { $0 / max(sum2, 1e-8) }
    }

    /// Variant `budget_mode=entropy`: split the step's total past budget `N_l·K` across layers in
    /// proportion to each layer's AEB temperature (diffuse attention → more tokens), at least 1
    /// and at most `cap` per layer; largest-remainder rounding, ties to the lower layer. The
    /// total is unchanged.
    static func entropyBudgets(perLayer k: Int, temperatures: [Double], cap: Int) -> [Int] {
        let n = temperatures.count
        guard n > 0 else { return [] }
        let total = min(k * n, cap * n)
        var alloc = [Int](repeating: min(1, cap), count: n)
        var remaining = total - alloc.reduce(0, +)
        var active = Array(0..<n)
        let w = temperatures.map { $0.isFinite && $0 > 0 ? $0 : 1e-12 }
        while remaining > 0, !active.isEmpty {
            var wsum = 0.0
            for i in active { wsum += w[i] }
            var capped: [Int] = []
            for i in active where Double(remaining) * w[i] / wsum >= Double(cap - alloc[i]) { capped.append(i) }
            if capped.isEmpty {
                var shares: [(Int, Double)] = []
                var given = 0
                for i in active {
                    let s = Double(remaining) * w[i] / wsum
                    let f = Int(s.rounded(.down))
                    alloc[i] += f
                    given += f
                    shares.append((i, s - Double(f)))
                }
                var left = remaining - given
                shares.sort { $0.1 > $1.1 || ($0.1 == $1.1 && $0.0 < $1.0) }
                var idx = 0
                while left > 0, !shares.isEmpty {
                    let i = shares[idx % shares.count].0
                    if alloc[i] < cap { alloc[i] += 1; left -= 1 }
                    idx += 1
                    if idx > shares.count * (cap + 1) { break }
                }
                remaining = left
                break
            }
            for i in capped { remaining -= cap - alloc[i]; alloc[i] = cap }
            active.removeAll { capped.contains($0) }
        }
        return alloc
    }
}

// MARK: - bf16-reference numerics (docs/algorithms.md §12)

extension StarKVPolicy {
    /// `scoreLayer` in the reference's bf16 dtype flow (docs/algorithms.md §12, STaR-KV rows): every
    /// tensor op of `update_kv`, `apply_mi_prior`, `temporal_apply_to_scaled` and the AEB helpers
    /// on bf16 values, each computed in fp32 and rounded once to bf16 (BF16Ops.swift). The MI
    /// value itself comes from the fp64 estimator (ranks by a stable sort: ties to the lower
    /// index) and is rounded to bf16 as `torch.tensor(out, dtype=vis.dtype)` does.
    func scoreLayerBF16(_ fields: StepFields, layer: Int, plan: BudgetPlan, spans: [Span], state: inout LayerState) throws -> LayerScore {
        let c = config
        let past = plan.past
        let h = fields.numHeads, hkv = fields.numKVHeads
        let m = fields.header.model
        var flops = 2.0 * Double(h) * Double(fields.promptLength) + 20 * Double(fields.promptLength)
        // Step 2: pooled window scores, bf16 (pooledWindowScores rounds in this numerics).
        var heads = try pooledWindowScores(fields, layer: layer, window: plan.window, past: past, kernel: c.kernel, pooling: c.pooling)
        let current = spans.last
        // Step 3: `apply_starkv_spatial_to_attn_cache` on the clipped current span.
        if c.spatialEnabled, c.alpha > 0, let cur = current {
            let norms = try fields.hiddenNorms(layer: layer)
            let offset = fields.step.images[..<cur.image].reduce(0) { $0 + $1.length }
            let first = offset + (cur.start - fields.step.images[cur.image].spanStart)
            let beta = spatialBoostBF16(norms: norms[first..<(first + cur.length)], alpha: c.alpha, temperature: c.spatialTemperature)
            for hh in 0..<h {
                heads[hh].withUnsafeMutableBufferPointer { row in
                    for u in 0..<cur.length { row[cur.start + u] = bf16Round(row[cur.start + u] + beta[u]) }
                }
            }
            let vc = Double(cur.length)
            flops += 2 * vc * Double(m.hiddenSize) + 6 * vc + Double(h) * vc
        }
        // Step 6: `ac.mean(dim=0)` and the per-group `ac[hs:he].mean(dim=0)`, bf16.
        let g = max(1, h / max(1, hkv))
        let base = bf16MeanRows(heads[0..<h])
        let groups = (0..<hkv).map { bf16MeanRows(heads[($0 * g)..<min(($0 + 1) * g, h)]) }
        // Step 4: AEB temperature (bf16 tensor ops, read back as a Python float).
        var temperature: Double? = nil
        if c.aebEnabled || c.entropyBudget {
            var t = Self.entropyTemperatureBF16(base, min: c.aebMin, max: c.aebMax)
            if c.aebSmooth > 0, let prev = state.aebTemperature {
                t = Double(bf16Round(opmath(c.aebSmooth * prev) + bf16Round(opmath(1 - c.aebSmooth) * Float(t))))
            }
            temperature = t
        }
        state.aebTemperature = c.aebEnabled ? temperature : nil
        // Step 7: `online_mi_prior`. With N_prof = 0 (or MI off) the reference still re-weights,
        // with uniform bf16 weights 1/H_kv and λ = λ_target.
        let miActive = c.miEnabled && c.miProfileSteps > 0
        var lambdaEff = c.miLambda
        var weights = [Float](repeating: bf16(1 / Double(hkv)), count: hkv)
        if miActive {
            state.profileStep += 1
            if let cur = current {
                let img = fields.step.images[cur.image]
                let grid: (Int, Int) = c.miTrueGrid && img.gridW > 0 && img.gridH > 0 ? (img.gridH, img.gridW) : Self.pseudoGrid(cur.length)
                var mi = [Double](repeating: 0, count: hkv)
                for gg in 0..<hkv {
                    let y = ArraySlice(groups[gg][cur.start..<cur.end].map(Double.init))
                    mi[gg] = Double(bf16(Self.spatialMutualInformation(y, gridH: grid.0, gridW: grid.1)))
                }
                if let prev = state.miEMA, prev.count == hkv {
                    let a = opmath(c.miDecay), b = opmath(1 - c.miDecay)
                    state.miEMA = (0..<hkv).map { Double(bf16Round(bf16Round(a * Float(prev[$0])) + bf16Round(b * Float(mi[$0])))) }
                } else {
                    state.miEMA = mi
                }
                let vc = Double(cur.length)
                flops += Double(hkv) * (vc * log2Double(vc) + 2 * vc + 16 * 144 * 5)
            }
            let ramp = max(1, c.miRampSteps == 0 ? c.miProfileSteps : c.miRampSteps)
            lambdaEff = state.profileStep <= c.miProfileSteps ? 0 : c.miLambda * min(1, Double(state.profileStep - c.miProfileSteps) / Double(ramp))
            if let ema = state.miEMA, ema.count == hkv { weights = Self.groupWeightsBF16(ema.map { Float($0) }, tau: c.miTau) }
        }
        // Step 8: g* = argmax (first maximum), scaled = base·((1 − λ) + λ·(w[g*]·H_kv)).
        var owner = [Int](repeating: 0, count: past)
        owner.withUnsafeMutableBufferPointer { own in
            var best = groups[0]
            for gg in 1..<max(1, hkv) {
                groups[gg].withUnsafeBufferPointer { row in
                    for j in 0..<past where row[j] > best[j] { best[j] = row[j]; own[j] = gg }
                }
            }
        }
        let factor: [Float] = (0..<hkv).map { gg in
            let wStar = bf16Round(weights[gg] * Float(hkv))
            return bf16Round(opmath(1 - lambdaEff) + bf16Round(opmath(lambdaEff) * wStar))
        }
        var scores = [Float](repeating: 0, count: past)
        for j in 0..<past { scores[j] = bf16Round(base[j] * factor[owner[j]]) }
        // Step 9: temporal discount.
        if c.temporalEnabled, past > 0, spans.count >= 2, let cur = current {
            let vc = cur.length
            var pattern = [Float](repeating: 0, count: hkv * vc)
            let floor = bf16(1e-8)
            for gg in 0..<hkv {
                let vals = (0..<vc).map { Swift.max(groups[gg][cur.start + $0], 0) }
                var d = bf16Sum(vals)
                if d < Float(1e-8) { d = floor }
                for u in 0..<vc { pattern[gg * vc + u] = bf16Round(vals[u] / d) }
            }
            var ema = pattern
            if let prev = state.patternEMA, state.patternWidth == vc, prev.count == pattern.count {
                let a = opmath(c.temporalRho), b = opmath(1 - c.temporalRho)
                for i in 0..<pattern.count { ema[i] = bf16Round(bf16Round(a * Float(prev[i])) + bf16Round(b * pattern[i])) }
            }
            state.patternEMA = ema.map(Double.init)
            state.patternWidth = vc
            // F.cosine_similarity (aten/src/ATen/native/Distance.cpp): norms clamped at eps,
            // (x1 / ‖x1‖) * (x2 / ‖x2‖), summed; then clamp(0, 1).
            var stability = [Float](repeating: 0, count: hkv)
            for gg in 0..<hkv {
                let x1 = pattern[(gg * vc)..<((gg + 1) * vc)], x2 = ema[(gg * vc)..<((gg + 1) * vc)]
                let n1 = Swift.max(Self.bf16Norm(x1), Float(1e-8)), n2 = Swift.max(Self.bf16Norm(x2), Float(1e-8))
                let prods = zip(x1, x2).map { bf16Round(bf16Round($0 / n1) * bf16Round($1 / n2)) }
                stability[gg] = Swift.min(1, Swift.max(0, bf16Sum(prods)))
            }
            if state.temporalStep > c.temporalWarmup {
                let f = spans.count
                let negDelta = opmath(-c.temporalDelta), eps = opmath(c.temporalEps), oneMinusEps = opmath(1 - c.temporalEps)
                let dMin = opmath(c.temporalDiscountMin), oneMinusDMin = opmath(1 - c.temporalDiscountMin)
                for (i, s) in spans.enumerated() {
                    let age = Float(f - 1 - i)
                    guard age > 0 else { continue }
                    let x = bf16Round(negDelta * age)
                    for j in s.start..<s.end {
                        let phi = bf16Round(eps + bf16Round(oneMinusEps * stability[owner[j]]))
                        let raw = bf16Exp(bf16Round(x * phi))
                        let d = bf16Round(dMin + bf16Round(oneMinusDMin * raw))
                        scores[j] = bf16Round(scores[j] * d)
                    }
                }
            }
            flops += 6 * Double(hkv) * Double(vc)
        }
        // Step 10: `scaled.clamp(min=0) ** (1/T)`, the exponent cast to bf16 as CUDA does.
        if c.aebEnabled, let t = temperature, t > 0 {
            let e = bf16(1 / t)
            for j in 0..<past { scores[j] = bf16Pow(Swift.max(scores[j], 0), e) }
        }
        return LayerScore(scores: scores.map(Double.init), temperature: temperature, lambdaEff: lambdaEff, flops: flops)
    }

    /// `torch.linalg.vector_norm(x, 2)` of bf16 values: fp64 sum of squares, √, one rounding.
    static func bf16Norm(_ x: ArraySlice<Float>) -> Float {
        var s = 0.0
        for v in x { s += Double(v) * Double(v) }
        return bf16Round(Float(s.squareRoot()))
    }

    /// `compute_entropy_temperature` on the bf16 head-mean scores (starkv_aeb.py): sum clamped at
    /// 1e−8, p = score/sum, `−Σ p·log(p + 1e−8)`, ÷ (ln P + 1e−8), `T_min + (T_max − T_min)·Ĥ`,
    /// each a bf16 tensor op; returned as the Python float `.item()` gives (a bf16 value).
    static func entropyTemperatureBF16(_ mean: [Float], min tMin: Double, max tMax: Double) -> Double {
        var sum = bf16Sum(mean)
        if sum < Float(1e-8) { sum = bf16(1e-8) }
        let eps = opmath(1e-8)
        var terms = [Float](repeating: 0, count: mean.count)
        for (j, v) in mean.enumerated() {
            let p = bf16Round(v / sum)
            terms[j] = bf16Round(p * bf16Log(bf16Round(p + eps)))
        }
        let entropy = -bf16Sum(terms)
        let maxEnt = logDouble(Double(Swift.max(1, mean.count)))
        let norm = bf16Round(entropy / opmath(maxEnt + 1e-8))
        return Double(bf16Round(opmath(tMin) + bf16Round(opmath(tMax - tMin) * norm)))
    }

    /// `mi_to_group_weights` on the bf16 MI EMA: min-max normalize (0.5 when the bf16 range
    /// < 1e−12), ÷ τ, softmax, ÷ the clamped sum; each a bf16 tensor op.
    static func groupWeightsBF16(_ mi: [Float], tau: Double) -> [Float] {
        guard let lo = mi.min(), let hi = mi.max() else { return [] }
        let range = bf16Round(hi - lo)
        let s: [Float] = Double(range) < 1e-12 ? mi.map { _ in 0.5 } : mi.map { bf16Round(bf16Round($0 - lo) / range) }
        let t = opmath(Swift.max(tau, 1e-6))
        let w = bf16Softmax(s.map { bf16Round($0 / t) })
        let total = Swift.max(bf16Sum(w), Float(1e-8))
        return w.map { bf16Round($0 / total) }
    }
}
