import ArgumentParser
import Foundation
import StarKVMemory
import StarKVModel
import StarKVPolicies
import StarKVReplay
import StarKVReport
import StarKVTrace

struct ReplayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Replay a trace under KV policies and budgets; simulate GPU memory and FLOPs; write a report.",
        discussion: """
            Examples:
              starkv replay traces/sample-1280x720.starkv
              starkv replay TRACE --policies starkv,guikv,snapkv --budgets 10,20,40 --gpu a100-80gb --out out/run1
              starkv replay TRACE --policies 'starkv(temporal=off)' --dump-kept kept.jsonl
            Policies: \(PolicyRegistry.names.joined(separator: ", ")), or 'all'.

            Outputs (the report folder, --dump-kept) are written under temporary names and renamed \
            when complete; existing ones are kept unless --force, and none may be the trace itself. \
            A trace without a footer exits 2 unless --allow-incomplete; a trace with no complete \
            step, or with NaN/infinite values in a field a policy reads, is refused (exit 1).

            \(ExitStatus.help)
            """)

    @Argument(help: "Trace file.") var trace: String
    @Option(help: "Comma-separated policies, each optionally with options: name(key=value;key=value). 'all' = every policy.")
    var policies = "all"
    @Option(parsing: .unconditional, help: "Comma-separated budgets: percent in (0, 100] (20, 12.5%) or tokens ≥ 1 (512tok); no duplicates.")
    var budgets = "10,20,40,100"
    @Option(help: "Agent loop: reprefill (every step re-prefills) or persistent (cache carried across steps).")
    var loop = "reprefill"
    @Option(help: "Model simulated for memory and FLOPs (default: the trace's model, or qwen2.5-vl-7b for reduced test geometries).")
    var model: String?
    @Option(help: "GPU: \(Accelerator.presets.map(\.id).joined(separator: ", ")), or custom:48GB / custom:40GiB.")
    var gpu = "h100-80gb"
    @Option(help: "LLM attention implementation: flash or eager (default: the trace's).") var attn: String?
    @Option(help: "Vision-tower attention: flash or eager (default: as --attn).") var visionAttn: String?
    @Option(
        parsing: .unconditional,
        help: "KV heads stored in the cache: the simulated model's KV-head count (4 = GQA) or its query-head count (28 = the STaR-KV/GUI-KV repeat_kv path); default: the trace's.",
        transform: NumberInput.integer("--kv-heads", 1...1_000_000))
    var kvHeads: Int?
    @Option(help: "Logits materialised at prefill: full, last, fp32.") var logits = "full"
    @Option(help: "Allocator model: torch (caching allocator replica), paged (vLLM pool), analytic.") var allocator = "torch"
    @Flag(help: "Do not keep the previous step's cache alive during the next step.") var noRetainPrevious = false
    @Option(
        parsing: .unconditional, help: "Worker threads, 1...1024 (results are identical for any value).",
        transform: NumberInput.integer("--threads", 1...1024))
    var threads: Int = ProcessInfo.processInfo.activeProcessorCount
    @Option(help: "Report directory.") var out = "out/replay"
    @Option(help: "Write every kept index set as JSON lines to this file (docs/policies.md).") var dumpKept: String?
    @Option(help: "Fail unless the replay digest equals this value.") var expectDigest: String?
    @Option(
        name: .customLong("kept-digest"),
        help: "Kept-set digest encoding: v2 (bitmap rows, default) or v1 (Int32 positions, the digests of StarKV before issue 15; docs/replay.md).")
    var keptDigest = "v2"
    @Flag(help: "No progress bar.") var quiet = false
    @Option(help: "Policy arithmetic: fp32 or bf16-reference (default: the trace's numerics, fp32 when it records none; docs/policies.md \"Numerics\").")
    var numerics: String?
    @Option(name: .customLong("gpu-name"), help: "Name the GPU in the report (e.g. for a custom:<N>GB card).") var gpuName: String?
    @Option(name: .customLong("memory-snapshot"), help: "Write one run's allocator history as a PyTorch memory snapshot pickle (pytorch.org/memory_viz).")
    var memorySnapshot: String?
    @Option(name: .customLong("snapshot-run"), help: "The run of --memory-snapshot as POLICY@BUDGET (default: the largest peak allocated).")
    var snapshotRun: String?
    @Option(name: .customLong("verdict-gpus"), help: "Other GPUs for the report's verdict (comma list of --gpu names, or 'none').")
    var verdictGPUs = "h100-80gb,a100-80gb,h200"
    @Flag(help: "Overwrite an existing report folder's files and --dump-kept file.") var force = false
    @OptionGroup var read: TraceReadOptions

    func run() throws {
        // Outputs are checked before the (long) replay starts, and again when renamed into place.
        let inputs = [trace]
        for name in ReportRenderer.fileNames {
            let path = (out as NSString).appendingPathComponent(name)
            do { try OutputFile.checkWritable(path, inputs: inputs, overwrite: force) } catch {
                throw ValidationError("--out: \(error.description)")
            }
        }
        if let dumpKept { try OutputCheck.check(dumpKept, inputs: inputs, force: force, flag: "--dump-kept") }
        let reader = try read.open(trace)
        guard reader.stepCount > 0 else {
            throw CLIFailure("\(trace): the trace has no complete step; there is nothing to replay")
        }
        let header = reader.header
        var request = try ReplayOptionsParser.request(
            trace: trace, header: header, policies: policies, budgets: budgets, loop: loop, model: model, gpu: gpu, attn: attn,
            visionAttn: visionAttn, kvHeads: kvHeads, logits: logits, allocator: allocator, retainPrevious: !noRetainPrevious,
            threads: threads, dumpKept: dumpKept, generator: "starkv \(StarKV.version)")
        request.readLimits = reader.limits
        guard let digestVersion = KeptDigestVersion(name: keptDigest) else {
            throw ValidationError("--kept-digest must be v1 or v2, not '\(keptDigest)'")
        }
        request.keptDigestVersion = digestVersion
        if let numerics {
            guard let n = ReplayNumerics(rawValue: numerics) else {
                throw ValidationError("--numerics must be one of \(ReplayNumerics.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            request.numerics = n
        }
        if let gpuName {
            guard !gpuName.trimmingCharacters(in: .whitespaces).isEmpty, gpuName.count <= 80 else {
                throw ValidationError("--gpu-name must be 1 to 80 characters")
            }
            request.memory.accelerator = request.memory.accelerator.renamed(gpuName)
        }
        if verdictGPUs != "none" {
            for name in verdictGPUs.split(separator: ",", omittingEmptySubsequences: false) {
                do { request.verdictGPUs.append(try Accelerator.named(String(name).trimmingCharacters(in: .whitespaces))) } catch {
                    throw ValidationError("--verdict-gpus: \(error.description)")
                }
            }
        }
        if let memorySnapshot { try OutputCheck.check(memorySnapshot, inputs: inputs, force: force, flag: "--memory-snapshot") }
        // The kept-set dump goes to a temporary name and is renamed only after a successful replay.
        let dumpTemp = dumpKept.map { OutputFile.temporaryPath(for: $0) }
        request.dumpKeptPath = dumpTemp
        let bar = ProgressBar(enabled: !quiet && isatty(STDERR_FILENO) != 0)
        // Provenance: with more than one thread, hashed while the replay runs; with one, after it.
        let traceHash = PendingFileHash(path: trace, background: threads > 1)
        var results: ReplayResults
        let written: [String]
        do {
            let (replayed, snapshot, snapshotLabel) = try Replay.runWithSnapshot(
                request, snapshotRun: memorySnapshot == nil ? nil : snapshotRun, wanted: memorySnapshot != nil
            ) { p in
                bar.update(done: p.stepsDone, total: p.stepsTotal, label: "\(p.phase) · \(p.pairs) pairs")
            }
            bar.finish()
            results = replayed
            results.provenance = Provenance(tracePath: trace, traceSHA256: try traceHash.wait())  // docs/sweeps.md
            written = try ReportRenderer.write(results, to: out, overwrite: force, inputs: inputs)
            if let memorySnapshot {
                guard let snapshot, let snapshotLabel else {
                    throw ValidationError("--memory-snapshot needs the torch caching allocator (--allocator torch)")
                }
                try OutputFile.write(Data(snapshot.pickle()), to: memorySnapshot, inputs: inputs, overwrite: force)
                print("memory snapshot of \(snapshotLabel): \(memorySnapshot) (\(snapshot.events.count) allocator events)")
            }
            if let dumpKept, let dumpTemp {
                try OutputFile.commit(temporary: dumpTemp, to: dumpKept, inputs: inputs, overwrite: force)
            }
        } catch {
            bar.finish()
            if let dumpTemp { unlink(dumpTemp) }
            throw error
        }
        print(ReplaySummaryText.render(results))
        print("report: \(written.last!)  (also results.json, steps.csv, runs.csv, trace.json in \(out))")
        if let dumpKept { print("kept sets: \(dumpKept)") }
        print("digest: \(results.digest)")
        if let expectDigest, expectDigest != results.digest {
            throw ReplayError.digestMismatch(expected: expectDigest, actual: results.digest)
        }
    }
}

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report", abstract: "Re-render a report directory from a results.json.",
        discussion: """
            Writes report.html, steps.csv, runs.csv, trace.json and results.json under temporary \
            names, then renames them. Existing files are kept unless --force; RESULTS itself is \
            never written over (re-rendering in place leaves it as it is).

            \(ExitStatus.help)
            """)

    @Argument(help: "results.json written by 'starkv replay'.") var results: String
    @Option(help: "Report directory (default: the directory of RESULTS).") var out: String?
    @Flag(help: "Overwrite the report files that exist (never RESULTS itself).") var force = false

    func run() throws {
        let r = try ReportRenderer.load(results)
        let dir = out ?? (results as NSString).deletingLastPathComponent
        let written = try ReportRenderer.write(r, to: dir.isEmpty ? "." : dir, overwrite: force, inputs: [results])
        print("report: \(written.last!)")
    }
}

/// Turns the replay flags into a `ReplayRequest` (kept apart so the command stays thin).
enum ReplayOptionsParser {
    static func request(
        trace: String, header: TraceHeader, policies: String, budgets: String, loop: String, model: String?, gpu: String,
        attn: String?, visionAttn: String?, kvHeads: Int?, logits: String, allocator: String, retainPrevious: Bool, threads: Int,
        dumpKept: String?, generator: String
    ) throws -> ReplayRequest {
        let specs = try parsePolicies(policies)
        let budgetList: [KVBudget]
        do { budgetList = try KVBudget.parseList(budgets) } catch { throw ValidationError("--budgets: \(error.description)") }
        guard let cacheLoop = CacheLoop(rawValue: loop) else {
            throw ValidationError("--loop must be one of \(CacheLoop.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let modelName = model ?? (ModelPresets.named(header.model.id).flatMap { $0.id == "tiny-vl" ? nil : $0.id } ?? "qwen2.5-vl-7b")
        guard let geometry = ModelPresets.named(modelName) else {
            throw ValidationError("unknown model '\(modelName)'; known: \(ModelPresets.all.map(\.id).joined(separator: ", "))")
        }
        let accelerator = try Accelerator.named(gpu)
        /// A flag must name flash or eager; a trace's own value (e.g. "synthetic") falls back to flash.
        func impl(_ flag: String?, recorded: String) throws -> AttentionImplementation {
            if let flag { return try MemoryFlags.pick(flag, "--attn", MemoryFlags.attention) }
            return recorded.lowercased().contains("eager") ? .eager : .flash
        }
        let llm = try impl(attn, recorded: header.agent.attnImplementation)
        let vit = try impl(
            visionAttn ?? attn,
            recorded: header.agent.visionAttnImplementation.isEmpty ? header.agent.attnImplementation : header.agent.visionAttnImplementation)
        let logitsPolicy = try MemoryFlags.pick(logits, "--logits", MemoryFlags.logits)
        let allocatorKind = try MemoryFlags.pick(allocator, "--allocator", MemoryFlags.allocators)
        if let kvHeads, kvHeads != geometry.numKVHeads, kvHeads != geometry.numQueryHeads {
            throw ValidationError(
                "--kv-heads \(kvHeads): \(geometry.id) caches either its \(geometry.numKVHeads) KV heads (GQA) or \(geometry.numQueryHeads) query heads (the repeat_kv path)")
        }
        var stored = kvHeads ?? header.agent.storedKVHeads
        if stored <= 0 || (kvHeads == nil && header.model.id != geometry.id) { stored = geometry.numKVHeads }
        if kvHeads == nil, header.agent.storedKVHeads == header.model.numQueryHeads, header.model.id != geometry.id {
            stored = geometry.numQueryHeads
        }
        guard threads >= 1, threads <= 1024 else { throw ValidationError("--threads must be in 1...1024") }
        let config = MemorySimulationConfig(
            model: geometry, accelerator: accelerator, llmAttention: llm, visionAttention: vit, storedKVHeads: stored,
            logits: logitsPolicy, retainPreviousCache: retainPrevious, allocator: allocatorKind)
        return ReplayRequest(
            tracePath: trace, policies: specs, budgets: budgetList, loop: cacheLoop, memory: config, threads: threads,
            dumpKeptPath: dumpKept, generator: generator)
    }

    /// `all`, or `snapkv,starkv(temporal=off;mi=off)`.
    static func parsePolicies(_ text: String) throws -> [PolicySpec] {
        if text.trimmingCharacters(in: .whitespaces) == "all" { return PolicyRegistry.names.map { PolicySpec(name: $0) } }
        var specs: [PolicySpec] = []
        var depth = 0
        var current = ""
        var parts: [String] = []
        for c in text {
            if c == "(" { depth += 1 }
            if c == ")" { depth -= 1 }
            if c == ",", depth == 0 {
                parts.append(current)
                current = ""
            } else {
                current.append(c)
            }
        }
        parts.append(current)
        for raw in parts {
            let part = raw.trimmingCharacters(in: .whitespaces)
            guard !part.isEmpty else { throw ValidationError("--policies '\(text)': empty item (a trailing or doubled comma?)") }
            var name = part
            var options: [String: String] = [:]
            if let open = part.firstIndex(of: "("), part.hasSuffix(")") {
                name = String(part[..<open])
                let inner = String(part[part.index(after: open)..<part.index(before: part.endIndex)])
                options = try PolicyOptions(parsing: inner, policy: name).values
            }
            guard PolicyRegistry.type(named: name) != nil else {
                throw ValidationError("unknown policy '\(name)'; known: \(PolicyRegistry.names.joined(separator: ", "))")
            }
            let spec = PolicySpec(name: name, options: options)
            guard !specs.contains(spec) else { throw ValidationError("--policies: '\(part)' is given twice") }
            specs.append(spec)
        }
        guard !specs.isEmpty else { throw ValidationError("--policies is empty") }
        return specs
    }
}

/// The short text summary printed after a replay.
enum ReplaySummaryText {
    static func render(_ r: ReplayResults) -> String {
        var t = TextTable([
            ("policy", .left), ("budget", .right), ("peak alloc GB", .right), ("GiB", .right), ("reserved GB", .right),
            ("OOM step", .right), ("kept", .right), ("quality", .right), ("scoring FLOPs", .right),
        ])
        for run in r.runs {
            let s = run.summary
            t.append([
                run.policy, run.budget, UnitFormat.gb(s.peakAllocatedBytes), UnitFormat.gib(s.peakAllocatedBytes),
                UnitFormat.gb(s.peakReservedBytes), s.firstOOMStep.map(String.init) ?? "-",
                UnitFormat.fixed(100 * s.meanKeptFraction, 1) + "%", s.meanDecodeMassRetained.map { UnitFormat.fixed($0, 4) } ?? "-",
                UnitFormat.fixed(s.totalScoringFLOPs / 1e9, 2) + " G",
            ])
        }
        var head = "\(r.trace.file): \(r.trace.steps) steps; \(r.settings.simulatedModel) on \(r.settings.gpu), \(r.settings.attention) attention, \(r.settings.storedKVHeads) stored KV heads, \(r.settings.loop) loop"
        for n in r.notes { head += "\nnote: \(n)" }
        return head + "\n" + t.render()
    }
}
