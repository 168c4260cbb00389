import StarKVModel

/// Inline-SVG charts for the HTML reports: line and scatter charts with optional stacked areas,
/// reference lines and markers. Every text label gets a box (estimated from its length and font
/// size) and is placed so that no two boxes of a chart intersect: marker and reference-line labels
/// try several positions and fall back to a note under the legend; legend entries and titles are
/// shortened to their column. Output is a pure function of the data (fixed number formatting), so
/// reports are byte-identical across runs. Implements docs/report.md §1.
public struct SVGChart: Sendable {
    /// One plotted series.
    public struct Series: Sendable {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public var color: String
        public var dashed: Bool

        public init(name: String, points: [(x: Double, y: Double)], color: String, dashed: Bool = false) {
            self.name = name
            self.points = points
            self.color = color
            self.dashed = dashed
        }
    }

    /// A labelled point drawn as a marker (e.g. the first OOM step).
    public struct Marker: Sendable {
        public var x: Double
        public var y: Double
        public var label: String
        public var color: String

        public init(x: Double, y: Double, label: String, color: String = "#c0392b") {
            self.x = x
            self.y = y
            self.label = label
            self.color = color
        }
    }

    /// One point of a scatter plot; `hollow` draws a ring (e.g. a run that does not fit).
    public struct ScatterPoint: Sendable {
        public var x: Double
        public var y: Double
        public var color: String
        public var title: String
        public var hollow: Bool

        public init(x: Double, y: Double, color: String, title: String, hollow: Bool = false) {
            self.x = x
            self.y = y
            self.color = color
            self.title = title
            self.hollow = hollow
        }
    }

    /// The box a text label occupies, in chart pixels (for the no-overlap check).
    public struct TextBox: Sendable, Equatable {
        public var x: Double
        public var y: Double
        public var width: Double
        public var height: Double
        public var text: String

        public func intersects(_ o: TextBox) -> Bool {
            x < o.x + o.width && o.x < x + width && y < o.y + o.height && o.y < y + height
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var lines: [Series] = []
    /// Series stacked bottom-up as filled areas (same x values each).
    public var stackedAreas: [Series] = []
    public var scatter: [ScatterPoint] = []
    /// Horizontal reference lines (value, label).
    public var horizontalLines: [(y: Double, label: String)] = []
    /// Vertical reference lines (value, label).
    public var verticalLines: [(x: Double, label: String)] = []
    public var markers: [Marker] = []
    /// Legend entries without a series (colour, text), after the series entries.
    public var legendExtras: [(color: String, text: String)] = []
    /// Notes written under the legend (wrapped to its column).
    public var notes: [String] = []
    public var width = 720.0
    public var height = 360.0
    /// Integer x ticks (steps, budgets) rather than fractional ones.
    public var integerX = true
    /// Explicit x tick values (else automatic).
    public var xTicks: [Double]?
    /// Fixed y range (else 0 to a rounded maximum).
    public var yRange: (min: Double, max: Double)?
    /// Start the x axis at the data minimum (true) or pad it (scatter plots).
    public var padX = false

    public init(title: String, xLabel: String, yLabel: String) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
    }

    /// A categorical palette that stays readable on white.
    public static let palette = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
        "#393b79", "#637939",
    ]

    /// Font family of every chart (the widths below are estimated for it).
    public static let fontFamily = "DejaVu Sans, Verdana, Arial, sans-serif"

    /// Estimated advance width of `text` at `fontSize` px: an upper bound for DejaVu Sans /
    /// Verdana (the widest common sans faces), so real text stays inside its box.
    public static func textWidth(_ text: String, fontSize: Double) -> Double {
        var em = 0.0
        for c in text {
            if c == " " { em += 0.34 } else if c == "." || c == "," || c == ":" || c == ";" || c == "|" || c == "i" || c == "l" || c == "'" {
                em += 0.36
            } else if c.isUppercase || c == "m" || c == "w" || c == "%" || c == "@" || c == "—" || c == "–" { em += 0.92 } else { em += 0.66 }
        }
        return em * fontSize
    }

    /// Shortens `text` with an ellipsis to at most `maxWidth` px.
    static func fit(_ text: String, _ fontSize: Double, _ maxWidth: Double) -> String {
        if textWidth(text, fontSize: fontSize) <= maxWidth { return text }
        var chars = Array(text)
        while !chars.isEmpty && textWidth(String(chars) + "…", fontSize: fontSize) > maxWidth { chars.removeLast() }
        return String(chars) + "…"
    }

    /// Splits `text` into lines of at most `maxWidth` px (words kept whole where possible).
    static func wrap(_ text: String, _ fontSize: Double, _ maxWidth: Double) -> [String] {
        var lines: [String] = []
        var current = ""
        for word in text.split(separator: " ") {
            let candidate = current.isEmpty ? String(word) : current + " " + word
            if textWidth(candidate, fontSize: fontSize) <= maxWidth {
                current = candidate
            } else {
                if !current.isEmpty { lines.append(current) }
                current = fit(String(word), fontSize, maxWidth)
            }
        }
        if !current.isEmpty { lines.append(current) }
        return lines
    }

    /// The SVG markup.
    public func render() -> String { layout().svg }

    /// Every text box of the rendered chart.
    public func textBoxes() -> [TextBox] { layout().boxes }

    struct Canvas {
        var svg = ""
        var boxes: [TextBox] = []

        /// Adds a text whose box is computed from its anchor; returns false (adding nothing) when
        /// `avoid` is set and the box would intersect an existing one or leave `bounds`.
        @discardableResult
        mutating func text(
            _ s: String, x: Double, y: Double, size: Double, anchor: String = "start", extra: String = "",
            avoid: Bool = false, bounds: (Double, Double, Double, Double)? = nil
        ) -> Bool {
            let w = SVGChart.textWidth(s, fontSize: size)
            let x0 = anchor == "middle" ? x - w / 2 : anchor == "end" ? x - w : x
            let box = TextBox(x: x0, y: y - 0.95 * size, width: w, height: 1.25 * size, text: s)
            if avoid {
                if boxes.contains(where: { $0.intersects(box) }) { return false }
                if let (bx, by, bw, bh) = bounds, box.x < bx || box.y < by || box.x + box.width > bx + bw || box.y + box.height > by + bh {
                    return false
                }
            }
            boxes.append(box)
            svg += "<text x=\"\(f(x))\" y=\"\(f(y))\" font-size=\"\(f(size))\"\(anchor == "start" ? "" : " text-anchor=\"\(anchor)\"")\(extra)>\(HTML.escape(s))</text>\n"
            return true
        }

        func f(_ v: Double) -> String { UnitFormat.fixed(v, 1) }
    }

    func layout() -> (svg: String, boxes: [TextBox]) {
        let left = 66.0, right = 190.0, top = 34.0, bottom = 46.0
        let plotW = width - left - right, plotH = height - top - bottom
        var allX: [Double] = []
        var allY: [Double] = [0]
        for s in lines { allX += s.points.map(\.x); allY += s.points.map(\.y) }
        allX += scatter.map(\.x)
        allY += scatter.map(\.y)
        if let first = stackedAreas.first {
            allX += first.points.map(\.x)
            for i in first.points.indices { allY.append(stackedAreas.reduce(0) { $0 + ($1.points.indices.contains(i) ? $1.points[i].y : 0) }) }
        }
        allY += horizontalLines.map(\.y)
        allY += markers.map(\.y)
        allX += markers.map(\.x)
        allX += verticalLines.map(\.x)
        var xMin = allX.min() ?? 0, xMax = allX.max() ?? 1
        if xMax <= xMin { xMax = xMin + 1 }
        if padX {
            let pad = (xMax - xMin) * 0.08
            xMin -= pad
            xMax += pad
        }
        let yMin = yRange?.min ?? 0
        let yMax = yRange?.max ?? SVGChart.niceCeiling((allY.max() ?? 1) * 1.05)
        func px(_ x: Double) -> Double { left + (x - xMin) / (xMax - xMin) * plotW }
        func py(_ y: Double) -> Double { top + plotH - (min(max(y, yMin), yMax) - yMin) / (yMax - yMin) * plotH }
        func f(_ v: Double) -> String { UnitFormat.fixed(v, 1) }

        var c = Canvas()
        c.svg += "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 \(f(width)) \(f(height))\" width=\"\(f(width))\" height=\"\(f(height))\" font-family=\"\(SVGChart.fontFamily)\" role=\"img\" aria-label=\"\(HTML.escape(title))\">\n"
        c.svg += "<title>\(HTML.escape(title))</title>\n"
        c.svg += "<rect x=\"0\" y=\"0\" width=\"\(f(width))\" height=\"\(f(height))\" fill=\"#ffffff\"/>\n"
        c.text(SVGChart.fit(title, 14, width - 12), x: 6, y: 20, size: 14, extra: " font-weight=\"bold\" class=\"title\"")
        // Grid and y ticks.
        for i in 0...5 {
            let v = yMin + (yMax - yMin) * Double(i) / 5
            let y = py(v)
            c.svg += "<line x1=\"\(f(left))\" y1=\"\(f(y))\" x2=\"\(f(left + plotW))\" y2=\"\(f(y))\" stroke=\"#e5e5e5\"/>\n"
            c.text(SVGChart.tickLabel(v, step: (yMax - yMin) / 5), x: left - 6, y: y + 4, size: 11, anchor: "end")
        }
        // X ticks, thinned until their labels do not touch.
        var ticks = (xTicks ?? SVGChart.autoTicks(xMin, xMax, integer: integerX)).filter { $0 >= xMin - 1e-9 && $0 <= xMax + 1e-9 }
        func xStep() -> Double { ticks.count > 1 ? ticks[1] - ticks[0] : max(abs(ticks.first ?? 1), 1e-9) }
        while ticks.count > 2 {
            let labels = ticks.map { (px($0), SVGChart.textWidth(SVGChart.tickLabel($0, step: xStep()), fontSize: 11)) }
            let crowded = zip(labels, labels.dropFirst()).contains { a, b in a.0 + a.1 / 2 + 4 > b.0 - b.1 / 2 }
            if !crowded { break }
            ticks = ticks.enumerated().filter { $0.offset % 2 == 0 }.map(\.element)
        }
        let step = xTicks == nil ? xStep() : (ticks.count > 1 ? zip(ticks, ticks.dropFirst()).map { $1 - $0 }.min()! : 1)
        for t in ticks {
            c.text(SVGChart.tickLabel(t, step: step), x: px(t), y: top + plotH + 19, size: 11, anchor: "middle")
        }
        c.svg += "<line x1=\"\(f(left))\" y1=\"\(f(top + plotH))\" x2=\"\(f(left + plotW))\" y2=\"\(f(top + plotH))\" stroke=\"#333\"/>\n"
        c.svg += "<line x1=\"\(f(left))\" y1=\"\(f(top))\" x2=\"\(f(left))\" y2=\"\(f(top + plotH))\" stroke=\"#333\"/>\n"
        c.text(SVGChart.fit(xLabel, 12, plotW), x: left + plotW / 2, y: height - 8, size: 12, anchor: "middle")
        // The rotated y label: its box is tall and narrow.
        let yText = SVGChart.fit(yLabel, 12, plotH)
        let yw = SVGChart.textWidth(yText, fontSize: 12)
        c.boxes.append(TextBox(x: 4, y: top + plotH / 2 - yw / 2, width: 14, height: yw, text: yText))
        c.svg += "<text x=\"14\" y=\"\(f(top + plotH / 2))\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 14 \(f(top + plotH / 2)))\">\(HTML.escape(yText))</text>\n"

        // Stacked areas.
        if let first = stackedAreas.first {
            var base = [Double](repeating: 0, count: first.points.count)
            for s in stackedAreas {
                var topPts: [String] = []
                var bottomPts: [String] = []
                for (i, p) in s.points.enumerated() where i < base.count {
                    topPts.append("\(f(px(p.x))),\(f(py(base[i] + p.y)))")
                    bottomPts.append("\(f(px(p.x))),\(f(py(base[i])))")
                    base[i] += p.y
                }
                let poly = (topPts + bottomPts.reversed()).joined(separator: " ")
                c.svg += "<polygon points=\"\(poly)\" fill=\"\(s.color)\" fill-opacity=\"0.8\" stroke=\"none\"><title>\(HTML.escape(s.name))</title></polygon>\n"
            }
        }
        // Lines.
        for s in lines where !s.points.isEmpty {
            let pts = s.points.map { "\(f(px($0.x))),\(f(py($0.y)))" }.joined(separator: " ")
            c.svg += "<polyline points=\"\(pts)\" fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2\"\(s.dashed ? " stroke-dasharray=\"5 3\"" : "")><title>\(HTML.escape(s.name))</title></polyline>\n"
            for p in s.points {
                c.svg += "<circle cx=\"\(f(px(p.x)))\" cy=\"\(f(py(p.y)))\" r=\"2.5\" fill=\"\(s.color)\"><title>\(HTML.escape(s.name)): \(SVGChart.tickLabel(p.x)), \(UnitFormat.fixed(p.y, 3))</title></circle>\n"
            }
        }
        for p in scatter {
            c.svg += "<circle cx=\"\(f(px(p.x)))\" cy=\"\(f(py(p.y)))\" r=\"4.5\" fill=\"\(p.hollow ? "#ffffff" : p.color)\" stroke=\"\(p.color)\" stroke-width=\"1.5\"><title>\(HTML.escape(p.title))</title></circle>\n"
        }
        // Reference lines: the line, then its label at the first free spot.
        let plotBounds = (left, top, plotW, plotH)
        var overflowNotes: [String] = []
        for (y, label) in horizontalLines {
            c.svg += "<line x1=\"\(f(left))\" y1=\"\(f(py(y)))\" x2=\"\(f(left + plotW))\" y2=\"\(f(py(y)))\" stroke=\"#c0392b\" stroke-dasharray=\"6 4\"/>\n"
            let extra = " fill=\"#c0392b\""
            let placed =
                c.text(label, x: left + plotW - 4, y: py(y) - 4, size: 11, anchor: "end", extra: extra, avoid: true, bounds: plotBounds)
                || c.text(label, x: left + plotW - 4, y: py(y) + 13, size: 11, anchor: "end", extra: extra, avoid: true, bounds: plotBounds)
                || c.text(label, x: left + 4, y: py(y) - 4, size: 11, extra: extra, avoid: true, bounds: plotBounds)
                || c.text(label, x: left + 4, y: py(y) + 13, size: 11, extra: extra, avoid: true, bounds: plotBounds)
            if !placed { overflowNotes.append("dashed red line: \(label)") }
        }
        for (x, label) in verticalLines {
            c.svg += "<line x1=\"\(f(px(x)))\" y1=\"\(f(top))\" x2=\"\(f(px(x)))\" y2=\"\(f(top + plotH))\" stroke=\"#c0392b\" stroke-dasharray=\"6 4\"/>\n"
            let extra = " fill=\"#c0392b\""
            let placed =
                c.text(label, x: px(x) + 4, y: top + plotH - 6, size: 11, extra: extra, avoid: true, bounds: plotBounds)
                || c.text(label, x: px(x) - 4, y: top + plotH - 6, size: 11, anchor: "end", extra: extra, avoid: true, bounds: plotBounds)
                || c.text(label, x: px(x) - 4, y: top + 12, size: 11, anchor: "end", extra: extra, avoid: true, bounds: plotBounds)
                || c.text(label, x: px(x) + 4, y: top + 12, size: 11, extra: extra, avoid: true, bounds: plotBounds)
            if !placed { overflowNotes.append("dashed red vertical line: \(label)") }
        }
        // Markers: rings, labels where they fit (several candidate spots), else a note. Markers on
        // the same spot share one label ("… +2 more here").
        var merged: [Marker] = []
        var mergedCount: [Int] = []
        for m in markers {
            if let i = merged.firstIndex(where: { abs(px($0.x) - px(m.x)) < 1 && abs(py($0.y) - py(m.y)) < 1 && !m.label.isEmpty && !$0.label.isEmpty }) {
                mergedCount[i] += 1
            } else {
                merged.append(m)
                mergedCount.append(1)
            }
        }
        for (k, var m) in merged.enumerated() {
            if mergedCount[k] > 1 { m.label += " +\(mergedCount[k] - 1) more here" }
            let mx = px(m.x), my = py(m.y)
            c.svg += "<circle cx=\"\(f(mx))\" cy=\"\(f(my))\" r=\"6\" fill=\"none\" stroke=\"\(m.color)\" stroke-width=\"2.5\"/>\n"
            if m.label.isEmpty { continue }
            let extra = " fill=\"\(m.color)\" font-weight=\"bold\""
            let candidates: [(Double, Double, String)] = [
                (mx + 9, my - 8, "start"), (mx - 9, my - 8, "end"), (mx + 9, my + 16, "start"), (mx - 9, my + 16, "end"),
                (mx, my - 12, "middle"), (mx, my + 20, "middle"), (mx - 9, my - 24, "end"), (mx + 9, my - 24, "start"),
                (mx - 9, my + 32, "end"), (mx + 9, my + 32, "start"),
            ]
            var placed = false
            for (x, y, a) in candidates where !placed {
                placed = c.text(m.label, x: x, y: y, size: 11, anchor: a, extra: extra, avoid: true, bounds: plotBounds)
            }
            if !placed { overflowNotes.append("ring at x=\(SVGChart.tickLabel(m.x)): \(m.label)") }
        }
        // Legend column.
        let lx = left + plotW + 22
        let columnW = width - lx - 4
        var ly = top
        let entries = stackedAreas.reversed().map { ($0.color, $0.name, false) } + lines.map { ($0.color, $0.name, $0.dashed) }
            + legendExtras.map { ($0.color, $0.text, false) }
        let noteLines = (notes + overflowNotes).flatMap { SVGChart.wrap($0, 10, columnW) }
        let room = Int((top + plotH + bottom - 6 - ly) / 16)
        let shownEntries = entries.count + min(noteLines.count, 1) <= room ? entries.count : max(0, room - 1)
        for (color, name, dashed) in entries.prefix(shownEntries) {
            if dashed {
                c.svg += "<line x1=\"\(f(lx))\" y1=\"\(f(ly + 6))\" x2=\"\(f(lx + 12))\" y2=\"\(f(ly + 6))\" stroke=\"\(color)\" stroke-width=\"2\" stroke-dasharray=\"4 2\"/>\n"
            } else {
                c.svg += "<rect x=\"\(f(lx))\" y=\"\(f(ly))\" width=\"12\" height=\"12\" fill=\"\(color)\"/>\n"
            }
            c.text(SVGChart.fit(name, 11, columnW - 18), x: lx + 18, y: ly + 10, size: 11)
            ly += 16
        }
        if shownEntries < entries.count {
            c.text("+\(entries.count - shownEntries) more (see the table)", x: lx, y: ly + 10, size: 10, extra: " fill=\"#555\"")
            ly += 16
        }
        ly += 4
        let noteRoom = Int((height - 4 - ly) / 12.5)
        for (i, line) in noteLines.enumerated() where i < noteRoom {
            c.text(i == noteRoom - 1 && noteLines.count > noteRoom ? SVGChart.fit(line + " …", 10, columnW) : line, x: lx, y: ly + 10, size: 10, extra: " fill=\"#444\"")
            ly += 12.5
        }
        c.svg += "</svg>"
        return (c.svg, c.boxes)
    }

    static func niceCeiling(_ v: Double) -> Double {
        guard v > 0, v.isFinite else { return 1 }
        var magnitude = 1.0
        while magnitude * 10 <= v { magnitude *= 10 }
        while magnitude > v { magnitude /= 10 }
        for m in [1.0, 2.0, 2.5, 5.0, 10.0] where m * magnitude >= v { return m * magnitude }
        return 10 * magnitude
    }

    static func autoTicks(_ lo: Double, _ hi: Double, integer: Bool) -> [Double] {
        let span = hi - lo
        var step = niceCeiling(span / 8)
        if integer { step = max(1, step.rounded(.up)) }
        var t = (lo / step).rounded(.up) * step
        var out: [Double] = []
        while t <= hi + 1e-9, out.count < 50 {
            out.append(t)
            t += step
        }
        return out
    }

    /// A tick value with as many decimals as the tick spacing needs (0.05 apart → 2 decimals).
    static func tickLabel(_ v: Double, step: Double) -> String {
        guard step > 0, step.isFinite else { return tickLabel(v) }
        var digits = 0
        var scaled = step
        while digits < 6 && abs(scaled - scaled.rounded()) > 1e-6 * max(1, abs(scaled)) {
            digits += 1
            scaled *= 10
        }
        if digits == 0 && v == v.rounded() && abs(v) < 1e15 { return String(Int64(v)) }
        return UnitFormat.fixed(v, digits)
    }

    static func tickLabel(_ v: Double) -> String {
        if v == v.rounded() && abs(v) < 1e15 { return String(Int64(v)) }
        return abs(v) >= 10 ? UnitFormat.fixed(v, 1) : UnitFormat.fixed(v, 2)
    }

    func escape(_ s: String) -> String { HTML.escape(s) }
}

/// HTML escaping.
public enum HTML {
    public static func escape(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.count)
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }
}
