import Foundation
import Testing
import StarKVModel
import StarKVTrace
@testable import StarKVPolicies

@Suite struct PrimitivesTests {
    @Test func topKBreaksTiesByLowerPositionAndReturnsAscending() {
        #expect(topKAscending([1, 3, 3, 2, 3] as [Float], count: 2) == [1, 2])
        #expect(topKAscending([1, 3, 3, 2, 3] as [Float], count: 3) == [1, 2, 4])
        #expect(topKAscending([5, 1, 9] as [Float], count: 2) == [0, 2])
        #expect(topKAscending([0, 0, 0, 0] as [Float], count: 2) == [0, 1])
    }

    @Test func topKRanksNaNBelowEveryNumber() {
        #expect(topKAscending([Float.nan, 0, -1] as [Float], count: 2) == [1, 2])
    }

    @Test func topKTiesNegativeAndPositiveZeroAndNaNWithMinusInfinity() {
        // -0 == +0 and NaN ranks as -inf: both pairs tie, so the lower position wins.
        #expect(topKAscending([0, -0.0, 1] as [Float], count: 2) == [0, 2])
        #expect(topKAscending([-0.0, 0, 1] as [Float], count: 2) == [0, 2])
        #expect(topKAscending([-Double.infinity, .nan, 2] as [Double], count: 2) == [0, 2])
        #expect(topKAscending([.nan, -Double.infinity, 2] as [Double], count: 2) == [0, 2])
    }

    @Test func topKOrdersNegativeValuesAndSubnormals() {
        let scores: [Double] = [-3, -1e-310, 5e-324, -0.5, 1e300, -1e300]
        // Descending: 1e300 (4), 5e-324 (2), -1e-310 (1), -0.5 (3), -3 (0), -1e300 (5).
        #expect(topKAscending(scores, count: 3) == [1, 2, 4])
        #expect(topKAscending(scores, count: 5) == [0, 1, 2, 3, 4])
    }

    @Test func topKHandlesEmptyAndOversizedRequests() {
        #expect(topKAscending([1, 2] as [Float], count: 0) == [])
        #expect(topKAscending([1, 2] as [Float], count: 5) == [0, 1])
        #expect(topKAscending([Float](), count: 3) == [])
    }

    @Test func topKMatchesAStableSortOnRandomInputsWithManyTies() {
        var rng = SplitMix64(seed: 7)
        for trial in 0..<200 {
            let n = 1 + Int(rng.next() % 300)
            let scores = (0..<n).map { _ in Float(rng.next() % 7) / 2 }  // heavy ties
            let k = Int(rng.next() % UInt64(n + 1))
            let expected = (0..<n).sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
                .prefix(k).sorted().map { Int32($0) }
            #expect(topKAscending(scores, count: k) == expected, "trial \(trial)")
        }
    }

    @Test func topKMatchesAStableSortOnRandomDoublesOfEverySign() {
        var rng = SplitMix64(seed: 11)
        for trial in 0..<200 {
            let n = 1 + Int(rng.next() % 2000)
            // Full-range bit patterns (no NaN) plus repeated values, so every radix digit and
            // the tie path are exercised.
            let scores: [Double] = (0..<n).map { _ in
                let r = rng.next()
                if r % 5 == 0 { return Double(r % 3) }
                let d = Double(bitPattern: rng.next())
                return d.isNaN ? 0 : d
            }
            let k = Int(rng.next() % UInt64(n + 1))
            let expected = (0..<n).sorted { scores[$0] > scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
                .prefix(k).sorted().map { Int32($0) }
            #expect(topKAscending(scores, count: k) == expected, "trial \(trial)")
        }
    }

    @Test func halfPrecisionTableMatchesTheIEEEConversionForEveryBitPattern() {
        for bits in 0...Int(UInt16.max) {
            let want = Float(Float16(bitPattern: UInt16(bits)))
            let got = HalfPrecision.float(UInt16(bits))
            #expect(got.bitPattern == want.bitPattern || (got.isNaN && want.isNaN), "bits \(bits)")
        }
    }

    @Test func avgPoolCountsPaddingInTheDivisor() {
        // k = 3: [ (0+3+0)/3, (3+0+6)/3, (0+6+0)/3 ].
        #expect(pool([3, 0, 6], kernel: 3, pooling: .avg) == [1, 3, 2])
        #expect(pool([3, 0, 6], kernel: 1, pooling: .avg) == [3, 0, 6])
    }

    @Test func maxPoolTakesInRangeNeighbours() {
        #expect(pool([3, 0, 6, -1], kernel: 3, pooling: .max) == [3, 6, 6, 6])
        #expect(pool([-2, -3], kernel: 3, pooling: .max) == [-2, -2])
    }

    @Test func percentBudgetFloorsLTimesBOver100() {
        #expect(KVBudget.percent(20).capacity(promptLength: 37) == 7)  // 7.4
        #expect(KVBudget.percent(10).capacity(promptLength: 2800) == 280)
        #expect(KVBudget.percent(12.5).capacity(promptLength: 9) == 1)
        #expect(KVBudget.tokens(512).capacity(promptLength: 100) == 512)
        #expect(KVBudget(parsing: "20%") == .percent(20))
        #expect(KVBudget(parsing: "512tok") == .tokens(512))
        #expect(KVBudget(parsing: "x") == nil)
        #expect(KVBudget.percent(20).description == "20%")
    }

    @Test func windowClampsFollowEachReference() {
        #expect(WindowClamp.starKVQwen.apply(window: 8, capacity: 3, promptLength: 100) == 1)
        #expect(WindowClamp.starKVQwen.apply(window: 8, capacity: 2, promptLength: 100) == 1)
        #expect(WindowClamp.starKVQwen.apply(window: 8, capacity: 50, promptLength: 100) == 8)
        #expect(WindowClamp.reference.apply(window: 8, capacity: 3, promptLength: 100) == 1)
        #expect(WindowClamp.reference.apply(window: 8, capacity: 2, promptLength: 100) == 1)
        #expect(WindowClamp.reference.apply(window: 8, capacity: 7, promptLength: 100) == 5)
        #expect(WindowClamp.none.apply(window: 64, capacity: 3, promptLength: 40) == 40)
    }

    @Test func spatialBoostIsAlphaTimesSoftmaxOfZScores() {
        // norms [1,2,3]: mean 2, Bessel std 1 → z = [-1, 0, 1]; T = 1.
        let b = spatialBoost(norms: [1, 2, 3][...], alpha: 2, temperature: 1)
        let e = [exp(-1.0), 1, exp(1.0)]
        let s = e.reduce(0, +)
        for u in 0..<3 { #expect(abs(Double(b[u]) - 2 * e[u] / s) < 1e-6) }
        // Uniform norms (std 0) and a single token give α/V each.
        #expect(spatialBoost(norms: [4, 4][...], alpha: 1, temperature: 3.5) == [0.5, 0.5])
        #expect(spatialBoost(norms: [7][...], alpha: 2, temperature: 1) == [2])
    }

    @Test func snapKVFlopsMatchSpecScenarioA() {
        // docs/algorithms.md §11 worked numbers: scenario A (L 2,800, w 8, k 5) ≈ 4.6 G.
        let f = snapKVScoringFLOPs(RecordedModel(ModelPresets.qwen25VL7B), promptLength: 2800, window: 8, kernel: 5)
        #expect(abs(f - 4.63e9) / 4.63e9 < 0.01)
    }

    @Test func guiKVFlopsMatchSpecScenarioC() {
        // Scenario C: L 13.5k, 5 frames × 2.5k → QR part 195 G, total 217 G (as coded, per head).
        let m = RecordedModel(ModelPresets.qwen25VL7B)
        let total = GUIKVPolicy.scoringFLOPs(model: m, promptLength: 13_500, window: 8, kernel: 5, currentVisual: 2_500,
                                             previousVisual: 10_000, spatial: true, temporal: true)
        #expect(abs(total - 217e9) / 217e9 < 0.02)
        let dedup = GUIKVPolicy.scoringFLOPs(model: m, promptLength: 13_500, window: 8, kernel: 5, currentVisual: 2_500,
                                             previousVisual: 10_000, spatial: true, temporal: true, qrPerQueryHead: false)
        #expect(abs((dedup - 22.3e9 - 0.5e9) - 28e9) / 28e9 < 0.05)
    }
}

/// bf16-reference numerics (docs/algorithms.md §1.5) and window sums the trace holds indirectly.
@Suite struct NumericsTests {
    @Test func bf16RoundingIsRoundToNearestEvenOnTheUpperHalf() {
        #expect(bf16Round(1) == 1)
        // 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷: ties go to the even mantissa (1).
        #expect(bf16Round(Float(bitPattern: 0x3F80_8000)) == 1)
        // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ (odd) and 1 + 2⁻⁶ (even): up.
        #expect(bf16Round(Float(bitPattern: 0x3F81_8000)) == Float(bitPattern: 0x3F82_0000))
        // Just above the halfway point rounds up.
        #expect(bf16Round(Float(bitPattern: 0x3F80_8001)) == Float(bitPattern: 0x3F81_0000))
        #expect(bf16Round(-2.5) == -2.5)
        #expect(bf16Round(.nan).isNaN)
        #expect(bf16Round(.greatestFiniteMagnitude) == .infinity)
    }

    @Test func bf16PoolingRoundsTheFp32Quotient() {
        // (0 + 1 + 1)/3 = 0.6666667 (0x3F2AAAAB) → bf16 0x3F2B = 0.66796875.
        #expect(pool([1, 1, 1], kernel: 3, pooling: .avg, numerics: .fp32) == [2 / Float(3), 1, 2 / Float(3)])
        #expect(pool([1, 1, 1], kernel: 3, pooling: .avg, numerics: .bf16Reference) == [0.66796875, 1, 0.66796875])
    }

    @Test func bf16BoostRoundsEveryTensorOp() {
        // Norms 3, 4, 5: mean 4, std 1, z = −1, 0, 1; 2·softmax(z) = 0.1801, 0.4895, 1.3305, whose
        // softmax output rounds to bf16 before the × 2 (torch: 0.1796875, 0.490234375, 1.328125).
        #expect(spatialBoostBF16(norms: [3, 4, 5], alpha: 2, temperature: 1) == [0.1796875, 0.490234375, 1.328125])
        // Norms 3, 4, 5, 9 at T_s = 3.5: mean 5.25, std 2.625 (both bf16); torch gives these four.
        #expect(spatialBoostBF16(norms: [3, 4, 5, 9], alpha: 2, temperature: 3.5) == [0.37890625, 0.421875, 0.470703125, 0.7265625])
        // fp32 path for comparison: not rounded.
        #expect(spatialBoost(norms: [3, 4, 5], alpha: 2, temperature: 1) != [0.1796875, 0.490234375, 1.328125])
    }

    @Test func windowSumsAreDerivedFromRawRowsWhenTheWindowWasNotRecorded() throws {
        // win_rows holds the last 3 rows; window 2 = rows 1 and 2 summed; windows recorded: [8].
        let l = 5
        var header = Fixture.header()
        header.windowSizes = [8]
        header.winRowsMax = 3
        var s = Fixture.step(length: l)
        var flat: [Float] = []
        for h in 0..<4 { for r in 0..<3 { for j in 0..<l { flat.append(Float(100 * h + 10 * r + j)) } } }
        Fixture.add(&s, TraceField.winRows, layer: 0, Tensor(floats: flat, shape: [4, 3, l]))
        let notes = PolicyNotes()
        let fields = try StepFields(policy: "t", input: PolicyStepInput(header: header, step: s, budget: .percent(50), notes: notes))
        let rows = try fields.windowSums(layer: 0, window: 2, columns: 4)
        // head h, column j: (100h + 10 + j) + (100h + 20 + j).
        var expected: [[Float]] = []
        for h in 0..<4 { expected.append((0..<4).map { j in Float(200 * h + 30 + 2 * j) }) }
        #expect(rows == expected)
        #expect(notes.all.isEmpty)
        // Window 4 > W = 3: not derivable; no win_sum chunk for window 8 either → missingChunk.
        #expect(throws: PolicyError.self) { try fields.windowSums(layer: 0, window: 4, columns: 4) }
    }

    @Test func aWindowOfAtLeastLRowsIsAnyRecordedWindowOfAtLeastL() throws {
        // L = 5: windows 6 and 8 both sum all 5 rows, so the recorded window 8 is exact for 6.
        var header = Fixture.header()
        header.windowSizes = [8]
        var s = Fixture.step(length: 5)
        Fixture.add(&s, TraceField.winSum, layer: 0, Fixture.winSum([[Float]](repeating: [1, 2, 3, 4, 5], count: 4), windows: 1))
        let notes = PolicyNotes()
        let fields = try StepFields(policy: "t", input: PolicyStepInput(header: header, step: s, budget: .percent(50), notes: notes))
        #expect(try fields.windowSums(layer: 0, window: 6, columns: 5)[0] == [1, 2, 3, 4, 5])
        #expect(notes.all.isEmpty)
    }

    @Test func shortPromptsFallBackToTheNearestRecordedWindowWithANote() throws {
        // L = 12 at 50 %: C = 6, w_eff = min(8, 4) = 4, but only window 8 was recorded.
        var header = Fixture.header()
        header.windowSizes = [8]
        var s = Fixture.step(length: 12)
        let row: [Float] = [0.1, 0.9, 0.2, 0.8, 0.3, 0.7, 0.05, 0.6, 0, 0, 0, 0]
        Fixture.add(&s, TraceField.winSum, layer: 0, Fixture.winSum([[Float]](repeating: row, count: 4), windows: 1))
        Fixture.add(&s, TraceField.winSum, layer: 1, Fixture.winSum([[Float]](repeating: row, count: 4), windows: 1))
        let notes = PolicyNotes()
        let out = try SnapKVPolicy(kernel: 1).compress(
            PolicyStepInput(header: header, step: s, budget: .percent(50), notes: notes), state: .empty)
        // Past [0, 8): top-2 of the window-8 sums are 1 and 3; window [8, 12).
        #expect(out.layers[0].keptIndices.allSatisfy { $0 == [1, 3, 8, 9, 10, 11] })
        #expect(notes.all.count == 1 && notes.all[0].contains("window 4") && notes.all[0].contains("window-8 sums"))
    }
}

extension PrimitivesTests {
    /// Max pooling by shifted passes equals the neighbourhood loop it replaced, bit for bit:
    /// NaN never taken, −∞ kept, the first of +0/−0 in the window kept, odd and even kernels.
    @Test func maxPoolingEqualsTheInRangeNeighbourLoopBitForBit() {
        func reference(_ v: [Float], _ k: Int) -> [Float] {
            let n = v.count, half = k / 2
            return (0..<n).map { j in
                let lo = max(0, j - half), hi = min(n - 1, j - half + k - 1)
                var best = -Float.infinity
                var m = lo
                while m <= hi { if v[m] > best { best = v[m] }; m += 1 }
                return best
            }
        }
        var s: UInt64 = 0x2545_F491_4F6C_DD1D
        func next() -> UInt64 { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s }
        let special: [Float] = [.nan, 0, -0.0, -.infinity, .infinity, 1, -1]
        for trial in 0..<200 {
            let n = 1 + Int(next() % 40)
            let row: [Float] = (0..<n).map { _ in
                trial % 2 == 0 ? special[Int(next() % UInt64(special.count))] : Float(Int(next() % 9)) - 4
            }
            for k in 2...9 {
                #expect(pool(row, kernel: k, pooling: .max).map(\.bitPattern) == reference(row, k).map(\.bitPattern), "row \(row) k \(k)")
            }
        }
    }
}
