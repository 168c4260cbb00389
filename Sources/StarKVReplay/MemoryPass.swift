import StarKVMemory
import StarKVModel
import StarKVPolicies

/// Drives the memory/FLOP simulator (StarKVMemory, docs/memory-model.md) with each pair's replayed
/// steps and turns its reports into `ReplayResults.RunResult`s. Pairs are independent and run
/// in parallel into fixed slots.
enum MemoryPass {
    static func simulate(pairs: [PairReplay], config: MemorySimulationConfig, threads: Int) throws -> [ReplayResults.RunResult] {
        try simulateWithEnvelopes(pairs: pairs, config: config, threads: threads).runs
    }

    /// `simulate`, with each pair's comparisons with the capacity (`CapacityEnvelope`; nil where
    /// the capacity enters otherwise), so that verdicts on other GPUs can reuse the runs that
    /// take the same path there.
    static func simulateWithEnvelopes(
        pairs: [PairReplay], config: MemorySimulationConfig, threads: Int
    ) throws -> (runs: [ReplayResults.RunResult], envelopes: [CapacityEnvelope?]) {
        // Pairs whose memory inputs are equal apart from the scoring FLOPs (e.g. every uniform
        // policy at one percentage budget) are simulated once; the scoring figures are set per
        // pair afterwards. The simulator is deterministic, so the results are the same.
        var unique: [[MemoryStepInput]] = []
        var slotOf: [[MemoryStepInput]: Int] = [:]
        var slots: [Int] = []
        for pair in pairs {
            let key = pair.steps.map { s -> MemoryStepInput in
                var i = input(s)
                i.scoringFLOPs = 0
                return i
            }
            if let k = slotOf[key] {
                slots.append(k)
            } else {
                slotOf[key] = unique.count
                slots.append(unique.count)
                unique.append(key)
            }
        }
        let simulated = DeterministicParallel.map(count: unique.count, workers: threads) { i in
            Result { () throws(MemorySimulationError) -> (reports: [StepMemoryReport], envelope: CapacityEnvelope?) in
                var sim = try MemorySimulator(config: config)
                var reports: [StepMemoryReport] = []
                for s in unique[i] { reports.append(try sim.step(s)) }
                return (reports, sim.capacityEnvelope)
            }
        }
        let runs = try pairs.enumerated().map { i, pair in
            do {
                let reports = try simulated[slots[i]].get().reports.enumerated().map { j, r in
                    MemorySimulator.replacingScoring(r, scoringFLOPs: input(pair.steps[j]).scoringFLOPs, config: config)
                }
                return run(pair, reports: reports, config: config)
            } catch {
                throw ReplayError.invalidRequest("\(pair.policy.label) @ \(pair.budget): \(error)")
            }
        }
        return (runs, slots.map { (try? simulated[$0].get())?.envelope ?? nil })
    }

    /// The memory input of one replayed step.
    static func input(_ s: ReplayedStep) -> MemoryStepInput {
        let kept = s.keptTokensPerLayer.map { Int($0.rounded(.up)) }
        let full = kept.allSatisfy { $0 >= s.promptLength }
        return MemoryStepInput(
            promptTokens: s.promptLength, visualTokensPerScreenshot: s.visualTokensPerImage.filter { $0 > 0 },
            textTokens: s.textTokens, generatedTokens: s.generatedTokens, keptTokensPerLayer: full ? nil : kept,
            scoringFLOPs: Int(s.scoringFLOPs.rounded()))
    }

    static func run(_ pair: PairReplay, reports: [StepMemoryReport], config: MemorySimulationConfig) -> ReplayResults.RunResult {
        let kvPerToken = Double(config.model.kvBytesPerToken(storedHeads: config.storedKVHeads))
        var steps: [ReplayResults.StepResult] = []
        for (s, r) in zip(pair.steps, reports) {
            let t = r.peakTerms
            let f = r.flops
            steps.append(
                ReplayResults.StepResult(
                    step: s.step, episode: s.episode, promptLength: s.promptLength, images: s.visualTokensPerImage.count,
                    keptTokensMean: mean(s.keptTokensPerLayer), keptFraction: mean(s.keptTokensPerLayer) / Double(max(1, s.promptLength)),
                    kvBytes: r.cacheTokensAfterStep * kvPerToken,
                    terms: ReplayResults.MemoryTerms(
                        weights: Double(t.weightsBytes), kvNow: Double(t.kvNowBytes), kvPrevious: Double(t.kvPreviousBytes),
                        logits: Double(t.logitsBytes), inputs: Double(t.inputsBytes + t.attentionMaskBytes),
                        transients: Double(
                            t.activationBytes + t.mlpTransientBytes + t.attentionTransientBytes + t.vitTransientBytes
                                + t.compressionScratchBytes + t.decodeTransientBytes),
                        allocatorSlack: Double(t.allocatorSlackBytes)),
                    allocatedPeakBytes: Double(r.allocatedPeakBytes), reservedPeakBytes: Double(r.reservedPeakBytes),
                    inactiveSplitBytes: Double(r.inactiveSplitPeakBytes), oom: r.outOfMemory, oomPhase: r.oom?.location,
                    flops: ReplayResults.FLOPs(
                        vision: Double(f.visionFLOPs),
                        prefillNominal: Double(f.prefillLinearFLOPs + f.prefillAttentionNominalFLOPs + f.prefillLMHeadFLOPs),
                        prefillCausal: Double(f.prefillLinearFLOPs + f.prefillAttentionCausalFLOPs + f.prefillLMHeadFLOPs),
                        decode: Double(f.decodeFLOPs), scoring: Double(f.scoringFLOPs)),
                    rooflineSeconds: r.roofline.visionSeconds + r.roofline.prefillSeconds + r.roofline.decodeSeconds
                        + r.roofline.scoringSeconds,
                    decodeMassRetained: s.decodeMassRetained, cachedWindowMass: s.cachedWindowMass,
                    imageShareBefore: s.imageShareBefore, imageShareAfter: s.imageShareAfter,
                    breakdown: breakdown(t), requestedPeakBytes: Double(r.requestedPeakBytes),
                    peakPhase: r.peakPhase, peakLocation: r.peakLocation,
                    peakTensors: r.peakTensors.map(ReplayResults.PeakTensor.init)))
        }
        let quality = pair.steps.compactMap(\.decodeMassRetained)
        let cached = pair.steps.compactMap(\.cachedWindowMass)
        let scoring = steps.reduce(0) { $0 + $1.flops.scoring }
        let prefill = steps.reduce(0) { $0 + $1.flops.prefillNominal }
        let summary = ReplayResults.RunSummary(
            peakAllocatedBytes: steps.map(\.allocatedPeakBytes).max() ?? 0,
            peakReservedBytes: steps.map(\.reservedPeakBytes).max() ?? 0,
            firstOOMStep: steps.first(where: \.oom)?.step, meanKeptFraction: mean(steps.map(\.keptFraction)),
            meanDecodeMassRetained: quality.isEmpty ? nil : mean(quality), meanCachedWindowMass: cached.isEmpty ? nil : mean(cached),
            totalScoringFLOPs: scoring, totalFLOPs: steps.reduce(0) { $0 + $1.flops.totalNominal },
            scoringOverhead: prefill > 0 ? scoring / prefill : 0)
        var budgetPercent: Double? = nil
        if case .percent(let b) = pair.budget { budgetPercent = b }
        return ReplayResults.RunResult(
            policy: pair.policy.label, policyName: pair.policy.name, budget: pair.budget.description, budgetPercent: budgetPercent,
            keptDigest: pair.keptDigest, steps: steps, summary: summary)
    }

    /// The report's terms from the simulator's categories (docs/report.md §2).
    static func breakdown(_ t: MemoryTerms) -> ReplayResults.MemoryBreakdown { ReplayResults.MemoryBreakdown(terms: t) }

    /// The memory inputs of a replayed pair (for `MemorySimulator.snapshot`).
    static func inputs(_ pair: PairReplay) -> [MemoryStepInput] { pair.steps.map(input) }

    static func mean(_ xs: [Double]) -> Double { xs.isEmpty ? 0 : xs.reduce(0, +) / Double(xs.count) }
}

extension ReplayResults.MemoryBreakdown {
    /// The report's terms from the simulator's categories at a step's peak (docs/report.md §2):
    /// MLP = SwiGLU intermediates + layer activations; attention workspace = score/softmax/
    /// repeat_kv copies + the eager mask; other = inputs, compression scratch, decode transients.
    public init(terms t: MemoryTerms) {
        self.init(
            weights: Double(t.weightsBytes), kvNow: Double(t.kvNowBytes), kvPrevious: Double(t.kvPreviousBytes),
            logits: Double(t.logitsBytes), mlpActivations: Double(t.mlpTransientBytes + t.activationBytes),
            attentionWorkspace: Double(t.attentionTransientBytes + t.attentionMaskBytes), vit: Double(t.vitTransientBytes),
            other: Double(t.inputsBytes + t.compressionScratchBytes + t.decodeTransientBytes),
            reservedUnallocated: Double(t.allocatorSlackBytes))
    }
}

extension ReplayResults.PeakTensor {
    public init(_ t: LiveTensor) { self.init(bytes: Double(t.bytes), category: t.category, allocatedAt: t.allocatedAt) }
}
