import Foundation
import StarKVPolicies
import StarKVReplay

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Errors of sweep files, plans, shards and merges; each names the file, line, unit or directory.
public enum SweepError: Error, Sendable, Equatable, CustomStringConvertible {
    case file(path: String, message: String)
    case plan(String)
    case shard(String)
    case merge(String)
    case io(String)

    public var description: String {
        switch self {
        case .file(let path, let message): return "\(path): \(message)"
        case .plan(let m), .shard(let m), .merge(let m), .io(let m): return m
        }
    }
}

/// A sweep file, format version 1 (docs/sweeps.md): which traces to replay under which policies,
/// budgets and simulation settings. Lists left out take the trace's own value (`nil` entries).
public struct SweepSpec: Sendable, Equatable {
    /// The only sweep-file format version this StarKV reads (`starkv_sweep = 1`).
    public static let formatVersion = 1
    /// Largest sweep file read (a sweep file is a few lines; this bounds memory on bad input).
    public static let maxFileBytes = 1 << 20
    /// Largest number of units a plan may hold.
    public static let maxUnits = 100_000

    /// Trace paths or glob patterns, relative to the sweep file's directory unless absolute.
    public var traces: [String]
    /// Policies, each `name` or `name(key=value;...)`, or the single word `all`.
    public var policies: [String]
    /// Budgets: `20` / `12.5%` (percent) or `512tok` (tokens).
    public var budgets: [String]
    public var models: [String?]
    public var gpus: [String]
    public var attention: [String?]
    public var kvHeads: [Int?]
    public var loops: [String]
    public var logits: String
    public var allocator: String
    public var retainPrevious: Bool
    /// Worker threads per unit (results are identical for any value).
    public var threads: Int?

    static let knownKeys: [String] = [
        "starkv_sweep", "traces", "policies", "budgets", "models", "gpus", "attention", "kv_heads", "loops", "logits",
        "allocator", "retain_previous", "threads",
    ]

    /// Reads and checks a sweep file.
    public static func load(path: String) throws -> SweepSpec {
        guard let attrs = try? FileManager.default.attributesOfItem(atPath: path) else {
            throw SweepError.file(path: path, message: "cannot read the sweep file")
        }
        if let size = attrs[.size] as? NSNumber, size.intValue > maxFileBytes {
            throw SweepError.file(path: path, message: "\(size.intValue) bytes; a sweep file may hold at most \(maxFileBytes)")
        }
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw SweepError.file(path: path, message: "cannot read the sweep file as UTF-8 text")
        }
        do { return try parse(text) } catch let e as TOMLError {
            throw SweepError.file(path: path, message: e.description)
        }
    }

    /// Parses sweep-file text (errors carry the line).
    public static func parse(_ text: String) throws -> SweepSpec {
        let doc = try SweepTOML.parse(text)
        for e in doc.entries where !knownKeys.contains(e.key) {
            throw TOMLError(line: e.line, message: "unknown key '\(e.key)'; a sweep file has \(knownKeys.joined(separator: ", "))")
        }
        guard let version = doc.value("starkv_sweep") else {
            throw TOMLError(line: 1, message: "missing 'starkv_sweep = \(formatVersion)' (the sweep-file format version)")
        }
        guard case .integer(let v) = version.value, v == formatVersion else {
            throw TOMLError(line: version.line, message: "starkv_sweep must be \(formatVersion); this StarKV reads sweep-file format \(formatVersion) only")
        }

        func strings(_ key: String, required: Bool, numbersToo: Bool = false) throws -> [String]? {
            guard let entry = doc.value(key) else {
                if required { throw TOMLError(line: 1, message: "missing key '\(key)'") }
                return nil
            }
            let (value, line) = (entry.value, entry.line)
            let items: [TOMLValue]
            if case .array(let a) = value { items = a } else { items = [value] }
            guard !items.isEmpty else { throw TOMLError(line: line, message: "'\(key)' is empty") }
            var out: [String] = []
            for item in items {
                switch item {
                case .string(let s):
                    let t = s.trimmingCharacters(in: .whitespaces)
                    guard !t.isEmpty else { throw TOMLError(line: line, message: "'\(key)' holds an empty string") }
                    out.append(t)
                case .integer(let n) where numbersToo: out.append(String(n))
                case .float(let x) where numbersToo: out.append(String(x))
                default:
                    throw TOMLError(line: line, message: "'\(key)' must hold strings\(numbersToo ? " or numbers" : ""), not \(item.typeName)")
                }
            }
            if let dup = firstDuplicate(out) { throw TOMLError(line: line, message: "'\(key)' lists '\(dup)' twice") }
            return out
        }
        func scalarString(_ key: String, default d: String) throws -> String {
            guard let entry = doc.value(key) else { return d }
            let (value, line) = (entry.value, entry.line)
            guard case .string(let s) = value, !s.isEmpty else { throw TOMLError(line: line, message: "'\(key)' must be a string") }
            return s
        }

        let traces = try strings("traces", required: true)!
        let policies = try strings("policies", required: true)!
        if policies.contains("all"), policies.count > 1 {
            throw TOMLError(line: doc.value("policies")!.line, message: "'all' already names every policy; list it alone")
        }
        let rawBudgets = try strings("budgets", required: true, numbersToo: true)!
        let budgets: [String]
        do { budgets = try KVBudget.parseList(rawBudgets.joined(separator: ",")).map(\.description) } catch {
            throw TOMLError(line: doc.value("budgets")!.line, message: "'budgets': \(error)")
        }
        let models: [String?] = try strings("models", required: false) ?? [nil]
        let gpus = try strings("gpus", required: false) ?? ["h100-80gb"]
        let attention: [String?] = try strings("attention", required: false) ?? [nil]
        let loops = try strings("loops", required: false) ?? ["reprefill"]
        var kvHeads: [Int?] = [nil]
        if let entry = doc.value("kv_heads") {
            let (value, line) = (entry.value, entry.line)
            let items: [TOMLValue]
            if case .array(let a) = value { items = a } else { items = [value] }
            guard !items.isEmpty else { throw TOMLError(line: line, message: "'kv_heads' is empty") }
            var list: [Int] = []
            for item in items {
                guard case .integer(let n) = item, n >= 1, n <= 4096 else {
                    throw TOMLError(line: line, message: "'kv_heads' must hold integers in 1...4096")
                }
                list.append(n)
            }
            if let dup = firstDuplicate(list) { throw TOMLError(line: line, message: "'kv_heads' lists \(dup) twice") }
            kvHeads = list
        }
        var retain = true
        if let entry = doc.value("retain_previous") {
            let (value, line) = (entry.value, entry.line)
            guard case .bool(let b) = value else { throw TOMLError(line: line, message: "'retain_previous' must be true or false") }
            retain = b
        }
        var threads: Int? = nil
        if let entry = doc.value("threads") {
            let (value, line) = (entry.value, entry.line)
            guard case .integer(let n) = value, n >= 1, n <= 1024 else {
                throw TOMLError(line: line, message: "'threads' must be an integer in 1...1024")
            }
            threads = n
        }
        return SweepSpec(
            traces: traces, policies: policies, budgets: budgets, models: models, gpus: gpus, attention: attention,
            kvHeads: kvHeads, loops: loops, logits: try scalarString("logits", default: "full"),
            allocator: try scalarString("allocator", default: "torch"), retainPrevious: retain, threads: threads)
    }

    static func firstDuplicate<T: Hashable>(_ items: [T]) -> T? {
        var seen = Set<T>()
        for x in items where !seen.insert(x).inserted { return x }
        return nil
    }

    /// Expands the trace globs (relative to `baseDirectory`) and lays out the work units.
    public func plan(baseDirectory: String) throws -> SweepPlan {
        var tracePaths: [String] = []
        var seen = Set<String>()
        for pattern in traces {
            let matches = try SweepSpec.expand(pattern, baseDirectory: baseDirectory)
            for m in matches where seen.insert(m).inserted { tracePaths.append(m) }
        }
        var units: [SweepUnit] = []
        for trace in tracePaths {
            for model in models {
                for gpu in gpus {
                    for attn in attention {
                        for heads in kvHeads {
                            for loop in loops {
                                units.append(
                                    SweepUnit(
                                        index: units.count, id: "", trace: trace, model: model, gpu: gpu, attention: attn,
                                        kvHeads: heads, loop: loop))
                                guard units.count <= SweepSpec.maxUnits else {
                                    throw SweepError.plan("the sweep has more than \(SweepSpec.maxUnits) units; split it into several sweep files")
                                }
                            }
                        }
                    }
                }
            }
        }
        var ids: [String: Int] = [:]
        for k in units.indices {
            units[k].id = units[k].stableID
            if let other = ids[units[k].id] {
                throw SweepError.plan("units \(other) and \(k) have the same ID \(units[k].id) (identical settings)")
            }
            ids[units[k].id] = k
        }
        var plan = SweepPlan(
            policies: policies, budgets: budgets, logits: logits, allocator: allocator, retainPrevious: retainPrevious,
            units: units, fingerprint: "")
        plan.fingerprint = plan.computeFingerprint()
        return plan
    }

    static func hasGlob(_ s: String) -> Bool { s.contains { $0 == "*" || $0 == "?" || $0 == "[" } }

    /// A pattern's matching files, sorted, as paths relative to `baseDirectory` (absolute
    /// patterns stay absolute). A plain path must exist; a glob must match at least one file.
    static func expand(_ pattern: String, baseDirectory: String) throws -> [String] {
        let absolute = pattern.hasPrefix("/")
        let prefix = absolute || baseDirectory.isEmpty || baseDirectory == "." ? "" : (baseDirectory.hasSuffix("/") ? baseDirectory : baseDirectory + "/")
        if !hasGlob(pattern) {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: prefix + pattern, isDirectory: &isDir), !isDir.boolValue else {
                throw SweepError.plan("trace '\(pattern)' does not exist (paths are relative to the sweep file's directory\(prefix.isEmpty ? "" : ", \(baseDirectory)"))")
            }
            return [pattern]
        }
        var g = glob_t()
        defer { globfree(&g) }
        let rc = glob(prefix + pattern, 0, nil, &g)
        var out: [String] = []
        if rc == 0 {
            for k in 0..<Int(g.gl_pathc) {
                guard let p = g.gl_pathv[k] else { continue }
                let full = String(cString: p)
                var isDir: ObjCBool = false
                guard FileManager.default.fileExists(atPath: full, isDirectory: &isDir), !isDir.boolValue else { continue }
                out.append(String(full.dropFirst(prefix.count)))
            }
        }
        guard !out.isEmpty else { throw SweepError.plan("trace pattern '\(pattern)' matches no file") }
        return out.sorted()
    }
}

/// One work unit: one trace under one simulation setting, replayed with every policy × budget
/// of the sweep. Its ID is a function of the trace path and the setting alone, so it does not
/// change when other units are added or the file is reordered.
public struct SweepUnit: Sendable, Codable, Equatable {
    /// Position in the plan (shard `I/N` runs the units whose index mod N is I).
    public var index: Int
    public var id: String
    /// Trace path as the plan names it (relative to the sweep file's directory unless absolute).
    public var trace: String
    /// nil = the trace's own value (same defaults as `starkv replay`).
    public var model: String?
    public var gpu: String
    public var attention: String?
    public var kvHeads: Int?
    public var loop: String

    /// `u` + the first 12 hex digits of SHA-256 over the unit's key.
    public var stableID: String {
        var h = SHA256()
        h.update("starkv-sweep-unit-v1\n\(key)")
        return "u" + h.finalize().prefix(12)
    }

    /// The unit's settings as one line (used for its ID and in messages).
    public var key: String {
        "trace=\(trace) model=\(model ?? "trace") gpu=\(gpu) attention=\(attention ?? "trace") kv_heads=\(kvHeads.map(String.init) ?? "trace") loop=\(loop)"
    }
}

/// The units of a sweep in their fixed order, with what every unit shares (policies, budgets,
/// memory options) and a fingerprint over all of it that shards and merges check.
public struct SweepPlan: Sendable, Codable, Equatable {
    public static let formatName = "starkv-sweep-plan"
    public static let formatVersion = 1

    public var format: String = SweepPlan.formatName
    public var version: Int = SweepPlan.formatVersion
    public var policies: [String]
    public var budgets: [String]
    public var logits: String
    public var allocator: String
    public var retainPrevious: Bool
    public var units: [SweepUnit]
    /// SHA-256 over everything above (threads excluded: they never change results).
    public var fingerprint: String

    public init(
        policies: [String], budgets: [String], logits: String, allocator: String, retainPrevious: Bool, units: [SweepUnit],
        fingerprint: String
    ) {
        self.policies = policies
        self.budgets = budgets
        self.logits = logits
        self.allocator = allocator
        self.retainPrevious = retainPrevious
        self.units = units
        self.fingerprint = fingerprint
    }

    public func computeFingerprint() -> String {
        var copy = self
        copy.fingerprint = ""
        var h = SHA256()
        h.update("starkv-sweep-plan-v1\n")
        h.update((try? SweepJSON.encode(copy)) ?? "")
        return h.finalize()
    }

    /// Units of shard `shard` (0-based) of `count`: every unit whose index mod count is shard.
    public func units(shard: Int, of count: Int) throws -> [SweepUnit] {
        guard count >= 1, shard >= 0, shard < count else {
            throw SweepError.shard("shard \(shard)/\(count): need 0 <= I < N (shards are numbered from 0, as Slurm array task IDs)")
        }
        return units.filter { $0.index % count == shard }
    }

    /// The unit with this ID, or an error listing how to find IDs.
    public func unit(id: String) throws -> SweepUnit {
        guard let u = units.first(where: { $0.id == id }) else {
            throw SweepError.shard("unit '\(id)' is not in this sweep; 'starkv sweep plan SWEEP' lists the unit IDs")
        }
        return u
    }

    /// Parses `I/N`.
    public static func parseShard(_ text: String) throws -> (Int, Int) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let i = Int(parts[0]), let n = Int(parts[1]) else {
            throw SweepError.shard("--shard '\(text)' must be I/N, e.g. 0/4")
        }
        guard n >= 1, n <= 1_000_000, i >= 0, i < n else {
            throw SweepError.shard("--shard \(text): need 0 <= I < N (shards are numbered from 0, as Slurm array task IDs)")
        }
        return (i, n)
    }
}

/// JSON encoding shared by every sweep output: sorted keys, pretty, no escaped slashes, final newline.
public enum SweepJSON {
    public static func encode<T: Encodable>(_ value: T) throws -> String {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return String(decoding: try e.encode(value), as: UTF8.self) + "\n"
    }

    public static func decode<T: Decodable>(_ type: T.Type, path: String, what: String) throws -> T {
        guard let data = FileManager.default.contents(atPath: path) else { throw SweepError.io("cannot read \(path)") }
        do { return try JSONDecoder().decode(type, from: data) } catch {
            throw SweepError.io("\(path) is not a valid \(what): \(error)")
        }
    }
}

