import Foundation
import Testing
import StarKVModel
import StarKVTrace
@testable import StarKVPolicies

/// "Score once, select many" (issue 15; docs/policies.md "Sweeps"): one ordering answers every
/// k exactly as `topKAscending`, and a policy's `compressMany` equals its per-budget `compress`.
@Suite struct ScoreSharingTests {
    @Test func rankingGivesTheHandCheckedTopKForEveryK() {
        let r = ScoreRanking([1, 3, 3, 2, 3])
        // Order: 3@1, 3@2, 3@4, 2@3, 1@0.
        #expect(r.rank == [4, 0, 1, 3, 2])
        #expect(r.topKAscending(count: 0) == [])
        #expect(r.topKAscending(count: 2) == [1, 2])
        #expect(r.topKAscending(count: 3) == [1, 2, 4])
        #expect(r.topKAscending(count: 4) == [1, 2, 3, 4])
        #expect(r.topKAscending(count: 9) == [0, 1, 2, 3, 4])
        // NaN ranks below −∞ ties with it; −0 ties +0 (lower position first).
        #expect(ScoreRanking([.nan, 0, -1, -0.0, -.infinity]).topKAscending(count: 3) == [1, 2, 3])
        #expect(ScoreRanking([.nan, -.infinity, 5]).topKAscending(count: 2) == [0, 2])
    }

    @Test func rankingMatchesTopKOnRandomRowsWithTiesAndNaN() {
        var g = SystemRandomNumberGenerator()
        for trial in 0..<200 {
            let n = Int.random(in: 1...300, using: &g)
            let levels = trial % 3 == 0 ? 4 : 1000  // few distinct values: many ties
            let row: [Float] = (0..<n).map { _ in
                let u = Int.random(in: 0..<levels, using: &g)
                if u == 0 && trial % 5 == 0 { return .nan }
                return Float(u) * (Bool.random(using: &g) ? 1 : -1) / 7
            }
            let r = ScoreRanking(row)
            for k in [0, 1, n / 3, n / 2, n - 1, n, n + 2] {
                #expect(r.topKAscending(count: k) == topKAscending(row, count: k), "n \(n) k \(k)")
            }
        }
    }

    @Test func compressManyEqualsCompressPerBudgetForTheOptedInPolicies() throws {
        // Long prompts (every budget clamps to the same window) and short ones (small budgets
        // clamp the window differently, so budgets split into several sharing groups).
        let header = Fixture.header()
        let steps = [
            Fixture.randomStep(seed: 1, length: 300, images: [Fixture.image(10, 110), Fixture.image(120, 220)]),
            Fixture.randomStep(seed: 2, length: 60, images: [Fixture.image(5, 45)], index: 1),
            Fixture.randomStep(seed: 3, length: 9, images: [], index: 2),
        ]
        let budgets: [KVBudget] = [.percent(5), .percent(10), .percent(20), .percent(40), .percent(60), .percent(100), .tokens(3)]
        let policies: [any KVPolicy] = [
            SnapKVPolicy(), PyramidKVPolicy(), SnapKVPolicy(window: 16, kernel: 3, pooling: .max),
            GUIKVPolicy(), GUIKVPolicy(granularity: .kvHead), GUIKVPolicy(alpha: 0, temporal: true),
        ]
        for policy in policies {
            #expect(policy.sharesScoresAcrossBudgets)
            for step in steps {
                for numerics in ReplayNumerics.allCases {
                let inputs = budgets.map { PolicyStepInput(header: header, step: step, budget: $0, numerics: numerics) }
                let states = budgets.map { _ in policy.initialState }
                let many = policy.compressMany(inputs, states: states)
                for (i, input) in inputs.enumerated() {
                    let one = try policy.compress(input, state: states[i])
                    #expect(try many[i].get() == one, "\(policy.name) \(input.budget) \(numerics)")
                }
                }
            }
        }
    }

    /// The shared per-step quality inputs give exactly the per-pair decode proxy, for every
    /// float dtype the field may be stored in, and the same error for a missing chunk.
    @Test func stepDecodeMassEqualsThePerPairDecodeProxy() throws {
        let header = Fixture.header()
        let base = Fixture.randomStep(seed: 9, length: 120, images: [Fixture.image(10, 50), Fixture.image(60, 100)])
        for dtype in [TensorDType.f32, .f16, .bf16] {
            var step = base
            for c in step.chunks.indices where step.chunks[c].field == TraceField.decodeAttnSum {
                let t = step.chunks[c].tensor
                step.chunks[c].tensor = Tensor(floats: t.floats(), shape: t.shape, dtype: dtype)
            }
            let mass = StepDecodeMass(header: header, step: step, workers: 2)
            for policy in [SnapKVPolicy(), GUIKVPolicy(granularity: .kvHead)] as [any KVPolicy] {
                for budget in [KVBudget.percent(10), .percent(50)] {
                    let out = try policy.compress(PolicyStepInput(header: header, step: step, budget: budget), state: .empty)
                    let expected = try QualityProxy.decodeAttentionShares(header: header, step: step, output: out)
                    #expect(try mass.shares(of: out.layers) == expected, "\(dtype) \(policy.name) \(budget)")
                    #expect(expected.allSatisfy { $0 != nil })
                }
            }
        }
        var missing = base
        missing.chunks.removeAll { $0.field == TraceField.decodeAttnSum && $0.layer == 1 }
        let out = try SnapKVPolicy().compress(PolicyStepInput(header: header, step: missing, budget: .percent(20)), state: .empty)
        #expect(throws: PolicyError.missingChunk(policy: "quality-proxy", field: TraceField.decodeAttnSum, layer: 1, episode: "ep", step: 0)) {
            try StepDecodeMass(header: header, step: missing).shares(of: out.layers)
        }
    }
}
