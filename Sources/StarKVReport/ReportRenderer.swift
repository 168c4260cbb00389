import Foundation
import StarKVModel
import StarKVReplay
import StarKVTrace
#if canImport(Glibc)
    import Glibc
#endif

/// Renders `ReplayResults` into the files of a report directory: `report.html` (self-contained,
/// inline SVG, no network), `steps.csv`, `runs.csv`, `trace.json` (Chrome trace events for
/// Perfetto) and `results.json`. Pure functions of the results: same results, same bytes.
public enum ReportRenderer {
    /// The files a report directory holds, in the order they are written.
    public static let fileNames = ["results.json", "steps.csv", "runs.csv", "trace.json", "report.html"]

    /// Writes every report file into `directory` (created if needed); returns the paths written.
    /// Atomic: every file is rendered and written in full under a temporary name first, then
    /// renamed into place, so a failure (a full disk) leaves no partial report. A new directory
    /// appears all at once (staged as `DIR.tmp-PID-N`). A report file that is one of `inputs`
    /// (re-rendering next to the results.json read) is left untouched, never written over; other
    /// existing files are replaced only when `overwrite`.
    @discardableResult
    public static func write(
        _ results: ReplayResults, to directory: String, overwrite: Bool = true, inputs: [String] = []
    ) throws -> [String] {
        let all: [(String, String)] = [
            ("results.json", try resultsJSON(results)),
            ("steps.csv", stepsCSV(results)),
            ("runs.csv", runsCSV(results)),
            ("trace.json", try chromeTraceJSON(results)),
            ("report.html", html(results)),
        ]
        let files = all.filter { name, _ in
            let path = (directory as NSString).appendingPathComponent(name)
            return !inputs.contains { OutputFile.isSameFile(path, $0) }
        }
        let paths = files.map { (directory as NSString).appendingPathComponent($0.0) }
        do {
            for path in paths { try OutputFile.checkWritable(path, inputs: inputs, overwrite: overwrite) }
        } catch { throw ReplayError.io(error.description) }
        let fm = FileManager.default
        var isDir: ObjCBool = false
        if !fm.fileExists(atPath: directory, isDirectory: &isDir) {
            // Stage the whole directory, then rename it into place.
            let parent = (directory as NSString).deletingLastPathComponent
            do {
                if !parent.isEmpty { try fm.createDirectory(atPath: parent, withIntermediateDirectories: true) }
            } catch { throw ReplayError.io("\(parent): cannot create the folder: \(error.localizedDescription)") }
            let staging = OutputFile.temporaryPath(for: directory)
            guard mkdir(staging, 0o755) == 0 else {
                throw ReplayError.io("\(staging): cannot create: \(String(cString: strerror(errno)))")
            }
            do {
                for (name, text) in files {
                    try OutputFile.write(Data(text.utf8), to: (staging as NSString).appendingPathComponent(name))
                }
            } catch {
                try? fm.removeItem(atPath: staging)
                throw ReplayError.io("\(error)")
            }
            guard rename(staging, directory) == 0 else {
                let reason = String(cString: strerror(errno))
                try? fm.removeItem(atPath: staging)
                throw ReplayError.io("\(directory): cannot rename \(staging) into place: \(reason)")
            }
            return paths
        }
        guard isDir.boolValue else { throw ReplayError.io("\(directory): exists and is not a folder") }
        // Existing directory: write every file under a temporary name, then rename them all.
        var staged: [String] = []
        do {
            for ((_, text), path) in zip(files, paths) { staged.append(try OutputFile.stage(Data(text.utf8), for: path)) }
            for (temp, path) in zip(staged, paths) {
                try OutputFile.commit(temporary: temp, to: path, inputs: inputs, overwrite: true)
            }
        } catch {
            for temp in staged { unlink(temp) }
            throw ReplayError.io("\(error)")
        }
        return paths
    }

    /// Loads a `results.json` written by `write` (for `starkv report`): schema v1 and v2.
    public static func load(_ path: String) throws -> ReplayResults {
        guard let data = FileManager.default.contents(atPath: path) else { throw ReplayError.io("cannot read \(path)") }
        struct Version: Decodable { var schemaVersion: Int? }
        let version = (try? JSONDecoder().decode(Version.self, from: data))?.schemaVersion
        guard let version else { throw ReplayError.io("\(path) is not a StarKV results.json: no schemaVersion") }
        guard version >= ReplayResults.oldestReadableSchemaVersion, version <= ReplayResults.currentSchemaVersion else {
            throw ReplayError.io(
                "\(path) has results schema \(version); this StarKV reads schemas \(ReplayResults.oldestReadableSchemaVersion)…\(ReplayResults.currentSchemaVersion)")
        }
        do { return try JSONDecoder().decode(ReplayResults.self, from: data) } catch {
            throw ReplayError.io("\(path) is not a StarKV results.json (schema \(version)): \(error)")
        }
    }

    public static func resultsJSON(_ r: ReplayResults) throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return String(decoding: try e.encode(r), as: UTF8.self) + "\n"
    }

    // MARK: CSV

    static func num(_ v: Double, _ digits: Int = 6) -> String { UnitFormat.fixed(v, digits) }
    static func opt(_ v: Double?, _ digits: Int = 6) -> String { v.map { num($0, digits) } ?? "" }

    /// `steps.csv`: the long, tidy table of `TidyCSV` (TabularOutput.swift).
    public static func stepsCSV(_ r: ReplayResults) -> String { TidyCSV.steps([r]) }

    /// `runs.csv`: the long, tidy table of `TidyCSV` (TabularOutput.swift).
    public static func runsCSV(_ r: ReplayResults) -> String { TidyCSV.runs([r]) }

    // MARK: Perfetto

    /// One process per run; a counter track of memory per step and spans for each step's
    /// phases laid out on a roofline time axis.
    /// Version of StarKV's `trace.json` (in `otherData`, the trace-event format's metadata).
    public static let chromeTraceSchemaVersion = 1

    public static func chromeTraceJSON(_ r: ReplayResults) throws -> String {
        var t = ChromeTrace()
        for (pid0, run) in r.runs.enumerated() {
            let pid = pid0 + 1
            t.nameProcess(pid, "\(run.policy) @ \(run.budget)")
            t.nameThread(pid, 1, "agent steps")
            var clock = 0.0
            for s in run.steps {
                let durMicros = max(1, s.rooflineSeconds * 1e6)
                t.counter(
                    "memory (GB)", pid: pid, tsMicros: clock,
                    values: [
                        "allocated_peak": s.allocatedPeakBytes / 1e9, "reserved_peak": s.reservedPeakBytes / 1e9,
                        "kv": s.kvBytes / 1e9,
                    ])
                t.span(
                    "step \(s.step)", category: "step", pid: pid, tid: 1, tsMicros: clock, durMicros: durMicros,
                    args: ["prompt_length": Double(s.promptLength), "kept_fraction": s.keptFraction, "oom": s.oom ? 1 : 0])
                let total = max(1, s.flops.totalNominal)
                var phaseClock = clock
                for (name, flops) in [("vision", s.flops.vision), ("scoring", s.flops.scoring), ("prefill", s.flops.prefillNominal), ("decode", s.flops.decode)] {
                    let d = durMicros * flops / total
                    t.span(name, category: "phase", pid: pid, tid: 2, tsMicros: phaseClock, durMicros: max(0.001, d), args: ["flops": flops])
                    phaseClock += d
                }
                clock += durMicros
            }
            t.nameThread(pid, 2, "phases (roofline time)")
        }
        struct Wrapper: Encodable {
            var traceEvents: [ChromeTrace.Event]
            var displayTimeUnit = "ms"
            /// The trace-event format's free-form metadata: where StarKV states its version.
            var otherData: [String: String]
        }
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        let meta = ["schemaVersion": String(chromeTraceSchemaVersion), "generator": r.generator, "resultsSchemaVersion": String(r.schemaVersion)]
        return String(decoding: try e.encode(Wrapper(traceEvents: t.events, otherData: meta)), as: UTF8.self) + "\n"
    }
}
