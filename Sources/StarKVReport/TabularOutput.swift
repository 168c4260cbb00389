import Foundation
import StarKVModel
import StarKVReplay

/// RFC 4180 CSV: fields with commas, quotes or newlines are quoted, quotes doubled.
public struct CSVTable: Sendable {
    public var header: [String]
    public var rows: [[String]] = []

    public init(header: [String]) { self.header = header }

    public mutating func append(_ row: [String]) { rows.append(row) }

    public func render() -> String {
        ([header] + rows).map { $0.map(CSVTable.quote).joined(separator: ",") }.joined(separator: "\n") + "\n"
    }

    static func quote(_ field: String) -> String {
        guard field.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return field }
        return "\"" + field.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

/// Chrome trace-event format (the JSON object form) that Perfetto and chrome://tracing open:
/// counter events ("C") for memory curves, complete events ("X") for phase spans, and
/// metadata ("M") naming processes and threads. Events keep insertion order.
public struct ChromeTrace: Sendable {
    public struct Event: Sendable, Encodable {
        public var name: String
        public var ph: String
        public var ts: Double
        public var dur: Double?
        public var pid: Int
        public var tid: Int
        public var cat: String?
        public var args: [String: Double]?
        public var nameArg: String?

        enum CodingKeys: String, CodingKey { case name, ph, ts, dur, pid, tid, cat, args }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(name, forKey: .name)
            try c.encode(ph, forKey: .ph)
            try c.encode(ts, forKey: .ts)
            try c.encodeIfPresent(dur, forKey: .dur)
            try c.encode(pid, forKey: .pid)
            try c.encode(tid, forKey: .tid)
            try c.encodeIfPresent(cat, forKey: .cat)
            if let nameArg {
                try c.encode(["name": nameArg], forKey: .args)
            } else {
                try c.encodeIfPresent(args, forKey: .args)
            }
        }
    }

    public var events: [Event] = []

    public init() {}

    /// Names process `pid` (one per policy × budget) in the Perfetto UI.
    public mutating func nameProcess(_ pid: Int, _ name: String) {
        events.append(Event(name: "process_name", ph: "M", ts: 0, pid: pid, tid: 0, nameArg: name))
    }

    public mutating func nameThread(_ pid: Int, _ tid: Int, _ name: String) {
        events.append(Event(name: "thread_name", ph: "M", ts: 0, pid: pid, tid: tid, nameArg: name))
    }

    /// A counter sample (`values` become stacked tracks named by key).
    public mutating func counter(_ name: String, pid: Int, tsMicros: Double, values: [String: Double]) {
        events.append(Event(name: name, ph: "C", ts: tsMicros, pid: pid, tid: 0, args: values))
    }

    /// A span of `durMicros` starting at `tsMicros`.
    public mutating func span(_ name: String, category: String, pid: Int, tid: Int, tsMicros: Double, durMicros: Double, args: [String: Double]? = nil) {
        events.append(Event(name: name, ph: "X", ts: tsMicros, dur: durMicros, pid: pid, tid: tid, cat: category, args: args))
    }
}

/// The long, tidy CSV tables of a replay (docs/replay.md "Outputs", docs/sweeps.md "Tables"):
/// every row carries the provenance (sweep unit, trace path and SHA-256, simulated model, GPU,
/// attention, stored KV heads, loop, policy and options) and the budget as numbers
/// (`budget_percent` or `budget_tokens`), so rows from many runs concatenate into one table.
public enum TidyCSV {
    /// Columns that come first in `steps.csv` and `runs.csv`.
    public static let provenanceHeader = [
        "unit_id", "trace_path", "trace_sha256", "trace_file", "recorded_model", "model", "gpu", "attention",
        "vision_attention", "kv_heads", "loop", "logits", "allocator", "retain_previous", "policy", "policy_name",
        "policy_options", "budget", "budget_percent", "budget_tokens",
    ]

    public static let stepsHeader = provenanceHeader + [
        "step", "episode", "prompt_length", "images", "kept_tokens_mean", "kept_fraction", "kv_bytes",
        "weights_bytes", "kv_now_bytes", "kv_previous_bytes", "logits_bytes", "inputs_bytes", "transient_bytes",
        "allocator_slack_bytes", "allocated_peak_bytes", "reserved_peak_bytes", "inactive_split_bytes", "oom", "oom_phase",
        "vision_flops", "prefill_flops_nominal", "prefill_flops_causal", "decode_flops", "scoring_flops", "roofline_seconds",
        "decode_mass_retained", "cached_window_mass",
    ]

    public static let runsHeader = provenanceHeader + [
        "peak_allocated_bytes", "peak_reserved_bytes", "oom", "first_oom_step", "mean_kept_fraction",
        "mean_decode_mass_retained", "mean_cached_window_mass", "total_scoring_flops", "total_flops", "scoring_overhead",
        "kept_digest", "replay_digest",
    ]

    static func num(_ v: Double, _ digits: Int = 6) -> String { UnitFormat.fixed(v, digits) }
    static func opt(_ v: Double?, _ digits: Int = 6) -> String { v.map { num($0, digits) } ?? "" }

    /// `512` for a `512tok` budget, nil for a percentage.
    public static func budgetTokens(_ budget: String) -> Int? {
        guard budget.hasSuffix("tok") else { return nil }
        return Int(budget.dropLast(3))
    }

    /// The provenance cells of one run, in `provenanceHeader` order.
    public static func provenance(_ r: ReplayResults, _ run: ReplayResults.RunResult) -> [String] {
        let s = r.settings
        let options = r.settings.policies.first { $0.label == run.policy }?.options ?? [:]
        return [
            r.provenance?.sweepUnit ?? "", r.provenance?.tracePath ?? r.trace.file, r.provenance?.traceSHA256 ?? "", r.trace.file,
            r.trace.recordedModel, s.simulatedModel, s.gpu, s.attention, s.visionAttention, "\(s.storedKVHeads)", s.loop, s.logits,
            s.allocator, s.retainPreviousCache ? "1" : "0", run.policy, run.policyName,
            options.keys.sorted().map { "\($0)=\(options[$0]!)" }.joined(separator: ";"), run.budget,
            opt(run.budgetPercent, 4), budgetTokens(run.budget).map(String.init) ?? "",
        ]
    }

    /// Rows of `steps.csv` (no header): one per policy × budget × step.
    public static func stepRows(_ r: ReplayResults) -> [[String]] {
        var rows: [[String]] = []
        for run in r.runs {
            let p = provenance(r, run)
            for s in run.steps {
                rows.append(
                    p + [
                        "\(s.step)", s.episode, "\(s.promptLength)", "\(s.images)", num(s.keptTokensMean, 2), num(s.keptFraction),
                        num(s.kvBytes, 0), num(s.terms.weights, 0), num(s.terms.kvNow, 0), num(s.terms.kvPrevious, 0),
                        num(s.terms.logits, 0), num(s.terms.inputs, 0), num(s.terms.transients, 0), num(s.terms.allocatorSlack, 0),
                        num(s.allocatedPeakBytes, 0), num(s.reservedPeakBytes, 0), num(s.inactiveSplitBytes, 0), s.oom ? "1" : "0",
                        s.oomPhase ?? "", num(s.flops.vision, 0), num(s.flops.prefillNominal, 0), num(s.flops.prefillCausal, 0),
                        num(s.flops.decode, 0), num(s.flops.scoring, 0), num(s.rooflineSeconds), opt(s.decodeMassRetained),
                        opt(s.cachedWindowMass),
                    ])
            }
        }
        return rows
    }

    /// Rows of `runs.csv` (no header): one per policy × budget.
    public static func runRows(_ r: ReplayResults) -> [[String]] {
        r.runs.map { run in
            let s = run.summary
            return provenance(r, run) + [
                num(s.peakAllocatedBytes, 0), num(s.peakReservedBytes, 0), s.firstOOMStep == nil ? "0" : "1",
                s.firstOOMStep.map(String.init) ?? "", num(s.meanKeptFraction), opt(s.meanDecodeMassRetained),
                opt(s.meanCachedWindowMass), num(s.totalScoringFLOPs, 0), num(s.totalFLOPs, 0), num(s.scoringOverhead, 9),
                run.keptDigest, r.digest,
            ]
        }
    }

    public static func steps(_ results: [ReplayResults]) -> String {
        var t = CSVTable(header: stepsHeader)
        for r in results { t.rows += stepRows(r) }
        return t.render()
    }

    public static func runs(_ results: [ReplayResults]) -> String {
        var t = CSVTable(header: runsHeader)
        for r in results { t.rows += runRows(r) }
        return t.render()
    }
}
