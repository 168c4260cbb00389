import Foundation
import Testing
@testable import StarKVReport
@testable import StarKVReplay

@Suite struct ReportPrimitivesTests {
    @Test func csvQuotesOnlyFieldsThatNeedIt() {
        var t = CSVTable(header: ["policy", "note"])
        t.append(["snapkv", "plain"])
        t.append(["a,b", "say \"hi\""])
        #expect(t.render() == "policy,note\nsnapkv,plain\n\"a,b\",\"say \"\"hi\"\"\"\n")
    }

    @Test func chartContainsOnePolylinePerSeriesAndTheCapacityLine() {
        var c = SVGChart(title: "Memory <GB>", xLabel: "step", yLabel: "GB")
        c.lines = [
            .init(name: "full", points: [(0, 10), (1, 20), (2, 30)], color: "#000"),
            .init(name: "snapkv", points: [(0, 5), (1, 6), (2, 7)], color: "#111"),
        ]
        c.horizontalLines = [(80, "H100 80 GB")]
        let svg = c.render()
        #expect(svg.hasPrefix("<svg") && svg.hasSuffix("</svg>"))
        #expect(svg.components(separatedBy: "<polyline").count - 1 == 2)
        #expect(svg.contains("H100 80 GB"))
        #expect(svg.contains("Memory &lt;GB&gt;"))
        #expect(c.render() == svg)
    }

    @Test func stackedAreasStackBottomUp() {
        var c = SVGChart(title: "t", xLabel: "x", yLabel: "y")
        c.stackedAreas = [
            .init(name: "a", points: [(0, 1), (1, 1)], color: "#a00"),
            .init(name: "b", points: [(0, 2), (1, 2)], color: "#0a0"),
        ]
        let svg = c.render()
        #expect(svg.components(separatedBy: "<polygon").count - 1 == 2)
    }

    @Test func niceCeilingRoundsUpToOneTwoFiveSteps() {
        #expect(SVGChart.niceCeiling(73) == 100)
        #expect(SVGChart.niceCeiling(19) == 20)
        #expect(SVGChart.niceCeiling(2.2) == 2.5)
        #expect(SVGChart.niceCeiling(0) == 1)
    }

    @Test func chromeTraceEventsEncodeInTheTraceEventFormat() throws {
        var t = ChromeTrace()
        t.nameProcess(1, "snapkv @ 20%")
        t.counter("memory", pid: 1, tsMicros: 0, values: ["allocated_GB": 17.5])
        t.span("prefill", category: "phase", pid: 1, tid: 1, tsMicros: 0, durMicros: 1000)
        let data = try JSONEncoder().encode(["traceEvents": t.events])
        let obj = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        let events = obj["traceEvents"] as! [[String: Any]]
        #expect(events.map { $0["ph"] as! String } == ["M", "C", "X"])
        #expect((events[0]["args"] as! [String: String])["name"] == "snapkv @ 20%")
        #expect(events[2]["dur"] as? Double == 1000)
    }
}

@Suite struct ReportOrderingTests {
    @Test func budgetsAreOrderedNumericallyWithTokenBudgetsLast() {
        func run(_ b: String, _ p: Double?) -> ReplayResults.RunResult {
            ReplayResults.RunResult(
                policy: "x", policyName: "x", budget: b, budgetPercent: p, keptDigest: "", steps: [],
                summary: .init(
                    peakAllocatedBytes: 0, peakReservedBytes: 0, firstOOMStep: nil, meanKeptFraction: 0, meanDecodeMassRetained: nil,
                    meanCachedWindowMass: nil, totalScoringFLOPs: 0, totalFLOPs: 0, scoringOverhead: 0))
        }
        let runs = [run("100%", 100), run("512tok", nil), run("20%", 20), run("5%", 5), run("20%", 20)]
        #expect(ReportRenderer.sortedBudgets(runs) == ["5%", "20%", "100%", "512tok"])
    }
}
