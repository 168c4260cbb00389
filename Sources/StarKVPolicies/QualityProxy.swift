import CStarKVSupport
import StarKVModel
import StarKVTrace

/// Quality proxies for a kept set (issue 5; docs/algorithms.md §10.1 "Quality proxies"):
/// the share of an attention-mass field ([H, L], e.g. `decode_attn_sum` of the full-cache run,
/// or the next step's `win_sum` rows) that falls on kept positions. Sums run in fp64 in head
/// then position order, so the result is deterministic.
public enum QualityProxy {
    /// Share of `weights` (H rows over the same positions the selection indexes) that falls on
    /// kept positions, summed over heads; query head h is scored against the row it reads
    /// (shared set, its own set, or its KV head's set). Only columns in `columns` count (numerator
    /// and denominator; default all). Nil when the counted mass is zero.
    public static func keptMassShare(
        weights: [[Float]], selection: LayerSelection, queryHeadsPerKVHead: Int, columns: Range<Int>? = nil
    ) -> Double? {
        let perHead = keptMassPerHead(weights: weights, selection: selection, queryHeadsPerKVHead: queryHeadsPerKVHead, columns: columns)
        var kept = 0.0, total = 0.0
        for (k, t) in perHead { kept += k; total += t }
        return total > 0 ? kept / total : nil
    }

    /// (kept mass, total mass) per query head, fp64.
    public static func keptMassPerHead(
        weights: [[Float]], selection: LayerSelection, queryHeadsPerKVHead: Int, columns: Range<Int>? = nil
    ) -> [(kept: Double, total: Double)] {
        weights.enumerated().map { (h, row) in
            let range = (columns ?? 0..<row.count).clamped(to: 0..<row.count)
            var total = 0.0
            for j in range { total += Double(row[j]) }
            var kept = 0.0
            for idx in selection.keptIndices(forQueryHead: h, queryHeadsPerKVHead: queryHeadsPerKVHead) {
                let j = Int(idx)
                if range.contains(j) { kept += Double(row[j]) }
            }
            return (kept, total)
        }
    }

    /// Decode proxy: share of the full-cache run's decode attention (`decode_attn_sum` [H, L] of
    /// `layer`) that falls on the layer's kept positions. Nil when the step recorded no decode
    /// mass. Throws `PolicyError.missingChunk` / `.badShape` when the field is absent or wrong.
    public static func decodeAttentionShare(
        header: TraceHeader, step: StepRecord, selection: LayerSelection, policy: String = "quality-proxy"
    ) throws -> Double? {
        let fields = try StepFields(policy: policy, input: PolicyStepInput(header: header, step: step, budget: .percent(100)))
        let rows = try fields.headRows(TraceField.decodeAttnSum, layer: selection.layer, columns: step.promptLength)
        return keptMassShare(weights: rows, selection: selection, queryHeadsPerKVHead: header.model.numQueryHeads / max(1, header.model.numKVHeads))
    }

    /// Decode proxy for every layer of a step output (nil entries where no decode mass).
    public static func decodeAttentionShares(header: TraceHeader, step: StepRecord, output: PolicyStepOutput) throws -> [Double?] {
        try output.layers.map { try decodeAttentionShare(header: header, step: step, selection: $0) }
    }

    /// Persistent-cache proxy: share of the next step's window attention that falls on tokens
    /// still cached. `nextStep` is the next step's record, `window` a recorded `win_sum` window,
    /// `stillCached` the positions (in the next step's coordinates, mapped by the replay) still in
    /// the cache, one row per head at its granularity; only columns in `columns` count (default:
    /// the next step's past, [0, L' − window)).
    public static func nextWindowShare(
        header: TraceHeader, nextStep: StepRecord, layer: Int, window: Int, stillCached: LayerSelection,
        columns: Range<Int>? = nil, policy: String = "quality-proxy"
    ) throws -> Double? {
        let fields = try StepFields(policy: policy, input: PolicyStepInput(header: header, step: nextStep, budget: .percent(100)))
        let l = nextStep.promptLength
        let rows = try fields.windowSums(layer: layer, window: window, columns: l)
        return keptMassShare(
            weights: rows, selection: stillCached, queryHeadsPerKVHead: header.model.numQueryHeads / max(1, header.model.numKVHeads),
            columns: columns ?? 0..<max(0, l - window))
    }
}

/// The decode proxy's inputs of one step, prepared once for every (policy, budget) pair of a
/// replay (issue 15, "shared step inputs"): per layer the checked `decode_attn_sum` tensor [H, L]
/// (its stored bytes, read in place by the kept sums) and each row's fp64 total. `shares(of:)` gives exactly what
/// `QualityProxy.decodeAttentionShares` gives for the same step (same sums in the same order,
/// same errors).
public struct StepDecodeMass: Sendable {
    struct Layer: Sendable {
        /// The layer's `decode_attn_sum` tensor (shares the step's bytes; checked [H, L] float).
        var tensor: Tensor
        var totals: [Double]
        /// The same values as fp32 [position][head] (`HeadMajorCopy`), for bitmap rows; nil where
        /// the kernel that reads it does not run.
        var transposed: HeadMajorCopy?
    }

    let header: TraceHeader
    let step: StepRecord
    let stepError: PolicyError?
    let layers: [Result<Layer, PolicyError>]

    /// Decodes every layer's rows (layers spread over `workers` threads; the result does not
    /// depend on the thread count). `laneCopies`: also make each layer's [position][head] copy
    /// for bitmap rows (`HeadMajorCopy`, about the field's own size again); without it bitmap
    /// rows are summed through their positions, with the same results.
    public init(header: TraceHeader, step: StepRecord, workers: Int = 1, laneCopies: Bool = true) {
        self.header = header
        self.step = step
        let fields: StepFields
        do {
            fields = try StepFields(policy: "quality-proxy", input: PolicyStepInput(header: header, step: step, budget: .percent(100)))
        } catch {
            stepError = error as? PolicyError ?? .invalidStep(policy: "quality-proxy", episode: step.episodeID, step: step.stepIndex, reason: "\(error)")
            layers = []
            return
        }
        stepError = nil
        let l = step.promptLength
        layers = DeterministicParallel.map(count: header.model.numLayers, workers: workers) { layer -> Result<Layer, PolicyError> in
            do {
                // Checks the chunk (shape, dtype) and converts it one row at a time for the totals;
                // the kept sums later read the stored values directly.
                let rows = try fields.headRows(TraceField.decodeAttnSum, layer: layer, columns: l)
                guard let chunk = step.chunk(TraceField.decodeAttnSum, layer: layer) else {
                    throw PolicyError.missingChunk(policy: "quality-proxy", field: TraceField.decodeAttnSum, layer: layer, episode: step.episodeID, step: step.stepIndex)
                }
                let totals = rows.map { row -> Double in
                    var total = 0.0
                    for x in row { total += Double(x) }
                    return total
                }
                let copy = laneCopies ? HeadMajorCopy(chunk.tensor, heads: rows.count, length: l) : nil
                return .success(Layer(tensor: chunk.tensor, totals: totals, transposed: copy))
            } catch {
                return .failure(error as? PolicyError ?? .invalidStep(policy: "quality-proxy", episode: step.episodeID, step: step.stepIndex, reason: "\(error)"))
            }
        }
    }

    /// Decode proxy of every selection (nil where the layer recorded no decode mass).
    public func shares(of selections: [LayerSelection]) throws -> [Double?] {
        try shares(of: selections, presummed: [:])
    }

    /// `shares(of:)` of each pair's selections (e.g. the budgets of one policy in a sweep), each
    /// result equal to that call's. A layer's bitmap rows of every pair are summed in one pass
    /// over its values (`OrderedKeptSums.sums(_:selections:…)`).
    public func shares(ofEach pairs: [[LayerSelection]]) -> [Result<[Double?], any Error>] {
        var presummed = [[Int: [Double]]](repeating: [:], count: pairs.count)
        if stepError == nil {
            // Group, per layer, the selections that the lane kernel can take.
            var groups: [Int: [(pair: Int, index: Int)]] = [:]
            var order: [Int] = []
            for (p, selections) in pairs.enumerated() {
                for (i, sel) in selections.enumerated() where sel.keptBitmaps?.length == step.promptLength && layers.indices.contains(sel.layer) {
                    guard case .success(let data) = layers[sel.layer], data.transposed != nil else { continue }
                    if groups[sel.layer] == nil { order.append(sel.layer) }
                    groups[sel.layer, default: []].append((p, i))
                }
            }
            let g = header.model.numQueryHeads / max(1, header.model.numKVHeads)
            for layer in order {
                guard case .success(let data) = layers[layer], let copy = data.transposed, let members = groups[layer] else { continue }
                let selections = members.map { pairs[$0.pair][$0.index] }
                if let sums = OrderedKeptSums.laneSums(copy, selections: selections, queryHeadsPerKVHead: g) {
                    for (m, member) in members.enumerated() { presummed[member.pair][member.index] = sums[m] }
                }
            }
        }
        return pairs.indices.map { p in Result { try shares(of: pairs[p], presummed: presummed[p]) } }
    }

    /// `shares(of:)` with the kept sums of some selections (by index) already known.
    private func shares(of selections: [LayerSelection], presummed: [Int: [Double]]) throws -> [Double?] {
        if let stepError { throw stepError }
        let g = header.model.numQueryHeads / max(1, header.model.numKVHeads)
        return try selections.enumerated().map { i, sel -> Double? in
            guard layers.indices.contains(sel.layer) else {
                return try QualityProxy.decodeAttentionShare(header: header, step: step, selection: sel)
            }
            let data = try layers[sel.layer].get()
            let l = step.promptLength
            let heads = data.totals.count
            let sums = presummed[i] ?? OrderedKeptSums.sums(
                data.tensor, selection: sel, queryHeadsPerKVHead: g, length: l, totals: data.totals, transposed: data.transposed)
            var kept = 0.0, total = 0.0
            for h in 0..<heads {
                kept += sums[h]
                total += data.totals[h]
            }
            return total > 0 ? kept / total : nil
        }
    }
}

/// A layer's `decode_attn_sum` rows copied to fp32 [position][head] (heads padded with zeros to
/// `stride`, a multiple of 32), the layout `starkv_kept_sums_bitmaps` reads: eight heads of a
/// position are one vector. Made once per step and shared by every pair of a sweep; nil where
/// that kernel does not run (no AVX-512) or the tensor is not a little-endian float type.
struct HeadMajorCopy: Sendable {
    let heads: Int
    let length: Int
    let stride: Int
    let values: [Float]

    init?(_ tensor: Tensor, heads: Int, length l: Int) {
        var kind = tensor.dtype.floatKernelCode
        #if _endian(big)
        kind = 0
        #endif
        guard starkv_kept_sums_bitmaps_available() != 0, kind != 0 && kind != 8, heads > 0, l > 0,
            tensor.bytes.count >= heads * l * tensor.dtype.byteWidth
        else { return nil }
        let stride = (heads + 31) / 32 * 32
        self.heads = heads
        self.length = l
        self.stride = stride
        values = [Float](unsafeUninitializedCapacity: l * stride) { buf, n in
            tensor.bytes.withUnsafeBufferPointer { data in
                HalfPrecision.table.withUnsafeBufferPointer { table in
                    starkv_transpose_heads(data.baseAddress, kind, table.baseAddress, Int64(heads), Int64(l), Int64(stride), buf.baseAddress)
                }
            }
            n = l * stride
        }
    }
}

/// The decode proxy's kept-mass sums of one layer, per query head: the fp64 sum of the head's
/// `decode_attn_sum` row over the positions of the kept row it reads, in that row's order with
/// one accumulator (the definition of `StepDecodeMass.shares`). `starkv_kept_sums` gives those
/// bits faster: eight heads' chains interleaved, no per-position checks for rows that are
/// ascending inside the prompt, and a row that keeps every position takes the head's total
/// (the same ascending sum). Positions outside [0, length) add nothing.
enum OrderedKeptSums {
    static func sums(
        _ tensor: Tensor, selection: LayerSelection, queryHeadsPerKVHead g: Int, length l: Int, totals: [Double],
        transposed: HeadMajorCopy? = nil
    ) -> [Double] {
        let heads = totals.count
        if let transposed, transposed.heads == heads, transposed.length == l,
            let sums = laneSums(transposed, selections: [selection], queryHeadsPerKVHead: g)
        {
            return sums[0]
        }
        // The C kernel reads binary16, bfloat16 and binary32 in little-endian order.
        var kind = tensor.dtype.floatKernelCode
        if kind == 8 { kind = 0 }
        #if _endian(big)
        kind = 0
        #endif
        let rowTotal = selection.keptRowCount
        guard kind != 0, rowTotal > 0, tensor.bytes.count >= heads * l * tensor.dtype.byteWidth else {
            return (0..<heads).map { h in
                let values = tensor.floats(from: h * l, count: l)
                var k = 0.0
                for idx in selection.keptIndices(forQueryHead: h, queryHeadsPerKVHead: g) {
                    let j = Int(idx)
                    if j >= 0 && j < l { k += Double(values[j]) }
                }
                return k
            }
        }
        let headRow: [Int64] = (0..<heads).map { h in
            Int64(min(selection.keptRowIndex(forQueryHead: h, queryHeadsPerKVHead: g), rowTotal - 1))
        }
        let rowCount = (0..<rowTotal).map { Int64(selection.keptCount(row: $0)) }
        var out = [Double](repeating: 0, count: heads)
        let sum = { (rowPointers: [UnsafePointer<Int32>?]) in
            tensor.bytes.withUnsafeBufferPointer { data in
                HalfPrecision.table.withUnsafeBufferPointer { table in
                    starkv_kept_sums(
                        data.baseAddress, kind, table.baseAddress, Int64(l), Int64(heads), headRow, rowPointers, rowCount,
                        Int64(rowTotal), totals, &out)
                }
            }
        }
        if let bitmaps = selection.keptBitmaps {
            // Bitmap rows: their positions, ascending, into one buffer for the call.
            withPositions(bitmaps, sum)
        } else {
            withRowPointers(selection.keptIndices, sum)
        }
        return out
    }

    /// The kept sums of several selections whose rows are bitmaps over the copy's positions, by
    /// heads in vector lanes over the [position][head] copy (`starkv_kept_sums_bitmaps`); nil when
    /// a selection has no such bitmaps or the kernel does not run here.
    static func laneSums(_ copy: HeadMajorCopy, selections: [LayerSelection], queryHeadsPerKVHead g: Int) -> [[Double]]? {
        let heads = copy.heads, l = copy.length
        var headRow: [Int64] = []
        headRow.reserveCapacity(selections.count * heads)
        var bitmaps: [KeptBitmaps] = []
        for sel in selections {
            guard let b = sel.keptBitmaps, b.length == l, b.rowCount > 0 else { return nil }
            bitmaps.append(b)
            for h in 0..<heads { headRow.append(Int64(min(sel.keptRowIndex(forQueryHead: h, queryHeadsPerKVHead: g), b.rowCount - 1))) }
        }
        guard let perRow = bitmaps.first?.wordsPerRow else { return [] }
        var out = [Double](repeating: 0, count: selections.count * heads)
        let done = copy.values.withUnsafeBufferPointer { t in
            withRowPointers(bitmaps.map(\.words)) { words in
                starkv_kept_sums_bitmaps(
                    t.baseAddress, Int64(copy.stride), Int64(l), Int64(heads), Int64(selections.count), headRow, words, Int64(perRow), &out)
            }
        }
        guard done != 0 else { return nil }
        return (0..<selections.count).map { Array(out[($0 * heads)..<(($0 + 1) * heads)]) }
    }

    /// Calls `body` with a pointer to each row's positions, written ascending into one buffer.
    private static func withPositions<R>(_ bitmaps: KeptBitmaps, _ body: ([UnsafePointer<Int32>?]) -> R) -> R {
        var offsets = [Int](repeating: 0, count: bitmaps.rowCount + 1)
        for r in 0..<bitmaps.rowCount { offsets[r + 1] = offsets[r] + bitmaps.counts[r] }
        let positions = [Int32](unsafeUninitializedCapacity: offsets[bitmaps.rowCount] + 16) { buf, n in
            for r in 0..<bitmaps.rowCount where bitmaps.wordsPerRow > 0 {
                bitmaps.withRow(r) { words in
                    _ = starkv_bitmap_positions(words.baseAddress, Int64(bitmaps.length), buf.baseAddress! + offsets[r])
                }
            }
            n = offsets[bitmaps.rowCount]
        }
        return positions.withUnsafeBufferPointer { p in
            body((0..<bitmaps.rowCount).map { r in p.baseAddress.map { UnsafePointer($0 + offsets[r]) } })
        }
    }

    /// Calls `body` with the base address of every row, each row's storage pinned for the call
    /// (nested `withUnsafeBufferPointer`s, one per row: no copy of the rows).
    private static func withRowPointers<T, R>(_ rows: [[T]], _ body: ([UnsafePointer<T>?]) -> R) -> R {
        var pointers: [UnsafePointer<T>?] = []
        pointers.reserveCapacity(rows.count)
        func nest(_ i: Int) -> R {
            if i == rows.count { return body(pointers) }
            return rows[i].withUnsafeBufferPointer { buffer in
                pointers.append(buffer.baseAddress)
                return nest(i + 1)
            }
        }
        return nest(0)
    }
}
