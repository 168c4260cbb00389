import StarKVModel
import StarKVTrace

// Shared scoring primitives: budget/window arithmetic (algorithms.md §1.3), pooling (§1.4),
// deterministic top-k (§1.4 "Spec for deterministic replay"), the hidden-norm spatial boost
// (§2.3 step 3 = §3 step 3) and the SnapKV FLOP term (§11).

/// Pooling of window sums (algorithms.md §1.4).
public enum Pooling: String, Sendable, Codable, CaseIterable {
    /// `F.avg_pool1d`, padding ⌊k/2⌋, divisor always k (padding counted).
    case avg = "avgpool"
    /// `F.max_pool1d` over the in-range neighbours.
    case max = "maxpool"
}

/// How a policy clamps its window to the capacity (algorithms.md §1.3).
public enum WindowClamp: Sendable {
    /// STaR-KV Qwen2.5-VL path: `max(1, min(w, C − 2))`.
    case starKVQwen
    /// GUI-KV / SnapKV / PyramidKV copies: `min(w, C − 2)`, floored at 1 here (at C ≤ 2 the
    /// references slice an empty window and crash in top-k).
    case reference
    /// No clamp (kvpress): `min(w, L)`.
    case none

    func apply(window w: Int, capacity c: Int, promptLength l: Int) -> Int {
        switch self {
        case .starKVQwen: return min(l, max(1, min(w, c - 2)))
        case .reference: return min(l, max(1, min(w, c - 2)))
        case .none: return min(l, max(0, w))
        }
    }
}

/// Budget arithmetic of one step (algorithms.md §1.3): capacity C, clamped window w_eff,
/// selectable past P = L − w_eff, and whether compression happens (`L ≥ C`).
struct BudgetPlan: Equatable {
    let promptLength: Int
    let capacity: Int
    let window: Int
    var past: Int { promptLength - window }
    /// The references skip compression when `q_len < max_capacity_prompt`.
    var compresses: Bool { promptLength >= capacity }

    init(promptLength: Int, budget: KVBudget, window: Int, clamp: WindowClamp) {
        self.promptLength = promptLength
        capacity = budget.capacity(promptLength: promptLength)
        self.window = clamp.apply(window: window, capacity: capacity, promptLength: promptLength)
    }
}

/// Pools `values` (one head's past scores, length P) with kernel `k`, stride 1, padding ⌊k/2⌋,
/// zero outside [0, P) (algorithms.md §1.4). Sums run left to right in fp32.
func pool(_ values: [Float], kernel k: Int, pooling: Pooling) -> [Float] {
    let n = values.count
    guard k > 1, n > 0 else { return values }
    let half = k / 2
    var out = [Float](repeating: 0, count: n)
    values.withUnsafeBufferPointer { v in
        switch pooling {
        case .avg:
            let inv = Float(k)
            for j in 0..<n {
                var s: Float = 0
                let lo = Swift.max(0, j - half), hi = Swift.min(n - 1, j - half + k - 1)
                var m = lo
                while m <= hi { s += v[m]; m += 1 }
                out[j] = s / inv
            }
        case .max:
            for j in 0..<n {
                let lo = Swift.max(0, j - half), hi = Swift.min(n - 1, j - half + k - 1)
                var best = -Float.infinity
                var m = lo
                while m <= hi { if v[m] > best { best = v[m] }; m += 1 }
                out[j] = best
            }
        }
    }
    return out
}

/// Positions of the `k` largest `scores`, ties broken by lower position, returned ascending
/// (algorithms.md §1.4). NaN ranks below every number. O(n) expected: a deterministic
/// three-way quickselect finds the k-th largest value, then one ascending pass collects.
func topKAscending<T: BinaryFloatingPoint>(_ scores: [T], count k: Int) -> [Int32] {
    let n = scores.count
    if k <= 0 || n == 0 { return [] }
    if k >= n { return allPositions(n) }
    var work = scores.map { $0.isNaN ? -T.infinity : $0 }
    let threshold = kthLargest(&work, k)
    var greater = 0
    for s in scores where !s.isNaN && s > threshold { greater += 1 }
    var ties = k - greater
    var out = [Int32]()
    out.reserveCapacity(k)
    for (j, raw) in scores.enumerated() {
        let s = raw.isNaN ? -T.infinity : raw
        if s > threshold {
            out.append(Int32(j))
        } else if s == threshold && ties > 0 {
            out.append(Int32(j))
            ties -= 1
        }
    }
    return out
}

/// The k-th largest value (1-based) of `a` (reordered in place). Deterministic: pivots are
/// medians of three fixed positions.
func kthLargest<T: BinaryFloatingPoint>(_ a: inout [T], _ k: Int) -> T {
    var lo = 0, hi = a.count - 1
    let target = k - 1  // index in descending order
    while true {
        if lo >= hi { return a[lo] }
        let mid = lo + (hi - lo) / 2
        let x = a[lo], y = a[mid], z = a[hi]
        let pivot = Swift.max(Swift.min(x, y), Swift.min(Swift.max(x, y), z))
        // Three-way partition of [lo, hi] into > pivot | == pivot | < pivot.
        var lt = lo, i = lo, gt = hi
        while i <= gt {
            if a[i] > pivot { a.swapAt(lt, i); lt += 1; i += 1 }
            else if a[i] < pivot { a.swapAt(i, gt); gt -= 1 }
            else { i += 1 }
        }
        if target < lt { hi = lt - 1 }
        else if target <= gt { return pivot }
        else { lo = gt + 1 }
    }
}

/// Merges selected past positions (ascending, all < P) with the window [P, L).
func withWindow(_ past: [Int32], past p: Int, promptLength l: Int) -> [Int32] {
    var out = past
    out.reserveCapacity(past.count + max(0, l - p))
    var j = p
    while j < l { out.append(Int32(j)); j += 1 }
    return out
}

/// GUI-KV / STaR-KV spatial saliency (algorithms.md §2.3 step 3, §3 step 3):
/// `β_u = α · softmax_u(z_u / T_s)` with `z` the z-score of the hidden-state norms (Bessel std,
/// eps 1e−8). Reductions run in fp64 in index order. With one token the reference's std is NaN;
/// here std = 0, so z = 0 and β = α (documented deviation).
func spatialBoost(norms: ArraySlice<Float>, alpha: Double, temperature: Double) -> [Float] {
    let n = norms.count
    guard n > 0 else { return [] }
    var mean = 0.0
    for v in norms { mean += Double(v) }
    mean /= Double(n)
    var ss = 0.0
    for v in norms { let d = Double(v) - mean; ss += d * d }
    let std = n > 1 ? (ss / Double(n - 1)).squareRoot() : 0
    let t = temperature == 0 ? 1.0 : temperature
    var z = [Double](repeating: 0, count: n)
    var zmax = -Double.infinity
    for (u, v) in norms.enumerated() {
        z[u] = ((Double(v) - mean) / (std + 1e-8)) / t
        if z[u] > zmax { zmax = z[u] }
    }
    var sum = 0.0
    for u in 0..<n { z[u] = expDouble(z[u] - zmax); sum += z[u] }
    return z.map { Float(alpha * $0 / sum) }
}

/// Where the current frame's norms start inside `hid_norm` (all images' visual tokens in span order).
func currentFrameNormOffset(_ step: StepRecord) -> Int {
    step.images.dropLast().reduce(0) { $0 + $1.length }
}

/// SnapKV-style window scoring FLOPs of one step (algorithms.md §11):
/// `N_l · [2·H·w·L·d + 7·H·w·L + H·L·k]`.
func snapKVScoringFLOPs(_ m: RecordedModel, promptLength l: Int, window w: Int, kernel k: Int) -> Double {
    let nl = Double(m.numLayers), h = Double(m.numQueryHeads), d = Double(m.headDim)
    let L = Double(l), W = Double(w), K = Double(k)
    return nl * (2 * h * W * L * d + 7 * h * W * L + h * L * K)
}

/// Pooled past scores of every head: `win_sum` rows truncated to [0, P) then pooled (§1.4).
func pooledWindowScores(
    _ fields: StepFields, layer: Int, window: Int, past: Int, kernel: Int, pooling: Pooling
) throws -> [[Float]] {
    let rows = try fields.windowSums(layer: layer, window: window, columns: past)
    return rows.map { pool($0, kernel: kernel, pooling: pooling) }
}

/// Group (KV-head) means of per-query-head rows, accumulated in fp64 in head order.
func groupMeans(_ rows: [[Float]], kvHeads: Int) -> [[Double]] {
    let h = rows.count
    let g = h / max(1, kvHeads)
    let n = rows.first?.count ?? 0
    return (0..<kvHeads).map { grp in
        var acc = [Double](repeating: 0, count: n)
        for hh in (grp * g)..<((grp + 1) * g) {
            let r = rows[hh]
            for j in 0..<n { acc[j] += Double(r[j]) }
        }
        let inv = Double(g)
        for j in 0..<n { acc[j] /= inv }
        return acc
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@inline(__always) func expDouble(_ x: Double) -> Double { exp(x) }
@inline(__always) func logDouble(_ x: Double) -> Double { log(x) }
@inline(__always) func powDouble(_ x: Double, _ y: Double) -> Double { pow(x, y) }
@inline(__always) func log2Double(_ x: Double) -> Double { x > 0 ? log2(x) : 0 }
