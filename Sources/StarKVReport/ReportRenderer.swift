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

    public static func stepsCSV(_ r: ReplayResults) -> String {
        var t = CSVTable(header: [
            "policy", "budget", "step", "episode", "prompt_length", "images", "kept_tokens_mean", "kept_fraction", "kv_bytes",
            "weights_bytes", "kv_now_bytes", "kv_previous_bytes", "logits_bytes", "inputs_bytes", "transient_bytes",
            "allocator_slack_bytes", "allocated_peak_bytes", "reserved_peak_bytes", "inactive_split_bytes", "oom", "oom_phase",
            "vision_flops", "prefill_flops_nominal", "prefill_flops_causal", "decode_flops", "scoring_flops", "roofline_seconds",
            "decode_mass_retained", "cached_window_mass",
        ])
        for run in r.runs {
            for s in run.steps {
                t.append([
                    run.policy, run.budget, "\(s.step)", s.episode, "\(s.promptLength)", "\(s.images)", num(s.keptTokensMean, 2),
                    num(s.keptFraction), num(s.kvBytes, 0), num(s.terms.weights, 0), num(s.terms.kvNow, 0),
                    num(s.terms.kvPrevious, 0), num(s.terms.logits, 0), num(s.terms.inputs, 0), num(s.terms.transients, 0),
                    num(s.terms.allocatorSlack, 0), num(s.allocatedPeakBytes, 0), num(s.reservedPeakBytes, 0),
                    num(s.inactiveSplitBytes, 0), s.oom ? "1" : "0", s.oomPhase ?? "", num(s.flops.vision, 0),
                    num(s.flops.prefillNominal, 0), num(s.flops.prefillCausal, 0), num(s.flops.decode, 0), num(s.flops.scoring, 0),
                    num(s.rooflineSeconds), opt(s.decodeMassRetained), opt(s.cachedWindowMass),
                ])
            }
        }
        return t.render()
    }

    public static func runsCSV(_ r: ReplayResults) -> String {
        var t = CSVTable(header: [
            "policy", "budget", "peak_allocated_bytes", "peak_reserved_bytes", "first_oom_step", "mean_kept_fraction",
            "mean_decode_mass_retained", "mean_cached_window_mass", "total_scoring_flops", "total_flops", "scoring_overhead",
            "kept_digest",
        ])
        for run in r.runs {
            let s = run.summary
            t.append([
                run.policy, run.budget, num(s.peakAllocatedBytes, 0), num(s.peakReservedBytes, 0), s.firstOOMStep.map(String.init) ?? "",
                num(s.meanKeptFraction), opt(s.meanDecodeMassRetained), opt(s.meanCachedWindowMass), num(s.totalScoringFLOPs, 0),
                num(s.totalFLOPs, 0), num(s.scoringOverhead, 9), run.keptDigest,
            ])
        }
        return t.render()
    }

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
