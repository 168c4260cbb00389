import Foundation
import StarKVMemory
import StarKVModel
import StarKVReplay

/// The trajectories of one `starkv memory` run: one per screen size × budget, each over the
/// same screenshot counts. Implements docs/report.md §5.
public struct MemoryGrid: Sendable {
    /// One simulated trajectory.
    public struct Entry: Sendable {
        public var screen: String
        public var visualTokensPerScreenshot: Int
        /// "20%", "4096tok" or "full".
        public var budget: String
        public var report: MemoryTrajectoryReport

        public init(screen: String, visualTokensPerScreenshot: Int, budget: String, report: MemoryTrajectoryReport) {
            self.screen = screen
            self.visualTokensPerScreenshot = visualTokensPerScreenshot
            self.budget = budget
            self.report = report
        }
    }

    /// Screen-major, budget-minor, in the order given on the command line.
    public var entries: [Entry]
    public var screens: [String]
    public var budgets: [String]
    public var screenshotCounts: [Int]
    /// The GPU's display name (`--gpu-name`, a preset's name or "custom 48 GB").
    public var gpuName: String
    public var generator: String
    /// The same trajectories on other GPUs (the verdict per GPU).
    public var otherGPUs: [OtherGPU] = []

    /// One other GPU's trajectories, in the order of `entries`.
    public struct OtherGPU: Sendable {
        public var name: String
        public var capacityBytes: Int
        public var entries: [Entry]

        public init(name: String, capacityBytes: Int, entries: [Entry]) {
            self.name = name
            self.capacityBytes = capacityBytes
            self.entries = entries
        }
    }

    public init(entries: [Entry], screens: [String], budgets: [String], screenshotCounts: [Int], gpuName: String, generator: String) {
        self.entries = entries
        self.screens = screens
        self.budgets = budgets
        self.screenshotCounts = screenshotCounts
        self.gpuName = gpuName
        self.generator = generator
    }

    public func entry(screen: String, budget: String) -> Entry? { entries.first { $0.screen == screen && $0.budget == budget } }
}

/// `starkv memory`'s JSON and HTML outputs (docs/report.md §5).
public enum MemoryReport {
    /// Version of `starkv memory --json` (v1 was the bare trajectory report, without a version).
    public static let schemaVersion = 2

    struct JSONEntry: Encodable {
        var screen: String
        var visualTokensPerScreenshot: Int
        var budget: String
        var report: MemoryTrajectoryReport
    }

    struct JSONVerdict: Encodable {
        var screen: String
        var budget: String
        var peakAllocatedBytes: Int
        var peakReservedBytes: Int
        /// Screenshot counts of the steps that run out of memory.
        var outOfMemoryAtScreenshots: [Int]
    }

    struct JSONOtherGPU: Encodable {
        var gpuName: String
        var capacityBytes: Int
        var trajectories: [JSONVerdict]
    }

    struct JSONRoot: Encodable {
        var schemaVersion: Int
        var kind = "starkv-memory"
        var generator: String
        var gpuName: String
        var screenshotCounts: [Int]
        var trajectories: [JSONEntry]
        var otherGPUs: [JSONOtherGPU]
    }

    /// `{"schemaVersion": 2, "kind": "starkv-memory", …, "trajectories": [{screen, budget, report}]}`.
    public static func json(_ g: MemoryGrid) throws -> Data {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let root = JSONRoot(
            schemaVersion: schemaVersion, generator: g.generator, gpuName: g.gpuName, screenshotCounts: g.screenshotCounts,
            trajectories: g.entries.map { JSONEntry(screen: $0.screen, visualTokensPerScreenshot: $0.visualTokensPerScreenshot, budget: $0.budget, report: $0.report) },
            otherGPUs: g.otherGPUs.map { o in
                JSONOtherGPU(gpuName: o.name, capacityBytes: o.capacityBytes, trajectories: o.entries.map { e in
                    JSONVerdict(
                        screen: e.screen, budget: e.budget, peakAllocatedBytes: e.report.peakAllocatedBytes, peakReservedBytes: e.report.peakReservedBytes,
                        outOfMemoryAtScreenshots: e.report.steps.filter(\.outOfMemory).map(\.screenshots))
                })
            })
        var data = try e.encode(root)
        data.append(0x0A)
        return data
    }

    /// The self-contained HTML page: verdict, heat map of peak GB with the fits boundary,
    /// breakdown over screenshots per budget (largest screen), where the peak is, and the
    /// per-step tables.
    public static func html(_ g: MemoryGrid) -> String {
        let e = HTML.escape
        guard let first = g.entries.first else { return MemoryCharts.page(title: "StarKV memory", body: "<p>No trajectories.</p>") }
        let c = first.report.config
        let capacity = Double(c.accelerator.allocatorCapacityBytes)
        let capacityLabel = "\(g.gpuName): \(UnitFormat.gb(capacity, 1)) GB usable"
        let countLabels = g.screenshotCounts.map { "\($0) shot\($0 == 1 ? "" : "s")" }
        var body = "<h1>StarKV memory scenario</h1>\n"
        body += "<p class=\"lede\"><b>\(e(c.model.displayName))</b> on <b>\(e(g.gpuName))</b> (\(UnitFormat.gb(capacity)) GB = \(UnitFormat.gib(capacity)) GiB usable by the allocator); LLM attention \(e(c.llmAttention.rawValue)), ViT \(e(c.visionAttention.rawValue)), KV stored at \(c.storedKVHeads) heads, \(e(c.logits.rawValue)) logits, \(e(c.loop.rawValue)) loop\(c.retainPreviousCache && c.loop == .rePrefill ? " (previous step's cache retained)" : ""), \(e(c.allocator.rawValue)) allocator\(c.cachingOptions.expandableSegments ? " (expandable segments)" : ""). Screens \(e(g.screens.joined(separator: ", "))); screenshots per step \(e(g.screenshotCounts.map(String.init).joined(separator: ", "))); budgets \(e(g.budgets.joined(separator: ", "))). No trace: each step is a synthetic prompt of that many screenshots (docs/memory-model.md §4).</p>\n"
        body += "<p class=\"units\">GB = 10<sup>9</sup> B, GiB = 2<sup>30</sup> B. Peaks are allocator-level (<code>max_memory_allocated</code> / <code>max_memory_reserved</code>). A step fits when no allocation fails in the caching-allocator replica, fragmentation included.</p>\n"

        // Verdict.
        body += "<h2 id=\"verdict\">Verdict on \(e(g.gpuName))</h2>\n<div class=\"scroll\"><table><thead><tr><th>screen</th><th>budget</th><th>peak allocated GB</th><th>GiB</th><th>peak reserved GB</th><th>most screenshots that fit</th><th>first OOM</th><th>vs full cache (allocated)</th></tr></thead><tbody>\n"
        for screen in g.screens {
            let full = g.entries.first { $0.screen == screen && $0.budget == "full" }
            for budget in g.budgets {
                guard let entry = g.entry(screen: screen, budget: budget) else { continue }
                let r = entry.report
                let fitting = r.steps.prefix { !$0.outOfMemory }.last.map { "\($0.screenshots)" } ?? "none"
                var oom = "–"
                if let o = r.firstOOM, o.step >= 0, o.step < r.steps.count {
                    oom = "\(r.steps[o.step].screenshots) shots, \(o.location)"
                }
                var change = "–"
                if let full, budget != "full" {
                    let d = Double(r.peakAllocatedBytes - full.report.peakAllocatedBytes)
                    let pct = 100 * d / Double(max(1, full.report.peakAllocatedBytes))
                    change = "\(d >= 0 ? "+" : "−")\(UnitFormat.gb(abs(d))) GB (\(pct >= 0 ? "+" : "−")\(UnitFormat.fixed(abs(pct), 1)) %)"
                }
                body += "<tr><td>\(e(screen))</td><td>\(e(budget))</td><td class=\"n\">\(UnitFormat.gb(Double(r.peakAllocatedBytes)))</td><td class=\"n\">\(UnitFormat.gib(Double(r.peakAllocatedBytes)))</td><td class=\"n\">\(UnitFormat.gb(Double(r.peakReservedBytes)))</td><td class=\"\(r.firstOOM == nil ? "ok" : "bad")\">\(e(fitting))</td><td>\(e(oom))</td><td class=\"n\">\(e(change))</td></tr>\n"
            }
        }
        body += "</tbody></table></div>\n"
        if !g.otherGPUs.isEmpty {
            body += "<h3>Per GPU</h3>\n<p>Most screenshots per step that fit (all steps up to it fit), and the trajectory's peak allocated GB.</p>\n<div class=\"scroll\"><table><thead><tr><th>screen · budget</th><th>\(e(g.gpuName))</th>" + g.otherGPUs.map { "<th>\(e($0.name))</th>" }.joined() + "</tr></thead><tbody>\n"
            func cell(_ r: MemoryTrajectoryReport) -> String {
                let n = r.steps.prefix { !$0.outOfMemory }.last?.screenshots
                return "<td class=\"\(r.firstOOM == nil ? "ok" : "bad")\">\(n.map(String.init) ?? "none") (\(UnitFormat.gb(Double(r.peakAllocatedBytes), 1)) GB)</td>"
            }
            for (i, entry) in g.entries.enumerated() {
                body += "<tr><td>\(e(entry.screen)) · \(e(entry.budget))</td>" + cell(entry.report)
                    + g.otherGPUs.map { i < $0.entries.count ? cell($0.entries[i].report) : "<td>–</td>" }.joined() + "</tr>\n"
            }
            body += "</tbody></table></div>\n"
        }

        // Heat map.
        var rows: [String] = []
        var values: [[Double]] = []
        var fits: [[Bool]] = []
        for screen in g.screens {
            for budget in g.budgets {
                guard let entry = g.entry(screen: screen, budget: budget) else { continue }
                rows.append("\(screen) · \(budget)")
                values.append(entry.report.steps.map { Double($0.allocatedPeakBytes) / 1e9 })
                fits.append(entry.report.steps.map { !$0.outOfMemory })
            }
        }
        let map = MemoryCharts.heatMap(
            title: "Peak allocated GB per step", rowLabels: rows, columnLabels: countLabels, columnTitle: "screenshots in the prompt",
            values: values, fits: fits, capacityGB: capacity / 1e9, capacityLabel: g.gpuName)
        body += "<h2 id=\"grid\">Peak memory over screens, screenshots and budgets</h2>\n<figure data-chart=\"heatmap\">\(map.svg)</figure>\n"

        // Breakdown over screenshots for the largest screen.
        let screen = g.screens.max { pixels($0) < pixels($1) } ?? g.screens[0]
        let fullEntry = g.entry(screen: screen, budget: "full")
        body += "<h2 id=\"breakdown\">Memory breakdown over screenshots — \(e(screen))</h2>\n<p>Bytes live at each step's peak, stacked by term, plus reserved-but-unallocated memory; the red dashed line is the usable capacity; a ring marks the first step that runs out of memory and the phase where it does. The full cache is drawn as a dashed total in the budget charts.</p>\n<div class=\"grid\">\n"
        for budget in g.budgets {
            guard let entry = g.entry(screen: screen, budget: budget) else { continue }
            var compare: [(curve: MemoryCharts.Curve, color: String, dashed: Bool)] = []
            if let fullEntry, budget != "full" { compare.append((curve(fullEntry, label: "full cache"), "#222222", true)) }
            let chart = MemoryCharts.breakdownChart(
                title: budget == "full" ? "Memory by term — full cache" : "Memory by term — budget \(budget)", xLabel: "screenshots in the prompt",
                stacked: curve(entry, label: budget), compare: compare, capacityGB: capacity / 1e9, capacityLabel: capacityLabel,
                notes: ["\(screen), \(entry.visualTokensPerScreenshot) visual tokens per screenshot."])
            body += "<figure data-chart=\"breakdown\" data-budget=\"\(e(budget))\">\(chart.render())</figure>\n"
        }
        body += "</div>\n"

        // Where the peak is.
        body += "<h2 id=\"peak\">Where the peak is — \(e(screen))</h2>\n<div class=\"grid\">\n"
        for budget in g.budgets {
            guard let entry = g.entry(screen: screen, budget: budget), let s = entry.report.steps.max(by: { $0.allocatedPeakBytes < $1.allocatedPeakBytes }) else { continue }
            body += MemoryCharts.peakTable(
                caption: budget == "full" ? "full cache" : "budget \(budget)", step: "\(s.screenshots) screenshot\(s.screenshots == 1 ? "" : "s") (step \(s.step))",
                phase: s.peakPhase, location: s.peakLocation, allocatedBytes: Double(s.allocatedPeakBytes), reservedBytes: Double(s.reservedPeakBytes),
                tensors: s.peakTensors.map(ReplayResults.PeakTensor.init), breakdown: ReplayResults.MemoryBreakdown(terms: s.peakTerms))
        }
        body += "</div>\n"

        // Per-step tables.
        body += "<h2 id=\"tables\">Per-step tables</h2>\n"
        for entry in g.entries {
            body += "<details><summary>\(e(entry.screen)) · \(e(entry.budget))</summary><div class=\"scroll\"><pre>\(e(MemoryTable.render(entry.report)))</pre></div></details>\n"
        }
        body += "<footer>\(e(g.generator)) · memory JSON schema \(schemaVersion).</footer>\n"
        return MemoryCharts.page(title: "StarKV memory — \(c.model.displayName)", body: body)
    }

    static func pixels(_ screen: String) -> Int {
        let parts = screen.split(separator: "x").compactMap { Int($0) }
        return parts.count == 2 ? parts[0] * parts[1] : 0
    }

    static func curve(_ entry: MemoryGrid.Entry, label: String) -> MemoryCharts.Curve {
        MemoryCharts.Curve(label: label, points: entry.report.steps.map { s in
            (Double(s.screenshots), ReplayResults.MemoryBreakdown(terms: s.peakTerms), s.outOfMemory ? (s.oom?.location ?? "step \(s.step)") : nil)
        })
    }
}
