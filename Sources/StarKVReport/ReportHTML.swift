import StarKVModel
import StarKVReplay

extension ReportRenderer {
    /// The self-contained HTML report (inline CSS and SVG; no scripts, no network).
    public static func html(_ r: ReplayResults) -> String {
        let e = HTML.escape
        let policies = orderedUnique(r.runs.map(\.policy))
        let budgets = sortedBudgets(r.runs)
        let color = Dictionary(uniqueKeysWithValues: policies.enumerated().map { ($1, SVGChart.palette[$0 % SVGChart.palette.count]) })
        let capacityGB = r.settings.gpuCapacityBytes / 1e9
        var body = ""

        body += "<h1>StarKV replay report</h1>\n"
        body += "<p class=\"lede\">Trace <code>\(e(r.trace.file))</code> (\(r.trace.steps) steps, \(e(r.trace.screen)), \(r.trace.imageSlots) image slots, recorded model \(e(r.trace.recordedModel)), fidelity \(e(r.trace.fidelity))) replayed under \(policies.count) policies × \(budgets.count) budgets. Memory simulated for <b>\(e(r.settings.simulatedModel))</b> on <b>\(e(r.settings.gpu))</b> (\(UnitFormat.gb(r.settings.gpuCapacityBytes)) GB = \(UnitFormat.gib(r.settings.gpuCapacityBytes)) GiB usable), \(e(r.settings.attention)) attention (ViT \(e(r.settings.visionAttention))), KV stored at \(r.settings.storedKVHeads) heads, \(e(r.settings.logits)) logits, \(e(r.settings.loop)) loop, \(e(r.settings.allocator)) allocator.</p>\n"
        body += "<p class=\"units\">Units: GB = 10<sup>9</sup> bytes, GiB = 2<sup>30</sup> bytes. Peaks are allocator-level (<code>max_memory_allocated</code> / <code>max_memory_reserved</code> as torch reports them).</p>\n"
        if !r.notes.isEmpty {
            body += "<div class=\"notes\"><b>Notes</b><ul>" + r.notes.map { "<li>\(e($0))</li>" }.joined() + "</ul></div>\n"
        }

        // Headline table.
        body += "<h2>Summary</h2>\n<table><thead><tr><th>policy</th><th>budget</th><th>peak allocated GB</th><th>GiB</th><th>peak reserved GB</th><th>fits \(e(r.settings.gpu))?</th><th>first OOM step</th><th>mean kept</th><th>quality (decode mass kept)</th><th>scoring FLOPs</th><th>scoring / prefill</th></tr></thead><tbody>\n"
        for run in r.runs {
            let s = run.summary
            let fits = s.firstOOMStep == nil
            body += "<tr><td>\(e(run.policy))</td><td>\(e(run.budget))</td><td class=\"n\">\(UnitFormat.gb(s.peakAllocatedBytes))</td><td class=\"n\">\(UnitFormat.gib(s.peakAllocatedBytes))</td><td class=\"n\">\(UnitFormat.gb(s.peakReservedBytes))</td><td class=\"\(fits ? "ok" : "bad")\">\(fits ? "yes" : "no")</td><td class=\"n\">\(s.firstOOMStep.map(String.init) ?? "–")</td><td class=\"n\">\(UnitFormat.fixed(100 * s.meanKeptFraction, 1))%</td><td class=\"n\">\(s.meanDecodeMassRetained.map { UnitFormat.fixed($0, 4) } ?? "–")</td><td class=\"n\">\(flopsText(s.totalScoringFLOPs))</td><td class=\"n\">\(UnitFormat.fixed(100 * s.scoringOverhead, 4))%</td></tr>\n"
        }
        body += "</tbody></table>\n"

        // Memory over steps, one chart per budget.
        body += "<h2>Memory over steps</h2>\n<p>Peak allocated memory of each step; the dashed line is the usable capacity of the GPU; a circle marks the first step that would run out of memory.</p>\n<div class=\"grid\">\n"
        for budget in budgets {
            var chart = SVGChart(title: "Peak allocated memory per step — budget \(budget)", xLabel: "agent step", yLabel: "GB")
            // The full-cache baseline (run once, at 100 %) is drawn dashed in every budget's chart.
            for run in r.runs where run.budget == budget || (run.policyName == "full" && budget != run.budget) {
                let baseline = run.budget != budget
                chart.lines.append(
                    .init(
                        name: baseline ? "\(run.policy) (\(run.budget))" : run.policy,
                        points: run.steps.map { (Double($0.step), $0.allocatedPeakBytes / 1e9) }, color: color[run.policy]!,
                        dashed: baseline))
                if let oom = run.summary.firstOOMStep, let s = run.steps.first(where: { $0.step == oom }) {
                    chart.markers.append(.init(x: Double(oom), y: s.allocatedPeakBytes / 1e9, label: "OOM \(run.policy)"))
                }
            }
            chart.horizontalLines = [(capacityGB, "\(r.settings.gpu) capacity")]
            body += "<figure>\(chart.render())</figure>\n"
        }
        body += "</div>\n"

        // Stacked terms at the focus budget.
        if let focus = focusBudget(budgets) {
            body += "<h2>What the memory is made of — budget \(e(focus))</h2>\n<p>Live bytes at each step's peak, stacked by term: weights, KV cache of this step, KV retained from the previous step, logits, inputs (pixels, embeddings), transients (MLP, attention, ViT) and allocator slack (reserved − allocated).</p>\n<div class=\"grid\">\n"
            let termColors = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1"]
            for run in r.runs where run.budget == focus {
                var chart = SVGChart(title: "\(run.policy) @ \(focus)", xLabel: "agent step", yLabel: "GB")
                let terms: [(String, (ReplayResults.MemoryTerms) -> Double)] = [
                    ("weights", { $0.weights }), ("KV now", { $0.kvNow }), ("KV previous step", { $0.kvPrevious }),
                    ("logits", { $0.logits }), ("inputs", { $0.inputs }), ("transients", { $0.transients }),
                    ("allocator slack", { $0.allocatorSlack }),
                ]
                for (i, (name, get)) in terms.enumerated() {
                    chart.stackedAreas.append(.init(name: name, points: run.steps.map { (Double($0.step), get($0.terms) / 1e9) }, color: termColors[i]))
                }
                chart.horizontalLines = [(capacityGB, "capacity")]
                chart.width = 560
                chart.height = 300
                body += "<figure>\(chart.render())</figure>\n"
            }
            body += "</div>\n"
        }

        // Peak vs budget and quality vs budget.
        let numericBudgets = r.runs.compactMap(\.budgetPercent)
        if !numericBudgets.isEmpty {
            var peak = SVGChart(title: "Peak allocated memory vs budget", xLabel: "KV budget (% of prompt)", yLabel: "GB")
            var quality = SVGChart(title: "Quality proxy vs budget (share of decode attention kept)", xLabel: "KV budget (% of prompt)", yLabel: "share")
            peak.xTicks = orderedUniqueDoubles(numericBudgets)
            quality.xTicks = peak.xTicks
            for p in policies {
                let runs = r.runs.filter { $0.policy == p && $0.budgetPercent != nil }.sorted { $0.budgetPercent! < $1.budgetPercent! }
                peak.lines.append(.init(name: p, points: runs.map { ($0.budgetPercent!, $0.summary.peakAllocatedBytes / 1e9) }, color: color[p]!))
                let q = runs.compactMap { run in run.summary.meanDecodeMassRetained.map { (run.budgetPercent!, $0) } }
                if !q.isEmpty { quality.lines.append(.init(name: p, points: q, color: color[p]!)) }
            }
            peak.horizontalLines = [(capacityGB, "capacity")]
            body += "<h2>Budget sweeps</h2>\n<div class=\"grid\"><figure>\(peak.render())</figure>\n"
            if !quality.lines.isEmpty { body += "<figure>\(quality.render())</figure>\n" }
            body += "</div>\n"
        }

        // FLOPs table.
        body += "<h2>FLOPs</h2>\n<p>Totals over the trace. Prefill uses the nominal (full-count) attention convention; scoring is the compression stage of each policy (docs/algorithms.md §11).</p>\n<table><thead><tr><th>policy</th><th>budget</th><th>vision</th><th>prefill (nominal)</th><th>prefill (causal)</th><th>decode</th><th>scoring</th><th>scoring / prefill</th></tr></thead><tbody>\n"
        for run in r.runs {
            let sum = run.steps.reduce(into: [0.0, 0, 0, 0, 0]) { a, s in
                a[0] += s.flops.vision; a[1] += s.flops.prefillNominal; a[2] += s.flops.prefillCausal; a[3] += s.flops.decode; a[4] += s.flops.scoring
            }
            body += "<tr><td>\(e(run.policy))</td><td>\(e(run.budget))</td>" + sum.map { "<td class=\"n\">\(flopsText($0))</td>" }.joined() + "<td class=\"n\">\(UnitFormat.fixed(100 * run.summary.scoringOverhead, 4))%</td></tr>\n"
        }
        body += "</tbody></table>\n"

        // Per-screenshot share at the last step.
        if let focus = focusBudget(budgets), let anyRun = r.runs.first(where: { $0.budget == focus }), let last = anyRun.steps.last, !last.imageShareBefore.isEmpty {
            body += "<h2>Which screenshots occupy the cache — last step, budget \(e(focus))</h2>\n<p>Share of the prompt (before) and of the kept cache (after compression) held by each screenshot's visual tokens; age 0 is the current screenshot.</p>\n<table><thead><tr><th>policy</th>"
            let n = last.imageShareBefore.count
            for f in 0..<n { body += "<th>age \(n - 1 - f)</th>" }
            body += "</tr></thead><tbody>\n<tr><td><i>prompt (before)</i></td>" + last.imageShareBefore.map { "<td class=\"n\">\(UnitFormat.fixed(100 * $0, 1))%</td>" }.joined() + "</tr>\n"
            for run in r.runs where run.budget == focus {
                guard let s = run.steps.last, s.imageShareAfter.count == n else { continue }
                body += "<tr><td>\(e(run.policy))</td>" + s.imageShareAfter.map { "<td class=\"n\">\(UnitFormat.fixed(100 * $0, 1))%</td>" }.joined() + "</tr>\n"
            }
            body += "</tbody></table>\n"
        }

        if !r.trace.goldenChecks.isEmpty {
            body += "<h2>Golden kept sets</h2>\n<table><thead><tr><th>field</th><th>layers</th><th>identical</th><th>mean Jaccard</th></tr></thead><tbody>\n"
            for g in r.trace.goldenChecks {
                body += "<tr><td>\(e(g.field))</td><td class=\"n\">\(g.layers)</td><td class=\"n\">\(g.identicalLayers)</td><td class=\"n\">\(UnitFormat.fixed(g.meanJaccard, 4))</td></tr>\n"
            }
            body += "</tbody></table>\n"
        }

        body += "<footer>Replay digest <code>\(e(r.digest))</code> · \(e(r.generator)) · results schema \(r.schemaVersion). Files: results.json, steps.csv, runs.csv, trace.json (open in ui.perfetto.dev).</footer>\n"
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>StarKV report — \(e(r.trace.file))</title>
            <style>
            body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1480px;color:#222;padding:0 16px}
            h1{font-size:24px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
            table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 8px}th{background:#f4f4f4}
            td.n{text-align:right;font-variant-numeric:tabular-nums}td.ok{color:#1a7f37}td.bad{color:#c0392b;font-weight:bold}
            .grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}.notes{background:#fff8e1;border:1px solid #f0d98c;padding:8px 12px;font-size:13px}
            .lede{font-size:14px}.units{font-size:12px;color:#555}footer{margin-top:32px;font-size:12px;color:#666}code{font-size:12px}
            </style></head><body>
            \(body)</body></html>

            """
    }

    /// The budget to show in per-policy sections: 20% if present, else the smallest below 100%.
    static func focusBudget(_ budgets: [String]) -> String? {
        if budgets.contains("20%") { return "20%" }
        return budgets.first { $0 != "100%" } ?? budgets.first
    }

    /// Budgets in numeric order: percentages ascending, then absolute token budgets as given.
    static func sortedBudgets(_ runs: [ReplayResults.RunResult]) -> [String] {
        var percent: [(Double, String)] = []
        var tokens: [String] = []
        for run in runs {
            if let p = run.budgetPercent {
                if !percent.contains(where: { $0.1 == run.budget }) { percent.append((p, run.budget)) }
            } else if !tokens.contains(run.budget) {
                tokens.append(run.budget)
            }
        }
        return percent.sorted { $0.0 < $1.0 }.map(\.1) + tokens
    }

    static func orderedUnique(_ xs: [String]) -> [String] {
        var seen = Set<String>()
        return xs.filter { seen.insert($0).inserted }
    }

    static func orderedUniqueDoubles(_ xs: [Double]) -> [Double] { Array(Set(xs)).sorted() }

    /// `12.3 TFLOP`-style text.
    static func flopsText(_ v: Double) -> String {
        let units: [(Double, String)] = [(1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"), (1e6, "MFLOP")]
        for (scale, name) in units where v >= scale { return UnitFormat.fixed(v / scale, 2) + " " + name }
        return UnitFormat.fixed(v, 0) + " FLOP"
    }
}
