import StarKVModel

/// A fixed allocation-event workload for measuring allocator throughput: the caching-allocator
/// events of a 7B agent trajectory (1920×1080, 1…5 screenshots, eager attention, 64 generated
/// tokens per step). The caller times `replay` (library code never reads the clock).
///
/// Supports the issue 4 benchmark ("allocator events replayed per second", benchmarks/allocator).
public struct AllocatorBenchmark: Sendable {
    /// Events per step, weights first.
    public let events: [AllocationEvent]
    public let config: MemorySimulationConfig

    public init(expandableSegments: Bool = false) {
        var config = MemorySimulationConfig(llmAttention: .eager)
        config.cachingOptions.expandableSegments = expandableSegments
        config.accelerator = .custom(torchVisibleBytes: 1 << 40)
        self.config = config
        var state = ScriptState()
        var all = StepScriptBuilder.weightsScript(config: config, state: &state)
        let workload = SyntheticWorkload(visualTokensPerScreenshot: 2691, screenshotCounts: [1, 2, 3, 4, 5], generatedTokens: 64)
        for (i, input) in workload.steps(numLayers: config.model.numLayers).enumerated() {
            let shape = StepScriptBuilder.shape(config: config, input: input, state: state, isFirstStep: i == 0)
            all += StepScriptBuilder.stepScript(config: config, input: input, shape: shape, state: &state)
        }
        events = all
    }

    /// Replays every event through a fresh allocator; returns a checksum (peak reserved bytes)
    /// so the work cannot be optimised away.
    public func replay() -> Int {
        var allocator = CachingAllocator(capacityBytes: config.accelerator.allocatorCapacityBytes, options: config.cachingOptions)
        var handles = [Int: BlockHandle]()
        handles.reserveCapacity(4096)
        for e in events {
            switch e.kind {
            case .alloc: handles[e.tensor] = allocator.malloc(e.bytes).handle
            case .free: if let h = handles.removeValue(forKey: e.tensor) { allocator.free(h) }
            case .retag: break
            }
        }
        return allocator.stats.reservedBytes.peak
    }
}
