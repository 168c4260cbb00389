import Testing
import StarKVModel
@testable import StarKVMemory

/// Reproduces docs/memory-model.md §4 (tables A, B, I/J and the variants) within 2 %, and the
/// paper's headline figures with the configuration that yields them (§4.1).
@Suite struct WorkedExampleTests {
    static let tokens1080p = 2691
    static let tokens4K = 10549

    func run(
        tokens: Int, counts: [Int] = [1, 2, 3, 4, 5], attention: AttentionImplementation = .flash,
        kvHeads: Int = 4, budget: Double? = nil, logits: LogitsPolicy = .full, retain: Bool = true,
        allocator: AllocatorKind = .analytic, generated: Int = 0
    ) throws -> MemoryTrajectoryReport {
        let config = MemorySimulationConfig(
            llmAttention: attention, storedKVHeads: kvHeads, logits: logits, retainPreviousCache: retain,
            allocator: allocator)
        let workload = SyntheticWorkload(
            visualTokensPerScreenshot: tokens, screenshotCounts: counts, generatedTokens: generated, budgetPercent: budget)
        return try MemorySimulator.run(config: config, steps: workload.steps(numLayers: 28))
    }

    func expectWithin(_ bytes: Int, gb expected: Double, tolerance: Double = 0.02, _ label: String) {
        let actual = ByteUnits.gigabytes(bytes)
        #expect(abs(actual - expected) <= tolerance * expected, "\(label): \(actual) GB vs \(expected) GB")
    }

    @Test func tableAFlashGQAFullLogitsPeaks() throws {
        let r = try run(tokens: Self.tokens1080p)
        #expect(r.steps.map(\.promptTokens) == [3293, 6136, 8979, 11822, 14665])
        for (s, gb) in zip(r.steps, [17.9, 19.2, 20.5, 21.8, 23.1]) { expectWithin(s.requestedPeakBytes, gb: gb, "A n=\(s.screenshots)") }
        // Term columns at n = 5.
        let t = r.steps[4].peakTerms
        expectWithin(t.weightsBytes, gb: 16.58, "W")
        expectWithin(t.kvNowBytes, gb: 0.84, "KV")
        expectWithin(t.kvPreviousBytes, gb: 0.68, "KV prev")
        expectWithin(t.logitsBytes, gb: 4.46, "logits")
        #expect(r.steps[4].peakLocation == "lm_head")
    }

    @Test func tableBEagerPeaksAreQuadraticAndDominatedByTheScoreMatrix() throws {
        let r = try run(tokens: Self.tokens1080p, attention: .eager)
        for (s, gb) in zip(r.steps, [35.6, 36.2, 40.6, 57.7, 79.4]) { expectWithin(s.requestedPeakBytes, gb: gb, "B n=\(s.screenshots)") }
        // n = 1, 2 peak in the vision tower (one image's 160·p² softmax), n ≥ 3 in the LLM prefill.
        #expect(r.steps[0].peakLocation.hasPrefix("vision block"))
        #expect(r.steps[4].peakLocation.hasPrefix("prefill layer"))
        let t = r.steps[4].peakTerms
        // 280·L² + repeat_kv 14,336·L at L = 14,665: 60.22 + 0.21 GB.
        expectWithin(t.attentionTransientBytes, gb: 60.43, "eager attention transient")
        expectWithin(t.attentionMaskBytes, gb: 0.43, "mask")
        #expect(Double(t.attentionTransientBytes) / Double(r.steps[4].requestedPeakBytes) > 0.75)
        let visionPeak = try #require(r.steps[0].phasePeaks.first { $0.phase == .vision })
        expectWithin(visionPeak.requestedPeakBytes, gb: 35.6, "B n=1 vision peak")
    }

    @Test func tablesIAndJCompressionPathAt4K() throws {
        let full = try run(tokens: Self.tokens4K, kvHeads: 28)
        let compressed = try run(tokens: Self.tokens4K, kvHeads: 28, budget: 20)
        #expect(full.steps.map(\.promptTokens) == [11151, 21852, 32553, 43254, 53955])
        for (s, gb) in zip(full.steps, [24.9, 37.3, 49.6, 61.9, 74.2]) { expectWithin(s.requestedPeakBytes, gb: gb, "I n=\(s.screenshots)") }
        for (s, gb) in zip(compressed.steps, [21.3, 26.7, 32.1, 37.5, 42.9]) { expectWithin(s.requestedPeakBytes, gb: gb, "J n=\(s.screenshots)") }
        expectWithin(full.steps[4].peakTerms.kvNowBytes, gb: 21.66, "I KV")
        expectWithin(full.steps[4].peakTerms.kvPreviousBytes, gb: 17.36, "I KV prev")
        expectWithin(compressed.steps[4].peakTerms.kvNowBytes, gb: 4.33, "J KV")
        expectWithin(compressed.steps[4].peakTerms.kvPreviousBytes, gb: 3.47, "J KV prev")
        // Kept = ⌊L·0.2⌋ per layer.
        #expect(compressed.steps[4].keptTokensMean == 10791)
    }

    /// Paper: "76 GB on merely five screenshots". Configuration B (eager LLM+ViT, 1920×1080,
    /// full cache, GQA storage, full bf16 logits, previous cache retained) gives 79.4 GB; I
    /// (FA2, 3840×2160, 28-head compression path at 100 %) gives 74.2 GB — both within 5 %.
    @Test func headlineSeventySixGBAtFiveScreenshots() throws {
        let b = try run(tokens: Self.tokens1080p, counts: [4, 5], attention: .eager)
        let i = try run(tokens: Self.tokens4K, counts: [4, 5], kvHeads: 28)
        expectWithin(b.steps[1].requestedPeakBytes, gb: 76, tolerance: 0.05, "B at 5 screenshots")
        expectWithin(i.steps[1].requestedPeakBytes, gb: 76, tolerance: 0.05, "I at 5 screenshots")
        // The same trajectories with FA2 + GQA (configuration A) stay far below.
        let a = try run(tokens: Self.tokens1080p, counts: [4, 5])
        #expect(ByteUnits.gigabytes(a.steps[1].requestedPeakBytes) < 25)
    }

    /// Paper: "nearly 40 % lower peak at a 20 % budget". Only I → J reproduces it: −42 % on a
    /// fresh trajectory, −44 % at steady state (previous step also five screenshots).
    @Test func headlineFortyPercentPeakCutAtTwentyPercentBudget() throws {
        let full = try run(tokens: Self.tokens4K, kvHeads: 28)
        let compressed = try run(tokens: Self.tokens4K, kvHeads: 28, budget: 20)
        let cut = 1 - Double(compressed.steps[4].requestedPeakBytes) / Double(full.steps[4].requestedPeakBytes)
        #expect(cut > 0.40 && cut < 0.44, "fresh trajectory cut \(cut)")

        let steadyFull = try run(tokens: Self.tokens4K, counts: [5, 5], kvHeads: 28)
        let steadyCompressed = try run(tokens: Self.tokens4K, counts: [5, 5], kvHeads: 28, budget: 20)
        expectWithin(steadyFull.steps[1].requestedPeakBytes, gb: 78.5, "steady b=1.0")
        expectWithin(steadyCompressed.steps[1].requestedPeakBytes, gb: 43.8, "steady b=0.2")
        let steadyCut = 1 - Double(steadyCompressed.steps[1].requestedPeakBytes) / Double(steadyFull.steps[1].requestedPeakBytes)
        #expect(steadyCut > 0.42 && steadyCut < 0.46, "steady-state cut \(steadyCut)")

        // Without the retained previous cache: 56.8 vs 39.5 GB (−31 %).
        let noRetainFull = try run(tokens: Self.tokens4K, counts: [4, 5], kvHeads: 28, retain: false)
        let noRetainCompressed = try run(tokens: Self.tokens4K, counts: [4, 5], kvHeads: 28, budget: 20, retain: false)
        expectWithin(noRetainFull.steps[1].requestedPeakBytes, gb: 56.8, "no retain b=1.0")
        expectWithin(noRetainCompressed.steps[1].requestedPeakBytes, gb: 39.5, "no retain b=0.2")
    }

    @Test func compressionCannotCutTheEagerPeakAndRaisesTheGQAPeakAtTwentyEightHeads() throws {
        // B: the prefill still builds the full L×L scores before selecting.
        let b = try run(tokens: Self.tokens1080p, counts: [5], attention: .eager)
        let bCompressed = try run(tokens: Self.tokens1080p, counts: [5], attention: .eager, kvHeads: 28, budget: 20)
        #expect(Double(bCompressed.steps[0].requestedPeakBytes) > 0.97 * Double(b.steps[0].requestedPeakBytes))
        // A: a 20 % cache at 28 heads is 1.4× the full GQA cache.
        let a = try run(tokens: Self.tokens1080p, counts: [5])
        let aCompressed = try run(tokens: Self.tokens1080p, counts: [5], kvHeads: 28, budget: 20)
        let ratio = Double(aCompressed.steps[0].peakTerms.kvNowBytes) / Double(a.steps[0].peakTerms.kvNowBytes)
        #expect(abs(ratio - 1.4) < 0.01)
    }

    @Test func variantsDEGAndHighResolutionEager() throws {
        let d = try run(tokens: Self.tokens4K, counts: [4, 5])
        expectWithin(d.steps[1].requestedPeakBytes, gb: 40.7, "D")
        let e = try run(tokens: Self.tokens4K, counts: [4, 5], logits: .fullFloat32)
        expectWithin(e.steps[1].requestedPeakBytes, gb: 73.5, "E")
        let g = try run(tokens: Self.tokens1080p, counts: [4, 5], logits: .lastToken)
        expectWithin(g.steps[1].requestedPeakBytes, gb: 20.4, "G")
        // 2560×1440 (4,641 tokens/shot) with eager attention: 80.7 GB at n = 3.
        let hi = try run(tokens: 4641, counts: [2, 3], attention: .eager)
        expectWithin(hi.steps[1].requestedPeakBytes, gb: 80.7, "1440p eager n=3")
    }

    @Test func allocatorReplayAllocatedPeakStaysWithinOnePercentOfRequested() throws {
        let r = try run(tokens: Self.tokens4K, kvHeads: 28, budget: 20, allocator: .torchCaching)
        for s in r.steps {
            let ratio = Double(s.allocatedPeakBytes) / Double(s.requestedPeakBytes)
            #expect(ratio >= 1 && ratio < 1.01, "step \(s.step): \(ratio)")
            #expect(s.reservedPeakBytes >= s.allocatedPeakBytes)
            #expect(s.peakTerms.allocatorSlackBytes == s.reservedPeakBytes - s.allocatedPeakBytes)
        }
        #expect(r.firstOOM == nil)
    }

    /// Fragmentation: configuration B at five screenshots needs 79.8 GB of live tensors (below
    /// the H100's 84.5 GB allocator capacity) but the default allocator cannot reuse the
    /// previous steps' split segments and raises OOM; expandable segments fit.
    @Test func eagerFiveScreenshotsOOMsOnlyThroughFragmentation() throws {
        let r = try run(tokens: Self.tokens1080p, attention: .eager, allocator: .torchCaching)
        #expect(r.steps[4].requestedPeakBytes < Accelerator.h100SXM.allocatorCapacityBytes)
        let oom = try #require(r.firstOOM)
        #expect(oom.step == 4)
        #expect((oom.allocator?.reservedButUnallocatedBytes ?? 0) > 0)

        var config = MemorySimulationConfig(llmAttention: .eager)
        config.cachingOptions.expandableSegments = true
        let workload = SyntheticWorkload(visualTokensPerScreenshot: Self.tokens1080p, screenshotCounts: [1, 2, 3, 4, 5])
        let expandable = try MemorySimulator.run(config: config, steps: workload.steps(numLayers: 28))
        #expect(expandable.firstOOM == nil)
        #expect(expandable.peakReservedBytes < r.peakReservedBytes)
    }
}
