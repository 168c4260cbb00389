import ArgumentParser
import Foundation
import StarKVTrace

/// Options shared by the commands that read a trace.
struct TraceReadOptions: ParsableArguments {
    @Flag(help: "Read a trace without a footer (a recording in progress or a killed recorder) instead of exiting 2.")
    var allowIncomplete = false
    @Option(
        name: .customLong("max-chunk-mib"), parsing: .unconditional,
        help: "Largest decompressed tensor chunk to accept, in MiB (default 256; a step's chunks: twice that, at least 512).",
        transform: NumberInput.integer("--max-chunk-mib", 1...(1 << 20)))
    var maxChunkMiB: Int?

    func open(_ path: String) throws -> TraceReader {
        try TraceOpening.open(path, allowIncomplete: allowIncomplete, maxChunkMiB: maxChunkMiB)
    }
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a trace's header and a per-step table of sizes and compression ratios.",
        discussion: ExitStatus.help)

    @Argument(help: "Trace file.") var trace: String
    @Flag(help: "Print JSON instead of text.") var json = false
    @OptionGroup var read: TraceReadOptions

    func run() throws {
        let reader = try read.open(trace)
        let steps = try reader.summaries()
        let size = reader.fileBytes
        if json {
            print(try JSONOutput.string(InspectJSON(reader: reader, steps: steps, fileBytes: size)))
        } else {
            print(TraceInspection.render(header: reader.header, footer: reader.footer, minorVersion: reader.minorVersion, steps: steps, fileBytes: size))
        }
    }
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Verify every checksum, shape and value of a trace.",
        discussion: """
            Prints OK and exits 0 only when the trace is complete and every byte checks out. A trace \
            without a footer whose complete steps all verify and which ends in a torn tail exits 2 \
            ('starkv recover' writes a complete copy); anything else exits 1 naming the offset, step, \
            layer and field.

            \(ExitStatus.help)
            """)

    @Argument(help: "Trace file.") var trace: String
    @Option(
        name: .customLong("max-chunk-mib"), parsing: .unconditional,
        help: "Largest decompressed tensor chunk to accept, in MiB (default 256).",
        transform: NumberInput.integer("--max-chunk-mib", 1...(1 << 20)))
    var maxChunkMiB: Int?

    func run() throws {
        do {
            let limits = maxChunkMiB.map { TraceReadLimits.scaled(chunkMiB: $0) } ?? .default
            let report = try TraceReader(path: trace, limits: limits).validate()
            switch report.integrity {
            case .intact:
                print("OK: \(trace): \(report.steps) steps, \(report.chunks) chunks, \(report.storedBytes) bytes verified")
            case .incomplete(let note):
                print("INCOMPLETE: \(trace): \(report.steps) complete steps verified; \(note); run 'starkv recover \(trace)'")
                throw ExitCode(ExitStatus.incomplete)
            case .corrupt(let offset, let note):  // validate() throws first; kept for completeness
                print("FAIL: \(trace), offset \(offset): \(note)")
                throw ExitCode(ExitStatus.corruptOrInvalid)
            }
        } catch let error as TraceError {
            print("FAIL: \(error)")
            throw ExitCode(ExitStatus.corruptOrInvalid)
        }
    }
}

struct Recover: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a copy of a footer-less trace (recorder killed mid-write, or a recording's temporary file) with a footer; the input is not modified.",
        discussion: """
            The output is written under a temporary name and renamed when complete. It may not be \
            the input (also through a symlink or hard link) and an existing output is kept unless \
            --force. A trace damaged in the middle (not just cut off) is refused unless --salvage, \
            which keeps the intact steps before the damage.

            \(ExitStatus.help)
            """)

    @Argument(help: "Trace file (also a recording's temporary file, NAME.tmp-PID-N).") var trace: String
    @Option(name: .shortAndLong, help: "Output file (default: <trace>.recovered.starkv).") var output: String?
    @Flag(help: "Overwrite an existing output.") var force = false
    @Flag(help: "Keep the intact steps before damage in the middle of the file.") var salvage = false
    @Option(
        name: .customLong("max-chunk-mib"), parsing: .unconditional,
        help: "Largest decompressed tensor chunk to accept, in MiB (default 256).",
        transform: NumberInput.integer("--max-chunk-mib", 1...(1 << 20)))
    var maxChunkMiB: Int?

    func run() throws {
        let out = output ?? TraceRecovery.defaultOutput(for: trace)
        try OutputCheck.check(out, inputs: [trace], force: force, flag: "--output")
        let limits = maxChunkMiB.map { TraceReadLimits.scaled(chunkMiB: $0) } ?? .default
        let report = try TraceRecovery.recover(input: trace, output: out, overwrite: force, limits: limits, salvage: salvage)
        if report.alreadyComplete {
            print("\(trace) already had a footer; wrote an identical copy with \(report.steps) steps to \(out)")
        } else if report.salvagedFromDamage {
            print("salvaged \(report.steps) intact steps before the damage into \(out) (\(report.droppedTailBytes) bytes from the damage on dropped)")
        } else {
            print("recovered \(report.steps) complete steps into \(out) (\(report.droppedTailBytes) bytes of an incomplete step dropped)")
        }
    }
}

struct Dump: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print one tensor of a step as JSON {field, layer, dtype, shape, values}.",
        discussion: ExitStatus.help)

    @Argument(help: "Trace file.") var trace: String
    @Option(parsing: .unconditional, help: "Step position in the trace (0-based).", transform: NumberInput.integer("--step", 0...Int.max))
    var step: Int
    @Option(help: "Field name, e.g. win_sum.") var field: String
    @Option(
        parsing: .unconditional, help: "Decoder layer (omit for a step-level field).",
        transform: NumberInput.integer("--layer", 0...Int.max))
    var layer: Int?
    @OptionGroup var read: TraceReadOptions

    func run() throws {
        let reader = try read.open(trace)
        // Dump shows what is stored, NaN included; only the one chunk asked for is decoded.
        reader.requireFiniteValues = false
        let record = try reader.readStep(at: step, fields: [field], layers: [layer])
        guard let chunk = record.chunk(field, layer: layer) else {
            throw ValidationError("step \(step) has no field '\(field)'\(layer.map { " at layer \($0)" } ?? "")")
        }
        let t = chunk.tensor
        let values: [Double] = t.dtype.isFloatingPoint ? t.floats().map(Double.init) : t.int64s().map(Double.init)
        print(try JSONOutput.string(DumpJSON(field: field, layer: layer, dtype: t.dtype.description, shape: t.shape, values: values)))
    }
}

/// `starkv dump` output; `schemaVersion` 1 (README "Commands").
struct DumpJSON: Encodable {
    var schemaVersion = 1
    var field: String
    var layer: Int?
    var dtype: String
    var shape: [Int]
    var values: [Double]
}

struct InspectJSON: Encodable {
    struct Step: Encodable {
        var step: Int, episode: String, reset: Bool, promptLength: Int, generatedTokens: Int, images: Int, visualTokens: Int
        var chunks: Int, fields: [String], rawBytes: UInt64, storedBytes: UInt64
    }
    /// Version of this JSON's layout (not of the trace format, which is `formatVersion`).
    var schemaVersion = 1
    var formatVersion: String
    var footerPresent: Bool
    var header: TraceHeader
    var steps: [Step]
    var fileBytes: UInt64

    init(reader: TraceReader, steps: [StepSummary], fileBytes: UInt64) {
        formatVersion = "1.\(reader.minorVersion)"
        footerPresent = reader.footer == .present
        header = reader.header
        self.steps = steps.map {
            Step(step: $0.stepIndex, episode: $0.episodeID, reset: $0.reset, promptLength: $0.promptLength,
                 generatedTokens: $0.generatedTokens, images: $0.images, visualTokens: $0.visualTokens, chunks: $0.chunks,
                 fields: $0.fields, rawBytes: $0.rawBytes, storedBytes: $0.storedBytes)
        }
        self.fileBytes = fileBytes
    }
}

/// Deterministic JSON (sorted keys) for everything the CLI prints.
enum JSONOutput {
    static func string<T: Encodable>(_ value: T) throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return String(decoding: try e.encode(value), as: UTF8.self)
    }
}
