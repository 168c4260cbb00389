import Foundation
import Testing
import StarKVMemory
import StarKVModel
@testable import StarKVReplay
@testable import StarKVReport

/// Report v2 (docs/report.md): label geometry, results v1/v2, verdict, Pareto front, grouping.
@Suite struct ChartGeometryTests {
    func assertNoOverlap(_ chart: SVGChart, sourceLocation: SourceLocation = #_sourceLocation) {
        let boxes = chart.textBoxes()
        for i in boxes.indices {
            for j in boxes.indices where j > i {
                #expect(!boxes[i].intersects(boxes[j]), "'\(boxes[i].text)' overlaps '\(boxes[j].text)'", sourceLocation: sourceLocation)
            }
        }
    }

    @Test func markersOnOneSpotShareOneLabelAndNoLabelsOverlap() {
        var c = SVGChart(title: "Peak allocated memory per step — budget 20%", xLabel: "agent step", yLabel: "GB")
        c.lines = (0..<10).map { i in .init(name: "policy-\(i)", points: [(0, 70), (1, 79), (2, 81)], color: "#000") }
        c.markers = (0..<10).map { i in .init(x: 2, y: 81, label: "OOM policy-\(i) at prefill layer 27") }
        c.horizontalLines = [(79.5, "NVIDIA H100 SXM5 80GB: 79.2 GB usable")]
        assertNoOverlap(c)
        // Ten markers on one spot share one ring label that counts the others.
        let labels = c.textBoxes().map(\.text).filter { $0.contains("OOM") }
        #expect(labels == ["OOM policy-0 at prefill layer 27 +9 more here"])
        // Markers on different spots each get a label or a note under the legend.
        var d = SVGChart(title: "t", xLabel: "step", yLabel: "GB")
        d.lines = [.init(name: "s", points: [(0, 70), (1, 71), (2, 72)], color: "#000")]
        d.markers = [.init(x: 0, y: 70, label: "OOM: prefill layer 3"), .init(x: 1, y: 71, label: "OOM: lm_head"), .init(x: 2, y: 72, label: "OOM: vision block 30")]
        assertNoOverlap(d)
        let text = d.textBoxes().map(\.text).joined(separator: " ")
        for l in ["prefill layer 3", "lm_head", "vision block 30"] { #expect(text.contains(l)) }
    }

    @Test func longLegendNamesAndTitlesAreShortenedToTheirColumn() {
        var c = SVGChart(title: String(repeating: "a very long chart title ", count: 8), xLabel: "x", yLabel: "y")
        c.lines = [.init(name: "starkv(entropy_budget=on,mi_grid=true,temporal=off,window=16)", points: [(0, 1), (1, 2)], color: "#000")]
        assertNoOverlap(c)
        for b in c.textBoxes() { #expect(b.x >= 0 && b.x + b.width <= c.width + 0.01, "'\(b.text)' leaves the chart") }
    }

    @Test func denseXTicksAreThinnedUntilTheyDoNotTouch() {
        var c = SVGChart(title: "t", xLabel: "x", yLabel: "y")
        c.integerX = false
        c.xTicks = (0..<60).map { 17.70 + 0.01 * Double($0) }
        c.lines = [.init(name: "s", points: [(17.7, 1), (18.3, 2)], color: "#000")]
        assertNoOverlap(c)
    }

    @Test func tickLabelsCarryTheDecimalsOfTheirSpacing() {
        #expect(SVGChart.tickLabel(17.75, step: 0.05) == "17.75")
        #expect(SVGChart.tickLabel(17.8, step: 0.05) == "17.80")
        #expect(SVGChart.tickLabel(40, step: 20) == "40")
        #expect(SVGChart.tickLabel(0.4, step: 0.2) == "0.4")
    }

    @Test func breakdownChartOfAnOOMRunNamesThePhase() {
        let b = ReplayResults.MemoryBreakdown(
            weights: 16.6e9, kvNow: 10e9, kvPrevious: 8e9, logits: 16e9, mlpActivations: 1e9, attentionWorkspace: 0.5e9, vit: 0.3e9,
            other: 0.2e9, reservedUnallocated: 12e9)
        let curve = MemoryCharts.Curve(label: "full", points: [(1, b, nil), (2, b, "prefill layer 27"), (3, b, "lm_head")])
        let chart = MemoryCharts.breakdownChart(
            title: "Memory by term — budget 20%", xLabel: "step", stacked: curve, compare: [], capacityGB: 79.2, capacityLabel: "H100",
            notes: ["Stack: full."])
        let svg = chart.render()
        #expect(svg.contains("OOM: prefill layer 27"))
        #expect(!svg.contains("OOM: lm_head"))  // only the first OOM is marked
        #expect(svg.components(separatedBy: "<polygon").count - 1 == 9)
        assertNoOverlap(chart)
    }
}

@Suite struct ReportV2Tests {
    static func step(_ i: Int, allocated: Double, oom: Bool = false) -> ReplayResults.StepResult {
        ReplayResults.StepResult(
            step: i, episode: "e", promptLength: 1000, images: 1, keptTokensMean: 200, keptFraction: 0.2, kvBytes: 1e9,
            terms: .init(weights: 16e9, kvNow: 1e9, kvPrevious: 0, logits: 1e9, inputs: 0, transients: 0, allocatorSlack: 0),
            allocatedPeakBytes: allocated, reservedPeakBytes: allocated + 1e9, inactiveSplitBytes: 0, oom: oom, oomPhase: oom ? "prefill layer 3" : nil,
            flops: .init(vision: 1, prefillNominal: 100, prefillCausal: 60, decode: 1, scoring: 2), rooflineSeconds: 0.1,
            decodeMassRetained: 0.9, cachedWindowMass: nil, imageShareBefore: [1], imageShareAfter: [1],
            breakdown: .init(weights: 16e9, kvNow: 1e9, kvPrevious: 0, logits: 1e9, mlpActivations: 0, attentionWorkspace: 0, vit: 0, other: 0, reservedUnallocated: 1e9),
            requestedPeakBytes: allocated, peakPhase: "lm_head", peakLocation: "lm_head",
            peakTensors: [.init(bytes: 1e9, category: "logits", allocatedAt: "step \(i), lm_head")])
    }

    static func run(_ policy: String, _ budget: String, _ percent: Double?, peak: Double, quality: Double, oomAt: Int? = nil) -> ReplayResults.RunResult {
        let steps = (0..<3).map { step($0, allocated: peak - Double(2 - $0) * 1e9, oom: $0 == oomAt) }
        return ReplayResults.RunResult(
            policy: policy, policyName: policy, budget: budget, budgetPercent: percent, keptDigest: "", steps: steps,
            summary: .init(
                peakAllocatedBytes: peak, peakReservedBytes: peak + 1e9, firstOOMStep: oomAt, meanKeptFraction: (percent ?? 5) / 100,
                meanDecodeMassRetained: quality, meanCachedWindowMass: nil, totalScoringFLOPs: 6, totalFLOPs: 300, scoringOverhead: 0.02))
    }

    static func results() -> ReplayResults {
        ReplayResults(
            schemaVersion: 2, generator: "test",
            trace: .init(file: "t.starkv", recordedModel: "m", recorder: "r", fidelity: "standard", steps: 3, screen: "1x1", imageSlots: 1, footerPresent: true, goldenChecks: []),
            settings: .init(
                policies: [], budgets: [], loop: "reprefill", simulatedModel: "qwen2.5-vl-7b", gpu: "custom-40GB", gpuCapacityBytes: 39.5e9,
                gpuName: "my 40 GB card", attention: "flash", visionAttention: "flash", storedKVHeads: 28, logits: "full", allocator: "torchCaching",
                retainPreviousCache: true),
            runs: [
                run("full", "100%", 100, peak: 45e9, quality: 1, oomAt: 1),
                run("snapkv", "512tok", nil, peak: 20e9, quality: 0.5),
                run("snapkv", "20%", 20, peak: 30e9, quality: 0.85),
                run("snapkv", "40%", 40, peak: 38e9, quality: 0.93, oomAt: 2),
                run("h2o", "20%", 20, peak: 30e9, quality: 0.80),
            ],
            notes: [], digest: "d")
    }

    @Test func verdictPicksTheLargestFittingBudgetAndTheChangeVsFullCache() {
        let html = ReportRenderer.html(Self.results())
        #expect(html.contains("Verdict on my 40 GB card"))
        // snapkv: 40 % does not fit, 20 % does: 30 GB vs 45 GB full = −15.00 GB (−33.3 %).
        #expect(html.contains("<tr><td>snapkv</td><td class=\"ok\">20%</td><td class=\"n\">30.00</td><td class=\"n\">31.00</td><td class=\"n\">−15.00 GB (−33.3 %)</td><td>40%</td><td class=\"n\">512tok: 20.00 (−25.00 GB (−55.6 %))</td></tr>"))
        #expect(html.contains("<tr><td>full</td><td class=\"bad\">none</td>"))
        #expect(html.contains("runs out of memory at step 1"))
    }

    @Test func verdictPerGPUPicksEachGPUsLargestFittingBudget() {
        var r = Self.results()
        // On a bigger card snapkv's 40 % fits too; on a smaller one nothing of snapkv's fits.
        func gpuRun(_ run: ReplayResults.RunResult, fits: Bool) -> ReplayResults.GPURun {
            .init(policy: run.policy, budget: run.budget, peakAllocatedBytes: run.summary.peakAllocatedBytes, peakReservedBytes: run.summary.peakReservedBytes,
                  firstOOMStep: fits ? nil : 0, firstOOMPhase: fits ? nil : "prefill layer 0")
        }
        r.gpuVerdicts = [
            .init(gpu: "big", gpuName: "big card", gpuCapacityBytes: 100e9, runs: r.runs.map { gpuRun($0, fits: true) }),
            .init(gpu: "small", gpuName: "small card", gpuCapacityBytes: 10e9, runs: r.runs.map { gpuRun($0, fits: $0.policy != "snapkv") }),
        ]
        let html = ReportRenderer.html(r)
        #expect(html.contains("<th>big card (100.0 GB)</th><th>small card (10.0 GB)</th>"))
        #expect(html.contains("<tr><td>snapkv</td><td class=\"ok\">20% (30.00 GB)</td><td class=\"ok\">40% (38.00 GB)</td><td class=\"bad\">none</td></tr>"))
    }

    @Test func budgetsAreOrderedNumericallyWithTokenBudgetsAfterPercentages() {
        let r = Self.results()
        #expect(ReportRenderer.sortedBudgets(r.runs) == ["20%", "40%", "100%", "512tok"])
        let runs = [Self.run("a", "4096tok", nil, peak: 1, quality: 1), Self.run("a", "512tok", nil, peak: 1, quality: 1)]
        #expect(ReportRenderer.sortedBudgets(runs) == ["512tok", "4096tok"])
    }

    @Test func paretoFrontKeepsOnlyUndominatedRuns() {
        let front = ReportRenderer.paretoFront(Self.results().runs).map { "\($0.policy)@\($0.budget)" }
        // h2o@20% (30 GB, 0.80) is dominated by snapkv@20% (30 GB, 0.85).
        #expect(front == ["snapkv@512tok", "snapkv@20%", "snapkv@40%", "full@100%"])
    }

    @Test func policiesWithIdenticalMemoryShareOneStack() {
        let r = Self.results()
        let groups = ReportRenderer.identicalMemoryGroups(r.runs.filter { $0.budget == "20%" })
        #expect(groups.count == 1 && groups[0].map(\.policy) == ["snapkv", "h2o"])
        let html = ReportRenderer.html(r)
        let text = html.replacingOccurrences(of: "<[^>]+>", with: " ", options: .regularExpression)
            .split(whereSeparator: { $0 == " " || $0 == "\n" }).joined(separator: " ")
        #expect(text.contains("Stack: snapkv, h2o (identical memory)."))
        #expect(html.contains("data-chart=\"breakdown\" data-budget=\"512tok\""))
    }

    @Test func resultsV2RoundTripAndV1StillLoads() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("starkv-report-v1-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = Self.results()
        try ReportRenderer.write(r, to: dir.path)
        let v2 = try ReportRenderer.load(dir.appendingPathComponent("results.json").path)
        #expect(v2 == r)
        // A v1 file: schema 1, none of the v2 fields.
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("results.json"))) as! [String: Any]
        object["schemaVersion"] = 1
        var settings = object["settings"] as! [String: Any]
        settings.removeValue(forKey: "gpuName")
        object["settings"] = settings
        object["runs"] = (object["runs"] as! [[String: Any]]).map { run -> [String: Any] in
            var run = run
            run["steps"] = (run["steps"] as! [[String: Any]]).map { step -> [String: Any] in
                var step = step
                for k in ["breakdown", "requestedPeakBytes", "peakPhase", "peakLocation", "peakTensors"] { step.removeValue(forKey: k) }
                return step
            }
            return run
        }
        let v1Path = dir.appendingPathComponent("v1.json").path
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: v1Path))
        let v1 = try ReportRenderer.load(v1Path)
        #expect(v1.schemaVersion == 1 && v1.runs[0].steps[0].breakdown == nil && v1.settings.gpuName == nil)
        let html = ReportRenderer.html(v1)
        #expect(html.contains("schema v1") && html.contains("Verdict on custom-40GB"))
        // A future schema is refused with the versions this build reads.
        object["schemaVersion"] = 3
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: v1Path))
        #expect(throws: ReplayError.self) { try ReportRenderer.load(v1Path) }
    }
}

@Suite struct MemoryReportTests {
    @Test func heatMapDrawsTheFitsBoundaryBetweenFittingAndFailingCells() {
        // Row 0: 1 fits, 2 does not; row 1: both fit. Cells are 88 × 30 from (190, 64).
        let map = MemoryCharts.heatMap(
            title: "t", rowLabels: ["a", "b"], columnLabels: ["1 shot", "2 shots"], columnTitle: "shots",
            values: [[10, 90], [10, 20]], fits: [[true, false], [true, true]], capacityGB: 80, capacityLabel: "GPU")
        // One vertical edge right of cell (0,0), one horizontal edge under cell (0,1).
        #expect(map.svg.contains("<path d=\"M278.0,64.0V94.0M278.0,94.0H366.0\""))
        #expect(map.svg.components(separatedBy: "url(#hatch)").count - 1 == 1)
        #expect(map.svg.contains(">90.0 ✗</text>"))
        for (i, a) in map.boxes.enumerated() {
            for b in map.boxes[(i + 1)...] { #expect(!a.intersects(b), "'\(a.text)' overlaps '\(b.text)'") }
        }
    }

    @Test func memoryJSONCarriesItsSchemaAndHTMLItsSections() throws {
        let config = MemorySimulationConfig(model: ModelPresets.qwen25VL7B, accelerator: .custom(torchVisibleBytes: 30_000_000_000))
        let tokens = try SyntheticWorkload.visualTokens(width: 1920, height: 1080)
        func entry(_ budget: Double?) throws -> MemoryGrid.Entry {
            let steps = SyntheticWorkload(visualTokensPerScreenshot: tokens, screenshotCounts: [1, 2, 3], budgetPercent: budget).steps(numLayers: 28)
            return MemoryGrid.Entry(
                screen: "1920x1080", visualTokensPerScreenshot: tokens, budget: budget.map { "\(Int($0))%" } ?? "full",
                report: try MemorySimulator.run(config: config, steps: steps))
        }
        let grid = MemoryGrid(
            entries: [try entry(20), try entry(nil)], screens: ["1920x1080"], budgets: ["20%", "full"], screenshotCounts: [1, 2, 3],
            gpuName: config.accelerator.displayName, generator: "test")
        let json = try JSONSerialization.jsonObject(with: MemoryReport.json(grid)) as! [String: Any]
        #expect(json["schemaVersion"] as? Int == 2 && json["gpuName"] as? String == "custom 30 GB")
        #expect((json["trajectories"] as! [[String: Any]]).map { $0["budget"] as! String } == ["20%", "full"])
        let html = MemoryReport.html(grid)
        for id in ["verdict", "grid", "breakdown", "peak", "tables"] { #expect(html.contains("id=\"\(id)\"")) }
        #expect(html.contains("1920x1080 · 20%") && html.contains("data-budget=\"full\""))
        #expect(!html.contains("<script"))
    }
}
