import Testing
import StarKVModel
import StarKVTrace
@testable import StarKVPolicies

/// GUI-KV hand cases (docs/algorithms.md §3).
@Suite struct GUIKVTests {
    /// L = 12, previous image [1, 4), current image [5, 8); C = 6, w = 2 → P = 10, K = 4.
    static func twoImageStep() -> StepRecord {
        var s = Fixture.step(length: 12, images: [Fixture.image(1, 4, age: 1), Fixture.image(5, 8)])
        let r: [Float] = [0.5, 0.4, 0.25, 0.35, 0.05, 0.2, 0.0, 0.1, 0.01, 0.02, 9, 9]
        Fixture.addWinSum(&s, [[Float]](repeating: r, count: 4))
        Fixture.addHidNorm(&s, [3, 1, 2, 1, 1, 1])  // current frame norms equal → +α/3 each
        for l in 0..<2 {
            Fixture.add(&s, TraceField.guikvResid, layer: l, Fixture.rows([[0.9, 0.1, 0.5], [0.1, 0.9, 0.5]]))
        }
        return s
    }

    @Test func guiKVBoostsCurrentFrameAndZeroesMostRedundantPreviousTokensPerKVHead() throws {
        // Boost 0.1 on 5..7 → [.5,.4,.25,.35,.05,.3,.1,.2,.01,.02]; Z = ⌊0.5·3⌋ = 1 zeroed per group:
        // group 0 zeroes position 2 (ρ 0.1), group 1 zeroes position 1.
        let p = GUIKVPolicy(window: 2, kernel: 1, alpha: 0.3, temperature: 3.5)
        let out = try p.compress(input(Self.twoImageStep(), .percent(50)), state: .empty)
        let g0: [Int32] = [0, 1, 3, 5, 10, 11], g1: [Int32] = [0, 2, 3, 5, 10, 11]
        #expect(out.layers[0].keptIndices == [g0, g0, g1, g1])
        #expect(out.layers[1].keptIndices == [g0, g0, g1, g1])
    }

    @Test func guiKVKVHeadGranularityTakesTheFirstQueryHeadOfEachGroup() throws {
        let p = GUIKVPolicy(window: 2, kernel: 1, alpha: 0.3, granularity: .kvHead)
        let out = try p.compress(input(Self.twoImageStep(), .percent(50)), state: .empty)
        #expect(out.layers[0].keptIndices == [[0, 1, 3, 5, 10, 11], [0, 2, 3, 5, 10, 11]])
    }

    @Test func guiKVWithoutTemporalKeepsTheHighestBoostedScores() throws {
        let p = GUIKVPolicy(window: 2, kernel: 1, alpha: 0.3, temporal: false)
        let out = try p.compress(input(Self.twoImageStep(), .percent(50)), state: .empty)
        #expect(out.layers[0].keptIndices.allSatisfy { $0 == [0, 1, 3, 5, 10, 11] })
    }

    @Test func guiKVSpatialBoostCanLiftACurrentFrameToken() throws {
        // Without the boost, 5 (0.2) loses to 2 (0.25); with α = 0.3 it wins (0.3).
        let off = try GUIKVPolicy(window: 2, kernel: 1, alpha: 0, temporal: false).compress(input(Self.twoImageStep(), .percent(50)), state: .empty)
        #expect(off.layers[0].keptIndices[0] == [0, 1, 2, 3, 10, 11])
    }

    @Test func guiKVOneImageStepNeedsNoResiduals() throws {
        var s = Fixture.step(length: 12, images: [Fixture.image(5, 8)])
        let r: [Float] = [0.5, 0.4, 0.25, 0.35, 0.05, 0.2, 0.0, 0.1, 0.01, 0.02, 9, 9]
        Fixture.addWinSum(&s, [[Float]](repeating: r, count: 4))
        Fixture.addHidNorm(&s, [1, 1, 1])
        let out = try GUIKVPolicy(window: 2, kernel: 1, alpha: 0.3).compress(input(s, .percent(50)), state: .empty)
        #expect(out.layers[0].keptIndices[3] == [0, 1, 3, 5, 10, 11])
    }

    @Test func guiKVRefusesAMultiImageStepWithoutResiduals() {
        var s = Self.twoImageStep()
        s.chunks.removeAll { $0.field == TraceField.guikvResid && $0.layer == 1 }
        #expect(throws: PolicyError.missingChunk(policy: "guikv", field: TraceField.guikvResid, layer: 1, episode: "ep", step: 0)) {
            try GUIKVPolicy(window: 2, kernel: 1).compress(input(s, .percent(50)), state: .empty)
        }
    }
}
