import Foundation
import StarKVMemory
import StarKVPolicies
import StarKVReport
import StarKVSynth
import StarKVTrace
import Testing
@testable import StarKVReplay

@Suite struct ReplayDeterminismTests {
    /// Same trace and flags on 1 and 4 threads → identical results, dumps and report files.
    @Test func outputsAreByteIdenticalAcrossThreadCounts() throws {
        let trace = try ReplayFixtures.trace()
        var outputs: [[String: Data]] = []
        for threads in [1, 4] {
            let dump = ReplayFixtures.tempPath("dump", ext: "jsonl")
            let r = try Replay.run(ReplayFixtures.request(trace, threads: threads, dump: dump))
            let dir = ReplayFixtures.tempPath("report", ext: "d")
            let files = try ReportRenderer.write(r, to: dir)
            var contents: [String: Data] = ["dump": FileManager.default.contents(atPath: dump)!]
            for f in files { contents[(f as NSString).lastPathComponent] = FileManager.default.contents(atPath: f)! }
            outputs.append(contents)
        }
        #expect(outputs[0].keys.sorted() == ["dump", "report.html", "results.json", "runs.csv", "steps.csv", "trace.json"])
        for key in outputs[0].keys { #expect(outputs[0][key] == outputs[1][key], "\(key) differs between 1 and 4 threads") }
    }

    @Test func digestChangesWithTheBudgetAndExpectDigestDetectsIt() throws {
        let trace = try ReplayFixtures.trace()
        let a = try Replay.run(ReplayFixtures.request(trace, budgets: [.percent(20)]))
        let b = try Replay.run(ReplayFixtures.request(trace, budgets: [.percent(21)]))
        #expect(a.digest != b.digest)
        #expect(a.digest == Replay.digest(of: a))
        #expect(a.digest.count == 64)
    }
}

@Suite struct ReplayResultTests {
    @Test func keptFractionFollowsTheBudgetAndTheFullCacheRunsOnceAtFullBudget() throws {
        let trace = try ReplayFixtures.trace()
        let r = try Replay.run(ReplayFixtures.request(trace, policies: ["full", "snapkv"], budgets: [.percent(20), .percent(40)]))
        #expect(r.runs.map(\.policy) == ["full", "snapkv", "snapkv"])
        #expect(r.runs.map(\.budget) == ["100%", "20%", "40%"])
        for s in r.runs[0].steps { #expect(s.keptFraction == 1) }
        for (run, b) in [(r.runs[1], 20.0), (r.runs[2], 40.0)] {
            for s in run.steps {
                // C = ⌊L·b/100⌋ per layer (docs/algorithms.md §1.3).
                let expected = (Double(s.promptLength) * b / 100).rounded(.down)
                #expect(s.keptTokensMean == expected)
            }
        }
        // Less cache kept → no more decode attention kept.
        #expect(r.runs[1].summary.meanDecodeMassRetained! <= r.runs[2].summary.meanDecodeMassRetained!)
        #expect(r.runs[0].summary.meanDecodeMassRetained == 1)
    }

    @Test func memoryPeaksGrowWithTheKeptCacheAndTermsAddUp() throws {
        let trace = try ReplayFixtures.trace()
        var req = ReplayFixtures.request(trace, policies: ["snapkv"], budgets: [.percent(10), .percent(100)])
        req.memory.storedKVHeads = 28
        let r = try Replay.run(req)
        for (low, high) in zip(r.runs[0].steps, r.runs[1].steps) {
            #expect(low.kvBytes < high.kvBytes)
            #expect(low.allocatedPeakBytes <= high.allocatedPeakBytes)
            #expect(high.terms.weights == Double(ModelPresetsWeights.sevenB))
        }
    }

    @Test func perScreenshotSharesSumToTheVisualShare() throws {
        let trace = try ReplayFixtures.trace()
        let r = try Replay.run(ReplayFixtures.request(trace, policies: ["snapkv"], budgets: [.percent(20)]))
        let s = r.runs[0].steps.last!
        #expect(s.imageShareBefore.count == 3)
        #expect(s.imageShareBefore.allSatisfy { abs($0 - 100 / Double(s.promptLength)) < 1e-12 })
        #expect(s.imageShareAfter.reduce(0, +) <= 1 + 1e-9)
    }

    @Test func aPolicyNeedingAnAbsentFieldIsRefusedNamingTheField() throws {
        let trace = try ReplayFixtures.trace(ReplayFixtures.config(fidelity: .core))
        do {
            _ = try Replay.run(ReplayFixtures.request(trace, policies: ["h2o"]))
            Issue.record("expected a refusal")
        } catch let e as ReplayError {
            #expect(e.description.contains("colsum_all"))
            #expect(e.description.contains("standard"))
        }
    }

    @Test func goldenKeptSetsEqualToTheReplayAreReportedIdentical() throws {
        // First replay to learn SnapKV's kept sets, then store them as golden sets in a copy.
        let plain = try ReplayFixtures.trace()
        let dump = ReplayFixtures.tempPath("golden-dump", ext: "jsonl")
        _ = try Replay.run(ReplayFixtures.request(plain, policies: ["snapkv"], budgets: [.percent(20)], dump: dump))
        let lines = String(decoding: FileManager.default.contents(atPath: dump)!, as: UTF8.self).split(separator: "\n")
        let records = try lines.map { try KeptSetRecord(jsonLine: String($0)) }
        let field = "golden_kept.snapkv.20"
        let golden = try ReplayFixtures.trace(extraFields: [field]) { step in
            for rec in records where rec.step == step.stepIndex {
                let rows = rec.kept
                let flat = rows.flatMap { $0 }
                step.chunks.append(
                    TensorChunk(field: field, layer: rec.layer, tensor: Tensor(int32: flat, shape: [rows.count, rows[0].count])))
            }
        }
        let r = try Replay.run(ReplayFixtures.request(golden, policies: ["snapkv"], budgets: [.percent(20)]))
        let check = try #require(r.trace.goldenChecks.first)
        #expect(check.field == field)
        #expect(check.layers == 4 * 4)
        #expect(check.identicalLayers == check.layers && check.meanJaccard == 1)
        // A different budget has no golden set to compare with.
        let other = try Replay.run(ReplayFixtures.request(golden, policies: ["snapkv"], budgets: [.percent(40)]))
        #expect(other.trace.goldenChecks.isEmpty)
    }
}

@Suite struct PersistentLoopTests {
    @Test func persistentLoopKeepsOnlyCachedTokensAndReportsCachedMass() throws {
        let trace = try ReplayFixtures.trace()
        let dump = ReplayFixtures.tempPath("persist", ext: "jsonl")
        let r = try Replay.run(
            ReplayFixtures.request(trace, policies: ["snapkv"], budgets: [.percent(30)], loop: .persistent, dump: dump))
        let steps = r.runs[0].steps
        #expect(steps[0].cachedWindowMass == 1)  // nothing evicted before the first compression
        for s in steps.dropFirst() {
            let m = try #require(s.cachedWindowMass)
            #expect(m > 0 && m < 1)
        }
        #expect(r.notes.contains { $0.contains("open-loop approximation") })
        #expect(r.settings.loop == "persistent")
    }

    @Test func residencyCarriesKeptScreenshotTokensAndDropsEvictedOnes() throws {
        let agent = try StarKVSynthFixture.agent()
        let s0 = agent.step(0)
        let s1 = agent.step(1)
        // Keep only the first 10 tokens of the step-0 screenshot (plus its prefix).
        let img0 = s0.images[0]
        let kept: [Int32] = (0..<Int32(img0.spanStart + 10)).map { $0 }
        let residency = CacheResidency().advanced(step: s0, keptPerLayer: Array(repeating: [kept], count: 4))
        let avail = residency.availability(for: s1, layers: 4)
        // In step 1 the step-0 screenshot is the older image (frame age 1).
        let old = s1.images[0]
        #expect(old.frameAge == 1)
        for u in 0..<old.length { #expect(avail[0][old.spanStart + u] == (u < 10)) }
        let current = s1.images[1]
        for u in 0..<current.length { #expect(avail[2][current.spanStart + u]) }
        // A reset makes everything available again.
        var reset = s1
        reset.reset = true
        #expect(residency.availability(for: reset, layers: 4).allSatisfy { $0.allSatisfy { $0 } })
    }

    @Test func maskingRenormalisesEachRowOverCachedPositions() {
        let header = TraceHeader(
            model: RecordedModel(id: "t", numLayers: 1, numQueryHeads: 1, numKVHeads: 1, headDim: 4, hiddenSize: 4, vocabSize: 10, intermediateSize: 4),
            recorder: RecorderInfo(name: "t", version: "1"), fidelity: .standard, fields: [TraceField.colsumAll], windowSizes: [8],
            agent: AgentLoopInfo(storedKVHeads: 1, screenWidth: 1, screenHeight: 1))
        let step = StepRecord(
            episodeID: "e", stepIndex: 0, stepInEpisode: 0, reset: false, promptLength: 4, generatedTokens: 0,
            tokenTypes: Array(repeating: .system, count: 4), images: [],
            chunks: [TensorChunk(field: TraceField.colsumAll, layer: 0, tensor: Tensor(floats: [1, 2, 3, 4], shape: [1, 4]))])
        let masked = CacheResidency.mask(step, header: header, availability: [[true, false, true, true]])
        // Row total 10 is kept; the cached mass 8 is scaled by 10/8.
        #expect(masked.chunks[0].tensor.floats() == [1.25, 0, 3.75, 5])
    }
}

/// bf16 weight bytes of the 7B (docs/memory-model.md §1.3).
enum ModelPresetsWeights {
    static let sevenB = 2 * 8_292_166_656
}

enum StarKVSynthFixture {
    static func agent() throws -> SyntheticAgent { try SyntheticAgent(ReplayFixtures.config()) }
}
