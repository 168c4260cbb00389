import CStarKVSupport
import StarKVModel
import StarKVTrace

// Shared scoring primitives: budget/window arithmetic (docs/algorithms.md §1.3), pooling (§1.4),
// deterministic top-k (§1.4 "Spec for deterministic replay"), the hidden-norm spatial boost
// (§2.3 step 3 = §3 step 3) and the SnapKV FLOP term (§11).

/// Pooling of window sums (docs/algorithms.md §1.4).
public enum Pooling: String, Sendable, Codable, CaseIterable {
    /// `F.avg_pool1d`, padding ⌊k/2⌋, divisor always k (padding counted).
    case avg = "avgpool"
    /// `F.max_pool1d` over the in-range neighbours.
    case max = "maxpool"
}

/// How a policy clamps its window to the capacity (docs/algorithms.md §1.3).
public enum WindowClamp: Sendable {
    /// STaR-KV Qwen2.5-VL path: `max(1, min(w, C − 2))`.
    case starKVQwen
    /// GUI-KV / SnapKV / PyramidKV copies: `min(w, C − 2)`, floored at 1 here (the references
    /// fail at C ≤ 2: at C = 2 the `-0:` slice takes every query row and the mask addition fails,
    /// at C = 1 `torch.full` gets a negative size; docs/algorithms.md §1.3).
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

/// Budget arithmetic of one step (docs/algorithms.md §1.3): capacity C, clamped window w_eff,
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
/// zero outside [0, P) (docs/algorithms.md §1.4). Sums run left to right in fp32.
func pool(_ values: [Float], kernel k: Int, pooling: Pooling) -> [Float] {
    let n = values.count
    guard k > 1, n > 0 else { return values }
    let half = k / 2
    var out = [Float](repeating: 0, count: n)
    values.withUnsafeBufferPointer { v in
        switch pooling {
        case .avg:
            // out[j] = ((0 + x[j-h]) + x[j-h+1]) + … + x[j-h+k-1], x zero outside [0, n): the
            // reference's zero-padded convolution, summed left to right. The loop runs over m
            // outside and j inside, so every output keeps that order and the compiler can
            // vectorise across j.
            var padded = [Float](repeating: 0, count: n + k - 1)
            padded.withUnsafeMutableBufferPointer { p in
                (p.baseAddress! + half).update(from: v.baseAddress!, count: n)
                out.withUnsafeMutableBufferPointer { o in
                    for m in 0..<k {
                        let src = UnsafeBufferPointer(rebasing: p[m..<(m + n)])
                        for j in 0..<n { o[j] += src[j] }
                    }
                    let inv = Float(k)
                    for j in 0..<n { o[j] /= inv }
                }
            }
        case .max:
            // out[j] = the largest of x[j-h], …, x[j-h+k-1] inside [0, n), taken in that order
            // with `>` (NaN never taken; the first of +0/−0 kept). Outside [0, n) the padding is
            // −∞, which `>` never takes either, so k shifted passes give the same values and
            // vectorise across j.
            var padded = [Float](repeating: -.infinity, count: n + k - 1)
            padded.withUnsafeMutableBufferPointer { p in
                (p.baseAddress! + half).update(from: v.baseAddress!, count: n)
                out.withUnsafeMutableBufferPointer { o in
                    for j in 0..<n { o[j] = -.infinity }
                    for m in 0..<k {
                        let src = UnsafeBufferPointer(rebasing: p[m..<(m + n)])
                        for j in 0..<n {
                            let x = src[j]
                            o[j] = x > o[j] ? x : o[j]
                        }
                    }
                }
            }
        }
    }
    return out
}

/// A floating-point score type whose order maps onto an unsigned integer key, so that top-k can
/// use a radix select (Float and Double).
protocol RadixOrderedFloat: BinaryFloatingPoint {
    associatedtype OrderKey: FixedWidthInteger & UnsignedInteger
    /// A key whose unsigned order is the score order, with NaN equal to −∞ (NaN ranks below
    /// every number, §1.4) and −0 equal to +0 (they compare equal, so they tie).
    var orderKey: OrderKey { get }
}

extension Float: RadixOrderedFloat {
    @inline(__always) var orderKey: UInt32 {
        let x: Float = isNaN ? -.infinity : (self == 0 ? 0 : self)
        let b = x.bitPattern
        return b & 0x8000_0000 != 0 ? ~b : b | 0x8000_0000
    }
}

extension Double: RadixOrderedFloat {
    @inline(__always) var orderKey: UInt64 {
        let x: Double = isNaN ? -.infinity : (self == 0 ? 0 : self)
        let b = x.bitPattern
        return b & 0x8000_0000_0000_0000 != 0 ? ~b : b | 0x8000_0000_0000_0000
    }
}

/// The order keys of `scores` (`RadixOrderedFloat.orderKey`), one per position.
func orderKeys<T: RadixOrderedFloat>(_ scores: [T]) -> [T.OrderKey] {
    let n = scores.count
    return [T.OrderKey](unsafeUninitializedCapacity: n) { buf, count in
        scores.withUnsafeBufferPointer { src in
            for j in 0..<n { buf[j] = src[j].orderKey }
        }
        count = n
    }
}

/// Positions of the `k` largest `scores`, ties broken by lower position, returned ascending
/// (docs/algorithms.md §1.4). NaN ranks below every number (it ties with −∞). O(n): a radix select
/// over order-preserving integer keys finds the k-th largest key, then one ascending pass
/// collects everything above it and the first tied positions.
func topKAscending<T: RadixOrderedFloat>(_ scores: [T], count k: Int) -> [Int32] {
    topKAscending(scores, count: k, then: 0..<0)
}

/// `withWindow(topKAscending(scores, count: k), past: scores.count, promptLength: l)` in one
/// pass: the k best positions of `scores` (length P), ascending, followed by the window [P, L).
func topKWithWindow<T: RadixOrderedFloat>(_ scores: [T], count k: Int, promptLength l: Int) -> [Int32] {
    topKAscending(scores, count: k, then: scores.count..<max(scores.count, l))
}

/// The k best positions of `scores` (ascending) followed by the positions of `tail`.
func topKAscending<T: RadixOrderedFloat>(_ scores: [T], count k: Int, then tail: Range<Int>) -> [Int32] {
    let n = scores.count
    if k <= 0 || n == 0 { return tail.map { Int32($0) } }
    if k >= n { return allPositions(n) + tail.map { Int32($0) } }
    let keys = orderKeys(scores)
    let cut = kthLargestKeys(keys, ranks: [k])[0]
    return collectTopK(keys, cut: cut, count: k, then: tail)
}

/// Where the k best of a row end: the k-th largest key, how many positions hold exactly that key
/// (`equal`) and how many of them belong to the k best (`ties`: the lowest ones; every larger key
/// belongs).
struct TopKCut<K: FixedWidthInteger & UnsignedInteger>: Equatable {
    var key: K
    var ties: Int
    var equal: Int
}

/// The positions above `cut` and its first `cut.ties` tied positions, ascending (there are
/// `k` of them), followed by `tail`. Branch-free: every position is written and the write index
/// advances only for kept ones; until the last kept tie a key equal to the cut is kept, after it
/// only larger keys.
func collectTopK<K: FixedWidthInteger & UnsignedInteger>(_ keys: [K], cut: TopKCut<K>, count k: Int, then tail: Range<Int>) -> [Int32] {
    let n = keys.count
    let total = k + tail.count
    let threshold = cut.key
    return [Int32](unsafeUninitializedCapacity: total + 1) { buf, count in
        var c = 0
        keys.withUnsafeBufferPointer { kb in
            var j = 0
            var ties = cut.ties
            while ties > 0 && j < n {
                let key = kb[j]
                let tie = key == threshold
                buf[c] = Int32(truncatingIfNeeded: j)
                c &+= key > threshold || tie ? 1 : 0
                ties &-= tie ? 1 : 0
                j &+= 1
            }
            while j < n {
                buf[c] = Int32(truncatingIfNeeded: j)
                c &+= kb[j] > threshold ? 1 : 0
                j &+= 1
            }
        }
        precondition(c == k, "top-k cut does not match its count")
        for j in tail { buf[c] = Int32(truncatingIfNeeded: j); c += 1 }
        count = c
    }
}

/// The k-th largest (1-based) of `keys` by most-significant-digit radix select, 8 bits per pass;
/// each pass keeps only the candidates in the chosen digit bucket.
func kthLargestKey<K: FixedWidthInteger & UnsignedInteger>(_ keys: [K], _ k: Int) -> K {
    kthLargestKeys(keys, ranks: [k])[0].key
}

/// The cut of every rank in `ranks` (each in 1...keys.count), results in `ranks`' order. 32-bit
/// keys (Float scores) go to `starkv_topk_cuts_u32` (Sources/CStarKVSupport/topk_select.c: sampled
/// brackets and one vectorised pass); other keys, and 32-bit ones should its scratch memory fail,
/// to `bucketedCuts`, the reference it equals.
func kthLargestKeys<K: FixedWidthInteger & UnsignedInteger>(_ keys: [K], ranks: [Int]) -> [TopKCut<K>] {
    if K.self == UInt32.self, let cuts = nativeCuts(keys, ranks: ranks) { return cuts.cuts }
    return bucketedCuts(keys, ranks: ranks)
}

/// The vector width of the pass in `starkv_topk_cuts_u32_using` (`STARKV_TOPK_*`): the best the
/// CPU has, or one forced (tests run each; every one gives the same cuts).
enum TopKPass: Int32, CaseIterable {
    case auto = 0, scalar = 1, avx2 = 2, avx512 = 3

    /// The passes this CPU runs (`auto` always).
    static var available: [TopKPass] {
        let bits = starkv_topk_paths()
        return allCases.filter { $0 == .auto || bits & (1 << $0.rawValue) != 0 }
    }
}

/// `kthLargestKeys` of 32-bit keys by `starkv_topk_cuts_u32_using`, with the given pass and with
/// or without the sampled brackets (`sample: false` runs the exact select on the whole row): the
/// cuts and whether the brackets held every rank (`sampled`; false when any rank took the exact
/// select). Nil when `K` is not 32 bits wide, the pass does not run on this CPU, a rank lies
/// outside 1...keys.count, or scratch memory failed (`bucketedCuts` then answers or traps).
func nativeCuts<K: FixedWidthInteger & UnsignedInteger>(
    _ keys: [K], ranks: [Int], pass: TopKPass = .auto, sample: Bool = true
) -> (cuts: [TopKCut<K>], sampled: Bool)? {
    guard K.bitWidth == 32 else { return nil }
    let n = keys.count
    let path = pass.rawValue | (sample ? 0 : Int32(STARKV_TOPK_NO_SAMPLE))
    var raw = [starkv_topk_cut32](repeating: starkv_topk_cut32(), count: ranks.count)
    let rc: Int32 = keys.withUnsafeBytes { kb in
        ranks.map { Int64($0) }.withUnsafeBufferPointer { rb in
            raw.withUnsafeMutableBufferPointer { ob in
                starkv_topk_cuts_u32_using(
                    kb.baseAddress?.assumingMemoryBound(to: UInt32.self), Int64(n), rb.baseAddress, Int64(ranks.count),
                    ob.baseAddress, path)
            }
        }
    }
    guard rc >= 0 else { return nil }
    return (raw.map { TopKCut(key: K(truncatingIfNeeded: $0.key), ties: Int($0.ties), equal: Int($0.equal)) }, rc == 0)
}

/// The cuts of `kthLargestKeys` by the bucketed radix select, for keys of any width. One pass
/// finds the keys' range, one histograms them into up to 2048 buckets of equal width over that
/// range (about n/8 buckets; order keys are close to a log scale, so a row's scores spread over
/// the buckets whatever their common exponent), and one pass per two buckets that hold a rank
/// gathers their keys; the cut inside each such bucket comes from the same procedure on its keys
/// (a narrower range each time; a few keys are simply sorted). Keys equal to a cut all fall into
/// its bucket, so the bucket's counts are the row's.
func bucketedCuts<K: FixedWidthInteger & UnsignedInteger>(_ keys: [K], ranks: [Int]) -> [TopKCut<K>] {
    let n = keys.count
    guard !ranks.isEmpty else { return [] }
    if n < 64 { return sortedCuts(keys, ranks: ranks) }
    var lo = K.max, hi = K.min
    keys.withUnsafeBufferPointer { kb in
        for key in kb {
            lo = Swift.min(lo, key)
            hi = Swift.max(hi, key)
        }
    }
    if lo == hi { return ranks.map { TopKCut(key: lo, ties: $0, equal: n) } }
    let span = hi &- lo
    let bits = Swift.max(5, Swift.min(11, (Int.bitWidth - n.leadingZeroBitCount) - 3))
    let shift = K(truncatingIfNeeded: Swift.max(0, (K.bitWidth - span.leadingZeroBitCount) - bits))
    let buckets = Int(truncatingIfNeeded: span &>> shift) + 1
    // Four interleaved histograms: a row's keys crowd into few buckets, and one histogram
    // would serialise the increments of the same counter.
    var histogram = [Int32](repeating: 0, count: 4 * buckets)
    histogram.withUnsafeMutableBufferPointer { hist in
        keys.withUnsafeBufferPointer { kb in
            var i = 0
            while i + 4 <= n {
                hist[Int(truncatingIfNeeded: (kb[i] &- lo) &>> shift)] &+= 1
                hist[buckets + Int(truncatingIfNeeded: (kb[i + 1] &- lo) &>> shift)] &+= 1
                hist[2 * buckets + Int(truncatingIfNeeded: (kb[i + 2] &- lo) &>> shift)] &+= 1
                hist[3 * buckets + Int(truncatingIfNeeded: (kb[i + 3] &- lo) &>> shift)] &+= 1
                i += 4
            }
            while i < n { hist[Int(truncatingIfNeeded: (kb[i] &- lo) &>> shift)] &+= 1; i += 1 }
            for b in 0..<buckets { hist[b] &+= hist[buckets + b] &+ hist[2 * buckets + b] &+ hist[3 * buckets + b] }
        }
    }
    // The bucket of every rank, scanning from the largest keys down.
    let order = ranks.indices.sorted { ranks[$0] < ranks[$1] }
    var bucketOf = [Int](repeating: 0, count: ranks.count)
    var rankIn = [Int](repeating: 0, count: ranks.count)
    var bucket = buckets - 1
    var above = 0
    for slot in order {
        while above + Int(histogram[bucket]) < ranks[slot] { above += Int(histogram[bucket]); bucket -= 1 }
        bucketOf[slot] = bucket
        rankIn[slot] = ranks[slot] - above
    }
    // Gather the keys of each distinct rank bucket into its slice of one buffer, two buckets per
    // branch-free pass. Each slice has one slot of slack after its keys, where the writes of
    // the keys that do not belong to it land once it is full.
    let targets = Array(Set(bucketOf)).sorted()
    var start = [Int](repeating: 0, count: targets.count + 1)
    for (t, b) in targets.enumerated() { start[t + 1] = start[t] + Int(histogram[b]) + 1 }
    var gathered = [K](repeating: 0, count: start[targets.count])
    gathered.withUnsafeMutableBufferPointer { out in
        keys.withUnsafeBufferPointer { kb in
            let top = K(truncatingIfNeeded: K.bitWidth - 1)
            var t = 0
            while t < targets.count {
                // Bucket index xor the target: 0 there and below 2048 elsewhere, so its negation
                // has the top bit set exactly when it differs.
                let d0 = K(truncatingIfNeeded: targets[t])
                var c0 = start[t]
                if t + 1 < targets.count {
                    let d1 = K(truncatingIfNeeded: targets[t + 1])
                    var c1 = start[t + 1]
                    for key in kb {
                        let d = (key &- lo) &>> shift
                        out[c0] = key
                        out[c1] = key
                        c0 &+= 1 &- Int(truncatingIfNeeded: (0 &- (d ^ d0)) &>> top)
                        c1 &+= 1 &- Int(truncatingIfNeeded: (0 &- (d ^ d1)) &>> top)
                    }
                    t += 2
                } else {
                    for key in kb {
                        out[c0] = key
                        c0 &+= 1 &- Int(truncatingIfNeeded: (0 &- (((key &- lo) &>> shift) ^ d0)) &>> top)
                    }
                    t += 1
                }
            }
        }
    }
    var out = [TopKCut<K>](repeating: TopKCut(key: 0, ties: 0, equal: 0), count: ranks.count)
    for (t, b) in targets.enumerated() {
        let slots = ranks.indices.filter { bucketOf[$0] == b }
        let cuts = bucketedCuts(Array(gathered[start[t]..<(start[t + 1] - 1)]), ranks: slots.map { rankIn[$0] })
        for (i, slot) in slots.enumerated() { out[slot] = cuts[i] }
    }
    return out
}

/// The cuts of a few keys, by sorting them (largest first).
func sortedCuts<K: FixedWidthInteger & UnsignedInteger>(_ keys: [K], ranks: [Int]) -> [TopKCut<K>] {
    let sorted = keys.sorted(by: >)
    return ranks.map { rank in
        let key = sorted[rank - 1]
        var first = rank - 1
        while first > 0 && sorted[first - 1] == key { first -= 1 }
        var last = rank - 1
        while last + 1 < sorted.count && sorted[last + 1] == key { last += 1 }
        return TopKCut(key: key, ties: rank - first, equal: last - first + 1)
    }
}

/// `kthLargestKeys` by most-significant-digit radix select alone (the plain method, kept as an
/// independent check of the bucketed ones), 8 bits per pass: each pass
/// builds one histogram of the current candidates, finds the digit bucket of every rank, and
/// goes on with the candidates of each bucket that holds a rank (no copy when every candidate is
/// in it). Ranks that fall into the same bucket share the pass.
func radixCuts<K: FixedWidthInteger & UnsignedInteger>(_ keys: [K], ranks: [Int]) -> [TopKCut<K>] {
    var out = [TopKCut<K>](repeating: TopKCut(key: 0, ties: 0, equal: 0), count: ranks.count)
    guard !ranks.isEmpty else { return out }
    let sortedRanks = ranks.enumerated().map { (slot: $0.offset, rank: $0.element) }.sorted { $0.rank < $1.rank }
    var work: [(candidates: [K], shift: Int, wants: [(slot: Int, rank: Int)])] = [(keys, K.bitWidth - 8, sortedRanks)]
    var histogram = [Int](repeating: 0, count: 1024)
    while let (candidates, shift, wants) = work.popLast() {
        let s = K(truncatingIfNeeded: shift)
        histogram.withUnsafeMutableBufferPointer { hist in
            candidates.withUnsafeBufferPointer { buf in
                let n = buf.count
                // Four interleaved histograms: scores share their top digits, and one histogram
                // would serialise every increment on the same counter.
                for b in 0..<1024 { hist[b] = 0 }
                var i = 0
                while i + 4 <= n {
                    hist[Int(truncatingIfNeeded: buf[i] &>> s) & 0xFF] += 1
                    hist[256 + Int(truncatingIfNeeded: buf[i + 1] &>> s) & 0xFF] += 1
                    hist[512 + Int(truncatingIfNeeded: buf[i + 2] &>> s) & 0xFF] += 1
                    hist[768 + Int(truncatingIfNeeded: buf[i + 3] &>> s) & 0xFF] += 1
                    i += 4
                }
                while i < n { hist[Int(truncatingIfNeeded: buf[i] &>> s) & 0xFF] += 1; i += 1 }
                for b in 0..<256 { hist[b] += hist[256 + b] + hist[512 + b] + hist[768 + b] }
            }
        }
        var bucket = 255
        var above = 0
        var w = 0
        while w < wants.count {
            while above + histogram[bucket] < wants[w].rank { above += histogram[bucket]; bucket -= 1 }
            let inBucket = histogram[bucket]
            var group: [(slot: Int, rank: Int)] = []
            while w < wants.count && wants[w].rank <= above + inBucket {
                group.append((wants[w].slot, wants[w].rank - above))
                w += 1
            }
            let digit = bucket
            if shift == 0 || inBucket == 1 {
                // The bucket's keys share every digit so far: at the last digit they are all
                // equal (the cut's ties are its rank among them), and a lone candidate is the
                // answer (rank 1).
                let key = candidates.first { Int(truncatingIfNeeded: $0 &>> s) & 0xFF == digit }!
                for g in group { out[g.slot] = TopKCut(key: key, ties: g.rank, equal: inBucket) }
            } else if inBucket == candidates.count {
                // Scores of one row often share their top digits: no copy when every candidate is in the bucket.
                work.append((candidates, shift - 8, group))
            } else {
                // The bucket's candidates, in order, by a branch-free pass (one slot of slack
                // for the write after the last one).
                let next = [K](unsafeUninitializedCapacity: inBucket + 1) { dst, count in
                    var c = 0
                    candidates.withUnsafeBufferPointer { buf in
                        for key in buf {
                            dst[c] = key
                            c &+= Int(truncatingIfNeeded: key &>> s) & 0xFF == digit ? 1 : 0
                        }
                    }
                    count = c
                }
                work.append((next, shift - 8, group))
            }
        }
    }
    return out
}

/// Merges selected past positions (ascending, all < P) with the window [P, L).
func withWindow(_ past: [Int32], past p: Int, promptLength l: Int) -> [Int32] {
    var out = past
    out.reserveCapacity(past.count + max(0, l - p))
    var j = p
    while j < l { out.append(Int32(j)); j += 1 }
    return out
}

/// GUI-KV / STaR-KV spatial saliency (docs/algorithms.md §2.3 step 3, §3 step 3):
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

/// The spatial boost in the reference's bf16 dtype flow (GUI-KV `GUIKVCluster.update_kv`, STaR-KV
/// `apply_starkv_spatial_to_attn_cache`; docs/algorithms.md §12): every tensor op computes in fp32
/// from bf16 inputs and rounds its result to bf16 — the norms' mean, `n − mean`, the Bessel std
/// (accumulated in fp64 from the bf16 norms) plus 1e−8, the quotient, `/ T_s`, the softmax
/// (max, `exp(z − max)` and its sum in fp32, one division, one rounding) and `× α`. The caller adds
/// the result to bf16 scores with one more rounding. With one token the std is NaN in torch; here
/// 0 (β = α), as the fp32 path.
func spatialBoostBF16(norms: ArraySlice<Float>, alpha: Double, temperature: Double) -> [Float] {
    let n = norms.count
    guard n > 0 else { return [] }
    let x = norms.map(bf16Round)
    var sum: Float = 0
    for v in x { sum += v }
    let mean = bf16Round(sum / Float(n))
    var dm = 0.0
    for v in x { dm += Double(v) }
    dm /= Double(n)
    var ss = 0.0
    for v in x { let d = Double(v) - dm; ss += d * d }
    let std = n > 1 ? bf16Round(Float((ss / Double(n - 1)).squareRoot())) : 0
    let den = bf16Round(std + Float(1e-8))
    let t = Float(temperature == 0 ? 1.0 : temperature)
    var z = [Float](repeating: 0, count: n)
    var zmax = -Float.infinity
    for u in 0..<n {
        let diff = bf16Round(x[u] - mean)
        z[u] = bf16Round(bf16Round(diff / den) / t)
        if z[u] > zmax { zmax = z[u] }
    }
    var total: Float = 0
    var e = [Float](repeating: 0, count: n)
    for u in 0..<n { e[u] = expf(z[u] - zmax); total += e[u] }
    let a = Float(alpha)
    return e.map { bf16Round(bf16Round($0 / total) * a) }
}

/// Where the current frame's norms start inside `hid_norm` (all images' visual tokens in span order).
func currentFrameNormOffset(_ step: StepRecord) -> Int {
    step.images.dropLast().reduce(0) { $0 + $1.length }
}

/// SnapKV-style window scoring FLOPs of one step (docs/algorithms.md §11):
/// `N_l · [2·H·w·L·d + 7·H·w·L + H·L·k]`.
func snapKVScoringFLOPs(_ m: RecordedModel, promptLength l: Int, window w: Int, kernel k: Int) -> Double {
    let nl = Double(m.numLayers), h = Double(m.numQueryHeads), d = Double(m.headDim)
    let L = Double(l), W = Double(w), K = Double(k)
    return nl * (2 * h * W * L * d + 7 * h * W * L + h * L * K)
}

/// Pooled past scores of every head: `win_sum` rows truncated to [0, P) then pooled (§1.4). In
/// bf16-reference numerics the pooled values are rounded to bf16, as `F.avg_pool1d` on a bf16
/// tensor returns them (fp32 accumulation in kernel order, fp32 division by k, one rounding).
func pooledWindowScores(
    _ fields: StepFields, layer: Int, window: Int, past: Int, kernel: Int, pooling: Pooling
) throws -> [[Float]] {
    let rows = try fields.windowSums(layer: layer, window: window, columns: past)
    return rows.map { pool($0, kernel: kernel, pooling: pooling, numerics: fields.numerics) }
}

/// `pool` followed, in bf16-reference numerics, by the bf16 rounding of the pooled tensor.
func pool(_ values: [Float], kernel k: Int, pooling: Pooling, numerics: ReplayNumerics) -> [Float] {
    let pooled = pool(values, kernel: k, pooling: pooling)
    return numerics == .bf16Reference ? pooled.map(bf16Round) : pooled
}

/// bf16 rounding of an fp32 value, kept as fp32: round-to-nearest-even on the upper 16 bits,
/// as c10's `round_to_nearest_even` (c10/util/BFloat16.h) does for every fp32 → bf16 cast. NaN
/// stays NaN; values beyond the bf16 range round to ±∞.
@inline(__always) func bf16Round(_ x: Float) -> Float {
    if x.isNaN { return x }
    let b = x.bitPattern
    let rounded = b &+ (0x7FFF &+ ((b >> 16) & 1))
    return Float(bitPattern: rounded & 0xFFFF_0000)
}

/// Group (KV-head) means of per-query-head rows, accumulated in fp64 in head order.
func groupMeans(_ rows: [[Float]], kvHeads: Int) -> [[Double]] {
    let h = rows.count
    let g = h / max(1, kvHeads)
    let n = rows.first?.count ?? 0
    return (0..<kvHeads).map { grp in
        var acc = [Double](repeating: 0, count: n)
        acc.withUnsafeMutableBufferPointer { out in
            for hh in (grp * g)..<((grp + 1) * g) {
                rows[hh].withUnsafeBufferPointer { r in for j in 0..<n { out[j] += Double(r[j]) } }
            }
            let inv = Double(g)
            for j in 0..<n { out[j] /= inv }
        }
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

/// One score row prepared for several top-k's ("score once, select many", docs/policies.md
/// "Sweeps"): the order keys computed once and the cut of every k the sweep needs found by one
/// shared radix select (`kthLargestKeys`); each k is then one pass. `topKAscending(count:)` equals
/// the free `topKAscending(scores, count:)` for every k (positions ranked by score, descending,
/// ties by lower position, NaN below every number, −0 = +0; docs/algorithms.md §1.4); a k that was
/// not prepared costs one more select.
struct ScoreRanking<T: RadixOrderedFloat> {
    /// Order keys of the row.
    let keys: [T.OrderKey]
    private let prepared: [Int]
    private let cuts: [TopKCut<T.OrderKey>]

    /// Prepares `scores` for the top-k of every k in `counts` (k ≤ 0 and k ≥ n need no cut).
    init(_ scores: [T], counts: [Int]) {
        self.init(keys: orderKeys(scores), counts: counts)
    }

    /// Prepares a row given by its order keys.
    init(keys: [T.OrderKey], counts: [Int]) {
        self.keys = keys
        let n = keys.count
        prepared = Array(Set(counts.filter { $0 > 0 && $0 < n })).sorted()
        cuts = kthLargestKeys(keys, ranks: prepared)
    }

    /// Positions of the `k` best, ascending: the same as `topKAscending(scores, count: k)`.
    func topKAscending(count k: Int) -> [Int32] { topKAscending(count: k, then: 0..<0) }

    /// The `k` best positions followed by the window [n, l): the same as
    /// `withWindow(topKAscending(scores, count: k), past: n, promptLength: l)`.
    func topKWithWindow(count k: Int, promptLength l: Int) -> [Int32] {
        topKAscending(count: k, then: keys.count..<max(keys.count, l))
    }

    /// The `k` best positions, ascending, followed by `tail`.
    func topKAscending(count k: Int, then tail: Range<Int>) -> [Int32] {
        let n = keys.count
        if k <= 0 || n == 0 { return tail.map { Int32($0) } }
        if k >= n { return allPositions(n) + tail.map { Int32($0) } }
        return collectTopK(keys, cut: cut(count: k), count: k, then: tail)
    }
}

extension KVPolicy {
    /// `compressMany` for a policy whose scores depend on the budget only through the clamped
    /// window (docs/policies.md "Sweeps"): the inputs whose plans compress (`compresses`) with
    /// the same window — and, with `groupByState`, carry equal states — are scored once by
    /// `shared` (one `BudgetPlan` each, outputs in that order; it receives the group's common
    /// state); every other input goes through `compress`. Without `groupByState` each output
    /// carries its input's own state. Notes raised while scoring a group reach every member's
    /// collector, as they would one compress call at a time.
    func sharingScores(
        _ inputs: [PolicyStepInput], states: [PolicyState], window: Int, clamp: WindowClamp, groupByState: Bool = false,
        compresses: (BudgetPlan) -> Bool = { $0.compresses },
        _ shared: (StepFields, [BudgetPlan], PolicyState) throws -> [PolicyStepOutput]
    ) -> [Result<PolicyStepOutput, any Error>] {
        var results = [Result<PolicyStepOutput, any Error>?](repeating: nil, count: inputs.count)
        var groups: [(window: Int, members: [Int], plans: [BudgetPlan])] = []
        for (i, input) in inputs.enumerated() {
            let plan = BudgetPlan(promptLength: input.step.promptLength, budget: input.budget, window: window, clamp: clamp)
            guard compresses(plan) else { continue }
            if let g = groups.firstIndex(where: { $0.window == plan.window && (!groupByState || states[$0.members[0]] == states[i]) }) {
                groups[g].members.append(i)
                groups[g].plans.append(plan)
            } else {
                groups.append((plan.window, [i], [plan]))
            }
        }
        for g in groups where g.members.count > 1 {
            let notes = PolicyNotes()
            var first = inputs[g.members[0]]
            first.notes = notes
            let common = states[g.members[0]]
            let outcome = Result { try shared(try StepFields(policy: Self.policyName, input: first), g.plans, common) }
            for (j, i) in g.members.enumerated() {
                inputs[i].notes?.add(contentsOf: notes)
                results[i] = outcome.map { outputs in
                    var out = outputs[j]
                    if !groupByState { out.state = states[i] }
                    return out
                }
            }
        }
        for i in inputs.indices where results[i] == nil { results[i] = Result { try compress(inputs[i], state: states[i]) } }
        return results.map { $0! }
    }
}

extension ScoreRanking {
    /// The cut of the `k` best (0 < k < n): prepared, or one more select.
    private func cut(count k: Int) -> TopKCut<T.OrderKey> {
        if let i = prepared.firstIndex(of: k) { return cuts[i] }
        return kthLargestKeys(keys, ranks: [k])[0]
    }

    /// Writes the bitmap over [0, `length`) of the `k` best positions followed by `tail` (the
    /// same set as `topKAscending(count: k, then: tail)`) into `words` (⌈length/64⌉ words) and
    /// returns its size. `tail` must lie in [n, length).
    func keptBitmap(count k: Int, then tail: Range<Int>, length: Int, into words: UnsafeMutableBufferPointer<UInt64>) -> Int {
        let n = keys.count
        precondition(tail.lowerBound >= n && tail.upperBound <= length && words.count >= (length + 63) / 64, "kept bitmap outside the prompt")
        // k ≤ 0 keeps no scored position (no key exceeds the largest one and no tie is taken);
        // k ≥ n keeps every key (every key ≥ 0, and all n ties are taken).
        let cutKey: T.OrderKey, ties: Int, scored: Int
        if k <= 0 || n == 0 {
            cutKey = T.OrderKey.max; ties = 0; scored = 0
        } else if k >= n {
            cutKey = 0; ties = n; scored = n
        } else {
            let c = cut(count: k)
            cutKey = c.key; ties = c.ties; scored = k
        }
        let kept = keys.withUnsafeBufferPointer { kb -> Int64 in
            let raw = UnsafeRawPointer(kb.baseAddress)
            if T.OrderKey.bitWidth == 32 {
                return starkv_ranked_bitmap_u32(
                    raw?.assumingMemoryBound(to: UInt32.self), Int64(n), UInt32(truncatingIfNeeded: cutKey), Int64(ties),
                    Int64(tail.lowerBound), Int64(tail.upperBound), Int64(length), words.baseAddress)
            }
            return starkv_ranked_bitmap_u64(
                raw?.assumingMemoryBound(to: UInt64.self), Int64(n), UInt64(truncatingIfNeeded: cutKey), Int64(ties),
                Int64(tail.lowerBound), Int64(tail.upperBound), Int64(length), words.baseAddress)
        }
        precondition(Int(kept) == scored + tail.count, "top-k cut does not match its count")
        return Int(kept)
    }
}

/// A row prepared for top-k's, whatever its score type (`ScoreRanking` over Float or Double).
protocol TopKRow {
    /// Its number of scored positions.
    var scoredCount: Int { get }
    func topKAscending(count k: Int) -> [Int32]
    func topKWithWindow(count k: Int, promptLength l: Int) -> [Int32]
    func keptBitmap(count k: Int, then tail: Range<Int>, length: Int, into words: UnsafeMutableBufferPointer<UInt64>) -> Int
}

extension ScoreRanking: TopKRow {
    var scoredCount: Int { keys.count }
}

extension KeptBitmaps {
    /// Row r: `ranked[r]`'s `counts[r]` best positions followed, with `window`, by the window
    /// [n, `promptLength`) (as `topKWithWindow`; without it as `topKAscending(count:)`), as
    /// bitmaps over the prompt (rows of at most `promptLength` scores).
    init(ranked: [any TopKRow], counts: [Int], promptLength l: Int, window: Bool = true) {
        self.init(length: l, rowCount: ranked.count) { r, words in
            let n = ranked[r].scoredCount
            return ranked[r].keptBitmap(count: counts[r], then: n..<(window ? max(n, l) : n), length: l, into: words)
        }
    }

    /// The same with every row's count `k`.
    init(ranked: [any TopKRow], count k: Int, promptLength l: Int, window: Bool = true) {
        self.init(ranked: ranked, counts: Array(repeating: k, count: ranked.count), promptLength: l, window: window)
    }
}
