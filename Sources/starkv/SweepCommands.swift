import ArgumentParser
import Foundation
import StarKVModel
import StarKVReplay
import StarKVSweep
import StarKVTrace

/// `starkv sweep plan|run`: sweeps of traces × settings × policies × budgets (docs/sweeps.md).
struct SweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Plan or run a sweep file (traces × settings × policies × budgets), whole or one shard at a time.",
        discussion: """
            Examples:
              starkv sweep plan sweep.toml
              starkv sweep run sweep.toml --out out/sweep                       # whole sweep, merged
              starkv sweep run sweep.toml --shard 0/4 --out out/shard0           # shard 0 of 4
              starkv merge out/shard0 out/shard1 out/shard2 out/shard3 --out out/sweep
            The sweep-file format is described in docs/sweeps.md.
            """,
        subcommands: [SweepPlanCommand.self, SweepRunCommand.self])
}

/// Loads a sweep file, lays out its plan and checks every unit's flags against its trace.
enum SweepLoader {
    static func load(_ path: String) throws -> (SweepSpec, SweepPlan, String) {
        let spec = try SweepSpec.load(path: path)
        let base = (path as NSString).deletingLastPathComponent
        let plan = try spec.plan(baseDirectory: base)
        return (spec, plan, base)
    }

    /// The replay request of one unit (the same flag handling as `starkv replay`).
    static func request(plan: SweepPlan, unit: SweepUnit, tracePath: String, header: TraceHeader, threads: Int) throws -> ReplayRequest {
        do {
            return try ReplayOptionsParser.request(
                trace: tracePath, header: header, policies: plan.policies.joined(separator: ","),
                budgets: plan.budgets.joined(separator: ","), loop: unit.loop, model: unit.model, gpu: unit.gpu, attn: unit.attention,
                visionAttn: nil, kvHeads: unit.kvHeads, logits: plan.logits, allocator: plan.allocator,
                retainPrevious: plan.retainPrevious, threads: threads, dumpKept: nil, generator: "starkv \(StarKV.version)")
        } catch {
            throw SweepError.plan("unit \(unit.id) (\(unit.key)): \(error)")
        }
    }

    /// Builds every unit's request once, so a bad GPU name or policy fails before any replay.
    static func validate(plan: SweepPlan, base: String, units: [SweepUnit]) throws {
        var headers: [String: TraceHeader] = [:]
        for unit in units {
            let path = unit.trace.hasPrefix("/") || base.isEmpty ? unit.trace : (base as NSString).appendingPathComponent(unit.trace)
            if headers[path] == nil {
                do { headers[path] = try TraceReader(path: path).header } catch {
                    throw SweepError.plan("unit \(unit.id): trace \(unit.trace): \(error)")
                }
            }
            _ = try request(plan: plan, unit: unit, tracePath: path, header: headers[path]!, threads: 1)
        }
    }
}

struct SweepPlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan", abstract: "List the work units of a sweep file in their fixed order, with stable IDs.")

    @Argument(help: "Sweep file (TOML, docs/sweeps.md).") var sweep: String
    @Option(help: "Mark the units of shard I/N (0-based I).") var shard: String?
    @Flag(help: "Print the plan as JSON (what 'sweep run' writes to plan.json).") var json = false

    func run() throws {
        let (_, plan, base) = try SweepLoader.load(sweep)
        try SweepLoader.validate(plan: plan, base: base, units: plan.units)
        if json {
            print(try SweepJSON.encode(plan), terminator: "")
            return
        }
        let sh = try shard.map(SweepPlan.parseShard)
        var t = TextTable([
            ("#", .right), ("unit", .left), ("shard", .right), ("trace", .left), ("model", .left), ("gpu", .left), ("attn", .left),
            ("kv heads", .right), ("loop", .left),
        ])
        for u in plan.units {
            let mark = sh.map { u.index % $0.1 == $0.0 ? "\($0.0)" : "" } ?? ""
            t.append([
                "\(u.index)", u.id, mark, u.trace, u.model ?? "(trace)", u.gpu, u.attention ?? "(trace)",
                u.kvHeads.map(String.init) ?? "(trace)", u.loop,
            ])
        }
        print(t.render())
        print(
            "\(plan.units.count) units × \(plan.policies.count == 1 && plan.policies[0] == "all" ? "all" : String(plan.policies.count)) policies × \(plan.budgets.count) budgets (\(plan.budgets.joined(separator: ", "))); plan \(plan.fingerprint)"
        )
    }
}

struct SweepRunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a sweep's units (all, one shard, or named units) into a directory; a whole sweep is merged there too.")

    @Argument(help: "Sweep file (TOML, docs/sweeps.md).") var sweep: String
    @Option(help: "Run shard I of N only (0 <= I < N; unit index mod N == I), e.g. --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT.")
    var shard: String?
    @Option(help: "Run only this unit (repeatable; IDs from 'starkv sweep plan').") var unit: [String] = []
    @Option(help: "Output directory (shard directory, or the merged sweep when every unit runs).") var out: String
    @Option(help: "Worker threads per unit (default: the sweep file's 'threads', else every core; results are identical for any value).")
    var threads: Int?
    @Flag(help: "Keep units already complete and consistent in --out (after a killed or timed-out run); run the rest.")
    var resume = false
    @Flag(help: "No per-unit progress lines.") var quiet = false

    func run() throws {
        let (spec, plan, base) = try SweepLoader.load(sweep)
        var units = plan.units
        if let shard {
            let (i, n) = try SweepPlan.parseShard(shard)
            units = try plan.units(shard: i, of: n)
        }
        if !unit.isEmpty {
            guard shard == nil else { throw ValidationError("give --shard or --unit, not both") }
            units = try unit.map { try plan.unit(id: $0) }.sorted { $0.index < $1.index }
            if let dup = Dictionary(grouping: units, by: \.id).first(where: { $0.value.count > 1 }) {
                throw ValidationError("--unit \(dup.key) is given twice")
            }
        }
        let nThreads = threads ?? spec.threads ?? ProcessInfo.processInfo.activeProcessorCount
        guard nThreads >= 1, nThreads <= 1024 else { throw ValidationError("--threads must be in 1...1024") }
        try SweepLoader.validate(plan: plan, base: base, units: units)
        let start = Date()
        let (ran, kept) = try SweepOutput.run(
            plan: plan, units: units, baseDirectory: base, directory: out, resume: resume,
            replay: { unit, path in
                let header = try TraceReader(path: path).header
                let request = try SweepLoader.request(plan: plan, unit: unit, tracePath: path, header: header, threads: nThreads)
                return try Replay.run(request)
            },
            progress: { done, total, unit in
                if !quiet {
                    FileHandle.standardError.write(
                        Data("[\(done)/\(total)] \(unit.id) \(unit.key) (\(UnitFormat.fixed(Date().timeIntervalSince(start), 1)) s)\n".utf8))
                }
            })
        let whole = Set(units.map(\.id)) == Set(plan.units.map(\.id))
        print("\(ran) of \(plan.units.count) units written to \(out)/units\(resume ? " (\(kept) already complete, kept)" : "")")
        if whole {
            let digests = (try? String(contentsOfFile: (out as NSString).appendingPathComponent("digests.txt"), encoding: .utf8)) ?? ""
            print("merged sweep: \(out)/index.html (sweep.json, steps.csv, runs.csv, digests.txt)")
            if let first = digests.split(separator: "\n").first { print(first.replacingOccurrences(of: "sweep ", with: "sweep digest: ")) }
        } else {
            print("merge the shards with: starkv merge DIR... --out DIR")
        }
    }
}

/// `starkv merge`: checks shard directories and writes one merged sweep.
struct MergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Merge sweep shard directories: every unit exactly once, consistent digests; write one results file and report.")

    @Argument(help: "Shard directories written by 'starkv sweep run --shard'.") var directories: [String]
    @Option(help: "Merged output directory (must not be one of the inputs).") var out: String

    func run() throws {
        guard !directories.isEmpty else { throw ValidationError("give at least one shard directory") }
        let outReal = Self.realPath(out)
        for d in directories where Self.realPath(d) == outReal {
            throw ValidationError("--out \(out) is the input directory \(d); merge into a new directory")
        }
        let s = try SweepOutput.merge(inputs: directories, into: out)
        print("\(s.units.count) units merged into \(out): index.html, sweep.json, steps.csv, runs.csv, digests.txt")
        print("sweep digest: \(s.digest)")
    }

    static func realPath(_ p: String) -> String {
        let url = URL(fileURLWithPath: p).standardizedFileURL
        return url.resolvingSymlinksInPath().path
    }
}
