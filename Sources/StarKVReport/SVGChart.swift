import StarKVModel

/// Inline-SVG charts for the HTML report: line charts with optional stacked areas, a capacity
/// line and markers. Output is a pure function of the data (fixed number formatting), so
/// reports are byte-identical across runs.
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

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var lines: [Series] = []
    /// Series stacked bottom-up as filled areas (same x values each).
    public var stackedAreas: [Series] = []
    /// Horizontal reference lines (value, label).
    public var horizontalLines: [(y: Double, label: String)] = []
    public var markers: [Marker] = []
    public var width = 720.0
    public var height = 360.0
    /// Integer x ticks (steps, budgets) rather than fractional ones.
    public var integerX = true
    /// Explicit x tick values (else automatic).
    public var xTicks: [Double]?

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

    public func render() -> String {
        let left = 64.0, right = 170.0, top = 34.0, bottom = 46.0
        let plotW = width - left - right, plotH = height - top - bottom
        var allX: [Double] = []
        var allY: [Double] = [0]
        for s in lines { allX += s.points.map(\.x); allY += s.points.map(\.y) }
        if let first = stackedAreas.first {
            allX += first.points.map(\.x)
            for i in first.points.indices { allY.append(stackedAreas.reduce(0) { $0 + ($1.points.indices.contains(i) ? $1.points[i].y : 0) }) }
        }
        allY += horizontalLines.map(\.y)
        allY += markers.map(\.y)
        allX += markers.map(\.x)
        let xMin = allX.min() ?? 0, xMaxRaw = allX.max() ?? 1
        let xMax = xMaxRaw > xMin ? xMaxRaw : xMin + 1
        let yMax = SVGChart.niceCeiling((allY.max() ?? 1) * 1.05)
        func px(_ x: Double) -> Double { left + (x - xMin) / (xMax - xMin) * plotW }
        func py(_ y: Double) -> Double { top + plotH - y / yMax * plotH }
        func f(_ v: Double) -> String { UnitFormat.fixed(v, 1) }

        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 \(f(width)) \(f(height))\" width=\"\(f(width))\" height=\"\(f(height))\" role=\"img\" aria-label=\"\(escape(title))\">\n"
        out += "<rect x=\"0\" y=\"0\" width=\"\(f(width))\" height=\"\(f(height))\" fill=\"#ffffff\"/>\n"
        out += "<text x=\"\(f(left))\" y=\"20\" class=\"title\" font-size=\"14\" font-weight=\"bold\">\(escape(title))</text>\n"
        // Grid and y ticks.
        for i in 0...5 {
            let v = yMax * Double(i) / 5
            let y = py(v)
            out += "<line x1=\"\(f(left))\" y1=\"\(f(y))\" x2=\"\(f(left + plotW))\" y2=\"\(f(y))\" stroke=\"#e5e5e5\"/>\n"
            out += "<text x=\"\(f(left - 6))\" y=\"\(f(y + 4))\" font-size=\"11\" text-anchor=\"end\">\(SVGChart.tickLabel(v))</text>\n"
        }
        // X ticks.
        let ticks = xTicks ?? SVGChart.autoTicks(xMin, xMax, integer: integerX)
        for t in ticks where t >= xMin && t <= xMax {
            out += "<text x=\"\(f(px(t)))\" y=\"\(f(top + plotH + 16))\" font-size=\"11\" text-anchor=\"middle\">\(SVGChart.tickLabel(t))</text>\n"
        }
        out += "<line x1=\"\(f(left))\" y1=\"\(f(top + plotH))\" x2=\"\(f(left + plotW))\" y2=\"\(f(top + plotH))\" stroke=\"#333\"/>\n"
        out += "<line x1=\"\(f(left))\" y1=\"\(f(top))\" x2=\"\(f(left))\" y2=\"\(f(top + plotH))\" stroke=\"#333\"/>\n"
        out += "<text x=\"\(f(left + plotW / 2))\" y=\"\(f(height - 8))\" font-size=\"12\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        out += "<text x=\"14\" y=\"\(f(top + plotH / 2))\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 14 \(f(top + plotH / 2)))\">\(escape(yLabel))</text>\n"
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
                out += "<polygon points=\"\(poly)\" fill=\"\(s.color)\" fill-opacity=\"0.75\" stroke=\"none\"><title>\(escape(s.name))</title></polygon>\n"
            }
        }
        // Reference lines.
        for (y, label) in horizontalLines {
            out += "<line x1=\"\(f(left))\" y1=\"\(f(py(y)))\" x2=\"\(f(left + plotW))\" y2=\"\(f(py(y)))\" stroke=\"#c0392b\" stroke-dasharray=\"6 4\"/>\n"
            out += "<text x=\"\(f(left + plotW - 4))\" y=\"\(f(py(y) - 4))\" font-size=\"11\" text-anchor=\"end\" fill=\"#c0392b\">\(escape(label))</text>\n"
        }
        // Lines.
        for s in lines where !s.points.isEmpty {
            let pts = s.points.map { "\(f(px($0.x))),\(f(py($0.y)))" }.joined(separator: " ")
            out += "<polyline points=\"\(pts)\" fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"2\"\(s.dashed ? " stroke-dasharray=\"5 3\"" : "")><title>\(escape(s.name))</title></polyline>\n"
            for p in s.points {
                out += "<circle cx=\"\(f(px(p.x)))\" cy=\"\(f(py(p.y)))\" r=\"2.5\" fill=\"\(s.color)\"><title>\(escape(s.name)): \(SVGChart.tickLabel(p.x)), \(UnitFormat.fixed(p.y, 3))</title></circle>\n"
            }
        }
        for m in markers {
            out += "<circle cx=\"\(f(px(m.x)))\" cy=\"\(f(py(m.y)))\" r=\"5\" fill=\"none\" stroke=\"\(m.color)\" stroke-width=\"2\"/>\n"
            out += "<text x=\"\(f(px(m.x) + 7))\" y=\"\(f(py(m.y) - 7))\" font-size=\"11\" fill=\"\(m.color)\">\(escape(m.label))</text>\n"
        }
        // Legend.
        var ly = top
        for s in stackedAreas.reversed() + lines {
            out += "<rect x=\"\(f(left + plotW + 12))\" y=\"\(f(ly))\" width=\"12\" height=\"12\" fill=\"\(s.color)\"/>\n"
            out += "<text x=\"\(f(left + plotW + 30))\" y=\"\(f(ly + 10))\" font-size=\"11\">\(escape(s.name))</text>\n"
            ly += 17
        }
        out += "</svg>"
        return out
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
