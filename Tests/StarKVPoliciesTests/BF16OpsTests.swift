import Testing
@testable import StarKVPolicies

/// The bf16 ops of bf16-reference numerics as a CUDA run computes them (docs/algorithms.md §12.1).
/// Expected values are worked by hand and equal what torch gives for the same bf16 expressions.
@Suite struct BF16OpsTests {
    @Test func powerCastsItsExponentToBF16First() {
        // 1/0.75 = 1.3333… → bf16 1.3359375 (PowKernel.cu `exp_scalar.to<scalar_t>()`);
        // 2^1.3359375 = 2.5243 → bf16 2.53125, while 2^(4/3) = 2.5198 would round to 2.515625.
        let e = bf16(1 / 0.75)
        #expect(e == 1.3359375)
        #expect(bf16Pow(2, e) == 2.53125)
        #expect(bf16Round(Float(powDouble(2, 4.0 / 3.0))) == 2.515625)
        #expect(bf16Pow(0, e) == 0)
    }

    @Test func meanIsTheFp32SumTimesTheReciprocalRoundedOnce() {
        // (1 + 1 + 2) · fl(1/3) = 1.3333334 → bf16 1.3359375; (3 + 4)/2 = 3.5 exactly.
        #expect(bf16MeanRows([[1, 3], [1, 4], [2, 4]][...]) == [1.3359375, 3.671875])
        #expect(groupMeansBF16([[3], [4], [1], [1]], kvHeads: 2) == [[3.5], [1]])
    }

    @Test func aebTemperatureIsABF16Value() {
        // Uniform scores over P = 4: log(0.25) = −1.3862944 → bf16 −1.3828125, entropy 1.3828125,
        // ÷ ln 4 = 0.99749 → bf16 0.99609375; 0.1 · that = 0.099609375; 0.95 + it = 1.0496 →
        // bf16 1.046875 (fp64 arithmetic gives 1.05).
        let t = StarKVPolicy.entropyTemperatureBF16([0.25, 0.25, 0.25, 0.25], min: 0.95, max: 1.05)
        #expect(t == 1.046875)
        #expect(abs(StarKVPolicy.entropyTemperature([0.25, 0.25, 0.25, 0.25], min: 0.95, max: 1.05) - 1.05) < 1e-7)
    }

    @Test func groupWeightsRoundTheSoftmaxToBF16() {
        // s = [0, 1]; softmax = [0.26894142, 0.7310586] → bf16 [0.26953125, 0.73046875], sum 1.
        #expect(StarKVPolicy.groupWeightsBF16([0, 1], tau: 1) == [0.26953125, 0.73046875])
        // A range below 1e−12: every s is 0.5, uniform weights.
        #expect(StarKVPolicy.groupWeightsBF16([0.5, 0.5], tau: 1) == [0.5, 0.5])
    }

    @Test func miRanksBreakTiesByLowerIndex() {
        // 400 scores with many ties (bf16-like plateaus): the MI equals the MI of the same scores
        // with ties broken by an increasing ramp too small to reorder distinct values.
        let v = 400
        let tied: [Double] = (0..<v).map { Double(($0 * 7919) % 13) }
        let ramped: [Double] = tied.enumerated().map { $0.element + Double($0.offset) * 1e-6 }
        let grid = StarKVPolicy.pseudoGrid(v)
        let a = StarKVPolicy.spatialMutualInformation(tied[...], gridH: grid.0, gridW: grid.1)
        let b = StarKVPolicy.spatialMutualInformation(ramped[...], gridH: grid.0, gridW: grid.1)
        #expect(a > 0)
        #expect(a == b)
        // Ties broken the other way (a decreasing ramp) bin differently: the rule matters.
        let reversed: [Double] = tied.enumerated().map { $0.element - Double($0.offset) * 1e-6 }
        #expect(StarKVPolicy.spatialMutualInformation(reversed[...], gridH: grid.0, gridW: grid.1) != a)
    }
}
