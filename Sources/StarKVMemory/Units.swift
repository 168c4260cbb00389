/// Byte-unit helpers. StarKV always states both decimal gigabytes (GB = 10⁹ B) and binary
/// gibibytes (GiB = 2³⁰ B), because the reference evaluation scripts print GiB labelled "GB"
/// (docs/memory-model.md, "Units").
public enum ByteUnits {
    /// 10⁹ bytes.
    public static let bytesPerGB: Double = 1_000_000_000
    /// 2³⁰ bytes.
    public static let bytesPerGiB: Double = 1_073_741_824
    /// 2²⁰ bytes.
    public static let mebibyte = 1 << 20
    /// 2³⁰ bytes.
    public static let gibibyte = 1 << 30

    /// Bytes in decimal gigabytes.
    public static func gigabytes(_ bytes: Int) -> Double { Double(bytes) / bytesPerGB }
    /// Bytes in binary gibibytes.
    public static func gibibytes(_ bytes: Int) -> Double { Double(bytes) / bytesPerGiB }

    /// `"23.12 GB (21.53 GiB)"` — two decimals, both units.
    public static func describe(_ bytes: Int) -> String {
        "\(fixed(gigabytes(bytes), 2)) GB (\(fixed(gibibytes(bytes), 2)) GiB)"
    }

    /// A non-negative-or-negative value with `digits` decimals, rounded half away from zero,
    /// formatted without Foundation so output is identical on every platform.
    public static func fixed(_ value: Double, _ digits: Int) -> String {
        guard value.isFinite else { return value.isNaN ? "nan" : (value < 0 ? "-inf" : "inf") }
        var scale: Double = 1
        for _ in 0..<max(0, digits) { scale *= 10 }
        let negative = value < 0
        let scaled = (abs(value) * scale).rounded(.toNearestOrAwayFromZero)
        guard scaled < 9.0e18 else { return String(value) }
        let n = Int64(scaled)
        let s = Int64(scale)
        let whole = n / s
        var text = (negative && n != 0 ? "-" : "") + String(whole)
        if digits > 0 {
            let frac = String(n % s)
            text += "." + String(repeating: "0", count: digits - frac.count) + frac
        }
        return text
    }
}
