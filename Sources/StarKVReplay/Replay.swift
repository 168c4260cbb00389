import StarKVMemory
import StarKVModel
import StarKVPolicies
import StarKVTrace

/// A full replay request: trace, policies × budgets, loop, memory simulation settings
/// (issue: replay engine; docs/replay.md).
public struct ReplayRequest: Sendable {
    public var tracePath: String
    public var policies: [PolicySpec]
    public var budgets: [KVBudget]
    public var loop: CacheLoop
    public var memory: MemorySimulationConfig
    public var threads: Int
    /// Writes every kept set as JSON lines when set.
    public var dumpKeptPath: String?
    public var generator: String
    /// Arithmetic of the policies; nil = what the trace header says (fp32 when it says nothing).
    public var numerics: ReplayNumerics?
    /// Other GPUs to give a fits / does-not-fit verdict on (the memory pass is repeated for each;
    /// docs/report.md §2). The simulated GPU itself is skipped.
    public var verdictGPUs: [Accelerator] = []
    /// Limits for reading the trace (the CLI's --max-chunk-mib).
    public var readLimits: TraceReadLimits = .default
    /// Encoding of the per-pair kept-set digests (`--kept-digest`; docs/replay.md "Digest").
    public var keptDigestVersion: KeptDigestVersion = .v2

    public init(
        tracePath: String, policies: [PolicySpec], budgets: [KVBudget], loop: CacheLoop, memory: MemorySimulationConfig,
        threads: Int, dumpKeptPath: String? = nil, generator: String = "starkv", numerics: ReplayNumerics? = nil
    ) {
        self.tracePath = tracePath
        self.policies = policies
        self.budgets = budgets
        self.loop = loop
        self.memory = memory
        self.threads = threads
        self.dumpKeptPath = dumpKeptPath
        self.generator = generator
        self.numerics = numerics
    }
}

/// Runs a `ReplayRequest` end to end: policies over the trace, then the memory and FLOP
/// simulation of each pair, then the results with their digest.
public enum Replay {
    public static func run(_ request: ReplayRequest, progress: ((ReplayProgress) -> Void)? = nil) throws -> ReplayResults {
        try execute(request, progress: progress).results
    }

    /// `run`, also returning the replayed pairs and the memory configuration (for snapshots).
    static func execute(_ request: ReplayRequest, progress: ((ReplayProgress) -> Void)? = nil) throws -> (
        results: ReplayResults, pairs: [PairReplay], memory: MemorySimulationConfig
    ) {
        guard !request.policies.isEmpty else { throw ReplayError.invalidRequest("no policies to replay") }
        guard !request.budgets.isEmpty else { throw ReplayError.invalidRequest("no budgets to replay") }
        let reader: TraceReader
        do { reader = try TraceReader(path: request.tracePath, limits: request.readLimits) } catch let e as TraceError {
            throw ReplayError.io("\(e)")
        }
        var memory = request.memory
        memory.loop = request.loop == .persistent ? .persistentCache : .rePrefill
        do { try memory.validate() } catch { throw ReplayError.invalidRequest("\(error)") }

        var dumpFile: DumpSink? = nil
        if let path = request.dumpKeptPath { dumpFile = try DumpSink(path: path) }
        let recordedNumerics = reader.header.numerics ?? ""
        let traceNumerics = ReplayNumerics(name: recordedNumerics)
        guard let numerics = request.numerics ?? traceNumerics else {
            throw ReplayError.invalidRequest(
                "\(request.tracePath): the trace header's numerics '\(recordedNumerics)' is unknown; replay it with --numerics \(ReplayNumerics.allCases.map(\.rawValue).joined(separator: " or "))")
        }
        var replayer = PolicyReplayer(
            reader: reader, policies: request.policies, budgets: request.budgets, loop: request.loop, threads: request.threads)
        replayer.numerics = numerics
        replayer.keptDigestVersion = request.keptDigestVersion
        let pairs = try replayer.run(dump: dumpFile.map { sink in { try sink.write($0) } }, progress: progress)
        try dumpFile?.close()

        // Memory simulation per pair (independent, so in parallel; fixed result slots).
        progress?(ReplayProgress(stepsDone: reader.stepCount, stepsTotal: reader.stepCount, pairs: pairs.count, phase: "memory"))
        let simulated = try MemoryPass.simulateWithEnvelopes(pairs: pairs, config: memory, threads: request.threads)
        let runs = simulated.runs

        var notes: [String] = []
        if numerics != .fp32 || traceNumerics != .fp32 {
            notes.append(
                "Numerics: \(numerics.rawValue)\(request.numerics == nil ? " (from the trace header)" : "")\(numerics != traceNumerics ? "; the trace was recorded with \(recordedNumerics.isEmpty ? "fp32" : recordedNumerics)" : "") (docs/policies.md \"Numerics\").")
        }
        for pair in pairs {
            for note in pair.notes where !notes.contains(note) { notes.append(note) }
        }
        if request.loop == .persistent {
            notes.append(
                "Persistent-cache loop: an open-loop approximation. The attention that policies score with comes from the recorded re-prefill run, renormalised over the tokens still cached; the agent's actions are the recorded ones.")
        }
        if reader.header.model.id != memory.model.id {
            notes.append(
                "The trace was recorded with geometry '\(reader.header.model.id)' (\(reader.header.model.numLayers) layers); memory and FLOPs are simulated for \(memory.model.displayName) using the trace's token counts and each policy's kept fraction per layer. Scoring FLOPs are counted by the policies at the recorded geometry.")
        }
        if case .missing(let note) = reader.footer { notes.append("Trace footer missing (\(note)); complete steps were replayed.") }

        let h = reader.header
        let info = ReplayResults.TraceInfo(
            file: lastPathComponent(request.tracePath), recordedModel: h.model.id, recorder: "\(h.recorder.name) \(h.recorder.version)",
            fidelity: h.fidelity.description, steps: reader.stepCount, screen: "\(h.agent.screenWidth)x\(h.agent.screenHeight)",
            imageSlots: h.agent.imageSlots, footerPresent: reader.footer == .present,
            goldenChecks: pairs.compactMap { pair in
                pair.golden.map {
                    ReplayResults.GoldenCheck(
                        field: $0.field, layers: $0.layers, meanJaccard: $0.layers > 0 ? $0.jaccardSum / Double($0.layers) : 0,
                        identicalLayers: $0.identicalLayers)
                }
            })
        let m = memory
        let settings = ReplayResults.Settings(
            policies: request.policies, budgets: request.budgets.map(\.description), loop: request.loop.rawValue,
            simulatedModel: m.model.id, gpu: m.accelerator.id, gpuCapacityBytes: Double(m.accelerator.allocatorCapacityBytes),
            gpuName: m.accelerator.displayName,
            attention: m.llmAttention.rawValue, visionAttention: m.visionAttention.rawValue, storedKVHeads: m.storedKVHeads,
            logits: m.logits.rawValue, allocator: m.allocator.rawValue, retainPreviousCache: m.retainPreviousCache,
            keptDigestVersion: request.keptDigestVersion.rawValue)
        var results = ReplayResults(
            schemaVersion: ReplayResults.currentSchemaVersion, generator: request.generator, trace: info, settings: settings,
            runs: runs, notes: notes, digest: "")
        results.digest = digest(of: results)
        results.gpuVerdicts = try gpuVerdicts(
            pairs: pairs, memory: memory, gpus: request.verdictGPUs, threads: request.threads, simulated: simulated)
        return (results, pairs, memory)
    }

    /// SHA-256 over each run's kept digest and its memory curve (allocated and reserved peak per
    /// step, exact integers), in run order.
    public static func digest(of r: ReplayResults) -> String {
        var h = SHA256()
        h.update("starkv-replay-digest-v1")
        for run in r.runs {
            h.update(run.policy)
            h.update(run.budget)
            h.update(run.keptDigest)
            for s in run.steps {
                h.update(integer: Int64(s.allocatedPeakBytes))
                h.update(integer: Int64(s.reservedPeakBytes))
                h.update(integer: UInt8(s.oom ? 1 : 0))
            }
        }
        return h.finalize()
    }

    static func lastPathComponent(_ path: String) -> String {
        path.split(separator: "/").last.map(String.init) ?? path
    }
}

/// Appends kept-set JSON lines to a file.
final class DumpSink {
    let path: String
    private var handle: UnsafeMutablePointer<FILE>?

    init(path: String) throws {
        self.path = path
        handle = fopen(path, "wb")
        guard handle != nil else { throw ReplayError.io("cannot create kept-set dump \(path)") }
    }

    func write(_ bytes: [UInt8]) throws {
        guard !bytes.isEmpty else { return }
        let n = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, bytes.count, handle) }
        guard n == bytes.count else { throw ReplayError.io("cannot write kept-set dump \(path)") }
    }

    func close() throws {
        guard let h = handle else { return }
        handle = nil
        guard fclose(h) == 0 else { throw ReplayError.io("cannot close kept-set dump \(path)") }
    }

    deinit { if let h = handle { fclose(h) } }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
