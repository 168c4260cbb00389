import ArgumentParser
import Foundation
import StarKVMemory
import StarKVModel
import StarKVPolicies
import StarKVReport
import StarKVTrace

/// `starkv memory`: per-step GPU memory, FLOPs and time of a synthetic agent trajectory
/// (no trace needed). Parses options, calls StarKVMemory, prints its table and writes its JSON.
struct MemoryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memory",
        abstract: "Simulate GPU memory (torch caching allocator or vLLM paged pool), FLOPs and roofline time per agent step.")

    @Option(help: "Model preset (qwen2.5-vl-7b, ui-tars-1.5-7b, opencua-7b, qwen2.5-vl-3b/32b/72b).")
    var model = "qwen2.5-vl-7b"
    @Option(help: "Screen size WIDTHxHEIGHT of every screenshot; a comma list simulates each (1280x720,1920x1080,3840x2160).")
    var screen = "1920x1080"
    @Option(help: "Screenshots in context per step: a range A..B or a comma list (one step each).")
    var screenshots = "1..5"
    @Option(help: "LLM attention implementation: flash or eager (as 'replay --attn').")
    var attn = "flash"
    @Option(name: [.customLong("vision-attn"), .customLong("vit-attn")], help: "Vision-tower attention: flash or eager (default: as --attn; same flag as 'replay').")
    var visionAttn: String?
    @Option(name: .customLong("kv-heads"), help: "KV heads stored in the cache (4 = GQA original path, 28 = STaR-KV/GUI-KV expanded path).")
    var kvHeads: Int?
    @Option(name: [.customLong("budget"), .customLong("budgets")], help: "Comma-separated budgets, as 'replay --budgets': percent of prompt tokens kept per layer (20) or tokens (4096tok); 100 = the full cache. Default: the full cache.")
    var budget: String?
    @Option(help: "GPU: \(MemoryFlags.gpuChoices).")
    var gpu = "h100-80gb"
    @Option(name: .customLong("gpu-name"), help: "Name the GPU in outputs (e.g. for a custom:<N>GB card).")
    var gpuName: String?
    @Option(help: "Logits policy: full, last, fp32.")
    var logits = "full"
    @Option(help: "Agent loop: reprefill or persistent.")
    var loop = "reprefill"
    @Option(help: "Allocator: torch, paged, analytic.")
    var allocator = "torch"
    @Flag(name: .customLong("expandable-segments"), help: "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True.")
    var expandableSegments = false
    @Flag(name: .customLong("no-retain-previous"), help: "Drop the previous step's generate output before the next step.")
    var noRetainPrevious = false
    @Option(name: .customLong("text-tokens"), help: "Text tokens with one screenshot (grows by --text-per-step per history step).")
    var textTokens = 600
    @Option(name: .customLong("text-per-step"), help: "Extra text tokens per history step.")
    var textPerStep = 150
    @Option(help: "Tokens generated per step.")
    var generated = 0
    @Option(name: .customLong("weight-dtype"), help: "bf16 or fp32.")
    var weightDtype = "bf16"
    @Option(name: .customLong("scoring-flops"), help: "Policy scoring FLOPs per step (docs/algorithms.md §11).")
    var scoringFLOPs = 0
    @Option(help: "Write every trajectory as JSON (schemaVersion 2) to this file.")
    var json: String?
    @Option(help: "Write a self-contained HTML report (breakdown, heat map, where the peak is) to this file.")
    var html: String?
    @Option(name: .customLong("verdict-gpus"), help: "Other GPUs for the HTML/JSON verdict (comma list of --gpu names, or 'none').")
    var verdictGPUs = "h100-80gb,a100-80gb,h200"
    @Option(name: .customLong("memory-snapshot"), help: "Write the allocator history of the last trajectory (last screen, last budget) as a PyTorch memory snapshot pickle (open it at pytorch.org/memory_viz).")
    var memorySnapshot: String?
    @Flag(help: .hidden) var bench = false

    func run() throws {
        if bench { return try runBenchmark() }
        guard let geometry = ModelPresets.named(model) else {
            throw ValidationError("unknown model '\(model)'; known: \(ModelPresets.all.map(\.id).joined(separator: ", "))")
        }
        var sizes: [ScreenSize] = []
        for item in screen.split(separator: ",", omittingEmptySubsequences: false) {
            guard let size = ScreenSize(parsing: item.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--screen '\(item)' is not WIDTHxHEIGHT (a comma list such as 1280x720,1920x1080 simulates each)")
            }
            sizes.append(size)
        }
        guard sizes.count <= 16 else { throw ValidationError("--screen: at most 16 screen sizes") }
        let counts = try parseCounts(screenshots)
        var budgets: [KVBudget?] = [nil]
        if let budget {
            do { budgets = try KVBudget.parseList(budget).map { b -> KVBudget? in b == .percent(100) ? nil : b } } catch {
                throw ValidationError("--budget: \(error)")
            }
            guard budgets.count <= 16 else { throw ValidationError("--budget: at most 16 budgets") }
        }
        var accelerator: Accelerator
        do { accelerator = try Accelerator.named(gpu) } catch { throw ValidationError(error.description) }
        if let gpuName {
            guard !gpuName.trimmingCharacters(in: .whitespaces).isEmpty, gpuName.count <= 80 else {
                throw ValidationError("--gpu-name must be 1 to 80 characters")
            }
            accelerator = accelerator.renamed(gpuName)
        }
        var config = MemorySimulationConfig(
            model: geometry, accelerator: accelerator, llmAttention: try parseAttention(attn, "--attn"),
            visionAttention: try visionAttn.map { try parseAttention($0, "--vision-attn") }, storedKVHeads: kvHeads,
            logits: try MemoryFlags.pick(logits, "--logits", MemoryFlags.logits),
            loop: try MemoryFlags.pick(loop, "--loop", ["reprefill": .rePrefill, "persistent": .persistentCache]),
            retainPreviousCache: !noRetainPrevious,
            allocator: try MemoryFlags.pick(allocator, "--allocator", MemoryFlags.allocators),
            weightDtype: try MemoryFlags.pick(weightDtype, "--weight-dtype", MemoryFlags.weightDtypes))
        config.cachingOptions.expandableSegments = expandableSegments
        // Refuse an output that is also another output before simulating anything.
        let outputs = [json, html, memorySnapshot].compactMap { $0 }
        if Set(outputs).count != outputs.count { throw ValidationError("--json, --html and --memory-snapshot must name different files") }

        var others: [Accelerator] = []
        if verdictGPUs != "none" {
            for name in verdictGPUs.split(separator: ",", omittingEmptySubsequences: false) {
                do {
                    let a = try Accelerator.named(name.trimmingCharacters(in: .whitespaces))
                    if a.id != accelerator.id && !others.contains(where: { $0.id == a.id }) { others.append(a) }
                } catch { throw ValidationError("--verdict-gpus: \(error.description)") }
            }
        }
        var otherEntries = [[MemoryGrid.Entry]](repeating: [], count: others.count)
        var entries: [MemoryGrid.Entry] = []
        var lastSteps: [MemoryStepInput] = []
        for size in sizes {
            let tokens = try SyntheticWorkload.visualTokens(width: size.width, height: size.height)
            for b in budgets {
                var workload = SyntheticWorkload(
                    visualTokensPerScreenshot: tokens, screenshotCounts: counts, textBaseTokens: textTokens,
                    textTokensPerHistoryStep: textPerStep, generatedTokens: generated, budgetPercent: nil,
                    scoringFLOPsPerStep: scoringFLOPs)
                switch b {
                case .percent(let p)?: workload.budgetPercent = p
                case .tokens(let n)?: workload.budgetTokens = n
                case nil: break
                }
                let steps = workload.steps(numLayers: geometry.numLayers)
                let report = try MemorySimulator.run(config: config, steps: steps)
                let label = b?.description ?? "full"
                if sizes.count > 1 || budgets.count > 1 { print("== screen \(size), budget \(label)") }
                print("screen \(size) → \(tokens) visual tokens per screenshot (smart_resize, UI-TARS-1.5 bounds)")
                print(MemoryTable.render(report), terminator: "")
                entries.append(MemoryGrid.Entry(screen: "\(size.width)x\(size.height)", visualTokensPerScreenshot: tokens, budget: label, report: report))
                if html != nil || json != nil {
                    for (k, other) in others.enumerated() {
                        var c = config
                        c.accelerator = other
                        let r = try MemorySimulator.run(config: c, steps: steps)
                        otherEntries[k].append(MemoryGrid.Entry(screen: "\(size.width)x\(size.height)", visualTokensPerScreenshot: tokens, budget: label, report: r))
                    }
                }
                lastSteps = steps
            }
        }
        var grid = MemoryGrid(
            entries: entries, screens: sizes.map { "\($0.width)x\($0.height)" }, budgets: budgets.map { $0?.description ?? "full" },
            screenshotCounts: counts, gpuName: accelerator.displayName, generator: "starkv \(StarKV.version)")
        grid.otherGPUs = zip(others, otherEntries).map { MemoryGrid.OtherGPU(name: $0.displayName, capacityBytes: $0.allocatorCapacityBytes, entries: $1) }
        if let json {
            try OutputFile.write(try MemoryReport.json(grid), to: json)
            print("wrote \(json)")
        }
        if let html {
            try OutputFile.write(Data(MemoryReport.html(grid).utf8), to: html)
            print("wrote \(html)")
        }
        if let memorySnapshot {
            guard let snap = try MemorySimulator.snapshot(config: config, steps: lastSteps) else {
                throw ValidationError("--memory-snapshot needs the torch caching allocator (--allocator torch)")
            }
            try OutputFile.write(Data(snap.pickle()), to: memorySnapshot)
            print("wrote \(memorySnapshot): \(snap.events.count) allocator events; segments at step \(snap.capturedAtStep) (\(snap.capturedAtLocation)), the trajectory's allocated peak \(ByteUnits.describe(snap.segmentsAllocatedBytes)); peak reserved \(ByteUnits.describe(snap.peakReservedBytes))")
        }
    }

    func parseCounts(_ text: String) throws -> [Int] {
        let parts = text.components(separatedBy: "..")
        var counts: [Int]
        if parts.count == 2, let a = Int(parts[0]), let b = Int(parts[1]), a >= 1, b >= a {
            counts = Array(a...b)
        } else {
            counts = text.split(separator: ",").compactMap { Int($0) }
            guard !counts.isEmpty, counts.count == text.split(separator: ",").count else {
                throw ValidationError("--screenshots '\(text)' must be A..B or a comma list of positive counts")
            }
        }
        guard counts.allSatisfy({ $0 >= 1 && $0 <= 64 }), counts.count <= 1000 else {
            throw ValidationError("--screenshots: counts must be 1...64 and at most 1000 steps")
        }
        return counts
    }

    func parseAttention(_ text: String, _ flag: String) throws -> AttentionImplementation {
        try MemoryFlags.pick(text, flag, MemoryFlags.attention)
    }

    func runBenchmark() throws {
        for expandable in [false, true] {
            let bench = AllocatorBenchmark(expandableSegments: expandable)
            var best = Double.infinity
            var checksum = 0
            for _ in 0..<5 {
                let start = DispatchTime.now().uptimeNanoseconds
                checksum &+= bench.replay()
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                best = min(best, seconds)
            }
            let rate = Double(bench.events.count) / best
            print("allocator replay (\(expandable ? "expandable segments" : "default segments")): \(bench.events.count) events in \(String(format: "%.4f", best)) s (best of 5) = \(String(format: "%.2f", rate / 1e6)) M events/s [checksum \(checksum)]")
        }
    }
}
