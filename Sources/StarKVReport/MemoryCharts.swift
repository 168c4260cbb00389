import StarKVModel
import StarKVReplay

/// Chart and table builders shared by the replay report and `starkv memory --html`: the stacked
/// memory breakdown, the "where is the peak" table and the page shell. Implements
/// docs/report.md §1, §2 and §5.
public enum MemoryCharts {
    /// Colours of the breakdown terms, in stacking order (weights first).
    public static let termColors = [
        "#4e79a7", "#f28e2b", "#ffbe7d", "#e15759", "#59a14f", "#76b7b2", "#b07aa1", "#bab0ac", "#d4a6c8",
    ]

    /// One curve of the breakdown chart: a label (policies or a budget), per-x breakdowns and
    /// the OOM phase at each x (nil = fits).
    public struct Curve: Sendable {
        public var label: String
        public var points: [(x: Double, breakdown: ReplayResults.MemoryBreakdown, oom: String?)]

        public init(label: String, points: [(x: Double, breakdown: ReplayResults.MemoryBreakdown, oom: String?)]) {
            self.label = label
            self.points = points
        }

        /// Live + reserved-unallocated bytes at each x (the height of the stack).
        public var totals: [(x: Double, y: Double)] {
            points.map { ($0.x, ($0.breakdown.liveBytes + $0.breakdown.reservedUnallocated) / 1e9) }
        }
    }

    /// A stacked-area chart of `stacked` by term, with `compare` curves drawn as total lines, the
    /// capacity line and a ring at the first OOM of each curve naming its phase.
    public static func breakdownChart(
        title: String, xLabel: String, stacked: Curve, compare: [(curve: Curve, color: String, dashed: Bool)],
        capacityGB: Double, capacityLabel: String, notes: [String]
    ) -> SVGChart {
        var chart = SVGChart(title: title, xLabel: xLabel, yLabel: "GB at the step's peak")
        let names = stacked.points.first?.breakdown.terms.map(\.name) ?? []
        for (i, name) in names.enumerated() {
            let values = stacked.points.map { ($0.x, $0.breakdown.terms[i].bytes / 1e9) }
            // Terms that are zero at every x are left out of the stack and the legend.
            guard values.contains(where: { $0.1 > 0 }) else { continue }
            chart.stackedAreas.append(.init(name: name, points: values, color: termColors[i % termColors.count]))
        }
        for c in compare {
            chart.lines.append(.init(name: "\(c.curve.label) (total)", points: c.curve.totals, color: c.color, dashed: c.dashed))
        }
        for curve in [stacked] + compare.map(\.curve) {
            if let first = curve.points.first(where: { $0.oom != nil }), let total = curve.totals.first(where: { $0.x == first.x }) {
                chart.markers.append(.init(x: first.x, y: total.y, label: "OOM: \(first.oom!)"))
            }
        }
        chart.horizontalLines = [(capacityGB, capacityLabel)]
        chart.notes = notes
        return chart
    }

    /// "Where the peak is": the step, phase and largest live tensors of a run's peak.
    public static func peakTable(
        caption: String, step: String, phase: String, location: String, allocatedBytes: Double, reservedBytes: Double,
        tensors: [ReplayResults.PeakTensor], breakdown: ReplayResults.MemoryBreakdown? = nil
    ) -> String {
        let e = HTML.escape
        var out = "<div class=\"peak\"><h3>\(e(caption))</h3><p>Peak at <b>\(e(step))</b>, phase <b>\(e(phase))</b> (\(e(location))): \(UnitFormat.gb(allocatedBytes)) GB allocated, \(UnitFormat.gb(reservedBytes)) GB reserved.</p>\n"
        if let b = breakdown {
            let terms = b.terms.filter { $0.bytes > 0 }.sorted { $0.bytes > $1.bytes }
            out += "<p>By term: " + terms.map { "\(e($0.name)) \(UnitFormat.gb($0.bytes, 2)) GB" }.joined(separator: " · ") + ".</p>\n"
        }
        guard !tensors.isEmpty else { return out + "<p><i>No tensor list in these results (schema v1).</i></p></div>\n" }
        out += "<table><thead><tr><th>live tensor at the peak</th><th>allocated at</th><th>GB</th></tr></thead><tbody>\n"
        for t in tensors {
            out += "<tr><td>\(e(t.category))</td><td>\(e(t.allocatedAt))</td><td class=\"n\">\(UnitFormat.gb(t.bytes, 3))</td></tr>\n"
        }
        return out + "</tbody></table></div>\n"
    }

    /// The page around `body`: inline CSS, no scripts, no network. Figures sit in a grid of
    /// two columns from 1200 px and one below; charts scale to their column; wide tables scroll
    /// inside their own box, so the page never scrolls sideways.
    public static func page(title: String, body: String) -> String {
        """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>\(HTML.escape(title))</title>
        <style>
        body{font-family:"DejaVu Sans",Verdana,Arial,sans-serif;margin:16px auto;max-width:1480px;color:#222;padding:0 16px;font-size:14px}
        h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:15px;margin:8px 0 4px}
        table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 8px}th{background:#f4f4f4}
        td.n{text-align:right;font-variant-numeric:tabular-nums}td.ok{color:#1a7f37}td.bad{color:#c0392b;font-weight:bold}
        .scroll{overflow-x:auto;max-width:100%}
        .grid{display:grid;grid-template-columns:1fr;gap:16px}
        @media (min-width:1200px){.grid{grid-template-columns:1fr 1fr}}
        figure{margin:0;min-width:0}svg.chart{width:100%;height:auto;display:block;max-width:900px}svg.heatmap{max-width:760px}
        .notes{background:#fff8e1;border:1px solid #f0d98c;padding:8px 12px;font-size:13px}
        .verdict{background:#eef6ee;border:1px solid #b9dcb9;padding:8px 12px}
        .lede{font-size:14px}.units{font-size:12px;color:#555}footer{margin-top:32px;font-size:12px;color:#666}code{font-size:12px;word-break:break-all}
        .peak{min-width:0}
        </style></head><body>
        \(body)</body></html>

        """
    }

    /// A 2-D heat map of peak GB: rows × columns, each cell coloured by peak / capacity, the
    /// cells that do not fit hatched, and a thick line along every edge between a cell that fits
    /// and one that does not (the fits boundary).
    public static func heatMap(
        title: String, rowLabels: [String], columnLabels: [String], columnTitle: String, values: [[Double]], fits: [[Bool]],
        capacityGB: Double, capacityLabel: String
    ) -> (svg: String, boxes: [SVGChart.TextBox]) {
        let left = 190.0, top = 64.0, cellW = 88.0, cellH = 30.0
        let width = max(640, left + cellW * Double(columnLabels.count) + 24)
        let legend = SVGChart.wrap(
            "Cells: peak allocated GB of the step. ✗ and hatching: the step runs out of memory on \(capacityLabel) (\(UnitFormat.fixed(capacityGB, 1)) GB usable). Thick line: the boundary between steps that fit and steps that do not.",
            11, width - 12)
        let height = top + cellH * Double(rowLabels.count) + 24 + 15 * Double(legend.count)
        func f(_ v: Double) -> String { UnitFormat.fixed(v, 1) }
        var c = SVGChart.Canvas()
        c.svg += "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart heatmap\" viewBox=\"0 0 \(f(width)) \(f(height))\" width=\"\(f(width))\" height=\"\(f(height))\" font-family=\"\(SVGChart.fontFamily)\" role=\"img\" aria-label=\"\(HTML.escape(title))\">\n"
        c.svg += "<title>\(HTML.escape(title))</title>\n<defs><pattern id=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" patternTransform=\"rotate(45)\"><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#7a1f1f\" stroke-width=\"1.2\" stroke-opacity=\"0.35\"/></pattern></defs>\n"
        c.svg += "<rect x=\"0\" y=\"0\" width=\"\(f(width))\" height=\"\(f(height))\" fill=\"#ffffff\"/>\n"
        c.text(SVGChart.fit(title, 14, width - 12), x: 6, y: 20, size: 14, extra: " font-weight=\"bold\"")
        c.text(SVGChart.fit(columnTitle, 12, width - left), x: left, y: 38, size: 12)
        for (j, label) in columnLabels.enumerated() {
            c.text(SVGChart.fit(label, 11, cellW - 4), x: left + cellW * (Double(j) + 0.5), y: top - 6, size: 11, anchor: "middle")
        }
        for (i, label) in rowLabels.enumerated() {
            let y = top + cellH * Double(i)
            c.text(SVGChart.fit(label, 11, left - 12), x: left - 8, y: y + cellH / 2 + 4, size: 11, anchor: "end")
            for j in columnLabels.indices {
                let x = left + cellW * Double(j)
                let v = values[i][j]
                let share = max(0, min(1.2, v / max(capacityGB, 1e-9)))
                // White → orange → red as the peak approaches and passes the capacity.
                let r = 255, g = Int(255 - 150 * min(1, share)), b = Int(255 - 230 * min(1, share))
                let fill = "rgb(\(r),\(g),\(b))"
                c.svg += "<rect x=\"\(f(x))\" y=\"\(f(y))\" width=\"\(f(cellW))\" height=\"\(f(cellH))\" fill=\"\(fill)\" stroke=\"#ffffff\"><title>\(HTML.escape(label)), \(HTML.escape(columnLabels[j])): \(UnitFormat.fixed(v, 2)) GB\(fits[i][j] ? "" : " (does not fit)")</title></rect>\n"
                if !fits[i][j] {
                    c.svg += "<rect x=\"\(f(x))\" y=\"\(f(y))\" width=\"\(f(cellW))\" height=\"\(f(cellH))\" fill=\"url(#hatch)\"/>\n"
                }
                c.text(UnitFormat.fixed(v, 1) + (fits[i][j] ? "" : " ✗"), x: x + cellW / 2, y: y + cellH / 2 + 4, size: 11, anchor: "middle", extra: fits[i][j] ? "" : " font-weight=\"bold\"")
            }
        }
        // Fits boundary: edges between a fitting and a non-fitting neighbour.
        var path = ""
        for i in rowLabels.indices {
            for j in columnLabels.indices {
                let x = left + cellW * Double(j), y = top + cellH * Double(i)
                if j + 1 < columnLabels.count, fits[i][j] != fits[i][j + 1] { path += "M\(f(x + cellW)),\(f(y))V\(f(y + cellH))" }
                if i + 1 < rowLabels.count, fits[i][j] != fits[i + 1][j] { path += "M\(f(x)),\(f(y + cellH))H\(f(x + cellW))" }
            }
        }
        if !path.isEmpty { c.svg += "<path d=\"\(path)\" stroke=\"#111\" stroke-width=\"3\" fill=\"none\"/>\n" }
        var legendY = top + cellH * Double(rowLabels.count) + 24
        for line in legend {
            c.text(line, x: 6, y: legendY, size: 11, extra: " fill=\"#444\"")
            legendY += 15
        }
        c.svg += "</svg>"
        return (c.svg, c.boxes)
    }
}
