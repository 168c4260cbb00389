import Foundation
import StarKVModel
import StarKVTrace
import Testing

@testable import StarKVSynth

/// Full-fidelity steps of a small trajectory (tiny-vl, 1280x720, 3 steps, 2 slots, f32 win_sum).
private let fullAgent = try! SyntheticAgent(Measure.config(steps: 3, slots: 2, fidelity: .full, seed: 11))
private let fullSteps = fullAgent.allSteps()

@Suite("every field derives consistently from one attention model and matches FORMAT.md")
struct ConsistencyTests {
    let H = ModelPresets.tinyVL.numQueryHeads
    let Hkv = ModelPresets.tinyVL.numKVHeads

    @Test("each window of w softmax rows sums to w over all keys (win_sum row totals)")
    func windowRowTotals() {
        for step in fullSteps {
            for layer in 0..<4 {
                let x = Measure.floats(step, TraceField.winSum, layer)
                for (wi, w) in fullAgent.config.windowSizes.enumerated() {
                    for h in 0..<H {
                        let off = (wi * H + h) * step.promptLength
                        let total = (0..<step.promptLength).reduce(0.0) { $0 + Double(x[off + $1]) }
                        #expect(abs(total - Double(w)) < 1e-3 * Double(w), "step \(step.stepIndex) layer \(layer) w \(w) h \(h): \(total)")
                    }
                }
            }
        }
    }

    @Test("colsum_all sums to L, colsum_postvis to L − e*, decode_attn_sum to at most G; counts ≤ n_valid")
    func columnTotals() {
        for step in fullSteps {
            let L = step.promptLength
            let eStar = step.images.last!.spanEnd  // the last <|vision_end|>
            #expect(step.tokenTypes[eStar] == .visionMarker)
            for layer in 0..<4 {
                let all = Measure.floats(step, TraceField.colsumAll, layer)
                let post = Measure.floats(step, TraceField.colsumPostvis, layer)
                let dec = Measure.floats(step, TraceField.decodeAttnSum, layer)
                let counts = step.chunk(TraceField.countGt001, layer: layer)!.tensor.int64s()
                let valid = step.chunk(TraceField.nValid, layer: layer)!.tensor.int64s()
                #expect(valid == [Int64((eStar..<L).reduce(0) { $0 + $1 + 1 })])
                for h in 0..<H {
                    let a = (0..<L).reduce(0.0) { $0 + Double(all[h * L + $1]) }
                    let p = (0..<L).reduce(0.0) { $0 + Double(post[h * L + $1]) }
                    let d = (0..<L).reduce(0.0) { $0 + Double(dec[h * L + $1]) }
                    #expect(abs(a - Double(L)) < 1e-3 * Double(L))
                    #expect(abs(p - Double(L - eStar)) < 1e-3 * Double(L - eStar))
                    #expect(d <= Double(step.generatedTokens) && d >= 0.5 * Double(step.generatedTokens))
                    #expect(counts[h] >= (layer == 0 ? 0 : 1) && counts[h] <= valid[0])
                    // Post-vision rows see nothing after L: keys beyond e* get only later rows.
                    #expect(post[h * L + L - 1] > 0)
                }
            }
        }
    }

    @Test("colsum_all ≥ the largest window sum ≥ smaller window sums, key by key (more rows, more mass)")
    func monotoneInRows() {
        for step in fullSteps {
            let L = step.promptLength
            let ws = fullAgent.config.windowSizes
            for layer in 0..<4 {
                let x = Measure.floats(step, TraceField.winSum, layer)
                let all = Measure.floats(step, TraceField.colsumAll, layer)
                var violations = 0
                for h in 0..<H {
                    for j in 0..<L {
                        for wi in 1..<ws.count where x[(wi * H + h) * L + j] < x[((wi - 1) * H + h) * L + j] * (1 - 1e-5) {
                            violations += 1
                        }
                        if all[h * L + j] < x[((ws.count - 1) * H + h) * L + j] * (1 - 1e-5) { violations += 1 }
                    }
                }
                #expect(violations == 0)
            }
        }
    }

    @Test("win_rows (full fidelity) are causal softmax rows that sum to 1 and add up to win_sum[w = 8]")
    func winRowsAgree() {
        for step in fullSteps {
            let L = step.promptLength
            let W = fullAgent.config.winRowsMax
            #expect(W == 8 && fullAgent.config.windowSizes[0] == 8)
            for layer in 0..<4 {
                let rows = Measure.floats(step, TraceField.winRows, layer)
                let sums = Measure.floats(step, TraceField.winSum, layer)
                let counts = step.chunk(TraceField.countGt001, layer: layer)!.tensor.int64s()
                let eStar = step.images.last!.spanEnd
                for h in 0..<H {
                    var maxDiff = 0.0
                    var count: Int64 = 0
                    for r in 0..<W {
                        let i = L - W + r
                        let row = (0..<L).map { Double(rows[(h * W + r) * L + $0]) }
                        #expect(abs(row.reduce(0, +) - 1) < 2e-3)
                        #expect(row[(i + 1)...].allSatisfy { $0 == 0 }, "row \(i) is not causal")
                        if i >= eStar { count += Int64(row.filter { $0 > 0.01 }.count) }
                    }
                    for j in 0..<L {
                        let s = (0..<W).reduce(0.0) { $0 + Double(rows[(h * W + $1) * L + j]) }
                        maxDiff = max(maxDiff, abs(s - Double(sums[h * L + j])))
                    }
                    #expect(maxDiff < 2e-3, "layer \(layer) head \(h): win_rows vs win_sum differ by \(maxDiff)")
                    // f16 rounding can move an entry across 0.01; allow a couple.
                    #expect(abs(count - counts[h]) <= 2, "layer \(layer) head \(h): count \(count) vs \(counts[h])")
                }
            }
        }
    }

    @Test("chunk shapes and dtypes follow FORMAT.md and the header lists exactly the fields present")
    func shapes() {
        #expect(fullAgent.header.fields == TraceField.fields(at: .full))
        #expect(fullAgent.header.winRowsMax == 8)
        for step in fullSteps {
            let L = step.promptLength
            let V = step.visualTokenCount
            let vPrev = V - step.images.last!.length
            var expected: [String: ([Int], TensorDType)] = [
                TraceField.winSum: ([4, H, L], .f32), TraceField.hidNorm: ([V], .f32),
                TraceField.colsumAll: ([H, L], .f32), TraceField.colsumPostvis: ([H, L], .f32),
                TraceField.countGt001: ([H], .i64), TraceField.nValid: ([1], .i64),
                TraceField.decodeAttnSum: ([H, L], .f32), TraceField.winRows: ([H, 8, L], .f16),
            ]
            if step.images.count >= 2 { expected[TraceField.guikvResid] = ([Hkv, vPrev], .f16) }
            for layer in 0..<4 {
                for (field, (shape, dtype)) in expected.sorted(by: { $0.key < $1.key }) {
                    let c = step.chunk(field, layer: layer)
                    #expect(c?.tensor.shape == shape, "step \(step.stepIndex) layer \(layer) \(field)")
                    #expect(c?.tensor.dtype == dtype)
                    #expect(c.map { $0.tensor.bytes.count == $0.tensor.elementCount * dtype.byteWidth } == true)
                }
            }
            #expect(step.chunks.count == 4 * expected.count)
            #expect(step.chunk(TraceField.guikvResid, layer: 0) == nil || step.images.count >= 2)
        }
    }

    @Test("token layout: spans hold exactly the image pads between vision markers, smart_resize counts, current last")
    func layout() throws {
        for step in fullSteps {
            #expect(step.tokenTypes.count == step.promptLength && step.tokenIDs.count == step.promptLength)
            #expect(step.images.count == min(step.stepIndex + 1, 2))
            for (f, img) in step.images.enumerated() {
                #expect(img.length == 1196 && img.gridH == 26 && img.gridW == 46)
                #expect(img.frameAge == step.images.count - 1 - f)
                #expect(step.tokenTypes[img.spanStart - 1] == .visionMarker && step.tokenTypes[img.spanEnd] == .visionMarker)
                #expect(step.tokenTypes[img.spanStart..<img.spanEnd].allSatisfy { $0 == .visual })
            }
            #expect(step.tokenTypes.filter { $0 == .visual }.count == step.visualTokenCount)
            #expect(step.tokenTypes.suffix(3).allSatisfy { $0 == .generationPrompt })
            #expect(step.tokenTypes.contains(.instruction) && step.tokenTypes.contains(.system))
            #expect(step.tokenTypes.contains(.history) == (step.stepIndex > 0))
        }
        // The realistic 7B trajectory's prompt lengths (layout only, no fields).
        let big = try SyntheticAgent(SynthConfig(model: ModelPresets.qwen25VL7B, steps: 10, imageSlots: 5))
        #expect(big.grid.visualTokens == 2691)
        let last = big.layout(step: 9)
        #expect(last.images.count == 5)
        #expect(last.promptLength > 5 * 2691 && last.promptLength < 15_000)
    }

    @Test("same seed → identical StepRecords; a different seed → different records")
    func determinism() throws {
        let a = try SyntheticAgent(Measure.config(steps: 3, slots: 2, seed: 5))
        let b = try SyntheticAgent(Measure.config(steps: 3, slots: 2, seed: 5))
        let c = try SyntheticAgent(Measure.config(steps: 3, slots: 2, seed: 6))
        // Steps are independent of generation order.
        let forward = a.allSteps()
        let backward = (0..<3).reversed().map { b.step($0) }.reversed()
        #expect(forward == Array(backward))
        #expect(a.header == b.header)
        let other = c.allSteps()
        #expect(forward[0].chunks != other[0].chunks)
        #expect(a.plan != c.plan)
    }

    @Test("invalid settings give typed errors that name the flag")
    func errors() {
        func error(_ cfg: SynthConfig) -> SynthError? {
            do {
                _ = try SyntheticAgent(cfg)
                return nil
            } catch let e as SynthError { return e } catch { return nil }
        }
        var cfg = Measure.config()
        cfg.steps = 0
        #expect(error(cfg) == .invalidSteps(0))
        cfg = Measure.config(slots: 0)
        #expect(error(cfg) == .invalidImageSlots(0))
        cfg = Measure.config()
        cfg.windowSizes = [16, 8]
        #expect(error(cfg) == .invalidWindowSizes([16, 8]))
        cfg = Measure.config(screen: ScreenSize(width: 10, height: 5000))
        #expect(error(cfg)?.description.contains("--screen") == true)
        cfg = Measure.config()
        cfg.winSumDType = .i32
        #expect(error(cfg) == .invalidDType(field: TraceField.winSum, dtype: .i32))
        cfg = Measure.config(screen: ScreenSize(width: 100_000, height: 100_000))
        cfg.model = ModelPresets.qwen25VL72B
        cfg.imageSlots = 64
        cfg.steps = 64
        cfg.fidelity = .full
        if case .tooLarge = error(cfg) {} else { Issue.record("expected tooLarge, got \(String(describing: error(cfg)))") }
    }

    @Test("the shipped sample trace is exactly what `make traces` regenerates")
    func shippedSample() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let sample = root.appendingPathComponent("traces/sample-1280x720.starkv").path
        let reader = try TraceReader(path: sample)
        #expect(reader.header.model.id == "tiny-vl")
        #expect(reader.stepCount == 6)
        #expect(reader.header.recorder.seed == 1)
        let agent = try SyntheticAgent(
            SynthConfig(
                model: ModelPresets.tinyVL, steps: 6, screen: ScreenSize(width: 1280, height: 720), imageSlots: 2,
                fidelity: .standard, seed: 1, windowSizes: [8, 16, 32, 64], commandLine: reader.header.recorder.commandLine))
        #expect(agent.header == reader.header)
        for k in [0, 5] {
            #expect(try reader.readStep(at: k) == agent.step(k), "step \(k) differs from the regenerated one")
        }
    }
}
