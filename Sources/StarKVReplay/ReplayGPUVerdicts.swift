import StarKVMemory

extension Replay {
    /// Repeats the memory pass of every replayed pair on each of `gpus` (skipping the simulated
    /// one) and keeps each run's peaks and first OOM: the report's verdict per GPU
    /// (docs/report.md §2). Kept sets do not depend on the GPU, so only memory is re-simulated.
    static func gpuVerdicts(
        pairs: [PairReplay], memory: MemorySimulationConfig, gpus: [Accelerator], threads: Int
    ) throws -> [ReplayResults.GPUVerdict]? {
        var seen: Set<String> = [memory.accelerator.id]
        var out: [ReplayResults.GPUVerdict] = []
        for gpu in gpus where seen.insert(gpu.id).inserted {
            var config = memory
            config.accelerator = gpu
            let runs = try MemoryPass.simulate(pairs: pairs, config: config, threads: threads)
            out.append(
                ReplayResults.GPUVerdict(
                    gpu: gpu.id, gpuName: gpu.displayName, gpuCapacityBytes: Double(gpu.allocatorCapacityBytes),
                    runs: runs.map { run in
                        ReplayResults.GPURun(
                            policy: run.policy, budget: run.budget, peakAllocatedBytes: run.summary.peakAllocatedBytes,
                            peakReservedBytes: run.summary.peakReservedBytes, firstOOMStep: run.summary.firstOOMStep,
                            firstOOMPhase: run.summary.firstOOMStep.flatMap { step in run.steps.first { $0.step == step }?.oomPhase })
                    }))
        }
        return out.isEmpty ? nil : out
    }
}
