/// Plain-text helpers shared by the modules that render tables for people (inspect, memory,
/// replay summaries). Pure functions; nothing prints.
public struct TextTable: Sendable {
    public enum Alignment: Sendable { case left, right }

    public var columns: [(title: String, alignment: Alignment)]
    public var rows: [[String]] = []

    public init(_ columns: [(String, Alignment)]) {
        self.columns = columns.map { (title: $0.0, alignment: $0.1) }
    }

    public mutating func append(_ row: [String]) { rows.append(row) }

    /// The table with a header rule, columns padded to their widest cell.
    public func render() -> String {
        var widths = columns.map { $0.title.count }
        for row in rows {
            for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, cell in
                let pad = String(repeating: " ", count: max(0, widths[i] - cell.count))
                return columns[i].alignment == .left ? cell + pad : pad + cell
            }.joined(separator: "  ")
        }
        var out = [line(columns.map(\.title)), widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")]
        out += rows.map(line)
        return out.joined(separator: "\n")
    }
}

/// Byte and count formatting with explicit units (GB = 10⁹ B, GiB = 2³⁰ B; docs/memory-model.md).
public enum UnitFormat {
    /// `1.23 MB`-style decimal units.
    public static func decimalBytes(_ bytes: UInt64) -> String {
        let units = ["B", "kB", "MB", "GB", "TB"]
        var v = Double(bytes)
        var u = 0
        while v >= 1000, u < units.count - 1 {
            v /= 1000
            u += 1
        }
        return u == 0 ? "\(bytes) B" : fixed(v, 2) + " " + units[u]
    }

    /// Gigabytes (10⁹ B) with `digits` decimals.
    public static func gb(_ bytes: Double, _ digits: Int = 2) -> String { fixed(bytes / 1e9, digits) }

    /// Gibibytes (2³⁰ B) with `digits` decimals.
    public static func gib(_ bytes: Double, _ digits: Int = 2) -> String { fixed(bytes / 1_073_741_824, digits) }

    /// `v` with exactly `digits` decimals, rounded half away from zero (locale-independent).
    public static func fixed(_ v: Double, _ digits: Int) -> String {
        guard v.isFinite else { return v.isNaN ? "nan" : (v > 0 ? "inf" : "-inf") }
        var scale = 1.0
        for _ in 0..<digits { scale *= 10 }
        let r = (abs(v) * scale).rounded(.toNearestOrAwayFromZero)
        let sign = v < 0 && r > 0 ? "-" : ""
        let whole = r / scale
        let intPart = UInt64(whole.rounded(.down))
        guard digits > 0 else { return sign + String(intPart) }
        let frac = UInt64((r - Double(intPart) * scale).rounded())
        var fracText = String(frac)
        while fracText.count < digits { fracText = "0" + fracText }
        return sign + String(intPart) + "." + fracText
    }
}
