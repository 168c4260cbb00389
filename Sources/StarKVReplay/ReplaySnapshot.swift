import StarKVMemory

extension Replay {
    /// Replays `request` and, with the caching allocator, re-simulates one run with the
    /// allocator history on to export its memory snapshot (docs/report.md §3). `run` picks it as
    /// `policy@budget` (e.g. `full@100%`); nil picks the run with the largest peak allocated
    /// (the first of equal ones). The results are those of `run(_:)`.
    public static func runWithSnapshot(
        _ request: ReplayRequest, snapshotRun: String? = nil, wanted: Bool = true, progress: ((ReplayProgress) -> Void)? = nil
    ) throws -> (results: ReplayResults, snapshot: MemorySnapshot?, snapshotRun: String?) {
        let (results, pairs, memory) = try execute(request, progress: progress)
        guard wanted, memory.allocator == .torchCaching, !results.runs.isEmpty else { return (results, nil, nil) }
        var index: Int
        if let wanted = snapshotRun {
            guard let i = results.runs.firstIndex(where: { "\($0.policy)@\($0.budget)" == wanted || "\($0.policy)@\($0.budget)" == wanted + "%" }) else {
                throw ReplayError.invalidRequest(
                    "--snapshot-run '\(wanted)' names no run; runs: \(results.runs.map { "\($0.policy)@\($0.budget)" }.joined(separator: ", "))")
            }
            index = i
        } else {
            index = 0
            for (i, run) in results.runs.enumerated() where run.summary.peakAllocatedBytes > results.runs[index].summary.peakAllocatedBytes {
                index = i
            }
        }
        let snapshot: MemorySnapshot?
        do { snapshot = try MemorySimulator.snapshot(config: memory, steps: MemoryPass.inputs(pairs[index])) } catch {
            throw ReplayError.invalidRequest("memory snapshot of \(results.runs[index].policy) @ \(results.runs[index].budget): \(error)")
        }
        return (results, snapshot, "\(results.runs[index].policy)@\(results.runs[index].budget)")
    }
}
