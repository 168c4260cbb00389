import ArgumentParser
import Foundation
import StarKVPolicies
import StarKVTrace

/// `starkv bench-read`: the floors of a replay, for benchmarks/replay/ (README there).
/// Reads every step of a trace with the given fields (CRC32C check, zstd decompression, byte
/// unshuffle) and, with `--policy`, runs that policy's scoring on each step with its state
/// carried, timing reading and scoring apart. Nothing else: no memory simulation, quality
/// proxy, digest or report. Hidden from `--help`: a benchmark tool, not the user workflow.
struct BenchRead: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-read",
        abstract: "Benchmark: decompress a trace's fields (and optionally run one policy's scoring) without replaying.",
        discussion: ExitStatus.help,
        shouldDisplay: false)

    @Argument(help: "Trace file.") var trace: String
    @Option(help: "Comma-separated fields to decompress (default: those `starkv replay` reads for snapkv and starkv, or the policy's fields with --policy).")
    var fields: String?
    @Option(help: "Also run this policy's scoring on every step (registry name, default options).") var policy: String?
    @Option(parsing: .unconditional, help: "Budget for --policy: percent (20) or tokens (512tok).") var budget = "20"
    @Option(help: "Passes over the trace; the fastest is reported.") var repeats = 3
    @Flag(help: "Print JSON instead of text.") var json = false

    struct Result: Encodable {
        var schemaVersion = 1
        var trace: String
        var fields: [String]
        var policy: String?
        var budget: String?
        var steps: Int
        var chunks: Int
        var rawBytes: UInt64
        /// Fastest pass: reading + scoring.
        var seconds: Double
        /// Of that pass: reading and decompressing.
        var readSeconds: Double
        /// Of that pass: the policy's `compress` calls (0 without --policy).
        var scoringSeconds: Double
        var stepsPerSecond: Double
        var rawMBPerSecond: Double
    }

    func validate() throws {
        guard (1...1000).contains(repeats) else { throw ValidationError("--repeats must be in 1...1000") }
    }

    func run() throws {
        let reader = try TraceReader(path: trace)
        let kvPolicy = try policy.map { try PolicyRegistry.make($0, options: PolicyOptions()) }
        let kvBudget: KVBudget
        do { kvBudget = try KVBudget.parseChecked(budget) } catch { throw ValidationError("--budget: \(error.description)") }
        let wanted: Set<String>
        if let fields {
            wanted = Set(fields.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty })
        } else if let kvPolicy {
            wanted = Set(kvPolicy.requiredFields)
        } else {
            wanted = [TraceField.winSum, TraceField.hidNorm, TraceField.decodeAttnSum]
        }
        let missing = wanted.filter { !reader.header.has($0) }.sorted()
        guard missing.isEmpty else {
            throw ValidationError("\(trace): the header does not list field(s) \(missing.joined(separator: ", ")); recorded: \(reader.header.fields.joined(separator: ", "))")
        }
        try kvPolicy?.validate(header: reader.header)
        let clock = ContinuousClock()
        func seconds(_ d: Duration) -> Double { Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18 }
        var best: (total: Double, read: Double, scoring: Double) = (.infinity, 0, 0)
        var chunks = 0
        var raw: UInt64 = 0
        for _ in 0..<repeats {
            chunks = 0
            raw = 0
            var read = 0.0, scoring = 0.0
            var state = kvPolicy?.initialState ?? .empty
            for i in 0..<reader.stepCount {
                let t0 = clock.now
                let step = try reader.readStep(at: i, fields: wanted)
                let t1 = clock.now
                read += seconds(t1 - t0)
                chunks += step.chunks.count
                for c in step.chunks { raw += UInt64(c.tensor.bytes.count) }
                if let kvPolicy {
                    let out = try kvPolicy.compress(PolicyStepInput(header: reader.header, step: step, budget: kvBudget), state: state)
                    state = out.state
                    scoring += seconds(clock.now - t1)
                }
            }
            if read + scoring < best.total { best = (read + scoring, read, scoring) }
        }
        let r = Result(
            trace: trace, fields: wanted.sorted(), policy: kvPolicy?.name, budget: kvPolicy == nil ? nil : kvBudget.description,
            steps: reader.stepCount, chunks: chunks, rawBytes: raw, seconds: best.total, readSeconds: best.read,
            scoringSeconds: best.scoring, stepsPerSecond: Double(reader.stepCount) / best.total,
            rawMBPerSecond: Double(raw) / 1e6 / best.read)
        if json {
            print(try JSONOutput.string(r))
        } else {
            var line = String(format: "%@: %d steps, %d chunks, %.1f MB raw (%@): read %.3f s (%.0f MB/s)",
                              trace, r.steps, r.chunks, Double(raw) / 1e6, r.fields.joined(separator: ","), best.read, r.rawMBPerSecond)
            if let p = r.policy { line += String(format: ", %@ %@ scoring %.3f s", p, r.budget ?? "", best.scoring) }
            line += String(format: "; %.2f steps/s", r.stepsPerSecond)
            print(line)
        }
    }
}
