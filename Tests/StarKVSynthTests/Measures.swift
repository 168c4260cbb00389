import StarKVModel
import StarKVTrace

@testable import StarKVSynth

/// Measurements on generated steps, shared by the property tests. Each returns a number
/// computed only from the trace fields (plus the plan's ground truth where the property is
/// about screen content).
enum Measure {
    /// The small configuration every test uses: tiny-vl on a 1280x720 screen.
    static func config(
        steps: Int = 6, slots: Int = 3, fidelity: Fidelity = .standard, seed: UInt64 = 7,
        screen: ScreenSize = ScreenSize(width: 1280, height: 720), parameters: SynthParameters = SynthParameters()
    ) -> SynthConfig {
        SynthConfig(
            model: ModelPresets.tinyVL, steps: steps, screen: screen, imageSlots: slots, fidelity: fidelity,
            seed: seed, winSumDType: .f32, parameters: parameters)
    }

    /// One field of one layer as floats.
    static func floats(_ step: StepRecord, _ field: String, _ layer: Int) -> [Float] {
        guard let c = step.chunk(field, layer: layer) else { return [] }
        return c.tensor.floats()
    }

    /// Head-mean window-sum scores over keys [0, L) (`past: true`: over the selectable keys
    /// [0, L − w) only) for window index `wi`.
    static func windowScores(_ step: StepRecord, layer: Int, window wi: Int, heads: Int, windows: [Int], past: Bool = true) -> [Double] {
        let L = step.promptLength
        let all = floats(step, TraceField.winSum, layer)
        let P = past ? L - windows[wi] : L
        var out = [Double](repeating: 0, count: P)
        for h in 0..<heads {
            let off = (wi * heads + h) * L
            for j in 0..<P { out[j] += Double(all[off + j]) / Double(heads) }
        }
        return out
    }

    /// Per-group mean window-sum scores (first window) over all keys [0, L).
    static func groupScores(_ step: StepRecord, layer: Int, heads: Int, kvHeads: Int) -> [[Double]] {
        let L = step.promptLength
        let all = floats(step, TraceField.winSum, layer)
        let P = L
        let gs = heads / kvHeads
        var out = [[Double]](repeating: [Double](repeating: 0, count: P), count: kvHeads)
        for h in 0..<heads {
            for j in 0..<P { out[h / gs][j] += Double(all[h * L + j]) / Double(gs) }
        }
        return out
    }

    /// Fraction of total mass held by the top `fraction` of entries.
    static func topMass(_ x: [Double], fraction: Double) -> Double {
        let sorted = x.sorted(by: >)
        let k = max(1, Int(Double(x.count) * fraction))
        let total = sorted.reduce(0, +)
        return sorted.prefix(k).reduce(0, +) / total
    }

    /// Normalised entropy of a non-negative vector (0 = one-hot, 1 = uniform), as STaR-KV's
    /// AEB computes it (docs/algorithms.md §2.3 step 4).
    static func normalizedEntropy(_ x: [Double]) -> Double {
        let total = x.reduce(0, +)
        var h = 0.0
        for v in x where v > 0 {
            let q = v / total
            h -= q * log(q)
        }
        return h / log(Double(x.count))
    }

    /// Pearson correlation of paired samples.
    static func correlation(_ a: [Double], _ b: [Double]) -> Double {
        let n = Double(a.count)
        let ma = a.reduce(0, +) / n, mb = b.reduce(0, +) / n
        var sab = 0.0, saa = 0.0, sbb = 0.0
        for i in 0..<a.count {
            sab += (a[i] - ma) * (b[i] - mb)
            saa += (a[i] - ma) * (a[i] - ma)
            sbb += (b[i] - mb) * (b[i] - mb)
        }
        return sab / (saa * sbb).squareRoot()
    }

    static func mean(_ x: [Double]) -> Double { x.isEmpty ? 0 : x.reduce(0, +) / Double(x.count) }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
