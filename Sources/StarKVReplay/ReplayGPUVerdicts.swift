import StarKVMemory

extension Replay {
    /// Repeats the memory pass of every replayed pair on each of `gpus` (skipping the simulated
    /// one) and keeps each run's peaks and first OOM: the report's verdict per GPU
    /// (docs/report.md §2). Kept sets do not depend on the GPU, so only memory is re-simulated —
    /// and only where the GPU can change it: a run of the simulated GPU whose every comparison
    /// with the capacity passed with room for this GPU's capacity (`CapacityEnvelope`) takes the
    /// same path here, so its peaks are reused (docs/memory-model.md "Verdicts on other GPUs").
    static func gpuVerdicts(
        pairs: [PairReplay], memory: MemorySimulationConfig, gpus: [Accelerator], threads: Int,
        simulated: (runs: [ReplayResults.RunResult], envelopes: [CapacityEnvelope?])? = nil
    ) throws -> [ReplayResults.GPUVerdict]? {
        var seen: Set<String> = [memory.accelerator.id]
        var out: [ReplayResults.GPUVerdict] = []
        for gpu in gpus where seen.insert(gpu.id).inserted {
            var config = memory
            config.accelerator = gpu
            var runs: [ReplayResults.RunResult?] = pairs.indices.map { i in
                guard let simulated, let envelope = simulated.envelopes[i], envelope.samePath(capacityBytes: gpu.allocatorCapacityBytes)
                else { return nil }
                return simulated.runs[i]
            }
            let missing = runs.indices.filter { runs[$0] == nil }
            if !missing.isEmpty {
                let fresh = try MemoryPass.simulate(pairs: missing.map { pairs[$0] }, config: config, threads: threads)
                for (n, i) in missing.enumerated() { runs[i] = fresh[n] }
            }
            out.append(
                ReplayResults.GPUVerdict(
                    gpu: gpu.id, gpuName: gpu.displayName, gpuCapacityBytes: Double(gpu.allocatorCapacityBytes),
                    runs: runs.map { run in
                        let run = run!
                        return ReplayResults.GPURun(
                            policy: run.policy, budget: run.budget, peakAllocatedBytes: run.summary.peakAllocatedBytes,
                            peakReservedBytes: run.summary.peakReservedBytes, firstOOMStep: run.summary.firstOOMStep,
                            firstOOMPhase: run.summary.firstOOMStep.flatMap { step in run.steps.first { $0.step == step }?.oomPhase })
                    }))
        }
        return out.isEmpty ? nil : out
    }
}
