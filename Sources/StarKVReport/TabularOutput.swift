import Foundation

/// RFC 4180 CSV: fields with commas, quotes or newlines are quoted, quotes doubled.
public struct CSVTable: Sendable {
    public var header: [String]
    public var rows: [[String]] = []

    public init(header: [String]) { self.header = header }

    public mutating func append(_ row: [String]) { rows.append(row) }

    public func render() -> String {
        ([header] + rows).map { $0.map(CSVTable.quote).joined(separator: ",") }.joined(separator: "\n") + "\n"
    }

    static func quote(_ field: String) -> String {
        guard field.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return field }
        return "\"" + field.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}

/// Chrome trace-event format (the JSON object form) that Perfetto and chrome://tracing open:
/// counter events ("C") for memory curves, complete events ("X") for phase spans, and
/// metadata ("M") naming processes and threads. Events keep insertion order.
public struct ChromeTrace: Sendable {
    public struct Event: Sendable, Encodable {
        public var name: String
        public var ph: String
        public var ts: Double
        public var dur: Double?
        public var pid: Int
        public var tid: Int
        public var cat: String?
        public var args: [String: Double]?
        public var nameArg: String?

        enum CodingKeys: String, CodingKey { case name, ph, ts, dur, pid, tid, cat, args }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(name, forKey: .name)
            try c.encode(ph, forKey: .ph)
            try c.encode(ts, forKey: .ts)
            try c.encodeIfPresent(dur, forKey: .dur)
            try c.encode(pid, forKey: .pid)
            try c.encode(tid, forKey: .tid)
            try c.encodeIfPresent(cat, forKey: .cat)
            if let nameArg {
                try c.encode(["name": nameArg], forKey: .args)
            } else {
                try c.encodeIfPresent(args, forKey: .args)
            }
        }
    }

    public var events: [Event] = []

    public init() {}

    /// Names process `pid` (one per policy × budget) in the Perfetto UI.
    public mutating func nameProcess(_ pid: Int, _ name: String) {
        events.append(Event(name: "process_name", ph: "M", ts: 0, pid: pid, tid: 0, nameArg: name))
    }

    public mutating func nameThread(_ pid: Int, _ tid: Int, _ name: String) {
        events.append(Event(name: "thread_name", ph: "M", ts: 0, pid: pid, tid: tid, nameArg: name))
    }

    /// A counter sample (`values` become stacked tracks named by key).
    public mutating func counter(_ name: String, pid: Int, tsMicros: Double, values: [String: Double]) {
        events.append(Event(name: name, ph: "C", ts: tsMicros, pid: pid, tid: 0, args: values))
    }

    /// A span of `durMicros` starting at `tsMicros`.
    public mutating func span(_ name: String, category: String, pid: Int, tid: Int, tsMicros: Double, durMicros: Double, args: [String: Double]? = nil) {
        events.append(Event(name: name, ph: "X", ts: tsMicros, dur: durMicros, pid: pid, tid: tid, cat: category, args: args))
    }
}
