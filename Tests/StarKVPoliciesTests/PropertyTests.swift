import Foundation
import Testing
import StarKVModel
import StarKVTrace
@testable import StarKVPolicies

/// Properties every policy must keep, on seeded random steps (brief: kept count equals budget,
/// window always kept, monotone-transform invariance, determinism across threads).
@Suite struct PropertyTests {
    /// A random episode: step 0 resets; 1–3 images per step; L in 24...72.
    static func episode(seed: UInt64, steps: Int = 4) -> [StepRecord] {
        var rng = SplitMix64(seed: seed)
        return (0..<steps).map { i in
            let l = 24 + Int(rng.next() % 49)
            let n = 1 + Int(rng.next() % 3)
            var images: [ImageEntry] = []
            var pos = 1
            for f in 0..<n {
                let len = 3 + Int(rng.next() % 4)
                if pos + len + 10 >= l { break }
                images.append(Fixture.image(pos, pos + len, gridH: 1, gridW: len, age: n - 1 - f))
                pos += len + 1
            }
            for f in 0..<images.count { images[f].frameAge = images.count - 1 - f }
            return Fixture.randomStep(seed: seed &* 31 &+ UInt64(i), length: l, images: images, reset: i == 0, index: i)
        }
    }

    static func run(_ p: any KVPolicy, _ steps: [StepRecord], _ budget: KVBudget, header: TraceHeader = Fixture.header()) throws -> [PolicyStepOutput] {
        var state = p.initialState
        var outs: [PolicyStepOutput] = []
        for s in steps {
            let o = try p.compress(PolicyStepInput(header: header, step: s, budget: budget), state: state)
            state = o.state
            outs.append(o)
        }
        return outs
    }

    static func allPolicies() throws -> [any KVPolicy] {
        try PolicyRegistry.names.map { name in
            switch name {
            case "snapkv-kvpress": return try PolicyRegistry.make(name, options: PolicyOptions(["window": "8"]))
            default: return try PolicyRegistry.make(name)
            }
        }
    }

    static func scaled(_ s: StepRecord, by f: Float) -> StepRecord {
        var t = s
        t.chunks = s.chunks.map { c in
            guard c.tensor.dtype.isFloatingPoint, c.field != TraceField.hidNorm else { return c }
            return TensorChunk(field: c.field, layer: c.layer, tensor: Tensor(floats: c.tensor.floats().map { $0 * f }, shape: c.tensor.shape))
        }
        return t
    }

    @Test(arguments: [10.0, 25.0, 40.0, 60.0])
    func keptCountEqualsBudgetForUniformPolicies(budget: Double) throws {
        let uniform = ["streamingllm", "h2o", "snapkv", "guikv", "starkv"]
        for seed in UInt64(1)...6 {
            let steps = Self.episode(seed: seed)
            for name in uniform {
                let outs = try Self.run(try PolicyRegistry.make(name), steps, .percent(budget))
                for (s, o) in zip(steps, outs) {
                    let c = KVBudget.percent(budget).capacity(promptLength: s.promptLength)
                    for layer in o.layers {
                        let expected = name == "starkv" ? max(c, 2) : c  // STaR-KV keeps ≥ 1 past + 1 window
                        #expect(layer.keptIndices.allSatisfy { $0.count == expected }, "\(name) seed \(seed) L \(s.promptLength) C \(c)")
                    }
                }
            }
            // kvpress SnapKV keeps C per KV head, window included.
            let press = try Self.run(SnapKVPressPolicy(window: 8, kernel: 5), steps, .percent(budget))
            for (s, o) in zip(steps, press) {
                let c = KVBudget.percent(budget).capacity(promptLength: s.promptLength)
                #expect(o.layers.allSatisfy { $0.keptIndices.count == 2 && $0.keptIndices.allSatisfy { $0.count == c } })
            }
            // PyramidKV: per layer cap + window, total past ≤ N_l·(C − w).
            let pyr = try Self.run(PyramidKVPolicy(), steps, .percent(budget))
            for o in pyr where o.layers[0].compressed {
                let w = o.layers[0].windowTokens
                let past = o.layers.map { $0.keptIndices[0].count - w }
                #expect(past.reduce(0, +) <= o.layers.count * (o.layers[0].keptIndices.count > 0 ? (KVBudget.percent(budget).capacity(promptLength: o.layers[0].keptIndices[0].last.map { Int($0) + 1 } ?? 0) - w) : 0) + o.layers.count)
            }
            // AdaKV: Σ_h capacities within rounding of H_kv·B0.
            let ada = try Self.run(AdaKVPolicy(), steps, .percent(budget))
            for (s, o) in zip(steps, ada) where o.layers[0].compressed {
                let c = KVBudget.percent(budget).capacity(promptLength: s.promptLength)
                let w = o.layers[0].windowTokens
                for layer in o.layers {
                    let total = layer.keptIndices.reduce(0) { $0 + $1.count - w }
                    #expect(abs(total - layer.keptIndices.count * (c - w)) <= layer.keptIndices.count)
                }
            }
        }
    }

    @Test func windowIsAlwaysKeptAndRowsAreSortedUniqueInRange() throws {
        for seed in UInt64(20)...25 {
            let steps = Self.episode(seed: seed)
            for p in try Self.allPolicies() {
                for budget in [KVBudget.percent(15), .percent(50), .tokens(12)] {
                    let outs = try Self.run(p, steps, budget)
                    for (s, o) in zip(steps, outs) {
                        #expect(o.layers.count == 2)
                        for layer in o.layers {
                            let l = s.promptLength
                            for row in layer.keptIndices {
                                #expect(zip(row, row.dropFirst()).allSatisfy { $0 < $1 }, "\(p.name) not ascending")
                                #expect(row.allSatisfy { $0 >= 0 && Int($0) < l })
                                let w = layer.windowTokens
                                #expect(Array(row.suffix(w)) == (l - w..<l).map { Int32($0) }, "\(p.name) window lost")
                            }
                        }
                    }
                }
            }
        }
    }

    @Test func scalingAllAttentionFieldsByAPowerOfTwoLeavesKeptSetsUnchanged() throws {
        let policies: [any KVPolicy] = [
            SnapKVPolicy(), SnapKVPressPolicy(window: 8), PyramidKVPolicy(), AdaKVPolicy(), H2OPolicy(), VLCachePolicy(),
            GUIKVPolicy(alpha: 0), StarKVPolicy(config: { var c = StarKVPolicy.Config(); c.spatialEnabled = false; return c }()),
        ]
        for seed in UInt64(40)...44 {
            let steps = Self.episode(seed: seed, steps: 6)
            let scaledSteps = steps.map { Self.scaled($0, by: 4) }
            for p in policies {
                let a = try Self.run(p, steps, .percent(30)), b = try Self.run(p, scaledSteps, .percent(30))
                #expect(a.map(\.layers) == b.map(\.layers), "\(p.name) seed \(seed)")
            }
        }
    }

    @Test func aebPowerSharpeningCannotChangeTheSelection() throws {
        // §2.6-1: s = m^(1/T) is strictly increasing on m ≥ 0 and K is fixed.
        var on = StarKVPolicy.Config()
        on.aebMin = 0.5
        on.aebMax = 1.5
        var off = on
        off.aebEnabled = false
        for seed in UInt64(60)...67 {
            let steps = Self.episode(seed: seed, steps: 8)
            let a = try Self.run(StarKVPolicy(config: on), steps, .percent(25))
            let b = try Self.run(StarKVPolicy(config: off), steps, .percent(25))
            #expect(a.map(\.layers) == b.map(\.layers))
            let temps = a.flatMap { $0.diagnostics["aeb_temperature"] ?? [] }
            #expect(temps.allSatisfy { $0 >= 0.5 && $0 <= 1.5 } && temps.contains { abs($0 - 1) > 1e-3 })
        }
    }

    @Test func entropyBudgetVariantKeepsTheTotalAndMovesTokensBetweenLayers() throws {
        var fixed = StarKVPolicy.Config()
        fixed.aebMin = 0.5
        fixed.aebMax = 1.5
        var variant = fixed
        variant.entropyBudget = true
        var moved = false
        for seed in UInt64(80)...85 {
            // Layer 1 gets peaked attention (values^16: low entropy → lower T → fewer tokens).
            let steps = Self.episode(seed: seed).map { s -> StepRecord in
                var t = s
                t.chunks = s.chunks.map { c in
                    guard c.field == TraceField.winSum, c.layer == 1 else { return c }
                    return TensorChunk(field: c.field, layer: 1, tensor: Tensor(floats: c.tensor.floats().map { pow($0, 16) }, shape: c.tensor.shape))
                }
                return t
            }
            let a = try Self.run(StarKVPolicy(config: fixed), steps, .percent(25))
            let b = try Self.run(StarKVPolicy(config: variant), steps, .percent(25))
            for (x, y) in zip(a, b) {
                let tx = x.layers.reduce(0) { $0 + $1.keptIndices[0].count }, ty = y.layers.reduce(0) { $0 + $1.keptIndices[0].count }
                #expect(tx == ty)
                if y.layers[0].compressed && y.layers[1].keptIndices[0].count < y.layers[0].keptIndices[0].count { moved = true }
            }
        }
        #expect(moved)
    }

    @Test func sameInputsGiveIdenticalOutputsSequentiallyAndConcurrently() async throws {
        let steps = Self.episode(seed: 99, steps: 5)
        for p in try Self.allPolicies() {
            let reference = try Self.run(p, steps, .percent(20))
            #expect(try Self.run(p, steps, .percent(20)) == reference)
            let results = try await withThrowingTaskGroup(of: [PolicyStepOutput].self) { group in
                for _ in 0..<8 { group.addTask { try Self.run(p, steps, .percent(20)) } }
                var all: [[PolicyStepOutput]] = []
                for try await r in group { all.append(r) }
                return all
            }
            #expect(results.count == 8 && results.allSatisfy { $0 == reference }, "\(p.name)")
        }
    }
}
