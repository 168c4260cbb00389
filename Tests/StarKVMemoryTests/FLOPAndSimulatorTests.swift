import Foundation
import Testing
import StarKVModel
@testable import StarKVMemory

private let m7 = ModelPresets.qwen25VL7B

/// docs/memory-model.md §6 worked FLOP numbers and §4.2 roofline times.
@Suite struct FLOPModelTests {
    func near(_ value: Int, _ expected: Double, _ tol: Double = 0.01) -> Bool {
        abs(Double(value) - expected) <= tol * expected
    }

    @Test func linearAndAttentionConstantsOfThe7B() {
        #expect(FLOPModel.linearFLOPsPerTokenPerLayer(m7) == 466_092_032)  // 2 × 233.05 M linear params
        #expect(FLOPModel.attentionFLOPsPerPairPerLayer(m7) == 14_336)
        #expect(FLOPModel.lmHeadFLOPsPerRow(m7) == 2 * 3584 * 152_064)
    }

    @Test func prefillOf14665TokensNominalAndCausal() {
        let p = FLOPModel.prefill(m7, newTokens: 14_665, pastTokens: 0)
        #expect(near(p.linear, 191.4e12))
        #expect(near(p.nominal, 86.3e12))
        let head = FLOPModel.lmHeadFLOPsPerRow(m7)
        #expect(near(p.linear + p.nominal + head * 14_665, 293.7e12))
        // Causal half + last-token head: 234.6 T.
        #expect(near(p.linear + p.causal + head, 234.6e12))
        // Causal is exactly past + (q+1)/2 keys per query: for q = 1 it equals nominal.
        let one = FLOPModel.prefill(m7, newTokens: 1, pastTokens: 100)
        #expect(one.causal == one.nominal)
    }

    @Test func prefillOf53955TokensIsAbout1Point93PFLOP() {
        let p = FLOPModel.prefill(m7, newTokens: 53_955, pastTokens: 0)
        #expect(near(p.linear + p.nominal + FLOPModel.lmHeadFLOPsPerRow(m7) * 53_955, 1.93e15))
    }

    @Test func decodePerTokenAndBudgetSavings() {
        let full = FLOPModel.decodePass(m7, contextTokens: 14_665)
        #expect(near(full, 20.0e9))
        let tenth = FLOPModel.decodePass(m7, contextTokens: 1_466)
        #expect(near(tenth, 14.7e9))
        // Closed form equals the sum of single passes.
        let sum = (1...5).reduce(0) { $0 + FLOPModel.decodePass(m7, contextTokens: 1000 + $1) }
        #expect(FLOPModel.decode(m7, startContext: 1000, passes: 5) == sum)
    }

    @Test func visionTowerFLOPsAtThreeResolutions() {
        #expect(near(FLOPModel.vision(m7, patches: 10_764), 16.3e12))
        #expect(near(FLOPModel.vision(m7, patches: 18_564), 31.1e12))
        #expect(near(FLOPModel.vision(m7, patches: 42_196), 91.1e12))
        #expect(FLOPModel.vision(m7, patches: 0) == 0)
    }

    @Test func rooflineTimesOfSection4Point2() throws {
        // A, n = 5: prefill ≥ 0.30 s on an H100 SXM.
        let a = try MemorySimulator.run(
            config: .init(allocator: .analytic),
            steps: SyntheticWorkload(visualTokensPerScreenshot: 2691, screenshotCounts: [5]).steps(numLayers: 28))
        #expect(abs(a.steps[0].roofline.prefillSeconds - 0.297) < 0.005)
        // I, n = 5, two generated tokens = one decode pass at context 53,956.
        let i = try MemorySimulator.run(
            config: .init(storedKVHeads: 28, allocator: .analytic),
            steps: SyntheticWorkload(visualTokensPerScreenshot: 10_549, screenshotCounts: [5], generatedTokens: 2).steps(numLayers: 28))
        #expect(abs(i.steps[0].roofline.prefillSeconds - 1.95) < 0.02)
        #expect(abs(i.steps[0].roofline.decodeSecondsPerToken - 0.0110) < 0.0002)
        let j = try MemorySimulator.run(
            config: .init(storedKVHeads: 28, allocator: .analytic),
            steps: SyntheticWorkload(visualTokensPerScreenshot: 10_549, screenshotCounts: [5], generatedTokens: 2, budgetPercent: 20).steps(numLayers: 28))
        #expect(abs(j.steps[0].roofline.decodeSecondsPerToken - 0.0058) < 0.0002)
    }

    @Test func scoringFLOPsFromThePolicyAreAddedToTotals() throws {
        let base = SyntheticWorkload(visualTokensPerScreenshot: 1196, screenshotCounts: [1])
        var scored = base
        scored.scoringFLOPsPerStep = 5_200_000_000
        let r0 = try MemorySimulator.run(config: .init(allocator: .analytic), steps: base.steps(numLayers: 28))
        let r1 = try MemorySimulator.run(config: .init(allocator: .analytic), steps: scored.steps(numLayers: 28))
        #expect(r1.steps[0].flops.nominalTotalFLOPs - r0.steps[0].flops.nominalTotalFLOPs == 5_200_000_000)
        #expect(r1.steps[0].flops.causalTotalFLOPs - r0.steps[0].flops.causalTotalFLOPs == 5_200_000_000)
        #expect(r1.steps[0].roofline.scoringSeconds > 0)
    }
}

@Suite struct MemorySimulatorTests {
    @Test func weightTensorsSumToTheParameterCount() {
        let sizes = weightTensorBytes(m7, bytesPerParameter: 2)
        #expect(sizes.reduce(0, +) == 2 * 8_292_166_656)
        #expect(weightTensorBytes(ModelPresets.qwen25VL3B, bytesPerParameter: 4).reduce(0, +) == 4 * ModelPresets.qwen25VL3B.totalParameters)
    }

    @Test func fp32WeightsDoubleTheWeightTerm() throws {
        let steps = SyntheticWorkload(visualTokensPerScreenshot: 1196, screenshotCounts: [1]).steps(numLayers: 28)
        let r = try MemorySimulator.run(config: .init(allocator: .analytic, weightDtype: .fp32), steps: steps)
        #expect(r.steps[0].peakTerms.weightsBytes == 4 * 8_292_166_656)
    }

    @Test func sameInputsGiveBitIdenticalJSON() throws {
        let steps = SyntheticWorkload(visualTokensPerScreenshot: 2691, screenshotCounts: [1, 2, 3], generatedTokens: 20, budgetPercent: 20).steps(numLayers: 28)
        let config = MemorySimulationConfig(llmAttention: .eager, storedKVHeads: 28)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let first = try encoder.encode(MemorySimulator.run(config: config, steps: steps))
        let second = try encoder.encode(MemorySimulator.run(config: config, steps: steps))
        #expect(first == second)
        let decoded = try JSONDecoder().decode(MemoryTrajectoryReport.self, from: first)
        #expect(decoded.steps.count == 3)
    }

    @Test func decodeGrowsTheCacheByConcatenationAndTheNextStepRetainsIt() throws {
        // L = 1796 (1,196 visual + 2 + 598 text), 3 generated tokens = 2 decode passes.
        let first = MemoryStepInput(promptTokens: 1796, visualTokensPerScreenshot: [1196], textTokens: 598, generatedTokens: 3)
        let second = MemoryStepInput(promptTokens: 1000, visualTokensPerScreenshot: [400], textTokens: 598)
        var sim = try MemorySimulator(config: .init(allocator: .analytic))
        let r0 = try sim.step(first)
        #expect(r0.cacheTokensAfterStep == 1798)
        let r1 = try sim.step(second)
        #expect(r1.peakTerms.kvPreviousBytes == 1798 * 57_344)
        #expect(r1.peakTerms.kvNowBytes == 1000 * 57_344)
        // Decode FLOPs: two passes at contexts 1797 and 1798.
        let expected = FLOPModel.decodePass(m7, contextTokens: 1797) + FLOPModel.decodePass(m7, contextTokens: 1798)
        #expect(r0.flops.decodeFLOPs == expected)
    }

    @Test func keptArrayOfAnotherLayerCountUsesItsMeanForEveryLayer() throws {
        // A tiny-vl trace (4 layers) replayed on the 7B: mean ⌈(100+200+300+401)/4⌉ = 251.
        let input = MemoryStepInput(promptTokens: 2000, visualTokensPerScreenshot: [1196], keptTokensPerLayer: [100, 200, 300, 401])
        #expect(input.resolvedKeptPerLayer(numLayers: 28) == Array(repeating: 251, count: 28))
        var sim = try MemorySimulator(config: .init(allocator: .analytic))
        let r = try sim.step(input)
        #expect(r.keptTokensMean == 251)
        #expect(r.peakTerms.kvNowBytes == 251 * 57_344)
    }

    @Test func perLayerKeptCountsAreUsedAsGiven() throws {
        let kept = (0..<28).map { 100 + 10 * $0 }
        var sim = try MemorySimulator(config: .init(allocator: .analytic))
        let r = try sim.step(MemoryStepInput(promptTokens: 3000, visualTokensPerScreenshot: [1196], keptTokensPerLayer: kept))
        #expect(r.peakTerms.kvNowBytes == kept.reduce(0, +) * 2 * 4 * 128 * 2)
    }

    @Test func persistentLoopPrefillsOnlyNewTokensAndCarriesTheCache() throws {
        let workload = SyntheticWorkload(visualTokensPerScreenshot: 2691, screenshotCounts: [1, 2, 3])
        let config = MemorySimulationConfig(loop: .persistentCache, allocator: .torchCaching)
        let r = try MemorySimulator.run(config: config, steps: workload.steps(numLayers: 28))
        #expect(r.steps.map(\.prefilledTokens) == [3293, 2843, 2843])
        #expect(r.steps.map(\.encodedPatches) == [10_764, 10_764, 10_764])
        #expect(r.steps[2].peakTerms.kvPreviousBytes == 0)
        // Carried cache: all 8,979 context tokens at the end of step 2.
        #expect(r.steps[2].keptTokensMean == 8979)
        let rePrefill = try MemorySimulator.run(config: .init(allocator: .torchCaching), steps: workload.steps(numLayers: 28))
        #expect(r.steps[2].requestedPeakBytes < rePrefill.steps[2].requestedPeakBytes)
        // Prefill FLOPs count attention over the carried keys: nominal pairs q·(c+q).
        let p = FLOPModel.prefill(m7, newTokens: 2843, pastTokens: 6136)
        #expect(r.steps[2].flops.prefillAttentionNominalFLOPs == p.nominal)
    }

    @Test func invalidInputsAreTypedErrorsNamingStepAndField() throws {
        var sim = try MemorySimulator(config: .init(allocator: .analytic))
        #expect(throws: MemorySimulationError.invalidStep(step: 0, field: "promptTokens", reason: "0 must be in 1...4000000")) {
            _ = try sim.step(MemoryStepInput(promptTokens: 0, visualTokensPerScreenshot: []))
        }
        do {
            _ = try sim.step(MemoryStepInput(promptTokens: 100, visualTokensPerScreenshot: [50], keptTokensPerLayer: [101]))
            Issue.record("expected an error")
        } catch {
            #expect(error.description.contains("keptTokensPerLayer[0]"))
            #expect(error.description.contains("step 0"))
        }
        #expect(throws: MemorySimulationError.self) {
            _ = try MemorySimulator(config: .init(storedKVHeads: 0))
        }
        #expect(throws: AcceleratorError.self) { _ = try Accelerator.named("tpu-v5") }
    }

    @Test func acceleratorPresetsAndCustomCapacity() throws {
        let h100 = try Accelerator.named("h100-80gb")
        #expect(abs(ByteUnits.gibibytes(h100.torchVisibleBytes) - 79.22) < 1e-6)
        #expect(h100.bf16DenseFLOPsPerSecond == 989e12)
        #expect(try Accelerator.named("a100-pcie").memoryBandwidthBytesPerSecond == 1.935e12)
        #expect(try Accelerator.named("custom:48GiB").torchVisibleBytes == 48 << 30)
        #expect(try Accelerator.named("custom:40GB").torchVisibleBytes == 40_000_000_000)
        #expect(ByteUnits.describe(23_100_000_000) == "23.10 GB (21.51 GiB)")
    }

    @Test func smallCardReportsTheFirstOOMStepAndLocation() throws {
        let config = MemorySimulationConfig(accelerator: .custom(torchVisibleBytes: 20 << 30))
        let workload = SyntheticWorkload(visualTokensPerScreenshot: 2691, screenshotCounts: [1, 2, 3, 4, 5])
        let r = try MemorySimulator.run(config: config, steps: workload.steps(numLayers: 28))
        let oom = try #require(r.firstOOM)
        // 19.5 GiB allocator capacity: step 2 (20.5 GB = 19.1 GiB live) fits only without slack;
        // the first OOM is no later than step 3 (21.8 GB = 20.3 GiB live).
        #expect(oom.step >= 2 && oom.step <= 3)
        #expect(r.steps[0].outOfMemory == false)
    }
}

@Suite struct PagedPoolTests {
    @Test func blockBytesAndPoolSizeOnAnH100() {
        let pool = PagedKVPool(config: .init(allocator: .vllmPaged))
        #expect(pool.blockBytes == 917_504)  // 16 × 57,344 B = 896 KiB
        #expect(pool.totalBlocks * pool.blockBytes <= pool.poolBytes)
        #expect((pool.totalBlocks + 1) * pool.blockBytes > pool.poolBytes)
        // docs/memory-model.md §5.4 estimate: ~61k blocks ≈ 0.98 M tokens.
        #expect(abs(Double(pool.totalBlocks) - 61_000) < 0.05 * 61_000)
    }

    @Test func evictionFreesOnlyEmptyBlocksUnlessCompacted() {
        let pool = PagedKVPool(config: .init(allocator: .vllmPaged))
        // 1,600 tokens = 100 blocks; keep 320 (20 %), 8 of them the window.
        let spread = PagedKVPool.evenlySpreadPositions(sequenceLength: 1600, kept: 320, window: 8)
        #expect(spread.count == 320)
        #expect(pool.blocksOccupied(positions: spread, sequenceLength: 1600, appended: 0) == 100)
        #expect(pool.blocksOccupied(positions: Array(0..<320), sequenceLength: 1600, appended: 0) == 20)
        #expect(pool.blocksNeeded(tokens: 320) == 20)
        // Appended tokens first fill the last block's slack: 1,601 tokens leave 15 free slots.
        #expect(pool.blocksOccupied(positions: [1600], sequenceLength: 1601, appended: 15) == 1)
        #expect(pool.blocksOccupied(positions: [1600], sequenceLength: 1601, appended: 16) == 2)
    }

    @Test func simulatorReportsBlockOccupancyPerStep() throws {
        var config = MemorySimulationConfig(logits: .lastToken, allocator: .vllmPaged)
        config.pagedOptions.compactAfterEviction = true
        let workload = SyntheticWorkload(visualTokensPerScreenshot: 2691, screenshotCounts: [5], budgetPercent: 20)
        var input = workload.steps(numLayers: 28)[0]
        input.keptPositions = Array(0..<2925) + Array(14657..<14665)
        var sim = try MemorySimulator(config: config)
        let r = try sim.step(input)
        let paged = try #require(r.paged)
        #expect(paged.blocksWithoutEviction == 917)  // ⌈14,665 / 16⌉
        #expect(paged.blocksCompacted == 184)  // ⌈2,933 / 16⌉
        #expect(paged.blocksEvictEmptyOnly == 183 + 1)  // 2,925 prefix tokens → 183 blocks, window → 1
        #expect(paged.blocksUsed == paged.blocksCompacted)
        #expect(paged.fits)
        #expect(r.reservedPeakBytes == sim.pagedPool!.budgetBytes)
    }
}
