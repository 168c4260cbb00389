import ArgumentParser
import Foundation
import StarKVModel
import StarKVSynth
import StarKVTrace

/// `starkv record …`: write traces. Only the synthetic agent exists here; real recordings
/// come from the Python recorder (python/).
struct Record: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Record a trace.", discussion: ExitStatus.help, subcommands: [RecordSynth.self])
}

/// `starkv record synth`: a deterministic synthetic GUI-agent trajectory (docs/synthetic-agent.md).
struct RecordSynth: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synth",
        abstract: "Write a synthetic GUI-agent trajectory trace (same seed and flags → identical file).",
        discussion: """
            The trace is written under a temporary name beside --out (OUT.tmp-PID-N) and renamed \
            when complete; an existing --out is kept unless --force.

            \(ExitStatus.help)
            """)

    @Option(name: .long, help: "Output trace file.") var out: String
    @Flag(name: .long, help: "Overwrite an existing --out.") var force = false
    @Option(name: .long, parsing: .unconditional, help: "Agent steps (screenshots).", transform: NumberInput.integer("--steps", 1...100_000))
    var steps = 10
    @Option(name: .long, parsing: .unconditional, help: "Screenshot size WIDTHxHEIGHT in pixels.") var screen = "1920x1080"
    @Option(
        name: .long, parsing: .unconditional, help: "Screenshots per prompt (history + current).",
        transform: NumberInput.integer("--image-slots", 1...64))
    var imageSlots = 5
    @Option(name: .long, help: "Model preset (\(ModelPresets.all.map(\.id).joined(separator: ", "))).")
    var model = "qwen2.5-vl-7b"
    @Option(name: .long, help: "Field set: core, standard or full (FORMAT.md).") var fields = "standard"
    @Option(name: .long, parsing: .unconditional, help: "Random seed.", transform: NumberInput.unsigned("--seed")) var seed: UInt64 = 1
    @Option(name: .long, parsing: .unconditional, help: "win_sum window sizes, comma-separated, ascending.") var windowSizes = "8,16,32,64"
    @Option(
        name: .long, parsing: .unconditional, help: "Raw attention rows stored at full fidelity.",
        transform: NumberInput.integer("--win-rows", 0...4096))
    var winRows = 8
    @Option(name: .long, help: "Storage dtype of win_sum and guikv_resid: f16 or f32.") var winSumDtype = "f16"
    @Option(
        name: .long, parsing: .unconditional, help: "Previous replies kept as history text.",
        transform: NumberInput.integer("--history-steps", 0...10_000))
    var historySteps = 10
    @Option(name: .long, help: "Episode id written into every step.") var episode = "synth-0"
    @Option(
        name: .long, parsing: .unconditional, help: "zstd level (1-19).",
        transform: { Int32(try NumberInput.integer("--zstd-level", 1...19)($0)) })
    var zstdLevel: Int32 = 3
    @Flag(name: .long, help: "No progress bar even on a terminal.") var quiet = false

    func run() throws {
        guard let geometry = ModelPresets.named(model) else {
            throw ValidationError("unknown --model '\(model)'; known: \(ModelPresets.all.map(\.id).joined(separator: ", "))")
        }
        _ = try NumberInput.screen("--screen", screen)
        guard let size = ScreenSize(parsing: screen) else {
            throw ValidationError("--screen '\(screen)' is not WIDTHxHEIGHT with positive integers (e.g. 1920x1080)")
        }
        guard let fidelity = Fidelity(name: fields) else {
            throw ValidationError("--fields '\(fields)' must be core, standard or full")
        }
        if windowSizes.contains("-") {
            throw ValidationError("--window-sizes '\(windowSizes)': negative numbers are not allowed")
        }
        let windows = windowSizes.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !windows.isEmpty, windows.allSatisfy({ $0 != nil && $0! > 0 }) else {
            throw ValidationError("--window-sizes '\(windowSizes)' must be comma-separated integers, e.g. 8,16,32,64")
        }
        let dtype: TensorDType
        switch winSumDtype.lowercased() {
        case "f16": dtype = .f16
        case "f32": dtype = .f32
        default: throw ValidationError("--win-sum-dtype '\(winSumDtype)' must be f16 or f32")
        }
        let config = SynthConfig(
            model: geometry, steps: steps, screen: size, imageSlots: imageSlots, fidelity: fidelity, seed: seed,
            windowSizes: windows.map { $0! }, winRowsMax: winRows, winSumDType: dtype, residualDType: dtype,
            maxHistorySteps: historySteps, episodeID: episode,
            commandLine: "starkv record synth --steps \(steps) --screen \(size) --image-slots \(imageSlots) "
                + "--model \(geometry.id) --fields \(fidelity) --seed \(seed) --window-sizes \(windowSizes) "
                + "--win-rows \(winRows) --win-sum-dtype \(winSumDtype.lowercased()) --history-steps \(historySteps)")
        try OutputCheck.check(out, inputs: [], force: force, flag: "--out")
        let agent = try SyntheticAgent(config)
        let writer = try TraceWriter(
            path: out, header: agent.header, options: TraceWriteOptions(zstdLevel: zstdLevel), overwrite: force)
        let bar = ProgressBar(enabled: !quiet && isatty(STDERR_FILENO) != 0)
        let summary: TraceWriteSummary
        do {
            for k in 0..<steps {
                try writer.append(agent.step(k))
                bar.update(done: k + 1, total: steps, label: "writing \(out)")
            }
            summary = try writer.close()
        } catch {
            // A synthetic trace is reproducible: nothing partial is left behind.
            writer.abandon()
            throw error
        }
        bar.finish()
        let ratio = summary.storedBytes > 0 ? Double(summary.rawBytes) / Double(summary.storedBytes) : 0
        print(
            "wrote \(out): \(summary.steps) steps, \(summary.chunks) chunks, "
                + "\(Self.mib(summary.rawBytes)) MiB raw → \(Self.mib(summary.fileBytes)) MiB file "
                + "(\(String(format: "%.2f", ratio))×), model \(geometry.id), grid \(agent.grid.gridRows)x\(agent.grid.gridCols) "
                + "(\(agent.grid.visualTokens) visual tokens per screenshot), fields \(fidelity), seed \(seed)")
    }

    static func mib(_ bytes: UInt64) -> String { String(format: "%.2f", Double(bytes) / 1_048_576) }
}
