import Foundation
import StarKVPolicies
import StarKVReplay
import StarKVSynth
import StarKVTrace
import Testing

/// The persistent loop's cache contents (Sources/StarKVReplay/CacheResidency.swift).
@Suite struct CacheResidencyTests {
    @Test func fullCacheKeepsTheWholePromptAtEveryStepOfThePersistentLoop() throws {
        // 6 steps, up to 3 screenshots: history frames enter and leave the prompt.
        let trace = try ReplayFixtures.trace(ReplayFixtures.config(steps: 6))
        let dump = ReplayFixtures.tempPath("full-persist", ext: "jsonl")
        let r = try Replay.run(ReplayFixtures.request(trace, policies: ["full"], budgets: [.percent(100)], loop: .persistent, dump: dump))
        let steps = r.runs[0].steps
        #expect(steps.count == 6)
        for s in steps {
            #expect(s.keptTokensMean == Double(s.promptLength), "step \(s.step)")
            #expect(s.keptFraction == 1, "step \(s.step)")
            #expect(s.cachedWindowMass == 1, "step \(s.step)")
        }
        // Every (step, layer) record keeps exactly the positions 0..<L.
        let lines = try String(contentsOfFile: dump, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 6 * 4)
        for line in lines {
            let rec = try KeptSetRecord(jsonLine: String(line))
            #expect(rec.kept.count == 1)
            #expect(rec.kept[0] == (0..<Int32(rec.promptLength)).map { $0 }, "step \(rec.step) layer \(rec.layer)")
        }
    }

    @Test func evictedTokensStayEvictedAndUnseenTokensArePrefilled() throws {
        let agent = try StarKVSynthFixture.agent()
        let s0 = agent.step(0), s1 = agent.step(1), s2 = agent.step(2)
        // Step 0 keeps everything but the first 5 tokens of its screenshot.
        let img0 = s0.images[0]
        let kept0: [Int32] = (0..<Int32(s0.promptLength)).filter { !($0 >= img0.spanStart && $0 < img0.spanStart + 5) }
        let r1 = CacheResidency().advanced(step: s0, keptPerLayer: Array(repeating: [kept0], count: 4))
        // Step 1 keeps every position it has available.
        let a1 = r1.availability(for: s1, layers: 4)
        let kept1: [Int32] = (0..<Int32(s1.promptLength)).filter { a1[0][Int($0)] }
        let r2 = r1.advanced(step: s1, keptPerLayer: Array(repeating: [kept1], count: 4))
        let a2 = r2.availability(for: s2, layers: 4)
        // In step 2 the step-0 screenshot (frame age 2) still misses its first 5 tokens; the rest
        // of the prompt (carried or new) is in the cache.
        let old = try #require(s2.images.first { $0.frameAge == 2 })
        for p in 0..<s2.promptLength {
            let evicted = p >= old.spanStart && p < old.spanStart + 5
            #expect(a2[1][p] == !evicted, "position \(p)")
        }
    }
}
