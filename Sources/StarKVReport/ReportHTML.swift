import StarKVModel
import StarKVReplay

extension ReportRenderer {
    /// The self-contained HTML report v2 (inline CSS and SVG; no scripts, no network):
    /// verdict, memory breakdown per budget, where the peak is, quality vs peak memory, budget
    /// sweeps, per-screenshot shares, FLOPs and the full summary. Implements docs/report.md.
    public static func html(_ r: ReplayResults) -> String {
        let e = HTML.escape
        let policies = orderedUnique(r.runs.map(\.policy))
        let budgets = sortedBudgets(r.runs)
        let color = Dictionary(uniqueKeysWithValues: policies.enumerated().map { ($1, SVGChart.palette[$0 % SVGChart.palette.count]) })
        let capacityGB = r.settings.gpuCapacityBytes / 1e9
        let gpuName = r.settings.gpuName ?? r.settings.gpu
        let capacityLabel = "\(gpuName): \(UnitFormat.gb(r.settings.gpuCapacityBytes, 1)) GB usable"
        let full = fullCacheRun(r)
        var body = ""

        body += "<h1>StarKV replay report</h1>\n"
        body += "<p class=\"lede\">Trace <code>\(e(r.trace.file))</code> (\(r.trace.steps) steps, \(e(r.trace.screen)), \(r.trace.imageSlots) image slots, recorded model \(e(r.trace.recordedModel)), fidelity \(e(r.trace.fidelity))) replayed under \(policies.count) policies × \(budgets.count) budgets. Memory simulated for <b>\(e(r.settings.simulatedModel))</b> on <b>\(e(gpuName))</b> (\(UnitFormat.gb(r.settings.gpuCapacityBytes)) GB = \(UnitFormat.gib(r.settings.gpuCapacityBytes)) GiB usable by the allocator), \(e(r.settings.attention)) attention (ViT \(e(r.settings.visionAttention))), KV stored at \(r.settings.storedKVHeads) heads, \(e(r.settings.logits)) logits, \(e(r.settings.loop)) loop, \(e(r.settings.allocator)) allocator.</p>\n"
        body += "<p class=\"units\">Units: GB = 10<sup>9</sup> bytes, GiB = 2<sup>30</sup> bytes. Peaks are allocator-level (<code>max_memory_allocated</code> / <code>max_memory_reserved</code> as torch reports them). A run <i>fits</i> when no allocation of any step fails in the caching-allocator replica — fragmentation included.</p>\n"
        if !r.notes.isEmpty {
            body += "<div class=\"notes\"><b>Notes</b><ul>" + r.notes.map { "<li>\(e($0))</li>" }.joined() + "</ul></div>\n"
        }
        if r.schemaVersion < 2 {
            body += "<div class=\"notes\">These results use schema v\(r.schemaVersion): the breakdown shows transients as one term and the peak tensors are not listed. Replay again for the full report.</div>\n"
        }

        // 1. Verdict.
        body += verdictSection(r, policies: policies, budgets: budgets, full: full, gpuName: gpuName)

        // 2. Memory breakdown, one chart per budget.
        body += "<h2 id=\"breakdown\">Memory breakdown over steps</h2>\n<p>Bytes live at each step's peak, stacked by term, plus the memory the allocator holds reserved but unallocated (fragmentation and rounding) — the top of the stack is what the step needs from the GPU. Policies whose memory is identical at a budget share one stack (the legend says which); others are drawn as total lines, and the full cache as a dashed total. The red dashed line is the usable capacity; a ring marks the first step that runs out of memory, with the phase where the allocation failed.</p>\n<div class=\"grid\">\n"
        for budget in budgets {
            let runs = r.runs.filter { $0.budget == budget }
            let groups = identicalMemoryGroups(runs)
            guard let main = groups.first else { continue }
            var compare: [(curve: MemoryCharts.Curve, color: String, dashed: Bool)] = []
            for g in groups.dropFirst() {
                compare.append((curve(g, label: groupLabel(g)), color[g[0].policy]!, false))
            }
            if let full, !runs.contains(where: { $0.policy == full.policy && $0.budget == full.budget }) {
                compare.append((curve([full], label: "full cache"), "#222222", true))
            }
            var notes = ["Stack: \(groupLabel(main))\(main.count > 1 ? " (identical memory)" : "")."]
            if groups.count > 1 { notes.append("\(groups.count - 1) other group\(groups.count > 2 ? "s" : "") drawn as totals.") }
            let chart = MemoryCharts.breakdownChart(
                title: "Memory by term — budget \(budget)", xLabel: "agent step", stacked: curve(main, label: groupLabel(main)),
                compare: compare, capacityGB: capacityGB, capacityLabel: capacityLabel, notes: notes)
            body += "<figure data-chart=\"breakdown\" data-budget=\"\(e(budget))\">\(chart.render())</figure>\n"
        }
        // The full cache gets its own chart unless it already is the stack of its budget's chart.
        if let full, !(identicalMemoryGroups(r.runs.filter { $0.budget == full.budget }).first?.contains { $0.policy == full.policy } ?? false) {
            let chart = MemoryCharts.breakdownChart(
                title: "Memory by term — full cache", xLabel: "agent step", stacked: curve([full], label: "full cache"), compare: [],
                capacityGB: capacityGB, capacityLabel: capacityLabel, notes: ["Stack: \(full.policy) @ \(full.budget)."])
            body += "<figure data-chart=\"breakdown\" data-budget=\"full\">\(chart.render())</figure>\n"
        }
        body += "</div>\n"

        // 3. Where the peak is.
        body += "<h2 id=\"peak\">Where the peak is</h2>\n<p>The step and phase of each run's highest allocated memory and the largest tensors live at that moment (what PyTorch's memory viewer shows at its peak; <code>--memory-snapshot</code> writes the allocator history for it).</p>\n<div class=\"grid\">\n"
        var peakRuns: [ReplayResults.RunResult] = []
        if let full { peakRuns.append(full) }
        if let focus = focusBudget(budgets), let best = r.runs.filter({ $0.budget == focus && $0.policyName != "full" }).max(by: { $0.summary.peakAllocatedBytes < $1.summary.peakAllocatedBytes }) {
            peakRuns.append(best)
        }
        if peakRuns.isEmpty, let first = r.runs.first { peakRuns.append(first) }
        for run in peakRuns {
            guard let s = run.steps.max(by: { $0.allocatedPeakBytes < $1.allocatedPeakBytes }) else { continue }
            body += MemoryCharts.peakTable(
                caption: "\(run.policy) @ \(run.budget)", step: "step \(s.step)", phase: s.peakPhase ?? (s.oomPhase ?? "–"),
                location: s.peakLocation ?? "–", allocatedBytes: s.allocatedPeakBytes, reservedBytes: s.reservedPeakBytes,
                tensors: s.peakTensors ?? [], breakdown: breakdown(s))
        }
        body += "</div>\n"

        // 4. Quality vs peak memory, and scoring cost.
        body += qualitySection(r, policies: policies, budgets: budgets, color: color, capacityGB: capacityGB, capacityLabel: capacityLabel)

        // Budget sweeps.
        let numericBudgets = r.runs.compactMap(\.budgetPercent)
        if !numericBudgets.isEmpty {
            var peak = SVGChart(title: "Peak allocated memory vs budget", xLabel: "KV budget (% of prompt)", yLabel: "GB")
            peak.xTicks = orderedUniqueDoubles(numericBudgets)
            for p in policies {
                let runs = r.runs.filter { $0.policy == p && $0.budgetPercent != nil }.sorted { $0.budgetPercent! < $1.budgetPercent! }
                peak.lines.append(.init(name: p, points: runs.map { ($0.budgetPercent!, $0.summary.peakAllocatedBytes / 1e9) }, color: color[p]!))
                for run in runs where run.summary.firstOOMStep != nil {
                    peak.markers.append(.init(x: run.budgetPercent!, y: run.summary.peakAllocatedBytes / 1e9, label: ""))
                }
            }
            if !peak.markers.isEmpty {
                peak.legendExtras.append(("#c0392b", "ring: out of memory"))
                peak.notes.append("A ring below the capacity line is an OOM through fragmentation (reserved but unallocated memory).")
            }
            peak.horizontalLines = [(capacityGB, capacityLabel)]
            body += "<h2 id=\"sweep\">Budget sweep</h2>\n<div class=\"grid\"><figure data-chart=\"sweep\">\(peak.render())</figure>\n"
            var quality = SVGChart(title: "Quality proxy vs budget", xLabel: "KV budget (% of prompt)", yLabel: "share of decode attention kept")
            quality.xTicks = peak.xTicks
            quality.yRange = (0, 1)
            for p in policies {
                let runs = r.runs.filter { $0.policy == p && $0.budgetPercent != nil }.sorted { $0.budgetPercent! < $1.budgetPercent! }
                let q = runs.compactMap { run in run.summary.meanDecodeMassRetained.map { (run.budgetPercent!, $0) } }
                if !q.isEmpty { quality.lines.append(.init(name: p, points: q, color: color[p]!)) }
            }
            if !quality.lines.isEmpty { body += "<figure data-chart=\"quality-budget\">\(quality.render())</figure>\n" }
            body += "</div>\n"
        }

        // 5. Per-screenshot share at the last step.
        if let focus = focusBudget(budgets), let anyRun = r.runs.first(where: { $0.budget == focus }), let last = anyRun.steps.last, !last.imageShareBefore.isEmpty {
            body += "<h2 id=\"screenshots\">Which screenshots occupy the cache — last step, budget \(e(focus))</h2>\n<p>Share of the prompt (before) and of the kept cache (after compression) held by each screenshot's visual tokens; age 0 is the current screenshot.</p>\n<div class=\"scroll\"><table><thead><tr><th>policy</th>"
            let n = last.imageShareBefore.count
            for f in 0..<n { body += "<th>age \(n - 1 - f)</th>" }
            body += "</tr></thead><tbody>\n<tr><td><i>prompt (before)</i></td>" + last.imageShareBefore.map { "<td class=\"n\">\(UnitFormat.fixed(100 * $0, 1))%</td>" }.joined() + "</tr>\n"
            for run in r.runs where run.budget == focus {
                guard let s = run.steps.last, s.imageShareAfter.count == n else { continue }
                body += "<tr><td>\(e(run.policy))</td>" + s.imageShareAfter.map { "<td class=\"n\">\(UnitFormat.fixed(100 * $0, 1))%</td>" }.joined() + "</tr>\n"
            }
            body += "</tbody></table></div>\n"
        }

        // FLOPs table.
        body += "<h2 id=\"flops\">FLOPs</h2>\n<p>Totals over the trace. Prefill uses the nominal (full-count) attention convention; scoring is the compression stage of each policy (docs/algorithms.md §11).</p>\n<div class=\"scroll\"><table><thead><tr><th>policy</th><th>budget</th><th>vision</th><th>prefill (nominal)</th><th>prefill (causal)</th><th>decode</th><th>scoring</th><th>scoring / prefill</th></tr></thead><tbody>\n"
        for run in sortedRuns(r.runs, budgets) {
            let sum = run.steps.reduce(into: [0.0, 0, 0, 0, 0]) { a, s in
                a[0] += s.flops.vision; a[1] += s.flops.prefillNominal; a[2] += s.flops.prefillCausal; a[3] += s.flops.decode; a[4] += s.flops.scoring
            }
            body += "<tr><td>\(e(run.policy))</td><td>\(e(run.budget))</td>" + sum.map { "<td class=\"n\">\(flopsText($0))</td>" }.joined() + "<td class=\"n\">\(UnitFormat.fixed(100 * run.summary.scoringOverhead, 4))%</td></tr>\n"
        }
        body += "</tbody></table></div>\n"

        // Every run.
        body += "<h2 id=\"summary\">All runs</h2>\n<div class=\"scroll\"><table><thead><tr><th>policy</th><th>budget</th><th>peak allocated GB</th><th>GiB</th><th>peak reserved GB</th><th>fits?</th><th>first OOM</th><th>mean kept</th><th>quality</th><th>scoring FLOPs</th></tr></thead><tbody>\n"
        for run in sortedRuns(r.runs, budgets) {
            let s = run.summary
            let fits = s.firstOOMStep == nil
            let oomText = s.firstOOMStep.map { step in "step \(step)" + (run.steps.first { $0.step == step }?.oomPhase.map { " (\($0))" } ?? "") } ?? "–"
            body += "<tr><td>\(e(run.policy))</td><td>\(e(run.budget))</td><td class=\"n\">\(UnitFormat.gb(s.peakAllocatedBytes))</td><td class=\"n\">\(UnitFormat.gib(s.peakAllocatedBytes))</td><td class=\"n\">\(UnitFormat.gb(s.peakReservedBytes))</td><td class=\"\(fits ? "ok" : "bad")\">\(fits ? "yes" : "no")</td><td>\(e(oomText))</td><td class=\"n\">\(UnitFormat.fixed(100 * s.meanKeptFraction, 1))%</td><td class=\"n\">\(s.meanDecodeMassRetained.map { UnitFormat.fixed($0, 4) } ?? "–")</td><td class=\"n\">\(flopsText(s.totalScoringFLOPs))</td></tr>\n"
        }
        body += "</tbody></table></div>\n"

        if !r.trace.goldenChecks.isEmpty {
            body += "<h2>Golden kept sets</h2>\n<table><thead><tr><th>field</th><th>layers</th><th>identical</th><th>mean Jaccard</th></tr></thead><tbody>\n"
            for g in r.trace.goldenChecks {
                body += "<tr><td>\(e(g.field))</td><td class=\"n\">\(g.layers)</td><td class=\"n\">\(g.identicalLayers)</td><td class=\"n\">\(UnitFormat.fixed(g.meanJaccard, 4))</td></tr>\n"
            }
            body += "</tbody></table>\n"
        }

        body += "<footer>Replay digest <code>\(e(r.digest))</code> · \(e(r.generator)) · results schema \(r.schemaVersion). Files: results.json, steps.csv, runs.csv, trace.json (open in ui.perfetto.dev).</footer>\n"
        return MemoryCharts.page(title: "StarKV report — \(r.trace.file)", body: body)
    }

    // MARK: sections

    static func verdictSection(
        _ r: ReplayResults, policies: [String], budgets: [String], full: ReplayResults.RunResult?, gpuName: String
    ) -> String {
        let e = HTML.escape
        var out = "<h2 id=\"verdict\">Verdict on \(e(gpuName))</h2>\n"
        if let full {
            let fits = full.summary.firstOOMStep == nil
            out += "<p class=\"verdict\">Full cache (\(e(full.policy)) @ \(e(full.budget))): peak \(UnitFormat.gb(full.summary.peakAllocatedBytes)) GB allocated, \(UnitFormat.gb(full.summary.peakReservedBytes)) GB reserved — <b>\(fits ? "fits" : "runs out of memory at step \(full.summary.firstOOMStep!)")</b> on \(e(gpuName)).</p>\n"
        }
        out += "<p>For each policy, the largest budget whose run fits over the whole trajectory, its peaks and the change against the full cache.</p>\n<div class=\"scroll\"><table><thead><tr><th>policy</th><th>largest budget that fits</th><th>peak allocated GB</th><th>peak reserved GB</th><th>vs full cache (allocated)</th><th>budgets that do not fit</th><th>smallest budget: peak GB, vs full</th></tr></thead><tbody>\n"
        for p in policies {
            let runs = budgets.compactMap { b in r.runs.first { $0.policy == p && $0.budget == b } }
            let fitting = runs.filter { $0.summary.firstOOMStep == nil }
            let failing = runs.filter { $0.summary.firstOOMStep != nil }.map(\.budget)
            out += "<tr><td>\(e(p))</td>"
            // "Largest" by what is kept (comparable across % and token budgets); ties: later budget.
            if let best = fitting.enumerated().max(by: { a, b in
                a.element.summary.meanKeptFraction != b.element.summary.meanKeptFraction
                    ? a.element.summary.meanKeptFraction < b.element.summary.meanKeptFraction : a.offset < b.offset
            })?.element {
                out += "<td class=\"ok\">\(e(best.budget))</td><td class=\"n\">\(UnitFormat.gb(best.summary.peakAllocatedBytes))</td><td class=\"n\">\(UnitFormat.gb(best.summary.peakReservedBytes))</td>"
                if let full {
                    out += "<td class=\"n\">\(change(best.summary.peakAllocatedBytes, full.summary.peakAllocatedBytes))</td>"
                } else {
                    out += "<td>–</td>"
                }
            } else {
                out += "<td class=\"bad\">none</td><td>–</td><td>–</td><td>–</td>"
            }
            out += "<td>\(failing.isEmpty ? "–" : e(failing.joined(separator: ", ")))</td>"
            if let small = runs.min(by: { $0.summary.meanKeptFraction < $1.summary.meanKeptFraction }), let full {
                out += "<td class=\"n\">\(e(small.budget)): \(UnitFormat.gb(small.summary.peakAllocatedBytes)) (\(change(small.summary.peakAllocatedBytes, full.summary.peakAllocatedBytes)))</td></tr>\n"
            } else {
                out += "<td>–</td></tr>\n"
            }
        }
        out += "</tbody></table></div>\n"
        if let others = r.gpuVerdicts, !others.isEmpty {
            out += "<h3>Per GPU</h3>\n<p>The same kept sets with memory simulated on each GPU: the largest budget that fits over the whole trajectory and its peak allocated GB (“none”: no budget fits).</p>\n<div class=\"scroll\"><table><thead><tr><th>policy</th><th>\(e(gpuName)) (\(UnitFormat.gb(r.settings.gpuCapacityBytes, 1)) GB)</th>"
            out += others.map { "<th>\(e($0.gpuName)) (\(UnitFormat.gb($0.gpuCapacityBytes, 1)) GB)</th>" }.joined() + "</tr></thead><tbody>\n"
            let kept = Dictionary(r.runs.map { ("\($0.policy)@\($0.budget)", $0.summary.meanKeptFraction) }, uniquingKeysWith: { a, _ in a })
            func cell(_ runs: [(key: String, budget: String, peak: Double, fits: Bool)]) -> String {
                let best = runs.enumerated().filter { $0.element.fits }.max { a, b in
                    let ka = kept[a.element.key] ?? 0, kb = kept[b.element.key] ?? 0
                    return ka != kb ? ka < kb : a.offset < b.offset
                }?.element
                guard let best else { return "<td class=\"bad\">none</td>" }
                return "<td class=\"ok\">\(e(best.budget)) (\(UnitFormat.gb(best.peak)) GB)</td>"
            }
            for p in policies {
                let here = budgets.compactMap { b in r.runs.first { $0.policy == p && $0.budget == b } }
                out += "<tr><td>\(e(p))</td>" + cell(here.map { (key: "\(p)@\($0.budget)", budget: $0.budget, peak: $0.summary.peakAllocatedBytes, fits: $0.summary.firstOOMStep == nil) })
                for g in others {
                    let runs = budgets.compactMap { b in g.runs.first { $0.policy == p && $0.budget == b } }
                    out += cell(runs.map { (key: "\(p)@\($0.budget)", budget: $0.budget, peak: $0.peakAllocatedBytes, fits: $0.firstOOMStep == nil) })
                }
                out += "</tr>\n"
            }
            out += "</tbody></table></div>\n"
        }
        return out
    }

    static func qualitySection(
        _ r: ReplayResults, policies: [String], budgets: [String], color: [String: String], capacityGB: Double, capacityLabel: String
    ) -> String {
        let e = HTML.escape
        let scored = r.runs.filter { $0.summary.meanDecodeMassRetained != nil }
        guard !scored.isEmpty else { return "" }
        var out = "<h2 id=\"quality\">Quality vs peak memory</h2>\n<p>One point per policy × budget: the quality proxy (share of the full-cache decode attention that falls on kept tokens, 0–1) against the run's peak allocated memory. Hollow points run out of memory. The black line is the Pareto front of the runs that fit (no other fitting run has both more quality and less memory).</p>\n<div class=\"grid\">\n"
        var chart = SVGChart(title: "Quality vs peak allocated memory", xLabel: "peak allocated GB", yLabel: "quality (share kept)")
        chart.yRange = (0, 1)
        chart.integerX = false
        chart.padX = true
        for run in scored {
            chart.scatter.append(.init(
                x: run.summary.peakAllocatedBytes / 1e9, y: run.summary.meanDecodeMassRetained!, color: color[run.policy]!,
                title: "\(run.policy) @ \(run.budget): \(UnitFormat.gb(run.summary.peakAllocatedBytes)) GB, quality \(UnitFormat.fixed(run.summary.meanDecodeMassRetained!, 4))",
                hollow: run.summary.firstOOMStep != nil))
        }
        // The front is drawn over the runs that fit (over all runs when none does).
        let fitting = scored.filter { $0.summary.firstOOMStep == nil }
        let front = paretoFront(fitting.isEmpty ? scored : fitting)
        chart.lines.append(.init(name: "Pareto front", points: front.map { ($0.summary.peakAllocatedBytes / 1e9, $0.summary.meanDecodeMassRetained!) }, color: "#111111"))
        for p in policies where scored.contains(where: { $0.policy == p }) { chart.legendExtras.append((color[p]!, p)) }
        if capacityGB <= (scored.map { $0.summary.peakAllocatedBytes / 1e9 }.max() ?? 0) * 1.1 {
            chart.verticalLines = [(capacityGB, "GPU capacity")]
        }
        out += "<figure data-chart=\"quality-memory\">\(chart.render())</figure>\n"
        out += "<div><h3>Pareto front</h3><table><thead><tr><th>policy</th><th>budget</th><th>peak GB</th><th>quality</th></tr></thead><tbody>\n"
        for run in front {
            out += "<tr><td>\(e(run.policy))</td><td>\(e(run.budget))</td><td class=\"n\">\(UnitFormat.gb(run.summary.peakAllocatedBytes))</td><td class=\"n\">\(UnitFormat.fixed(run.summary.meanDecodeMassRetained!, 4))</td></tr>\n"
        }
        out += "</tbody></table>\n<h3>Scoring FLOPs as a share of prefill</h3><div class=\"scroll\"><table><thead><tr><th>policy</th>" + budgets.map { "<th>\(e($0))</th>" }.joined() + "</tr></thead><tbody>\n"
        for p in policies {
            out += "<tr><td>\(e(p))</td>"
            for b in budgets {
                if let run = r.runs.first(where: { $0.policy == p && $0.budget == b }) {
                    out += "<td class=\"n\">\(UnitFormat.fixed(100 * run.summary.scoringOverhead, 3)) %</td>"
                } else {
                    out += "<td>–</td>"
                }
            }
            out += "</tr>\n"
        }
        return out + "</tbody></table></div></div>\n</div>\n"
    }

    // MARK: helpers

    /// "−15.00 GB (−33.3 %)": `bytes` against `reference`.
    static func change(_ bytes: Double, _ reference: Double) -> String {
        let d = bytes - reference
        let pct = reference > 0 ? 100 * d / reference : 0
        return "\(d >= 0 ? "+" : "−")\(UnitFormat.gb(abs(d))) GB (\(pct >= 0 ? "+" : "−")\(UnitFormat.fixed(abs(pct), 1)) %)"
    }

    /// The full-cache reference: the `full` policy's run, else the first run at 100 %.
    static func fullCacheRun(_ r: ReplayResults) -> ReplayResults.RunResult? {
        r.runs.first { $0.policyName == "full" } ?? r.runs.first { $0.budgetPercent == 100 }
    }

    /// Runs grouped by identical memory (every step's peaks and breakdown equal), the largest
    /// group first (ties: first seen).
    static func identicalMemoryGroups(_ runs: [ReplayResults.RunResult]) -> [[ReplayResults.RunResult]] {
        var groups: [[ReplayResults.RunResult]] = []
        for run in runs {
            if let i = groups.firstIndex(where: { sameMemory($0[0], run) }) { groups[i].append(run) } else { groups.append([run]) }
        }
        return groups.enumerated().sorted { $0.element.count != $1.element.count ? $0.element.count > $1.element.count : $0.offset < $1.offset }.map(\.element)
    }

    static func sameMemory(_ a: ReplayResults.RunResult, _ b: ReplayResults.RunResult) -> Bool {
        guard a.steps.count == b.steps.count else { return false }
        return zip(a.steps, b.steps).allSatisfy { x, y in
            x.allocatedPeakBytes == y.allocatedPeakBytes && x.reservedPeakBytes == y.reservedPeakBytes && x.oom == y.oom
                && breakdown(x) == breakdown(y)
        }
    }

    static func groupLabel(_ g: [ReplayResults.RunResult]) -> String {
        g.count <= 4 ? g.map(\.policy).joined(separator: ", ") : g.prefix(3).map(\.policy).joined(separator: ", ") + " and \(g.count - 3) more"
    }

    /// A step's breakdown; v1 results (no breakdown) map their coarser terms onto it.
    static func breakdown(_ s: ReplayResults.StepResult) -> ReplayResults.MemoryBreakdown {
        if let b = s.breakdown { return b }
        let t = s.terms
        return ReplayResults.MemoryBreakdown(
            weights: t.weights, kvNow: t.kvNow, kvPrevious: t.kvPrevious, logits: t.logits, mlpActivations: 0,
            attentionWorkspace: 0, vit: 0, other: t.inputs + t.transients, reservedUnallocated: t.allocatorSlack)
    }

    static func curve(_ group: [ReplayResults.RunResult], label: String) -> MemoryCharts.Curve {
        MemoryCharts.Curve(label: label, points: group[0].steps.map { (Double($0.step), breakdown($0), $0.oom ? ($0.oomPhase ?? "step \($0.step)") : nil) })
    }

    /// Runs not dominated by another (higher quality and no more memory, or equal quality and
    /// less memory), by memory ascending.
    static func paretoFront(_ runs: [ReplayResults.RunResult]) -> [ReplayResults.RunResult] {
        let sorted = runs.sorted {
            $0.summary.peakAllocatedBytes != $1.summary.peakAllocatedBytes ? $0.summary.peakAllocatedBytes < $1.summary.peakAllocatedBytes
                : $0.summary.meanDecodeMassRetained! > $1.summary.meanDecodeMassRetained!
        }
        var front: [ReplayResults.RunResult] = []
        var best = -Double.infinity
        for run in sorted where run.summary.meanDecodeMassRetained! > best {
            front.append(run)
            best = run.summary.meanDecodeMassRetained!
        }
        return front
    }

    /// Runs by budget (numeric order), then in run order.
    static func sortedRuns(_ runs: [ReplayResults.RunResult], _ budgets: [String]) -> [ReplayResults.RunResult] {
        budgets.flatMap { b in runs.filter { $0.budget == b } }
    }

    /// The budget to show in per-policy sections: 20% if present, else the smallest below 100%.
    static func focusBudget(_ budgets: [String]) -> String? {
        if budgets.contains("20%") { return "20%" }
        return budgets.first { $0 != "100%" } ?? budgets.first
    }

    /// Budgets in numeric order: percentages ascending, then absolute token budgets ascending.
    static func sortedBudgets(_ runs: [ReplayResults.RunResult]) -> [String] {
        var percent: [(Double, String)] = []
        var tokens: [(Double, String)] = []
        for run in runs {
            if let p = run.budgetPercent {
                if !percent.contains(where: { $0.1 == run.budget }) { percent.append((p, run.budget)) }
            } else if !tokens.contains(where: { $0.1 == run.budget }) {
                let digits = run.budget.prefix { $0.isNumber || $0 == "." }
                tokens.append((Double(digits) ?? .infinity, run.budget))
            }
        }
        return percent.sorted { $0.0 < $1.0 }.map(\.1) + tokens.enumerated().sorted { $0.element.0 != $1.element.0 ? $0.element.0 < $1.element.0 : $0.offset < $1.offset }.map(\.element.1)
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
