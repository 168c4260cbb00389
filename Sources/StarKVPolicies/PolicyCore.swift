import CStarKVSupport
import Foundation
import StarKVModel
import StarKVTrace

// The small "press"-style protocol every KV-compression policy implements, and the value types
// it consumes and produces. Spec: docs/algorithms.md §1.2–§1.4 (when and how a prefill
// is compressed), §10 (what a step record must hold), §11 (scoring FLOPs).

/// A KV-cache budget: a percentage of the prompt (`C = ⌊L·b/100⌋`, the references'
/// `--kv_cache_budget`) or an absolute number of tokens per layer (SnapKV's original
/// `max_capacity_prompt`). Both count the always-kept window (docs/algorithms.md §1.3).
public enum KVBudget: Sendable, Hashable, Codable, CustomStringConvertible {
    /// `b` percent of the prompt length, e.g. `.percent(20)`.
    case percent(Double)
    /// A fixed number of tokens per layer (per head).
    case tokens(Int)

    /// The per-layer capacity `C` for a prompt of `promptLength` tokens: `⌊L·b/100⌋` computed in
    /// fp64 in the same order as the reference (`L * b / 100`), or the absolute count.
    public func capacity(promptLength: Int) -> Int {
        switch self {
        case .percent(let b):
            let c = (Double(promptLength) * b / 100).rounded(.down)
            if !c.isFinite || c < 0 { return 0 }
            return c >= Double(Int.max / 2) ? Int.max / 2 : Int(c)
        case .tokens(let n):
            return max(0, n)
        }
    }

    /// `20%` or `512tok`.
    public var description: String {
        switch self {
        case .percent(let b):
            if b == b.rounded() && abs(b) < 1e15 { return "\(Int(b))%" }
            return "\(b)%"
        case .tokens(let n): return "\(n)tok"
        }
    }

    /// Parses `20`, `20%`, `12.5%` (percent) or `512tok` / `512t` (tokens).
    public init?(parsing text: String) {
        let t = text.trimmingCharacters(in: .whitespaces).lowercased()
        if t.hasSuffix("tok") || t.hasSuffix("t") {
            let digits = t.hasSuffix("tok") ? String(t.dropLast(3)) : String(t.dropLast())
            guard let n = Int(digits), n >= 0 else { return nil }
            self = .tokens(n)
            return
        }
        let digits = t.hasSuffix("%") ? String(t.dropLast()) : t
        guard let b = Double(digits), b.isFinite, b >= 0 else { return nil }
        self = .percent(b)
    }
}

/// Which heads a kept set applies to (docs/algorithms.md §2.3 step 11 shared sets; §3 step 6 / §4
/// per-query-head sets; §4.3 / §8 per-KV-head sets).
public enum HeadGranularity: String, Sendable, Codable, CaseIterable {
    /// One index set for every head of the layer.
    case shared
    /// One set per query head (`H` rows).
    case queryHead = "query_head"
    /// One set per KV head (`H_kv` rows).
    case kvHead = "kv_head"
}

/// The kept prompt positions of one layer for one step (docs/algorithms.md §1.3: past selection plus
/// the always-kept window). The rows are stored either as lists of positions or, when a policy
/// selected them from shared scores in a sweep, as bitmaps over the prompt (`KeptBitmaps`,
/// docs/policies.md "Sweeps"); both hold the same sets, and equality compares the sets.
public struct LayerSelection: Sendable, Equatable {
    /// Decoder layer (0-based).
    public var layer: Int
    /// Whether `keptIndices` has one row, one per query head or one per KV head.
    public var granularity: HeadGranularity
    /// The layer's nominal capacity (tokens per head, window included) after any reallocation.
    public var capacityTokens: Int
    /// The always-kept suffix `w_eff` (0 when nothing was compressed or the policy has none).
    public var windowTokens: Int
    /// False when the layer kept the whole prompt (e.g. `L < C`).
    public var compressed: Bool
    private var rows: Rows

    private enum Rows: Sendable {
        case positions([[Int32]])
        case bitmaps(KeptBitmaps)
    }

    public init(
        layer: Int, granularity: HeadGranularity, keptIndices: [[Int32]], capacityTokens: Int,
        windowTokens: Int, compressed: Bool
    ) {
        self.layer = layer
        self.granularity = granularity
        self.rows = .positions(keptIndices)
        self.capacityTokens = capacityTokens
        self.windowTokens = windowTokens
        self.compressed = compressed
    }

    /// A selection whose rows are bitmaps.
    public init(
        layer: Int, granularity: HeadGranularity, keptBitmaps: KeptBitmaps, capacityTokens: Int,
        windowTokens: Int, compressed: Bool
    ) {
        self.layer = layer
        self.granularity = granularity
        self.rows = .bitmaps(keptBitmaps)
        self.capacityTokens = capacityTokens
        self.windowTokens = windowTokens
        self.compressed = compressed
    }

    /// Kept positions, ascending, one row per head at `granularity` (one row when shared).
    /// Setting them replaces bitmap rows by these lists.
    public var keptIndices: [[Int32]] {
        get {
            switch rows {
            case .positions(let p): return p
            case .bitmaps(let b): return (0..<b.rowCount).map { b.positions(row: $0) }
            }
        }
        set { rows = .positions(newValue) }
    }

    /// The rows as bitmaps, when the policy built them that way (nil for lists of positions).
    public var keptBitmaps: KeptBitmaps? {
        if case .bitmaps(let b) = rows { return b }
        return nil
    }

    /// Number of kept rows (1 when shared).
    public var keptRowCount: Int {
        switch rows {
        case .positions(let p): return p.count
        case .bitmaps(let b): return b.rowCount
        }
    }

    /// Kept positions of row `r`, ascending.
    public func keptRow(_ r: Int) -> [Int32] {
        switch rows {
        case .positions(let p): return p[r]
        case .bitmaps(let b): return b.positions(row: r)
        }
    }

    /// Number of positions row `r` keeps.
    public func keptCount(row r: Int) -> Int {
        switch rows {
        case .positions(let p): return p[r].count
        case .bitmaps(let b): return b.counts[r]
        }
    }

    /// A layer that keeps all `promptLength` positions.
    public static func keepAll(layer: Int, promptLength: Int) -> LayerSelection {
        LayerSelection(
            layer: layer, granularity: .shared, keptIndices: [allPositions(promptLength)],
            capacityTokens: promptLength, windowTokens: 0, compressed: false)
    }

    /// Kept tokens averaged over heads (what a per-head variable-length cache stores per head on
    /// average; the memory simulator multiplies by the stored head count).
    public var keptTokensMean: Double {
        let n = keptRowCount
        guard n > 0 else { return 0 }
        var total = 0
        for r in 0..<n { total += keptCount(row: r) }
        return Double(total) / Double(n)
    }

    /// The kept row index that query head `queryHead` reads (`G` = query heads per KV head).
    public func keptRowIndex(forQueryHead queryHead: Int, queryHeadsPerKVHead: Int) -> Int {
        switch granularity {
        case .shared: return 0
        case .queryHead: return queryHead
        case .kvHead: return queryHead / max(1, queryHeadsPerKVHead)
        }
    }

    /// The kept row that query head `queryHead` reads (`G` = query heads per KV head).
    public func keptIndices(forQueryHead queryHead: Int, queryHeadsPerKVHead: Int) -> [Int32] {
        keptRow(keptRowIndex(forQueryHead: queryHead, queryHeadsPerKVHead: queryHeadsPerKVHead))
    }

    /// Same layer, granularity, capacity, window, compression flag and kept sets, however stored.
    public static func == (a: LayerSelection, b: LayerSelection) -> Bool {
        guard a.layer == b.layer, a.granularity == b.granularity, a.capacityTokens == b.capacityTokens,
            a.windowTokens == b.windowTokens, a.compressed == b.compressed, a.keptRowCount == b.keptRowCount
        else { return false }
        if case .bitmaps(let x) = a.rows, case .bitmaps(let y) = b.rows { return x == y }
        return a.keptIndices == b.keptIndices
    }
}

/// The kept rows of one layer as bitmaps over the prompt's `length` positions (docs/policies.md
/// "Sweeps"; the same bitmaps the kept-set digest v2 hashes, docs/replay.md "Digest"): row r is
/// `wordsPerRow` words from `words[r · wordsPerRow]`, bit j % 64 of word j / 64 set when position j
/// is kept, bits at and past `length` zero. A sweep's policies build them straight from the order
/// keys and cuts of their shared ranking, so a budget's kept set costs one compare per position
/// and ⌈L/8⌉ bytes per row instead of four bytes per kept position.
public struct KeptBitmaps: Sendable, Equatable {
    /// Prompt positions each row covers.
    public let length: Int
    /// Number of rows.
    public let rowCount: Int
    /// Words per row, ⌈length / 64⌉.
    public let wordsPerRow: Int
    /// Row-major bitmap words.
    public let words: [UInt64]
    /// Kept positions per row.
    public let counts: [Int]

    /// Builds `rowCount` rows over `length` positions; `fill(r, row)` sets every word of row r
    /// and returns its number of kept positions.
    init(length: Int, rowCount: Int, fill: (Int, UnsafeMutableBufferPointer<UInt64>) -> Int) {
        let perRow = (max(0, length) + 63) / 64
        self.length = max(0, length)
        self.rowCount = rowCount
        wordsPerRow = perRow
        var counts = [Int](repeating: 0, count: rowCount)
        words = [UInt64](unsafeUninitializedCapacity: perRow * rowCount) { buf, n in
            for r in 0..<rowCount {
                counts[r] = fill(r, UnsafeMutableBufferPointer(rebasing: buf[(r * perRow)..<((r + 1) * perRow)]))
            }
            n = perRow * rowCount
        }
        self.counts = counts
    }

    /// Rows given by their positions (each strictly ascending inside [0, length); nil otherwise).
    init?(positions rows: [[Int32]], length: Int) {
        var ok = true
        self.init(length: length, rowCount: rows.count) { r, words in
            let good = rows[r].withUnsafeBufferPointer { p in
                starkv_bitmap_from_sorted(p.baseAddress, Int64(p.count), Int64(length), words.baseAddress) != 0
            }
            ok = ok && good
            return rows[r].count
        }
        if !ok { return nil }
    }

    /// Row r's kept positions, ascending.
    public func positions(row r: Int) -> [Int32] {
        let count = counts[r]
        guard wordsPerRow > 0 else { return [] }
        return [Int32](unsafeUninitializedCapacity: count + 16) { buf, n in
            words.withUnsafeBufferPointer { w in
                n = Int(starkv_bitmap_positions(w.baseAddress! + r * wordsPerRow, Int64(length), buf.baseAddress))
            }
        }
    }

    /// Calls `body` with row r's words.
    public func withRow<R>(_ r: Int, _ body: (UnsafeBufferPointer<UInt64>) throws -> R) rethrows -> R {
        try words.withUnsafeBufferPointer { w in try body(UnsafeBufferPointer(rebasing: w[(r * wordsPerRow)..<((r + 1) * wordsPerRow)])) }
    }

    /// Kept positions of row r inside [lo, hi) (clamped to the row).
    public func count(row r: Int, in range: Range<Int>) -> Int {
        let lo = max(0, range.lowerBound), hi = min(length, range.upperBound)
        guard lo < hi else { return 0 }
        return withRow(r) { Int(starkv_bitmap_count($0.baseAddress, Int64(lo), Int64(hi))) }
    }
}

/// Positions `0..<n` as Int32.
@inline(__always)
func allPositions(_ n: Int) -> [Int32] { (0..<max(0, n)).map { Int32($0) } }

/// The arithmetic a replay follows (docs/algorithms.md §1.5, §12; docs/policies.md "Numerics").
public enum ReplayNumerics: String, Sendable, Codable, CaseIterable {
    /// fp32 scores from the stored values, fp64 statistics: a policy's behaviour without
    /// rounding noise. The default for traces that do not say otherwise.
    case fp32 = "fp32"
    /// The reference's bf16 dtype flow: every tensor op the reference runs in bf16 is computed in
    /// fp32 and rounded once to bf16 (round-to-nearest-even), as CUDA's opmath kernels do — window
    /// sums, pooling, boosts, means, MI weights, temporal discount, power (per policy in
    /// docs/algorithms.md §12) — so that ties at the K-th score fall as on a bf16 GPU run (CUDA
    /// `torch.topk`: lower position first).
    case bf16Reference = "bf16-reference"

    /// Parses a header or command-line value; the empty string means the fp32 default.
    public init?(name: String) {
        if name.isEmpty { self = .fp32; return }
        self.init(rawValue: name)
    }
}

/// Warnings a policy raises while replaying a step (e.g. a window that had to be approximated).
/// Policies never print; the replay collects these (deduplicated, in first-seen order) into the
/// results' notes. Safe to share between threads.
public final class PolicyNotes: @unchecked Sendable {
    // Guarded by `lock` (Foundation's NSLock: the package still targets macOS 13).
    private let lock = NSLock()
    private var items: [String] = []

    public init() {}

    /// Adds `note` unless it is already there.
    public func add(_ note: String) {
        lock.lock()
        defer { lock.unlock() }
        if !items.contains(note) { items.append(note) }
    }

    /// Adds every note of `other` (first-seen order) that is not already here.
    public func add(contentsOf other: PolicyNotes) {
        for note in other.all { add(note) }
    }

    /// Every note so far, in first-seen order.
    public var all: [String] {
        lock.lock()
        defer { lock.unlock() }
        return items
    }
}

/// Everything a policy sees for one agent step: the trace header (model geometry, recorded
/// window sizes and fields), the step record and the budget (docs/algorithms.md §10.2), plus
/// the numerics to follow and where to leave warnings.
public struct PolicyStepInput: Sendable {
    public var header: TraceHeader
    public var step: StepRecord
    public var budget: KVBudget
    public var numerics: ReplayNumerics
    public var notes: PolicyNotes?

    public init(header: TraceHeader, step: StepRecord, budget: KVBudget, numerics: ReplayNumerics = .fp32, notes: PolicyNotes? = nil) {
        self.header = header
        self.step = step
        self.budget = budget
        self.numerics = numerics
        self.notes = notes
    }
}

/// What a policy returns for one step: per-layer kept sets, the compression-stage scoring FLOPs
/// (docs/algorithms.md §11) and the state to pass to the next step.
public struct PolicyStepOutput: Sendable, Equatable {
    /// One selection per decoder layer, in layer order.
    public var layers: [LayerSelection]
    /// FLOPs of the policy's scoring stage for this step (all layers), per §11.
    public var scoringFLOPs: Double
    /// State to hand to the same policy's next step.
    public var state: PolicyState
    /// Optional per-layer internals (e.g. STaR-KV `aeb_temperature`, `lambda_eff`), one value
    /// per layer, for inspection and golden comparisons.
    public var diagnostics: [String: [Double]]

    public init(
        layers: [LayerSelection], scoringFLOPs: Double, state: PolicyState,
        diagnostics: [String: [Double]] = [:]
    ) {
        self.layers = layers
        self.scoringFLOPs = scoringFLOPs
        self.state = state
        self.diagnostics = diagnostics
    }

    /// Kept tokens per layer, averaged over heads (for the memory simulator).
    public var keptTokensPerLayer: [Double] { layers.map(\.keptTokensMean) }
}

/// A policy's carried state value. Conforming types are plain Equatable value types.
public protocol PolicyStateValue: Sendable, Equatable {}

/// The state a policy carries from one step to the next, type-erased so that every policy can
/// keep its own state type while the replay threads one value through (brief: "state carried
/// across steps is an explicit value passed in and returned").
public struct PolicyState: Sendable, Equatable {
    /// The wrapped value (nil for stateless policies).
    public let value: (any PolicyStateValue)?

    /// No state (stateless policies, or the first step of a replay).
    public static let empty = PolicyState(nil)

    public init(_ value: (any PolicyStateValue)?) { self.value = value }

    /// The wrapped value if it has type `type`.
    public func value<T: PolicyStateValue>(as type: T.Type) -> T? { value as? T }

    public static func == (a: PolicyState, b: PolicyState) -> Bool {
        switch (a.value, b.value) {
        case (nil, nil): return true
        case (let x?, let y?): return stateEqual(x, y)
        default: return false
        }
    }
}

private func stateEqual<T: PolicyStateValue>(_ x: T, _ y: any PolicyStateValue) -> Bool {
    guard let y = y as? T else { return false }
    return x == y
}

/// Describes one option a policy accepts (`--policy-opt name=value`).
public struct PolicyOptionSpec: Sendable, Hashable {
    public var name: String
    /// The default as text (empty when it depends on a preset).
    public var defaultValue: String
    public var help: String

    public init(_ name: String, _ defaultValue: String, _ help: String) {
        self.name = name
        self.defaultValue = defaultValue
        self.help = help
    }
}

/// Key/value options for a policy, with typed getters that throw `PolicyError.badOption`.
public struct PolicyOptions: Sendable, Hashable {
    public var values: [String: String]

    public init(_ values: [String: String] = [:]) { self.values = values }

    /// Parses `a=1,b=2` (also accepts `;`-separated pairs).
    public init(parsing text: String, policy: String) throws {
        var out: [String: String] = [:]
        for part in text.split(whereSeparator: { $0 == "," || $0 == ";" }) {
            let kv = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard kv.count == 2, !kv[0].isEmpty else {
                throw PolicyError.badOption(policy: policy, option: String(part), value: "", expected: "name=value")
            }
            out[kv[0]] = kv[1]
        }
        values = out
    }

    public func has(_ key: String) -> Bool { values[key] != nil }

    public func string(_ key: String, policy: String, default d: String, choices: [String]? = nil) throws -> String {
        guard let v = values[key] else { return d }
        if let choices, !choices.contains(v) {
            throw PolicyError.badOption(policy: policy, option: key, value: v, expected: "one of " + choices.joined(separator: ", "))
        }
        return v
    }

    public func int(_ key: String, policy: String, default d: Int, range: ClosedRange<Int> = 0...Int.max) throws -> Int {
        guard let v = values[key] else { return d }
        guard let x = Int(v), range.contains(x) else {
            throw PolicyError.badOption(policy: policy, option: key, value: v, expected: "an integer in \(range.lowerBound)...\(range.upperBound)")
        }
        return x
    }

    public func double(_ key: String, policy: String, default d: Double, range: ClosedRange<Double> = -1e300...1e300) throws -> Double {
        guard let v = values[key] else { return d }
        guard let x = Double(v), x.isFinite, range.contains(x) else {
            throw PolicyError.badOption(policy: policy, option: key, value: v, expected: "a number in \(range.lowerBound)...\(range.upperBound)")
        }
        return x
    }

    public func bool(_ key: String, policy: String, default d: Bool) throws -> Bool {
        guard let v = values[key] else { return d }
        switch v.lowercased() {
        case "1", "true", "on", "yes": return true
        case "0", "false", "off", "no": return false
        default: throw PolicyError.badOption(policy: policy, option: key, value: v, expected: "on or off")
        }
    }
}

/// A KV-cache compression policy in the kvpress "press" style: it scores one prefill from the
/// recorded trace fields and returns the kept positions of every layer (docs/algorithms.md §1.2:
/// compression happens once per layer at prefill). The API is per step (all layers at once) so
/// that policies that allocate budget across layers (PyramidKV, VL-Cache, STaR-KV entropy
/// budget) can see the whole step.
///
/// Adding a policy = one file with a type conforming to `KVPolicy` + one line in
/// `PolicyRegistry.all`.
public protocol KVPolicy: Sendable {
    /// Registry name, e.g. `snapkv`.
    static var policyName: String { get }
    /// One-line description with the reference it follows.
    static var summary: String { get }
    /// Options accepted by `init(options:)`.
    static var optionSpecs: [PolicyOptionSpec] { get }

    /// Builds the policy; throws `PolicyError.badOption` for a bad value.
    init(options: PolicyOptions) throws

    /// Trace fields this configuration reads (`TraceField` names). Replay refuses a trace whose
    /// header lacks one (`validate(header:)`).
    var requiredFields: [String] { get }

    /// State before the first step of a replay (and after a reset, unless the policy says otherwise).
    var initialState: PolicyState { get }

    /// Compresses one step. `state` is the value returned for the previous step (or
    /// `initialState`); the policy resets it itself where the reference drivers reset
    /// (`step.reset`).
    func compress(_ input: PolicyStepInput, state: PolicyState) throws -> PolicyStepOutput

    /// True when the policy scores a step once for several budgets in `compressMany` ("score
    /// once, select many", docs/policies.md "Sweeps"): its scores depend on the budget only
    /// through its window clamp (`min(w, C − 2)`) and the budget-independent part of its work is
    /// shared; budgets whose carried states differ are scored apart (STaR-KV). The replay then
    /// hands it every budget of a sweep at once (re-prefill loop only).
    var sharesScoresAcrossBudgets: Bool { get }

    /// Compresses one step for several budgets of the same policy configuration: `inputs[i]`
    /// (same header, step and numerics; its own budget and notes) with `states[i]`. Returns one
    /// result per input, each equal to what `compress(inputs[i], state: states[i])` returns or
    /// throws. The default calls `compress` for each input.
    func compressMany(_ inputs: [PolicyStepInput], states: [PolicyState]) -> [Result<PolicyStepOutput, any Error>]
}

extension KVPolicy {
    public var name: String { Self.policyName }
    public var initialState: PolicyState { .empty }
    public var sharesScoresAcrossBudgets: Bool { false }

    public func compressMany(_ inputs: [PolicyStepInput], states: [PolicyState]) -> [Result<PolicyStepOutput, any Error>] {
        zip(inputs, states).map { input, state in Result { try compress(input, state: state) } }
    }

    /// Refuses a header that lacks a field this policy needs, naming the field and the lowest
    /// recorder fidelity that writes it.
    public func validate(header: TraceHeader) throws {
        for field in requiredFields where !header.has(field) {
            throw PolicyError.missingField(policy: Self.policyName, field: field, fidelity: TraceField.fidelity(of: field))
        }
    }
}

/// Errors raised by policies and the registry. Every message names the policy and, where it
/// applies, the step, layer and field, and says what to do.
public enum PolicyError: Error, CustomStringConvertible, Equatable, Sendable {
    case missingField(policy: String, field: String, fidelity: Fidelity?)
    case missingChunk(policy: String, field: String, layer: Int?, episode: String, step: Int)
    case badShape(policy: String, field: String, layer: Int?, episode: String, step: Int, expected: [Int], found: [Int])
    case badValue(policy: String, field: String, layer: Int?, episode: String, step: Int, reason: String)
    case windowNotRecorded(policy: String, window: Int, recorded: [Int], episode: String, step: Int)
    case invalidStep(policy: String, episode: String, step: Int, reason: String)
    case unknownPolicy(name: String, known: [String])
    case unknownOption(policy: String, option: String, known: [String])
    case badOption(policy: String, option: String, value: String, expected: String)

    public var description: String {
        switch self {
        case let .missingField(p, f, fid):
            let level = fid.map { "recorded at fidelity '\($0)' and above" } ?? "not a catalog field"
            return "policy \(p) needs trace field '\(f)', which this trace does not carry (\(level)); re-record with --fidelity \(fid?.description ?? "full") or pick another policy"
        case let .missingChunk(p, f, l, e, s):
            return "policy \(p): episode \(e) step \(s)\(l.map { " layer \($0)" } ?? ""): field '\(f)' is missing from the step record (the header lists it); the trace is incomplete — re-record the step"
        case let .badShape(p, f, l, e, s, exp, found):
            return "policy \(p): episode \(e) step \(s)\(l.map { " layer \($0)" } ?? ""): field '\(f)' has shape \(found), expected \(exp)"
        case let .badValue(p, f, l, e, s, r):
            return "policy \(p): episode \(e) step \(s)\(l.map { " layer \($0)" } ?? ""): field '\(f)': \(r)"
        case let .windowNotRecorded(p, w, rec, e, s):
            return "policy \(p): episode \(e) step \(s): window size \(w) is not among the recorded win_sum windows \(rec); choose window= one of \(rec) or a budget whose clamp min(w, C-2) stays recorded"
        case let .invalidStep(p, e, s, r):
            return "policy \(p): episode \(e) step \(s): \(r)"
        case let .unknownPolicy(n, known):
            return "unknown policy '\(n)'; known policies: \(known.joined(separator: ", "))"
        case let .unknownOption(p, o, known):
            return "policy \(p) has no option '\(o)'; its options: \(known.joined(separator: ", "))"
        case let .badOption(p, o, v, exp):
            return "policy \(p): option \(o)=\(v) is invalid; expected \(exp)"
        }
    }
}
