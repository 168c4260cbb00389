import ArgumentParser
import Foundation
import StarKVMemory
import StarKVModel

/// `starkv memory`: per-step GPU memory, FLOPs and time of a synthetic agent trajectory
/// (no trace needed). Parses options, calls StarKVMemory, prints its table and writes its JSON.
struct MemoryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memory",
        abstract: "Simulate GPU memory (torch caching allocator or vLLM paged pool), FLOPs and roofline time per agent step.")

    @Option(help: "Model preset (qwen2.5-vl-7b, ui-tars-1.5-7b, opencua-7b, qwen2.5-vl-3b/32b/72b).")
    var model = "qwen2.5-vl-7b"
    @Option(help: "Screen size WIDTHxHEIGHT of every screenshot.")
    var screen = "1920x1080"
    @Option(help: "Screenshots in context per step: a range A..B or a comma list (one step each).")
    var screenshots = "1..5"
    @Option(help: "Attention implementation for LLM and ViT: eager or flash.")
    var attn = "flash"
    @Option(name: .customLong("vit-attn"), help: "Override the ViT attention implementation.")
    var vitAttn: String?
    @Option(name: .customLong("kv-heads"), help: "KV heads stored in the cache (4 = GQA original path, 28 = STaR-KV/GUI-KV expanded path).")
    var kvHeads: Int?
    @Option(help: "Percent of prompt tokens kept per layer (omit or 100 for the full cache).")
    var budget: Double?
    @Option(help: "GPU: h100-80gb, h100-pcie, a100-80gb, a100-pcie, h200, custom:<N>GiB.")
    var gpu = "h100-80gb"
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
    @Option(help: "Write the full report as JSON to this file.")
    var json: String?
    @Flag(help: .hidden) var bench = false

    func run() throws {
        if bench { return try runBenchmark() }
        guard let geometry = ModelPresets.named(model) else {
            throw ValidationError("unknown model '\(model)'; known: \(ModelPresets.all.map(\.id).joined(separator: ", "))")
        }
        guard let size = ScreenSize(parsing: screen) else { throw ValidationError("--screen '\(screen)' is not WIDTHxHEIGHT") }
        let counts = try parseCounts(screenshots)
        let accelerator: Accelerator
        do { accelerator = try Accelerator.named(gpu) } catch { throw ValidationError(error.description) }
        var config = MemorySimulationConfig(
            model: geometry, accelerator: accelerator, llmAttention: try parseAttention(attn, "--attn"),
            visionAttention: try vitAttn.map { try parseAttention($0, "--vit-attn") }, storedKVHeads: kvHeads,
            logits: try MemoryFlags.pick(logits, "--logits", MemoryFlags.logits),
            loop: try MemoryFlags.pick(loop, "--loop", ["reprefill": .rePrefill, "persistent": .persistentCache]),
            retainPreviousCache: !noRetainPrevious,
            allocator: try MemoryFlags.pick(allocator, "--allocator", MemoryFlags.allocators),
            weightDtype: try MemoryFlags.pick(weightDtype, "--weight-dtype", MemoryFlags.weightDtypes))
        config.cachingOptions.expandableSegments = expandableSegments
        if let b = budget, !(b > 0 && b <= 100) { throw ValidationError("--budget \(b) must be in (0, 100]") }
        let tokens = try SyntheticWorkload.visualTokens(width: size.width, height: size.height)
        let workload = SyntheticWorkload(
            visualTokensPerScreenshot: tokens, screenshotCounts: counts, textBaseTokens: textTokens,
            textTokensPerHistoryStep: textPerStep, generatedTokens: generated, budgetPercent: budget,
            scoringFLOPsPerStep: scoringFLOPs)
        let report = try MemorySimulator.run(config: config, steps: workload.steps(numLayers: geometry.numLayers))
        print("screen \(size) → \(tokens) visual tokens per screenshot (smart_resize, UI-TARS-1.5 bounds)")
        print(MemoryTable.render(report), terminator: "")
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(report).write(to: URL(fileURLWithPath: json))
            print("wrote \(json)")
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
