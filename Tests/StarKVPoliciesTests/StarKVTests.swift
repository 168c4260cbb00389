import Foundation
import Testing
import StarKVModel
import StarKVTrace
@testable import StarKVPolicies

/// STaR-KV as released (docs/algorithms.md §2.3–2.6), module by module.
@Suite struct StarKVTests {
    static func config(_ edit: (inout StarKVPolicy.Config) -> Void = { _ in }) -> StarKVPolicy.Config {
        var c = StarKVPolicy.Config()
        c.kernel = 1
        edit(&c)
        return c
    }

    /// L = 12, one image [2, 8); C = 6 → w_eff = max(1, min(8, 4)) = 4, P = 8, K = 2.
    /// Head 0 puts 1.0 on position 0, heads 1–3 put 0.4 on position 1: means 0.25 and 0.3.
    static func oneImageStep(reset: Bool = false, index: Int = 0) -> StepRecord {
        var s = Fixture.step(length: 12, images: [Fixture.image(2, 8, gridH: 2, gridW: 3)], reset: reset, index: index)
        var rows = [[Float]](repeating: [Float](repeating: 0, count: 12), count: 4)
        rows[0][0] = 1
        for h in 1..<4 { rows[h][1] = 0.4 }
        Fixture.addWinSum(&s, rows)
        Fixture.addHidNorm(&s, [1, 1, 1, 1, 1, 10])
        return s
    }

    @Test func sharedSetIsTopKOfHeadMeanPlusSpatialBoost() throws {
        // Boost (α 2, T_s 3.5) on norms [1,1,1,1,1,10]: ≈0.285 on 2..6, ≈0.574 on 7.
        // Mean scores: 0 → 0.25, 1 → 0.3, 7 → 0.574 → top-2 = {1, 7}.
        let out = try StarKVPolicy(config: Self.config()).compress(input(Self.oneImageStep(), .percent(50)), state: .empty)
        #expect(out.layers[0].granularity == .shared)
        #expect(out.layers[0].windowTokens == 4)
        #expect(out.layers[0].keptIndices == [[1, 7, 8, 9, 10, 11]])
        let noSpatial = try StarKVPolicy(config: Self.config { $0.spatialEnabled = false }).compress(input(Self.oneImageStep(), .percent(50)), state: .empty)
        #expect(noSpatial.layers[1].keptIndices == [[0, 1, 8, 9, 10, 11]])
    }

    @Test func windowClampKeepsAtLeastOneWindowTokenAndOnePastToken() throws {
        var s = Fixture.step(length: 10)
        Fixture.addWinSum(&s, [[Float]](repeating: (0..<10).map { Float($0 % 4) }, count: 4))
        let p = StarKVPolicy(config: Self.config { $0.spatialEnabled = false })
        // C = 3 → w_eff = 1, K = 2: scores over [0, 9) = 0,1,2,3,0,1,2,3,0 → 3 and 7.
        #expect(try p.compress(input(s, .percent(30)), state: .empty).layers[0].keptIndices == [[3, 7, 9]])
        // C = 1 → w_eff = max(1, −1) = 1, K = max(1, 0) = 1: two tokens, more than C (as released).
        #expect(try p.compress(input(s, .percent(10)), state: .empty).layers[0].keptIndices == [[3, 9]])
    }

    @Test func imageInsideTheWindowIsDroppedAndNeedsNoHiddenNorms() throws {
        // Image [9, 11) lies in the window (P = 8): no current frame, no boost, hid_norm unread.
        var s = Fixture.step(length: 12, images: [Fixture.image(9, 11)])
        Fixture.addWinSum(&s, [[Float]](repeating: [0, 5, 0, 4, 0, 0, 0, 0, 9, 9, 9, 9], count: 4))
        let out = try StarKVPolicy(config: Self.config()).compress(input(s, .percent(50)), state: .empty)
        #expect(out.layers[0].keptIndices == [[1, 3, 8, 9, 10, 11]])
        // A text-only step works the same.
        var t = Fixture.step(length: 12)
        Fixture.addWinSum(&t, [[Float]](repeating: [0, 5, 0, 4, 0, 0, 0, 0, 9, 9, 9, 9], count: 4))
        #expect(try StarKVPolicy(config: Self.config()).compress(input(t, .percent(50)), state: .empty).layers[1].keptIndices == [[1, 3, 8, 9, 10, 11]])
    }

    @Test func noCompressionBelowCapacityStillCountsTemporalSteps() throws {
        let p = StarKVPolicy(config: Self.config())
        let out = try p.compress(input(Self.oneImageStep(), .tokens(13)), state: .empty)
        #expect(out.layers.allSatisfy { !$0.compressed && $0.keptIndices == [Array(0..<12)] })
        let st = try #require(out.state.value(as: StarKVPolicy.State.self))
        #expect(st.layers.allSatisfy { $0.temporalStep == 1 && $0.profileStep == 0 })
    }

    @Test func miEstimatorGivesLn4WhenEveryTokenHasItsOwnCellAndBin() {
        // V = 4 → pseudo-grid 2×2 → four distinct cells; ranks 0..3 → bins 0, 4, 8, 12.
        let mi = StarKVPolicy.spatialMutualInformation([0.1, 0.2, 0.3, 0.4][...], gridH: 2, gridW: 2)
        #expect(abs(mi - log(4.0)) < 1e-9)
        #expect(StarKVPolicy.spatialMutualInformation([0.5][...], gridH: 1, gridW: 1) == 0)
        #expect(StarKVPolicy.spatialMutualInformation([-1, -2, -3][...], gridH: 1, gridW: 3) == 0)
        // Both tokens in one lattice cell (1×100 grid: columns 0 and 1 both bin to 0) → 0.
        #expect(StarKVPolicy.spatialMutualInformation([0.1, 0.2][...], gridH: 1, gridW: 100) == 0)
    }

    @Test func miIsHigherForSpatiallyStructuredAttentionThanForNoise() {
        // 24×24 frame (576 tokens, 2×2 tokens per cell): row-wise ramp vs seeded noise.
        var rng = SplitMix64(seed: 3)
        let ramp = (0..<576).map { Double($0 / 24) + 0.001 * Double($0 % 24) }
        let noise = (0..<576).map { _ in Double(rng.nextFloat()) }
        let (gh, gw) = StarKVPolicy.pseudoGrid(576)
        #expect(gh == 24 && gw == 24)
        let structured = StarKVPolicy.spatialMutualInformation(ramp[...], gridH: gh, gridW: gw)
        let random = StarKVPolicy.spatialMutualInformation(noise[...], gridH: gh, gridW: gw)
        #expect(structured > random + 0.5)
    }

    @Test func pseudoGridIsSquareRootBasedAsReleased() {
        #expect(StarKVPolicy.pseudoGrid(3354) == (58, 58))  // a 39×86 Android screen (§2.6-5)
        #expect(StarKVPolicy.pseudoGrid(2691) == (52, 52))
        #expect(StarKVPolicy.pseudoGrid(1) == (1, 1))
    }

    @Test func groupWeightsAreSoftmaxOfMinMaxNormalizedMI() {
        let w = StarKVPolicy.groupWeights([0.2, 0.7], tau: 1)
        #expect(abs(w[0] - 1 / (1 + M_E)) < 1e-12 && abs(w[1] - M_E / (1 + M_E)) < 1e-12)
        #expect(StarKVPolicy.groupWeights([0.3, 0.3, 0.3, 0.3], tau: 1) == [0.25, 0.25, 0.25, 0.25])
    }

    @Test func lambdaRampsAfterProfilingAndResetsWithTheEpisode() throws {
        let p = StarKVPolicy(config: Self.config { $0.miProfileSteps = 2; $0.miRampSteps = 2; $0.aebEnabled = false })
        var state = p.initialState
        var lambdas: [Double] = []
        for i in 0..<5 {
            let out = try p.compress(input(Self.oneImageStep(index: i), .percent(50)), state: state)
            lambdas.append(out.diagnostics["lambda_eff"]![0])
            state = out.state
        }
        #expect(lambdas == [0, 0, 0.25, 0.5, 0.5])
        let afterReset = try p.compress(input(Self.oneImageStep(reset: true, index: 5), .percent(50)), state: state)
        #expect(afterReset.diagnostics["lambda_eff"]![0] == 0)
        // A reset step gives exactly what a fresh replay gives.
        let fresh = try p.compress(input(Self.oneImageStep(reset: true, index: 5), .percent(50)), state: p.initialState)
        #expect(afterReset == fresh)
    }

    @Test func miPriorReweightsTokensByTheirOwningGroup() throws {
        // 24×24 current frame: group 0 (heads 0, 1) attends with a row ramp (high MI), group 1
        // (heads 2, 3) with noise (low MI). After N_prof = 1, R = 1, λ_eff = 0.5 on step 2.
        var rng = SplitMix64(seed: 11)
        let v = 576, l = v + 24
        var s = Fixture.step(length: l, images: [Fixture.image(0, v, gridH: 24, gridW: 24)])
        var rows = [[Float]](repeating: [Float](repeating: 0, count: l), count: 4)
        for u in 0..<v {
            let ramp = Float(u / 24) / 24 + 0.0001 * Float(u % 24)
            rows[0][u] = ramp; rows[1][u] = ramp
            rows[2][u] = rng.nextFloat(); rows[3][u] = rng.nextFloat()
        }
        Fixture.addWinSum(&s, rows)
        let p = StarKVPolicy(config: Self.config { $0.spatialEnabled = false; $0.miProfileSteps = 1; $0.miRampSteps = 1; $0.aebEnabled = false; $0.temporalEnabled = false })
        let first = try p.compress(input(s, .percent(20)), state: .empty)
        let second = try p.compress(input(s, .percent(20)), state: first.state)
        #expect(second.diagnostics["lambda_eff"]![0] == 0.5)
        let st = try #require(second.state.value(as: StarKVPolicy.State.self))
        let ema = try #require(st.layers[0].miEMA)
        #expect(ema[0] > ema[1])
        // Expected selection from the spec formula: m = base · ((1 − λ) + λ·H_kv·w_{g*}).
        let w = StarKVPolicy.groupWeights(ema, tau: 1)
        let plan = BudgetPlan(promptLength: l, budget: .percent(20), window: 8, clamp: .starKVQwen)
        var m = [Double](repeating: 0, count: plan.past)
        for j in 0..<plan.past {
            let g0 = (Double(rows[0][j]) + Double(rows[1][j])) / 2, g1 = (Double(rows[2][j]) + Double(rows[3][j])) / 2
            let base = (Double(rows[0][j]) + Double(rows[1][j]) + Double(rows[2][j]) + Double(rows[3][j])) / 4
            let owner = g1 > g0 ? 1 : 0
            m[j] = base * (0.5 + 0.5 * 2 * w[owner])
        }
        let k = plan.capacity - plan.window
        #expect(second.layers[0].keptIndices[0] == withWindow(topKAscending(m, count: k), past: plan.past, promptLength: l))
        #expect(second.layers[0].keptIndices != first.layers[0].keptIndices)
    }

    /// L = 16: previous image [0, 4), current [4, 8), text 8–11, window 12–15 (C = 6 → w_eff 4, K 2).
    static func temporalStep(index: Int = 0, reset: Bool = false) -> StepRecord {
        var s = Fixture.step(length: 16, images: [Fixture.image(0, 4, age: 1), Fixture.image(4, 8)], reset: reset, index: index)
        let r: [Float] = [1.0, 0, 0, 0, 0.3, 0.2, 0.1, 0.05, 0.95, 0.92, 0, 0, 0, 0, 0, 0]
        Fixture.addWinSum(&s, [[Float]](repeating: r, count: 4))
        return s
    }

    @Test func temporalDiscountDemotesOlderFramesAfterWarmup() throws {
        let base = Self.config { $0.spatialEnabled = false; $0.miEnabled = false; $0.aebEnabled = false }
        // Stable pattern (σ = 1): previous-frame token 0 → 1.0·e^(−0.1) = 0.905 < 0.95, 0.92.
        let on = try StarKVPolicy(config: base).compress(input(Self.temporalStep(), .tokens(6)), state: .empty)
        #expect(on.layers[0].keptIndices == [[8, 9, 12, 13, 14, 15]])
        var off = base
        off.temporalEnabled = false
        #expect(try StarKVPolicy(config: off).compress(input(Self.temporalStep(), .tokens(6)), state: .empty).layers[0].keptIndices == [[0, 8, 12, 13, 14, 15]])
        // Warmup 1: the first step is not discounted, the second is.
        var warm = base
        warm.temporalWarmup = 1
        let p = StarKVPolicy(config: warm)
        let s1 = try p.compress(input(Self.temporalStep(), .tokens(6)), state: .empty)
        #expect(s1.layers[0].keptIndices == [[0, 8, 12, 13, 14, 15]])
        let s2 = try p.compress(input(Self.temporalStep(index: 1), .tokens(6)), state: s1.state)
        #expect(s2.layers[0].keptIndices == [[8, 9, 12, 13, 14, 15]])
        // Reset brings the warmup back.
        let s3 = try p.compress(input(Self.temporalStep(index: 2, reset: true), .tokens(6)), state: s2.state)
        #expect(s3.layers[0].keptIndices == [[0, 8, 12, 13, 14, 15]])
    }

    @Test func temporalStabilityFollowsTheEMAOfTheCurrentPattern() throws {
        // Step 1 pattern A, step 2 pattern B (disjoint support): E = 0.9·A + 0.1·B, σ = cos(B, E) small
        // → little discount: the previous-frame token (1.0·e^(−0.1·σ)) beats 0.95 again.
        let base = Self.config { $0.spatialEnabled = false; $0.miEnabled = false; $0.aebEnabled = false }
        let p = StarKVPolicy(config: base)
        let s1 = try p.compress(input(Self.temporalStep(), .tokens(6)), state: .empty)
        var t = Fixture.step(length: 16, images: [Fixture.image(0, 4, age: 1), Fixture.image(4, 8)], index: 1)
        let r: [Float] = [1.0, 0, 0, 0, 0, 0, 0.05, 0.3, 0.95, 0.92, 0, 0, 0, 0, 0, 0]
        Fixture.addWinSum(&t, [[Float]](repeating: r, count: 4))
        let s2 = try p.compress(input(t, .tokens(6)), state: s1.state)
        #expect(s2.layers[0].keptIndices == [[0, 8, 12, 13, 14, 15]])
        let st = try #require(s2.state.value(as: StarKVPolicy.State.self))
        #expect(st.layers[0].patternWidth == 4)
    }

    @Test func entropyBudgetsSplitTheTotalByTemperature() {
        #expect(StarKVPolicy.entropyBudgets(perLayer: 10, temperatures: [1, 3], cap: 100) == [6, 14])
        #expect(StarKVPolicy.entropyBudgets(perLayer: 10, temperatures: [1, 100], cap: 12) == [8, 12])
        #expect(StarKVPolicy.entropyBudgets(perLayer: 5, temperatures: [1, 1, 1], cap: 50) == [5, 5, 5])
    }

    @Test func entropyTemperatureSpansTMinToTMax() {
        #expect(abs(StarKVPolicy.entropyTemperature([1, 1, 1, 1], min: 0.5, max: 1.5) - 1.5) < 1e-6)
        #expect(abs(StarKVPolicy.entropyTemperature([1, 0, 0, 0], min: 0.5, max: 1.5) - 0.5) < 1e-6)
    }

    @Test func presetsMatchTheReferenceDrivers() throws {
        let anb = try StarKVPolicy(options: PolicyOptions(["preset": "agentnetbench"])).config
        #expect(anb.miProfileSteps == 5 && anb.miRampSteps == 10 && anb.temporalEnabled && anb.aebEnabled && anb.aebMin == 0.95 && anb.aebMax == 1.05 && anb.spatialTemperature == 3.5)
        let ssp = try StarKVPolicy(options: PolicyOptions(["preset": "screenspot-pro"])).config
        #expect(ssp.aebMin == 0.75 && ssp.aebMax == 1.25)
        let cli = try StarKVPolicy(options: PolicyOptions(["preset": "cli-defaults"])).config
        #expect(cli.miProfileSteps == 0 && !cli.temporalEnabled && !cli.aebEnabled && cli.temporalWarmup == 20)
        let ssv2 = try StarKVPolicy(options: PolicyOptions(["preset": "screenspot-v2", "alpha": "1.5"])).config
        #expect(ssv2.spatialTemperature == 1.0 && ssv2.alpha == 1.5)
    }
}
