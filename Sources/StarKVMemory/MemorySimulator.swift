import StarKVModel

/// Where a trajectory first ran out of memory.
public struct OutOfMemoryEvent: Sendable, Hashable, Codable {
    /// Step index (0-based).
    public var step: Int
    /// "prefill layer 27", "vision block 7", "lm_head", …
    public var location: String
    /// The caching allocator's view, when it was the one that failed.
    public var allocator: OutOfMemoryInfo?
}

/// Memory, FLOPs and time of one agent step.
///
/// Implements issue 4's per-step report: bytes by term at the live-set peak (docs/memory-model.md §3),
/// the allocator's allocated / reserved / inactive-split current and peak (§5.1), the paged pool's
/// block occupancy (§5.4), FLOPs by phase (§6) and the roofline time (§6.3).
public struct StepMemoryReport: Sendable, Hashable, Codable {
    public var step: Int
    public var promptTokens: Int
    /// Tokens run through the prefill (L, or the new tokens in the persistent loop).
    public var prefilledTokens: Int
    /// Screenshots in the prompt and ViT patches encoded this step.
    public var screenshots: Int
    public var encodedPatches: Int
    /// Mean kept tokens per layer after the prefill (before decode growth).
    public var keptTokensMean: Double
    public var generatedTokens: Int
    /// Mean cache tokens per layer at the end of the step.
    public var cacheTokensAfterStep: Double

    /// Live-set peak of requested bytes (no allocator rounding) — the formula view.
    public var requestedPeakBytes: Int
    /// Where that peak happened.
    public var peakLocation: String
    /// The phase of that peak ("prefill", "lm_head", …; "step start" when nothing this step
    /// rose above the bytes carried in).
    public var peakPhase: String = ""
    /// The largest tensors live at that peak, largest first (at most `LiveTensor.reportedCount`).
    public var peakTensors: [LiveTensor] = []
    /// Bytes by term at that peak (allocatorSlackBytes = reserved peak − allocated peak).
    public var peakTerms: MemoryTerms
    /// Peak per phase (vision, prefill, lm_head, decode, …).
    public var phasePeaks: [PhasePeak]

    /// `memory_allocated()` at the end of the step and `max_memory_allocated()` during it.
    public var allocatedBytes: Int
    public var allocatedPeakBytes: Int
    /// `memory_reserved()` at the end and `max_memory_reserved()` during the step.
    public var reservedBytes: Int
    public var reservedPeakBytes: Int
    /// `inactive_split_bytes` at the end and its peak during the step.
    public var inactiveSplitBytes: Int
    public var inactiveSplitPeakBytes: Int
    /// `num_alloc_retries` during this step.
    public var allocRetries: Int
    /// Allocation events replayed this step.
    public var events: Int

    /// The step would raise CUDA OOM (first failing location in `oom`).
    public var outOfMemory: Bool
    public var oom: OutOfMemoryEvent?
    public var paged: PagedStepReport?

    public var flops: FLOPCounts
    public var roofline: RooflineEstimate
}

/// Steps of a simulated trajectory and its summary.
public struct MemoryTrajectoryReport: Sendable, Hashable, Codable {
    public var config: MemorySimulationConfig
    /// Bytes allocated after loading the weights.
    public var loadedBytes: Int
    public var steps: [StepMemoryReport]
    public var firstOOM: OutOfMemoryEvent?
    /// Max over steps.
    public var peakRequestedBytes: Int
    public var peakAllocatedBytes: Int
    public var peakReservedBytes: Int
    public var totalNominalFLOPs: Int
    public var totalCausalFLOPs: Int
    public var totalRooflineSeconds: Double
}

/// The GPU memory and FLOP simulator: consumes agent steps in order and reports each one.
///
/// State carried across steps (the allocator, live tensors, the previous or carried cache) is
/// this value; `step(_:)` is the only mutation. Implements docs/memory-model.md §3–§6 for issue 4.
public struct MemorySimulator: Sendable {
    public let config: MemorySimulationConfig
    public private(set) var stepIndex = 0
    public private(set) var firstOOM: OutOfMemoryEvent?
    /// Bytes allocated after loading the weights.
    public private(set) var loadedBytes = 0
    public private(set) var allocator: CachingAllocator?
    public let pagedPool: PagedKVPool?
    var handles: [Int: BlockHandle] = [:]
    var script = ScriptState()
    var tracker = LiveSetTracker()
    var previousPromptTokens = 0
    /// Live tensors by script id: bytes, category and where they were allocated (compact; the
    /// words are made only for the few tensors a report lists).
    var live: [Int: LiveEntry] = [:]
    struct LiveEntry: Sendable {
        var bytes: Int
        var category: MemoryCategory
        var phase: MemoryPhase
        var index: Int32
        var step: Int32

        init(_ e: AllocationEvent, step: Int) {
            bytes = e.bytes
            category = e.category
            phase = e.phase
            index = e.index
            self.step = Int32(step)
        }

        var tensor: LiveTensor {
            let event = AllocationEvent(kind: .alloc, tensor: 0, bytes: bytes, category: category, phase: phase, index: index)
            return LiveTensor(bytes: bytes, category: category.label, allocatedAt: MemorySimulator.where(Int(step), event))
        }
    }
    /// The analytic allocator's comparisons of the live bytes with the capacity.
    var analyticEnvelope = CapacityEnvelope()

    /// The run's comparisons with the capacity so far, where they are all the accelerator's
    /// capacity changes (the caching allocator without expandable segments, whose virtual size
    /// follows the device; the analytic one); nil for the paged pool.
    public var capacityEnvelope: CapacityEnvelope? {
        switch config.allocator {
        case .torchCaching: return config.cachingOptions.expandableSegments ? nil : allocator?.capacityEnvelope
        case .analytic: return analyticEnvelope
        case .vllmPaged: return nil
        }
    }

    /// Program locations of recorded allocator events (only when recording history).
    public private(set) var frames: [AllocatorFrame] = []
    var frameIDs: [FrameKey: Int32] = [:]
    struct FrameKey: Hashable { var step: Int; var phase: MemoryPhase; var index: Int32; var category: MemoryCategory }
    /// Trajectory-wide allocated peak seen so far and the history index that reached it.
    public private(set) var historyPeakAllocatedBytes = 0
    public private(set) var historyPeakEvent = -1
    /// When set, the allocator's segments are captured right after this history event.
    var captureAtEvent: Int?
    public private(set) var capturedSegments: [SegmentSnapshot]?
    public private(set) var capturedLocation = ""
    public private(set) var capturedStep = -1

    /// `recordHistory` keeps the caching allocator's event history (for `MemorySnapshot`);
    /// the figures are the same either way.
    public init(config: MemorySimulationConfig, recordHistory: Bool = false, captureAtEvent: Int? = nil) throws(MemorySimulationError) {
        try config.validate()
        self.config = config
        pagedPool = config.allocator == .vllmPaged ? PagedKVPool(config: config) : nil
        if config.allocator == .torchCaching {
            allocator = CachingAllocator(
                capacityBytes: config.accelerator.allocatorCapacityBytes,
                deviceTotalBytes: config.accelerator.torchVisibleBytes, options: config.cachingOptions)
            if recordHistory { allocator!.history = [] }
        }
        self.captureAtEvent = captureAtEvent
        let events = StepScriptBuilder.weightsScript(config: config, state: &script)
        var oom: OutOfMemoryEvent?
        replay(events, step: -1, oom: &oom)
        if let oom { firstOOM = oom }
        loadedBytes = allocator?.stats.allocatedBytes.current ?? tracker.totalBytes
    }

    /// Simulates one agent step.
    public mutating func step(_ input: MemoryStepInput) throws(MemorySimulationError) -> StepMemoryReport {
        try input.validate(step: stepIndex, model: config.model)
        let m = config.model
        let shape = StepScriptBuilder.shape(config: config, input: input, state: script, isFirstStep: stepIndex == 0)
        let events = StepScriptBuilder.stepScript(config: config, input: input, shape: shape, state: &script)

        tracker.resetPeak()
        let liveAtStart = live
        allocator?.resetPeakStats()
        let retriesBefore = allocator?.stats.numAllocRetries ?? 0
        var oom: OutOfMemoryEvent?
        replay(events, step: stepIndex, oom: &oom)
        if config.emptyCacheBetweenSteps { allocator?.emptyCache() }

        var terms = MemoryTerms(categoryBytes: tracker.peakCategories)
        let stats = allocator?.stats

        // Paged pool occupancy.
        var paged: PagedStepReport?
        var pagedAllocatedPeak: Int?
        if let pool = pagedPool {
            let context = shape.contextPerLayerAfterPrefill.max() ?? 0
            let keptMax = shape.keptPerLayer.max() ?? 0
            let appended = shape.decodePasses
            let positions = input.keptPositions.map { p in config.loop == .persistentCache ? p.filter { $0 < context } : p }
                ?? PagedKVPool.evenlySpreadPositions(sequenceLength: context, kept: keptMax, window: config.compressionWindow)
            let full = pool.blocksNeeded(tokens: context + appended)
            let evictEmpty = input.keptTokensPerLayer == nil ? full
                : pool.blocksOccupied(positions: positions, sequenceLength: context, appended: appended)
            let compacted = pool.blocksNeeded(tokens: keptMax + appended)
            let used = config.pagedOptions.compactAfterEviction ? compacted : evictEmpty
            paged = PagedStepReport(
                blockBytes: pool.blockBytes, totalBlocks: pool.totalBlocks, poolBytes: pool.poolBytes,
                tokensWithoutEviction: context + appended, tokensKept: keptMax + appended,
                blocksWithoutEviction: full, blocksEvictEmptyOnly: evictEmpty, blocksCompacted: compacted,
                blocksUsed: used,
                occupancyFraction: used > 0 ? Double(keptMax + appended) / Double(used * pool.blockTokens) : 0,
                fits: used <= pool.totalBlocks)
            // vLLM keeps no previous-step cache; KV lives in blocks, activations outside them.
            let activationsAtPeak = tracker.peakBytes - terms.kvNowBytes - terms.kvPreviousBytes
            pagedAllocatedPeak = activationsAtPeak + used * pool.blockBytes
            if used > pool.totalBlocks && oom == nil {
                oom = OutOfMemoryEvent(step: stepIndex, location: "paged KV pool (\(used) of \(pool.totalBlocks) blocks)", allocator: nil)
            } else if activationsAtPeak - pool.weightsBytes > pool.activationProfileBytes
                        && activationsAtPeak + pool.totalBlocks * pool.blockBytes > pool.budgetBytes && oom == nil {
                oom = OutOfMemoryEvent(step: stepIndex, location: "\(tracker.peakLocation): activations exceed the profiled budget", allocator: nil)
            }
        }
        if oom != nil && firstOOM == nil { firstOOM = oom }
        let allocatedPeak = stats?.allocatedBytes.peak ?? pagedAllocatedPeak ?? tracker.peakBytes
        let reservedPeak = stats?.reservedBytes.peak ?? pagedPool?.budgetBytes ?? tracker.peakBytes
        terms.allocatorSlackBytes = max(0, reservedPeak - allocatedPeak)

        // FLOPs.
        var flops = FLOPCounts()
        flops.visionFLOPs = shape.encodedPatches.reduce(0) { $0 + FLOPModel.vision(m, patches: $1) }
        let prefill = FLOPModel.prefill(m, newTokens: shape.prefilledTokens, pastTokens: shape.pastTokens)
        flops.prefillLinearFLOPs = prefill.linear
        flops.prefillAttentionNominalFLOPs = prefill.nominal
        flops.prefillAttentionCausalFLOPs = prefill.causal
        flops.prefillLMHeadFLOPs = FLOPModel.lmHeadFLOPsPerRow(m) * shape.logitRows
        let passes = shape.decodePasses
        var decodeAttentionPairs = 0
        for k in shape.keptPerLayer { decodeAttentionPairs += passes * k + passes * (passes + 1) / 2 }
        flops.decodeFLOPs = passes * (m.numLayers * FLOPModel.linearFLOPsPerTokenPerLayer(m) + FLOPModel.lmHeadFLOPsPerRow(m))
            + FLOPModel.attentionFLOPsPerPairPerLayer(m) * decodeAttentionPairs
        flops.scoringFLOPs = input.scoringFLOPs

        let roofline = rooflineEstimate(flops: flops, shape: shape, decodeAttentionPairs: decodeAttentionPairs)

        let keptMean = Double(shape.keptPerLayer.reduce(0, +)) / Double(max(1, m.numLayers))
        let report = StepMemoryReport(
            step: stepIndex, promptTokens: input.promptTokens, prefilledTokens: shape.prefilledTokens,
            screenshots: input.visualTokensPerScreenshot.count, encodedPatches: shape.encodedPatches.reduce(0, +),
            keptTokensMean: keptMean, generatedTokens: input.generatedTokens,
            cacheTokensAfterStep: keptMean + Double(passes),
            requestedPeakBytes: tracker.peakBytes, peakLocation: tracker.peakLocation,
            peakPhase: tracker.peakEventIndex < 0 ? "step start" : tracker.peakPhase.label,
            peakTensors: Self.largestTensors(start: liveAtStart, events: events, through: tracker.peakEventIndex, step: stepIndex),
            peakTerms: terms,
            phasePeaks: tracker.orderedPhasePeaks,
            allocatedBytes: stats?.allocatedBytes.current ?? tracker.totalBytes, allocatedPeakBytes: allocatedPeak,
            reservedBytes: stats?.reservedBytes.current ?? pagedPool?.budgetBytes ?? tracker.totalBytes, reservedPeakBytes: reservedPeak,
            inactiveSplitBytes: stats?.inactiveSplitBytes.current ?? 0,
            inactiveSplitPeakBytes: stats?.inactiveSplitBytes.peak ?? 0,
            allocRetries: (stats?.numAllocRetries ?? 0) - retriesBefore, events: events.count,
            outOfMemory: oom != nil, oom: oom, paged: paged, flops: flops, roofline: roofline)
        stepIndex += 1
        previousPromptTokens = input.promptTokens
        return report
    }

    /// Runs every step and summarises.
    public static func run(config: MemorySimulationConfig, steps: [MemoryStepInput]) throws(MemorySimulationError) -> MemoryTrajectoryReport {
        var sim = try MemorySimulator(config: config)
        var reports: [StepMemoryReport] = []
        reports.reserveCapacity(steps.count)
        for s in steps { reports.append(try sim.step(s)) }
        return MemoryTrajectoryReport(
            config: config, loadedBytes: sim.loadedBytes, steps: reports, firstOOM: sim.firstOOM,
            peakRequestedBytes: reports.map(\.requestedPeakBytes).max() ?? sim.loadedBytes,
            peakAllocatedBytes: reports.map(\.allocatedPeakBytes).max() ?? sim.loadedBytes,
            peakReservedBytes: reports.map(\.reservedPeakBytes).max() ?? sim.loadedBytes,
            totalNominalFLOPs: reports.reduce(0) { $0 + $1.flops.nominalTotalFLOPs },
            totalCausalFLOPs: reports.reduce(0) { $0 + $1.flops.causalTotalFLOPs },
            totalRooflineSeconds: reports.reduce(0) { $0 + $1.roofline.totalSeconds })
    }

    /// Feeds events to the live-set tracker and (when configured) the caching allocator. An
    /// allocation the allocator cannot satisfy is recorded as OOM and then forced, so the rest of
    /// the step is still measured.
    mutating func replay(_ events: [AllocationEvent], step: Int, oom: inout OutOfMemoryEvent?) {
        let capacity = config.accelerator.allocatorCapacityBytes
        let recording = allocator?.history != nil
        for (i, e) in events.enumerated() {
            tracker.apply(e, at: i)
            if recording { allocator!.currentFrame = frameID(step: step, e) }
            switch e.kind {
            case .alloc:
                live[e.tensor] = LiveEntry(e, step: step)
                if allocator != nil {
                    switch allocator!.malloc(e.bytes) {
                    case .allocated(let h):
                        handles[e.tensor] = h
                    case .outOfMemory(let info):
                        if oom == nil { oom = OutOfMemoryEvent(step: step, location: e.location, allocator: info) }
                        handles[e.tensor] = allocator!.mallocIgnoringCapacity(e.bytes)
                    }
                    if recording { noteHistory(step: step, e) }
                } else if config.allocator == .analytic {
                    if !analyticEnvelope.check(tracker.totalBytes, capacity: capacity), oom == nil {
                        oom = OutOfMemoryEvent(step: step, location: e.location, allocator: nil)
                    }
                }
            case .free:
                live.removeValue(forKey: e.tensor)
                if allocator != nil, let h = handles.removeValue(forKey: e.tensor) { allocator!.free(h) }
            case .retag:
                live[e.tensor]?.category = e.category
            }
        }
    }

    /// "step 3, prefill layer 27" (or "load, …" for the weights).
    static func `where`(_ step: Int, _ e: AllocationEvent) -> String {
        (step < 0 ? "load" : "step \(step)") + ", " + e.location
    }

    /// Interns the program location of `e` as an allocator frame.
    mutating func frameID(step: Int, _ e: AllocationEvent) -> Int32 {
        let key = FrameKey(step: step, phase: e.phase, index: e.index, category: e.category)
        if let id = frameIDs[key] { return id }
        let id = Int32(frames.count)
        frames.append(AllocatorFrame(step: step, phase: e.phase.label, location: e.location, category: e.category.key))
        frameIDs[key] = id
        return id
    }

    /// Tracks the trajectory's allocated peak in the history and captures the segments when asked.
    mutating func noteHistory(step: Int, _ e: AllocationEvent) {
        guard let a = allocator, let count = a.history?.count else { return }
        if a.stats.allocatedBytes.current > historyPeakAllocatedBytes {
            historyPeakAllocatedBytes = a.stats.allocatedBytes.current
            historyPeakEvent = count - 1
        }
        if let at = captureAtEvent, capturedSegments == nil, count - 1 >= at {
            capturedSegments = a.snapshot()
            capturedLocation = e.location
            capturedStep = step
        }
    }

    /// The largest tensors live after `events[0...through]`, starting from `start`.
    static func largestTensors(start: [Int: LiveEntry], events: [AllocationEvent], through: Int, step: Int) -> [LiveTensor] {
        var m = start
        if through >= 0 {
            for e in events[0...through] {
                switch e.kind {
                case .alloc: m[e.tensor] = LiveEntry(e, step: step)
                case .free: m.removeValue(forKey: e.tensor)
                case .retag: m[e.tensor]?.category = e.category
                }
            }
        }
        // The largest by bytes; equal sizes in a deterministic order (words, then script id).
        let n = LiveTensor.reportedCount
        var top = m.sorted { $0.value.bytes != $1.value.bytes ? $0.value.bytes > $1.value.bytes : $0.key < $1.key }.prefix(4 * n).map { ($0.key, $0.value.tensor) }
        top.sort { a, b in
            a.1.bytes != b.1.bytes ? a.1.bytes > b.1.bytes : (a.1.category, a.1.allocatedAt, a.0) < (b.1.category, b.1.allocatedAt, b.0)
        }
        return Array(top.prefix(n).map(\.1))
    }

    /// Runs the trajectory twice with the allocator history on: once to find the history event
    /// of the trajectory's allocated peak, once to capture the segments right after it. The
    /// figures are those of `run(config:steps:)`.
    public static func snapshot(config: MemorySimulationConfig, steps: [MemoryStepInput]) throws(MemorySimulationError) -> MemorySnapshot? {
        guard config.allocator == .torchCaching else { return nil }
        var first = try MemorySimulator(config: config, recordHistory: true)
        for s in steps { _ = try first.step(s) }
        var second = try MemorySimulator(config: config, recordHistory: true, captureAtEvent: max(0, first.historyPeakEvent))
        var reports: [StepMemoryReport] = []
        for s in steps { reports.append(try second.step(s)) }
        guard let a = second.allocator, let history = a.history else { return nil }
        return MemorySnapshot(
            segments: second.capturedSegments ?? a.snapshot(), events: history, frames: second.frames,
            capturedAtEvent: second.capturedSegments == nil ? history.count - 1 : first.historyPeakEvent,
            capturedAtStep: second.capturedStep, capturedAtLocation: second.capturedLocation,
            peakAllocatedBytes: reports.map(\.allocatedPeakBytes).max() ?? second.loadedBytes,
            peakReservedBytes: reports.map(\.reservedPeakBytes).max() ?? second.loadedBytes,
            peakRequestedBytes: reports.map(\.requestedPeakBytes).max() ?? second.loadedBytes,
            options: config.cachingOptions)
    }

    func rooflineEstimate(flops: FLOPCounts, shape: StepShape, decodeAttentionPairs: Int) -> RooflineEstimate {
        let m = config.model
        let acc = config.accelerator
        let peak = acc.bf16DenseFLOPsPerSecond * config.rooflineEfficiency.computeFraction
        let bandwidth = acc.memoryBandwidthBytesPerSecond * config.rooflineEfficiency.bandwidthFraction
        let wb = config.weightDtype.bytesPerParameter
        let llmWeightBytes = Double(m.languageModelParameters * wb)
        let kvPerTokenPerLayer = Double(2 * config.storedKVHeads * m.headDim * 2)
        func time(_ f: Int, _ bytes: Double) -> Double { max(Double(f) / peak, bytes / bandwidth) }
        var r = RooflineEstimate()
        r.visionSeconds = flops.visionFLOPs > 0 ? time(flops.visionFLOPs, Double(m.visionParameters * wb)) : 0
        let keptTotal = Double(shape.keptPerLayer.reduce(0, +))
        let prefillBytes = llmWeightBytes + keptTotal * kvPerTokenPerLayer + Double(shape.logitRows * m.vocabSize * 2)
        r.prefillSeconds = time(flops.prefillNominalFLOPs, prefillBytes)
        r.prefillCausalSeconds = time(flops.prefillCausalFLOPs, prefillBytes)
        let passes = shape.decodePasses
        if passes > 0 {
            // Memory traffic: weights + the whole cache + one logits row per pass.
            let bytes = Double(passes) * (llmWeightBytes + Double(m.vocabSize * 2)) + Double(decodeAttentionPairs) * kvPerTokenPerLayer
            let computeSeconds = Double(flops.decodeFLOPs) / peak
            r.decodeSeconds = max(computeSeconds, bytes / bandwidth)
            r.decodeSecondsPerToken = r.decodeSeconds / Double(passes)
        }
        r.scoringSeconds = Self.scoringSeconds(flops.scoringFLOPs, config: config)
        return r
    }

    /// Roofline time of the policy's scoring stage: compute-bound at the derated peak.
    public static func scoringSeconds(_ flops: Int, config: MemorySimulationConfig) -> Double {
        Double(flops) / (config.accelerator.bf16DenseFLOPsPerSecond * config.rooflineEfficiency.computeFraction)
    }

    /// `report` as if the step's input had carried `scoringFLOPs`: the scoring FLOPs and the
    /// scoring time are the only figures of a step that depend on them (memory does not), so
    /// steps that differ only there are simulated once.
    public static func replacingScoring(_ report: StepMemoryReport, scoringFLOPs: Int, config: MemorySimulationConfig) -> StepMemoryReport {
        var r = report
        r.flops.scoringFLOPs = scoringFLOPs
        r.roofline.scoringSeconds = scoringSeconds(scoringFLOPs, config: config)
        return r
    }
}
