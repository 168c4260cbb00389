import Testing
import StarKVModel
import StarKVTrace
@testable import StarKVPolicies

/// Hand-computed selections for the baselines (docs/algorithms.md §4–§9).
@Suite struct BaselinePolicyTests {
    /// Four heads over L = 10 (columns 8, 9 are the window at C = 5, w = 2).
    static let rows: [[Float]] = [
        [0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.4, 0.6, 5, 5],
        [0.5, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1, 5, 5],
        [0, 0, 0, 0, 0, 0, 0, 1, 5, 5],
        [0.6, 0.4, 0.7, 0.3, 0.8, 0.2, 0.9, 0.1, 5, 5],
    ]

    @Test func fullCacheKeepsEveryPositionOfEveryLayer() throws {
        let out = try FullCachePolicy().compress(input(Fixture.step(length: 6), .percent(10)), state: .empty)
        #expect(out.layers.count == 2)
        #expect(out.layers.allSatisfy { $0.keptIndices == [[0, 1, 2, 3, 4, 5]] && !$0.compressed })
        #expect(out.scoringFLOPs == 0)
    }

    @Test func streamingLLMKeepsFourSinksPlusTheMostRecentTokens() throws {
        let out = try StreamingLLMPolicy().compress(input(Fixture.step(length: 10), .percent(50)), state: .empty)
        #expect(out.layers[0].keptIndices == [[0, 1, 2, 3, 9]])
        let two = try StreamingLLMPolicy(sinks: 2).compress(input(Fixture.step(length: 10), .tokens(5)), state: .empty)
        #expect(two.layers[1].keptIndices == [[0, 1, 7, 8, 9]])
        let tiny = try StreamingLLMPolicy().compress(input(Fixture.step(length: 10), .tokens(3)), state: .empty)
        #expect(tiny.layers[0].keptIndices == [[0, 1, 2]])
        #expect(tiny.scoringFLOPs == 0)
    }

    @Test func snapKVSelectsTopPastPerQueryHeadPlusWindow() throws {
        var s = Fixture.step(length: 10)
        Fixture.addWinSum(&s, Self.rows)
        let out = try SnapKVPolicy(window: 2, kernel: 1).compress(input(s, .percent(50)), state: .empty)
        let l = out.layers[0]
        #expect(l.granularity == .queryHead)
        #expect(l.windowTokens == 2 && l.capacityTokens == 5)
        #expect(l.keptIndices == [[1, 3, 5, 8, 9], [0, 1, 2, 8, 9], [0, 1, 7, 8, 9], [2, 4, 6, 8, 9]])
    }

    @Test func snapKVPoolingIsZeroPaddedAtThePastBoundary() throws {
        // Head 2 pooled with k = 3 over [0, 8): window columns (value 5) must not leak in.
        var s = Fixture.step(length: 10)
        Fixture.addWinSum(&s, Self.rows)
        let out = try SnapKVPolicy(window: 2, kernel: 3).compress(input(s, .percent(50)), state: .empty)
        #expect(out.layers[0].keptIndices[2] == [0, 6, 7, 8, 9])
    }

    @Test func snapKVClampsWindowToCapacityMinusTwo() throws {
        // C = 3 → w_eff = min(8, 1) = 1, P = 9, one past token + the last position.
        var s = Fixture.step(length: 10)
        Fixture.addWinSum(&s, Self.rows)
        let out = try SnapKVPolicy(window: 8, kernel: 1).compress(input(s, .percent(30)), state: .empty)
        #expect(out.layers[0].windowTokens == 1)
        #expect(out.layers[0].keptIndices[0] == [1, 8, 9])  // column 8 (5.0) is now past and wins
    }

    @Test func snapKVKeepsEverythingWhenPromptIsBelowCapacity() throws {
        var s = Fixture.step(length: 10)
        Fixture.addWinSum(&s, Self.rows)
        let out = try SnapKVPolicy(window: 2, kernel: 1).compress(input(s, .tokens(11)), state: .empty)
        #expect(out.layers.allSatisfy { !$0.compressed && $0.keptIndices == [Array(0..<10)] })
        #expect(out.scoringFLOPs == 0)
    }

    @Test func snapKVPressAveragesGroupsAndForcesTheWindow() throws {
        // Groups: (h0,h1) and (h2,h3). w = 2, C = 5 → top-3 past per KV head of the group mean.
        var s = Fixture.step(length: 10)
        Fixture.addWinSum(&s, Self.rows)
        let out = try SnapKVPressPolicy(window: 2, kernel: 1).compress(input(s, .percent(50)), state: .empty)
        // g0 mean: [.3,.7,.35,.65,.2,.4,.25,.35] → 1, 3, 5.  g1: [.3,.2,.35,.15,.4,.1,.45,.55] → 7, 6, 4.
        #expect(out.layers[0].granularity == .kvHead)
        #expect(out.layers[0].keptIndices == [[1, 3, 5, 8, 9], [4, 6, 7, 8, 9]])
        // Budget below the window: the window is padded with the layer's maximum (g0's 0.35 at
        // position 1 with w = 4) and topk(3) takes the tied positions lowest first: g0 keeps 1
        // and two window positions, g1 (all below the maximum) the first three window positions.
        let small = try SnapKVPressPolicy(window: 4, kernel: 1).compress(input(s, .tokens(3)), state: .empty)
        #expect(small.layers[0].keptIndices == [[1, 6, 7], [6, 7, 8]])
    }

    @Test func h2oUsesUnpooledAllQueryColumnSums() throws {
        var s = Fixture.step(length: 10)
        for l in 0..<2 { Fixture.add(&s, TraceField.colsumAll, layer: l, Fixture.rows(Self.rows)) }
        let out = try H2OPolicy(window: 2).compress(input(s, .percent(50)), state: .empty)
        #expect(out.layers[1].keptIndices == [[1, 3, 5, 8, 9], [0, 1, 2, 8, 9], [0, 1, 7, 8, 9], [2, 4, 6, 8, 9]])
        // §11: N_l·[2·H·L²·d + 3·H·L²] = 2·[2·4·100·4 + 3·4·100].
        #expect(out.scoringFLOPs == 2 * (2 * 4 * 100 * 4 + 3 * 4 * 100))
    }

    @Test func h2oObservedVariantDividesByQueriesThatSeeTheKey() throws {
        var s = Fixture.step(length: 10)
        let ones = [[Float]](repeating: [Float](repeating: 1, count: 10), count: 4)
        for l in 0..<2 { Fixture.add(&s, TraceField.colsumAll, layer: l, Fixture.rows(ones)) }
        let out = try H2OPolicy(observed: true).compress(input(s, .percent(50)), state: .empty)
        #expect(out.layers[0].keptIndices == [[5, 6, 7, 8, 9], [5, 6, 7, 8, 9]])
    }

    @Test func pyramidCapacitiesFollowTheLinearPyramid() {
        // C_w = 28, β = 20: min 1, max 55, step 18 → 55, 37, 19, 1.
        #expect(PyramidKVPolicy.layerCapacities(promptLength: 100, capacity: 30, window: 2, layers: 4, beta: 20) == [55, 37, 19, 1])
        // max clipped to L − w = 54 → min = 56 − 54 = 2, step 17.
        #expect(PyramidKVPolicy.layerCapacities(promptLength: 56, capacity: 30, window: 2, layers: 4, beta: 20) == [54, 37, 20, 3])
        // L < 2·C_w: uniform C_w.
        #expect(PyramidKVPolicy.layerCapacities(promptLength: 50, capacity: 30, window: 2, layers: 4, beta: 20) == [28, 28, 28, 28])
    }

    @Test func pyramidKVGivesLowerLayersMoreTokens() throws {
        // L = 40, C = 20, w = 2: C_w = 18, min 0, max 36 → layer 0 keeps 36 + 2, layer 1 keeps 0 + 2.
        var s = Fixture.step(length: 40)
        let rows = (0..<4).map { h in (0..<40).map { Float(($0 * 7 + h) % 40) } }
        Fixture.addWinSum(&s, rows)
        let out = try PyramidKVPolicy(window: 2, kernel: 1).compress(input(s, .percent(50)), state: .empty)
        #expect(out.layers[0].keptIndices.allSatisfy { $0.count == 38 })
        #expect(out.layers[1].keptIndices.allSatisfy { $0 == [38, 39] })
    }

    @Test func adaKVCountsGlobalTopScoresPerHeadAndRoundsHalfToEven() {
        let scores: [[Float]] = [[0.9, 0.8, 0.7, 0.1], [0.85, 0.05, 0.04, 0.03]]
        #expect(AdaKVPolicy(floorRatio: 0).headCapacities(scores, base: 2) == [3, 1])
        // f = 0.5: floor ⌊1.0⌋ = 1; round(3·0.5 + 1 = 2.5) = 2, round(1·0.5 + 1 = 1.5) = 2.
        #expect(AdaKVPolicy(floorRatio: 0.5).headCapacities(scores, base: 2) == [2, 2])
    }

    @Test func adaKVSelectsEachHeadsOwnTopTokens() throws {
        // Query-head granularity, w = 2, C = 4 → B0 = 2 over P = 8 (mean = sum/2, no pooling).
        var s = Fixture.step(length: 10)
        let rows: [[Float]] = [
            [9, 8, 7, 1, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 2, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ]
        Fixture.addWinSum(&s, rows)
        let p = AdaKVPolicy(window: 2, kernel: 1, pooling: .max, floorRatio: 0, granularity: .queryHead)
        let out = try p.compress(input(s, .tokens(4)), state: .empty)
        // Global top-8 of the sorted scores: head 0's 9, 8, 7, 1, head 1's 2, then zero ties by
        // flat index (head 0's zeros first) → n = [7, 1, 0, 0]; f = 0 → capacities = n.
        #expect(out.layers[0].keptIndices == [[0, 1, 2, 3, 4, 5, 6, 8, 9], [7, 8, 9], [8, 9], [8, 9]])
    }
}

@Suite struct VLCacheTests {
    @Test func layerBudgetsFollowPostVisionDensityInFloat32WithTruncation() {
        // Shares 48/64 and 16/64 → γ = 0.25 / 0.75 → β = 0.75 / 0.25 of C·N_l = 20.
        #expect(VLCachePolicy.layerBudgets(counts: [[48], [16]], valid: [64, 64], capacity: 10) == [15, 5])
        // Densities 2/64, 7/64, 1/64 → β = 0.2, 0.7, 0.1 of 90: exactly 18, 63, 9. The reference's
        // float32 arithmetic gets 63 (torch: `(90 * betas).int()`); fp64 would give 62.999… → 62.
        #expect(VLCachePolicy.layerBudgets(counts: [[2], [7], [1]], valid: [64, 64, 64], capacity: 30) == [18, 63, 9])
        // Shares are clipped to [0.001, 1]: 200 · 0.001 = 0.2 → 0.
        #expect(VLCachePolicy.layerBudgets(counts: [[64], [0]], valid: [64, 64], capacity: 100) == [200, 0])
        // Per-head γ are averaged over heads: (1/4 + 3/4)/2 = 0.5 on both layers → equal halves.
        #expect(VLCachePolicy.layerBudgets(counts: [[16, 48], [32, 32]], valid: [64, 64], capacity: 10) == [10, 10])
    }

    /// L = 20, image [2, 10) → e* = 10, post-vision window 10. 3/4 vs 1/4 of the post-vision
    /// entries above 0.01 → β = 0.75 / 0.25.
    static func step(winSum4: [Float]? = nil) -> StepRecord {
        var s = Fixture.step(length: 20, images: [Fixture.image(2, 10)])
        let ramp = [[Float]](repeating: (0..<20).map { Float($0) / 10 }, count: 4)
        for (layer, count) in [(0, Int64(3)), (1, Int64(1))] {
            Fixture.add(&s, TraceField.colsumPostvis, layer: layer, Fixture.rows(ramp))
            Fixture.add(&s, TraceField.countGt001, layer: layer, Tensor(int64: [count, count, count, count], shape: [4]))
            Fixture.add(&s, TraceField.nValid, layer: layer, Tensor(int64: [4], shape: [1]))
            if let w = winSum4 { Fixture.addWinSum(&s, [[Float]](repeating: w, count: 4), layers: 2) }
        }
        return s
    }

    @Test func vlCacheKeepsWholePostVisionWindowOrFallsBackToCapacityOne() throws {
        // Budgets 15 / 5 at C = 10 (50 %).
        let notes = PolicyNotes()
        let out = try VLCachePolicy(kernel: 1).compress(
            PolicyStepInput(header: Fixture.header(), step: Self.step(), budget: .percent(50), notes: notes), state: .empty)
        #expect(out.layers[0].keptIndices.allSatisfy { $0 == (5..<20).map { Int32($0) } })
        #expect(out.layers[0].windowTokens == 10 && out.layers[0].capacityTokens == 15)
        // Budget 5 ≤ window 10: capacity 1, window 4. Without the window-4 sums in the step, the
        // post-vision sums truncated to [0, 16) stand in (top-1 = 15), and a note says so.
        #expect(out.layers[1].keptIndices.allSatisfy { $0 == [15, 16, 17, 18, 19] })
        #expect(out.layers[1].windowTokens == 4)
        #expect(notes.all.contains { $0.contains("budget − 1 rows") })
    }

    @Test func fallbackScoresWithTheLastBudgetMinusOneRows() throws {
        // The recorded window-4 sums peak at position 3: the reference re-scores with those rows.
        var w = [Float](repeating: 0.1, count: 20)
        w[3] = 0.9
        let notes = PolicyNotes()
        let out = try VLCachePolicy(kernel: 1).compress(
            PolicyStepInput(header: Fixture.header(), step: Self.step(winSum4: w), budget: .percent(50), notes: notes), state: .empty)
        #expect(out.layers[1].keptIndices.allSatisfy { $0 == [3, 16, 17, 18, 19] })
        #expect(notes.all.isEmpty)
    }

    @Test func noEarlyExitAtFullBudget() throws {
        // At 100 %: C = 20, budgets 30 / 10. Layer 0 keeps everything; layer 1's budget 10 is
        // below L, so it is compressed (fallback: capacity 1 + window 9) as in the reference.
        let out = try VLCachePolicy(kernel: 1).compress(input(Self.step(), .percent(100)), state: .empty)
        #expect(!out.layers[0].compressed)
        #expect(out.layers[1].compressed)
        #expect(out.layers[1].keptIndices.allSatisfy { $0.count == 10 })
    }
}
