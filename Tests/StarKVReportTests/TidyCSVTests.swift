import Foundation
import Testing
@testable import StarKVReplay
@testable import StarKVReport

/// The tidy CSV tables: provenance columns on every row, numeric budgets, options text.
@Suite struct TidyCSVTests {
    static func results(provenance: Provenance?) -> ReplayResults {
        func step(_ i: Int, oom: Bool) -> ReplayResults.StepResult {
            ReplayResults.StepResult(
                step: i, episode: "ep", promptLength: 100 + i, images: 1, keptTokensMean: 20, keptFraction: 0.2, kvBytes: 1000,
                terms: .init(weights: 1, kvNow: 2, kvPrevious: 3, logits: 4, inputs: 5, transients: 6, allocatorSlack: 7),
                allocatedPeakBytes: 2e9, reservedPeakBytes: 3e9, inactiveSplitBytes: 0, oom: oom, oomPhase: oom ? "prefill" : nil,
                flops: .init(vision: 1, prefillNominal: 2, prefillCausal: 3, decode: 4, scoring: 5), rooflineSeconds: 0.5,
                decodeMassRetained: 0.9, cachedWindowMass: nil, imageShareBefore: [], imageShareAfter: [])
        }
        func run(_ policy: String, _ name: String, _ budget: String, _ pct: Double?) -> ReplayResults.RunResult {
            ReplayResults.RunResult(
                policy: policy, policyName: name, budget: budget, budgetPercent: pct, keptDigest: "k-\(policy)-\(budget)",
                steps: [step(0, oom: false), step(1, oom: budget == "512tok")],
                summary: .init(
                    peakAllocatedBytes: 2e9, peakReservedBytes: 3e9, firstOOMStep: budget == "512tok" ? 1 : nil, meanKeptFraction: 0.2,
                    meanDecodeMassRetained: 0.9, meanCachedWindowMass: nil, totalScoringFLOPs: 10, totalFLOPs: 20, scoringOverhead: 0.5))
        }
        let settings = ReplayResults.Settings(
            policies: [PolicySpec(name: "starkv", options: ["temporal": "off", "mi": "off"]), PolicySpec(name: "snapkv")],
            budgets: ["12.5%", "512tok"], loop: "reprefill", simulatedModel: "qwen2.5-vl-7b", gpu: "a100-sxm-80gb",
            gpuCapacityBytes: 8e10, attention: "eager", visionAttention: "flash", storedKVHeads: 28, logits: "full",
            allocator: "torchCaching", retainPreviousCache: false)
        return ReplayResults(
            schemaVersion: 1, generator: "test",
            trace: .init(
                file: "t.starkv", recordedModel: "tiny-vl", recorder: "synth", fidelity: "standard", steps: 2, screen: "1x1", imageSlots: 1,
                footerPresent: true, goldenChecks: []),
            settings: settings,
            runs: [run("starkv(mi=off,temporal=off)", "starkv", "12.5%", 12.5), run("snapkv", "snapkv", "512tok", nil)],
            notes: [], digest: "D", provenance: provenance)
    }

    /// RFC 4180 reading (quoted fields may hold commas and doubled quotes; no newlines here).
    static func fields(_ line: Substring) -> [String] {
        var out: [String] = []
        var cur = ""
        var quoted = false
        var chars = Array(line)[...]
        while let c = chars.popFirst() {
            if quoted {
                if c == "\"" {
                    if chars.first == "\"" { cur.append("\""); chars.removeFirst() } else { quoted = false }
                } else { cur.append(c) }
            } else if c == "\"" {
                quoted = true
            } else if c == "," {
                out.append(cur)
                cur = ""
            } else { cur.append(c) }
        }
        out.append(cur)
        return out
    }

    static func rows(_ csv: String) -> [[String: String]] {
        let lines = csv.split(separator: "\n").map(fields)
        return lines.dropFirst().map { Dictionary(uniqueKeysWithValues: zip(lines[0], $0)) }
    }

    @Test func everyStepRowCarriesProvenanceAndNumericBudgets() {
        let r = Self.results(provenance: Provenance(tracePath: "traces/t.starkv", traceSHA256: "abc", sweepUnit: "u1", sweepFingerprint: "f"))
        let rows = Self.rows(ReportRenderer.stepsCSV(r))
        #expect(rows.count == 4)
        #expect(rows.allSatisfy { $0["unit_id"] == "u1" && $0["trace_path"] == "traces/t.starkv" && $0["trace_sha256"] == "abc" })
        #expect(rows.allSatisfy { $0["gpu"] == "a100-sxm-80gb" && $0["attention"] == "eager" && $0["kv_heads"] == "28" })
        #expect(rows.allSatisfy { $0["retain_previous"] == "0" && $0["model"] == "qwen2.5-vl-7b" && $0["recorded_model"] == "tiny-vl" })
        #expect(rows[0]["policy"] == "starkv(mi=off,temporal=off)" && rows[0]["policy_name"] == "starkv")
        #expect(rows[0]["policy_options"] == "mi=off;temporal=off")
        #expect(rows[0]["budget_percent"] == "12.5000" && rows[0]["budget_tokens"] == "")
        #expect(rows[2]["budget_percent"] == "" && rows[2]["budget_tokens"] == "512" && rows[2]["policy_options"] == "")
        #expect(rows[3]["oom"] == "1" && rows[3]["oom_phase"] == "prefill" && rows[2]["oom"] == "0")
        #expect(rows[1]["step"] == "1" && rows[1]["prompt_length"] == "101" && rows[1]["allocated_peak_bytes"] == "2000000000")
        #expect(rows.allSatisfy { $0.count == TidyCSV.stepsHeader.count })
    }

    @Test func runRowsCarryTheOOMFlagAndTheReplayDigest() {
        let rows = Self.rows(ReportRenderer.runsCSV(Self.results(provenance: nil)))
        #expect(rows.count == 2)
        // Without provenance (results from before it existed): the trace file name, no SHA-256, no unit.
        #expect(rows.allSatisfy { $0["unit_id"] == "" && $0["trace_path"] == "t.starkv" && $0["trace_sha256"] == "" })
        #expect(rows[0]["oom"] == "0" && rows[0]["first_oom_step"] == "")
        #expect(rows[1]["oom"] == "1" && rows[1]["first_oom_step"] == "1")
        #expect(rows.allSatisfy { $0["replay_digest"] == "D" })
        #expect(rows[1]["kept_digest"] == "k-snapkv-512tok")
    }

    @Test func tablesOfSeveralResultsConcatenateUnderOneHeader() {
        let a = Self.results(provenance: Provenance(tracePath: "a", traceSHA256: "1", sweepUnit: "ua"))
        let b = Self.results(provenance: Provenance(tracePath: "b", traceSHA256: "2", sweepUnit: "ub"))
        let joined = TidyCSV.steps([a, b])
        let single = TidyCSV.steps([a]) + TidyCSV.steps([b]).split(separator: "\n", maxSplits: 1)[1]
        #expect(joined == single)
        #expect(Self.rows(joined).map { $0["unit_id"]! } == ["ua", "ua", "ua", "ua", "ub", "ub", "ub", "ub"])
    }

    @Test func provenanceIsOptionalInResultsJSON() throws {
        let without = Self.results(provenance: nil)
        let json = try ReportRenderer.resultsJSON(without)
        #expect(!json.contains("provenance"))
        let with = Self.results(provenance: Provenance(tracePath: "p", traceSHA256: "s"))
        let back = try JSONDecoder().decode(ReplayResults.self, from: Data(try ReportRenderer.resultsJSON(with).utf8))
        #expect(back == with)
        #expect(try JSONDecoder().decode(ReplayResults.self, from: Data(json.utf8)).provenance == nil)
    }
}
