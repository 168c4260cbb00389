import StarKVModel
import StarKVTrace
import Testing
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@testable import StarKVSynth

/// Generated once for all property tests (tiny-vl, 1280x720, 6 steps, 3 image slots).
private let shared: (agent: SyntheticAgent, steps: [StepRecord]) = {
    let agent = try! SyntheticAgent(Measure.config())
    return (agent, agent.allSteps())
}()

private let H = ModelPresets.tinyVL.numQueryHeads
private let Hkv = ModelPresets.tinyVL.numKVHeads
private let windows = [8, 16, 32, 64]

@Suite("synthetic attention shows the properties STaR-KV and the baselines exploit")
struct AttentionPropertyTests {
    @Test("attention is sparse and heavy-tailed: top 5% of keys hold ≥ 90% of window mass in most layers, top 10% ≥ 90% in all but layer 0")
    func sparseHeavyTailed() {
        var layersOK = 0, layers = 0
        var minLateMass = 1.0
        for step in shared.steps {
            for layer in 0..<ModelPresets.tinyVL.numLayers {
                let s = Measure.windowScores(step, layer: layer, window: 0, heads: H, windows: windows)
                let top5 = Measure.topMass(s, fraction: 0.05)
                layers += 1
                if top5 >= 0.90 { layersOK += 1 }
                if layer >= 1 { minLateMass = min(minLateMass, Measure.topMass(s, fraction: 0.10)) }
            }
        }
        print("sparsity: \(layersOK)/\(layers) layer-steps with top-5% mass ≥ 0.90; min top-10% mass (layers ≥ 1) \(minLateMass)")
        #expect(Double(layersOK) / Double(layers) >= 2.0 / 3.0)
        #expect(minLateMass >= 0.90)
    }

    @Test("VL-Cache sparsity (share of post-vision entries ≤ 0.01) exceeds 0.99 in every layer")
    func vlCacheSparsity() {
        let step = shared.steps.last!
        for layer in 0..<ModelPresets.tinyVL.numLayers {
            let counts = step.chunk(TraceField.countGt001, layer: layer)!.tensor.int64s()
            let valid = Double(step.chunk(TraceField.nValid, layer: layer)!.tensor.int64s()[0])
            let gamma = 1 - Double(counts.reduce(0, +)) / Double(counts.count) / valid
            print("layer \(layer) VL-Cache sparsity \(gamma)")
            #expect(gamma > 0.99)
        }
    }

    @Test("the first token is an attention sink: ≥ 20% of window mass in layers ≥ 2, ≥ 50× the mean key")
    func sinkMass() {
        for step in shared.steps {
            for layer in 2..<ModelPresets.tinyVL.numLayers {
                let s = Measure.windowScores(step, layer: layer, window: 0, heads: H, windows: windows)
                let total = s.reduce(0, +)
                let share = s[0] / total
                #expect(share >= 0.20, "step \(step.stepIndex) layer \(layer): sink share \(share)")
                #expect(s[0] >= 50 * total / Double(s.count))
            }
        }
    }

    @Test("instruction tokens draw more attention per token than system-prompt tokens (≥ 5×)")
    func instructionAttention() {
        let step = shared.steps.last!
        for layer in 1..<ModelPresets.tinyVL.numLayers {
            let s = Measure.windowScores(step, layer: layer, window: 0, heads: H, windows: windows)
            var ins = [Double](), sys = [Double]()
            for j in 1..<s.count {
                if step.tokenTypes[j] == .instruction { ins.append(s[j]) }
                if step.tokenTypes[j] == .system { sys.append(s[j]) }
            }
            let ratio = Measure.mean(ins) / Measure.mean(sys)
            #expect(ratio >= 5, "layer \(layer): instruction/system ratio \(ratio)")
        }
    }

    @Test("the target element is the most attended region of the current screenshot (≥ 5× other element tokens)")
    func targetElement() {
        for step in shared.steps {
            let planned = shared.agent.plan.steps[step.stepIndex]
            let image = step.images.last!
            for layer in 2..<ModelPresets.tinyVL.numLayers {
                let s = Measure.windowScores(step, layer: layer, window: 0, heads: H, windows: windows, past: false)
                var target = [Double](), other = [Double]()
                for u in 0..<image.length {
                    let e = Int(planned.cellElements[u])
                    guard e >= 0 else { continue }
                    if e == planned.targetIndex { target.append(s[image.spanStart + u]) } else { other.append(s[image.spanStart + u]) }
                }
                let ratio = Measure.mean(target) / Measure.mean(other)
                #expect(ratio >= 5, "step \(step.stepIndex) layer \(layer): target/other \(ratio)")
            }
        }
    }

    @Test("attention is smooth in 2-D: vertical neighbours (raster distance W) correlate more than raster neighbours at W/2")
    func smoothIn2D() {
        let grid = shared.agent.grid
        let cols = grid.gridCols
        var margins = [Double](), verticals = [Double]()
        for step in shared.steps {
            let image = step.images.last!
            for layer in 1..<ModelPresets.tinyVL.numLayers {
                let s = Measure.windowScores(step, layer: layer, window: 0, heads: H, windows: windows, past: false)
                let x = (0..<image.length).map { log(max(s[image.spanStart + $0], 1e-30)) }
                var va = [Double](), vb = [Double](), ra = [Double](), rb = [Double]()
                for u in 0..<(image.length - cols) {
                    va.append(x[u])
                    vb.append(x[u + cols])
                    ra.append(x[u])
                    rb.append(x[u + cols / 2])
                }
                let vertical = Measure.correlation(va, vb)
                let raster = Measure.correlation(ra, rb)
                margins.append(vertical - raster)
                verticals.append(vertical)
                #expect(vertical >= 0.15, "step \(step.stepIndex) layer \(layer): vertical correlation \(vertical)")
            }
        }
        let m = Measure.mean(margins)
        print("2-D smoothness: mean vertical correlation \(Measure.mean(verticals)), mean margin over half-row raster \(m)")
        #expect(Measure.mean(verticals) >= 0.3)
        #expect(m >= 0.2)
    }

    @Test("KV groups prefer different element roles, and the preferences migrate across layers")
    func groupSpecialisation() {
        let step = shared.steps.last!
        let planned = shared.agent.plan.steps[step.stepIndex]
        let image = step.images.last!
        var assignments = [[Int]]()
        var matches = 0, total = 0
        for layer in 0..<ModelPresets.tinyVL.numLayers {
            let S = Measure.groupScores(step, layer: layer, heads: H, kvHeads: Hkv)
            var preferred = [Int]()
            for g in 0..<Hkv {
                var sum = [Double](repeating: 0, count: 4), n = [Double](repeating: 0, count: 4)
                for u in 0..<image.length {
                    let e = Int(planned.cellElements[u])
                    guard e >= 0, e != planned.targetIndex else { continue }
                    let role = planned.screen.elements[e].kind.role
                    sum[role] += log(max(S[g][image.spanStart + u], 1e-30))
                    n[role] += 1
                }
                // Geometric mean per role (robust to the heavy tail).
                let means = (0..<4).map { n[$0] > 0 ? sum[$0] / n[$0] : -Double.infinity }
                let best = means.indices.max { means[$0] < means[$1] }!
                preferred.append(best)
                total += 1
                if best == shared.agent.preferredRole(group: g, layer: layer) { matches += 1 }
            }
            assignments.append(preferred)
            #expect(Set(preferred).count >= 3, "layer \(layer): group roles \(preferred)")
        }
        let changes = zip(assignments, assignments.dropFirst()).filter { $0 != $1 }.count
        print("group roles per layer: \(assignments); matches \(matches)/\(total)")
        #expect(changes >= 2)
        #expect(Double(matches) / Double(total) >= 0.75)
    }

    @Test("the score distribution's entropy drifts along the trajectory, driven by entropyDrift")
    func entropyDrift() throws {
        func entropies(_ drift: Double) throws -> [Double] {
            var params = SynthParameters()
            params.entropyDrift = drift
            params.stepSharpnessNoise = 0
            let agent = try SyntheticAgent(Measure.config(steps: 6, slots: 1, parameters: params))
            return (0..<6).map { k in
                let step = agent.step(k)
                return Measure.mean((1..<ModelPresets.tinyVL.numLayers).map {
                    Measure.normalizedEntropy(Measure.windowScores(step, layer: $0, window: 0, heads: H, windows: windows))
                })
            }
        }
        let drifting = try entropies(0.6)
        let flat = try entropies(0)
        let rise = drifting.last! - drifting.first!
        let flatRise = abs(flat.last! - flat.first!)
        print("normalised entropy per step: drift 0.6 \(drifting); drift 0 \(flat)")
        #expect(rise >= 0.03)
        #expect(rise >= 3 * flatRise)
    }

    @Test("history screenshots lose attention with age, except elements that stay relevant (≥ 3× other elements)")
    func historyDecay() {
        var checkedRelevant = 0
        for step in shared.steps where step.images.count == 3 {
            let planned = shared.agent.plan.steps[step.stepIndex]
            for layer in 2..<ModelPresets.tinyVL.numLayers {
                let s = Measure.windowScores(step, layer: layer, window: 0, heads: H, windows: windows, past: false)
                let perFrame = step.images.map { img in Measure.mean((img.spanStart..<img.spanEnd).map { s[$0] }) }
                // Images are in prompt order: oldest first.
                #expect(perFrame[0] < perFrame[1] && perFrame[1] < perFrame[2], "step \(step.stepIndex) layer \(layer): \(perFrame)")
                // Still-relevant: the current target shown in the oldest screenshot.
                let oldest = step.images[0]
                let frame = shared.agent.plan.steps[step.stepIndex - 2]
                var relevant = [Double](), other = [Double]()
                for u in 0..<oldest.length {
                    let e = Int(frame.cellElements[u])
                    guard e >= 0 else { continue }
                    let el = frame.screen.elements[e]
                    if el.id == planned.target.id { relevant.append(s[oldest.spanStart + u]) }
                    else if el.kind != .bar && el.id != frame.target.id { other.append(s[oldest.spanStart + u]) }
                }
                if !relevant.isEmpty {
                    checkedRelevant += 1
                    #expect(Measure.mean(relevant) >= 3 * Measure.mean(other))
                }
            }
        }
        print("still-relevant checks: \(checkedRelevant)")
        #expect(checkedRelevant >= 2)
    }

    @Test("hidden-state norms are ≥ 1.25× higher on element tokens than on background")
    func normContrast() {
        for step in shared.steps {
            let planned = shared.agent.plan.steps[step.stepIndex]
            let vPrev = step.visualTokenCount - step.images.last!.length
            for layer in 0..<ModelPresets.tinyVL.numLayers {
                let n = Measure.floats(step, TraceField.hidNorm, layer)
                #expect(n.count == step.visualTokenCount)
                var el = [Double](), bg = [Double]()
                for u in 0..<step.images.last!.length {
                    let v = Double(n[vPrev + u])
                    if planned.cellElements[u] >= 0 { el.append(v) } else { bg.append(v) }
                }
                let ratio = Measure.mean(el) / Measure.mean(bg)
                #expect(ratio >= 1.25, "step \(step.stepIndex) layer \(layer): norm ratio \(ratio)")
            }
        }
    }

    @Test("GUI-KV residuals of history tokens the current screen repeats are ≤ half those of changed tokens")
    func residualContrast() {
        for step in shared.steps where step.images.count >= 2 {
            let current = shared.agent.plan.steps[step.stepIndex]
            let vPrev = step.visualTokenCount - step.images.last!.length
            var repeated = [Bool]()
            for (f, img) in step.images.dropLast().enumerated() {
                let frame = shared.agent.plan.steps[step.stepIndex - (step.images.count - 1 - f)]
                for u in 0..<img.length { repeated.append(frame.contentIDs[u] == current.contentIDs[u]) }
            }
            #expect(repeated.count == vPrev)
            for layer in 0..<ModelPresets.tinyVL.numLayers {
                let r = Measure.floats(step, TraceField.guikvResid, layer)
                #expect(r.count == Hkv * vPrev)
                var rep = [Double](), chg = [Double]()
                for g in 0..<Hkv {
                    for v in 0..<vPrev { (repeated[v] ? { rep.append(Double(r[g * vPrev + v])) } : { chg.append(Double(r[g * vPrev + v])) })() }
                }
                guard !rep.isEmpty, !chg.isEmpty else { continue }
                let ratio = Measure.mean(rep) / Measure.mean(chg)
                #expect(ratio <= 0.5, "step \(step.stepIndex) layer \(layer): residual ratio \(ratio)")
            }
        }
    }

    @Test("consecutive screenshots share most content but change with each action")
    func screenPersistence() {
        var shared_ = [Double]()
        for k in 1..<shared.agent.plan.steps.count {
            let a = shared.agent.plan.steps[k - 1].contentIDs, b = shared.agent.plan.steps[k].contentIDs
            let same = zip(a, b).filter { $0 == $1 }.count
            shared_.append(Double(same) / Double(a.count))
            #expect(same < a.count, "step \(k) identical to step \(k - 1)")
        }
        print("share of unchanged cells between consecutive screenshots: \(shared_)")
        #expect(Measure.mean(shared_) >= 0.5)
    }
}
