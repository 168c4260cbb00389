import ArgumentParser
import Foundation
import StarKVTrace

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a trace's header and a per-step table of sizes and compression ratios.")

    @Argument(help: "Trace file.") var trace: String
    @Flag(help: "Print JSON instead of text.") var json = false

    func run() throws {
        let reader = try TraceReader(path: trace)
        let steps = try reader.summaries()
        let size = (try? FileManager.default.attributesOfItem(atPath: trace)[.size] as? UInt64) ?? 0
        if json {
            print(try JSONOutput.string(InspectJSON(reader: reader, steps: steps, fileBytes: size)))
        } else {
            print(TraceInspection.render(header: reader.header, footer: reader.footer, minorVersion: reader.minorVersion, steps: steps, fileBytes: size))
        }
    }
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Verify every checksum and shape of a trace; exit 0 when intact, 1 otherwise.")

    @Argument(help: "Trace file.") var trace: String

    func run() throws {
        do {
            let report = try TraceReader(path: trace).validate()
            var verdict = "OK: \(trace): \(report.steps) steps, \(report.chunks) chunks, \(report.storedBytes) bytes verified"
            if case .missing(let note) = report.footer {
                verdict = "OK (no footer): \(trace): \(report.steps) complete steps verified; \(note); run 'starkv recover'"
            }
            print(verdict)
        } catch let error as TraceError {
            print("FAIL: \(error)")
            throw ExitCode(1)
        }
    }
}

struct Recover: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a copy of a footer-less trace (recorder killed mid-write) with a footer; the input is not modified.")

    @Argument(help: "Trace file.") var trace: String
    @Option(name: .shortAndLong, help: "Output file (default: <trace>.recovered.starkv).") var output: String?

    func run() throws {
        let out = output ?? (trace.hasSuffix(".starkv") ? String(trace.dropLast(7)) : trace) + ".recovered.starkv"
        let report = try TraceRecovery.recover(input: trace, output: out)
        if report.alreadyComplete {
            print("\(trace) already had a footer; wrote an identical copy with \(report.steps) steps to \(out)")
        } else {
            print("recovered \(report.steps) complete steps into \(out) (\(report.droppedTailBytes) bytes of an incomplete step dropped)")
        }
    }
}

struct Dump: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print one tensor of a step as JSON {field, layer, dtype, shape, values}.")

    @Argument(help: "Trace file.") var trace: String
    @Option(help: "Step position in the trace (0-based).") var step: Int
    @Option(help: "Field name, e.g. win_sum.") var field: String
    @Option(help: "Decoder layer (omit for a step-level field).") var layer: Int?

    func run() throws {
        let reader = try TraceReader(path: trace)
        let record = try reader.readStep(at: step, fields: [field])
        guard let chunk = record.chunk(field, layer: layer) else {
            throw ValidationError("step \(step) has no field '\(field)'\(layer.map { " at layer \($0)" } ?? "")")
        }
        let t = chunk.tensor
        let values: [Double] = t.dtype.isFloatingPoint ? t.floats().map(Double.init) : t.int64s().map(Double.init)
        print(try JSONOutput.string(DumpJSON(field: field, layer: layer, dtype: t.dtype.description, shape: t.shape, values: values)))
    }
}

struct DumpJSON: Encodable {
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
