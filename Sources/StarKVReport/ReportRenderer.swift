import Foundation
import StarKVModel
import StarKVReplay

/// Renders `ReplayResults` into the files of a report directory: `report.html` (self-contained,
/// inline SVG, no network), `steps.csv`, `runs.csv`, `trace.json` (Chrome trace events for
/// Perfetto) and `results.json`. Pure functions of the results: same results, same bytes.
public enum ReportRenderer {
    /// Writes every report file into `directory` (created if needed); returns the paths written.
    @discardableResult
    public static func write(_ results: ReplayResults, to directory: String) throws -> [String] {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let files: [(String, String)] = [
            ("results.json", try resultsJSON(results)),
            ("steps.csv", stepsCSV(results)),
            ("runs.csv", runsCSV(results)),
            ("trace.json", try chromeTraceJSON(results)),
            ("report.html", html(results)),
        ]
        var written: [String] = []
        for (name, text) in files {
            let path = (directory as NSString).appendingPathComponent(name)
            guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8)) else {
                throw ReplayError.io("cannot write \(path)")
            }
            written.append(path)
        }
        return written
    }

    /// Loads a `results.json` written by `write` (for `starkv report`).
    public static func load(_ path: String) throws -> ReplayResults {
        guard let data = FileManager.default.contents(atPath: path) else { throw ReplayError.io("cannot read \(path)") }
        let results: ReplayResults
        do { results = try JSONDecoder().decode(ReplayResults.self, from: data) } catch {
            throw ReplayError.io("\(path) is not a StarKV results.json: \(error)")
        }
        guard results.schemaVersion <= ReplayResults.currentSchemaVersion else {
            throw ReplayError.io(
                "\(path) has results schema \(results.schemaVersion); this StarKV reads up to \(ReplayResults.currentSchemaVersion)")
        }
        return results
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
        }
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys]
        return String(decoding: try e.encode(Wrapper(traceEvents: t.events)), as: UTF8.self) + "\n"
    }
}
