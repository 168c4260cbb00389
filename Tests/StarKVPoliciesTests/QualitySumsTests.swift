import CStarKVSupport
import Testing
import StarKVTrace
@testable import StarKVPolicies

/// The decode proxy's kept sums (`OrderedKeptSums`, four rows interleaved in C) give the bits of
/// the one-row-at-a-time ascending fp64 sum the proxy is defined by.
@Suite struct QualitySumsTests {
    /// A xorshift generator, so the cases are the same on every run.
    struct Rand {
        var s: UInt64
        mutating func next() -> UInt64 { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s }
        mutating func unit() -> Float { Float(next() % 1_000_000) / 1_000_000 }
    }

    static func naive(_ values: [Float], head: Int, length l: Int, row: [Int32]) -> Double {
        var k = 0.0
        for idx in row where idx >= 0 && Int(idx) < l { k += Double(values[head * l + Int(idx)]) }
        return k
    }

    @Test(arguments: [TensorDType.f32, .f16, .bf16])
    func interleavedSumsEqualTheAscendingSumBitForBit(dtype: TensorDType) {
        var r = Rand(s: 0x9E37_79B9_7F4A_7C15)
        let heads = 19, l = 257
        // Values spread over many magnitudes, so that the order of additions matters.
        var values = (0..<(heads * l)).map { _ in r.unit() * Float(1 << (r.next() % 20)) / 1024 }
        let tensor = Tensor(floats: values, shape: [heads, l], dtype: dtype)
        values = tensor.floats()  // the stored (rounded) values
        var rows: [[Int32]] = []
        for h in 0..<heads {
            // Rows of different lengths, some with positions outside [0, l), one empty.
            var row: [Int32] = h == 4 ? [] : (0..<l).filter { _ in r.next() % 3 != 0 }.map { Int32($0) }
            if h == 2 { row += [Int32(l), Int32(l + 5)] }
            if h == 5 { row.insert(-1, at: 0) }
            if h == 6 { row = (0..<l).map { Int32($0) } }  // every position: the head's total
            if h == 7 { row = [5, 3, 3, 200, 1] }  // not ascending: summed in its own order
            if h == 8 { row = (0..<(l - 1)).map { Int32($0) } + [Int32(l - 1), Int32(l - 1)] }  // l entries, one repeated
            rows.append(row)
        }
        let totals = (0..<heads).map { h in (0..<l).reduce(0.0) { $0 + Double(values[h * l + $1]) } }
        let sel = LayerSelection(layer: 0, granularity: .queryHead, keptIndices: rows, capacityTokens: l, windowTokens: 0, compressed: true)
        let sums = OrderedKeptSums.sums(tensor, selection: sel, queryHeadsPerKVHead: 1, length: l, totals: totals)
        for h in 0..<heads {
            let expected = Self.naive(values, head: h, length: l, row: rows[h])
            #expect(sums[h].bitPattern == expected.bitPattern, "head \(h)")
        }
    }

    @Test func theOrderOfAdditionsIsTheRowsOwn() {
        // 1 + 2^-53 + 2^-53 rounds differently in another order: the sum must follow the row.
        let l = 3
        let values: [Float] = [1, Float(sign: .plus, exponent: -53, significand: 1), Float(sign: .plus, exponent: -53, significand: 1)]
        let tensor = Tensor(floats: values + values + values + values, shape: [4, l], dtype: .f32)
        let rows: [[Int32]] = [[0, 1, 2], [1, 2, 0], [0, 1], [1, 2, 0]]
        let sel = LayerSelection(layer: 0, granularity: .queryHead, keptIndices: rows, capacityTokens: l, windowTokens: 0, compressed: true)
        let sums = OrderedKeptSums.sums(tensor, selection: sel, queryHeadsPerKVHead: 1, length: l, totals: [1, 1, 1, 1])
        #expect(sums[0] == 1.0)  // 1 + 2^-53 rounds back to 1, twice
        #expect(sums[1] == 1.0 + Double(sign: .plus, exponent: -52, significand: 1))  // 2^-52 first, then 1
        #expect(sums[2] == 1.0 && sums[3] == sums[1])
    }

    @Test func sharedAndKVHeadRowsAreReadByEveryHeadOfTheirGroup() {
        var r = Rand(s: 42)
        let heads = 12, l = 100, g = 3
        let values = (0..<(heads * l)).map { _ in r.unit() }
        let tensor = Tensor(floats: values, shape: [heads, l], dtype: .f32)
        let totals = (0..<heads).map { h in (0..<l).reduce(0.0) { $0 + Double(values[h * l + $1]) } }
        let rows: [[Int32]] = (0..<(heads / g)).map { k in (0..<l).filter { ($0 + k) % 3 == 0 }.map { Int32($0) } }
        for (granularity, kept) in [(HeadGranularity.kvHead, rows), (.shared, [rows[1]])] {
            let sel = LayerSelection(layer: 0, granularity: granularity, keptIndices: kept, capacityTokens: l, windowTokens: 0, compressed: true)
            let sums = OrderedKeptSums.sums(tensor, selection: sel, queryHeadsPerKVHead: g, length: l, totals: totals)
            for h in 0..<heads {
                let row = sel.keptIndices(forQueryHead: h, queryHeadsPerKVHead: g)
                #expect(sums[h].bitPattern == Self.naive(values, head: h, length: l, row: row).bitPattern, "\(granularity) head \(h)")
            }
        }
    }
}

extension QualitySumsTests {
    @Test(arguments: [TensorDType.f32, .bf16])
    func bitmapRowsGiveTheSameSumsAsTheirPositions(dtype: TensorDType) {
        var r = Rand(s: 0xABCD_EF01_2345_6789)
        let heads = 12, l = 300
        let values = (0..<(heads * l)).map { _ in r.unit() * Float(1 << (r.next() % 20)) / 1024 }
        let tensor = Tensor(floats: values, shape: [heads, l], dtype: dtype)
        let stored = tensor.floats()
        let totals = (0..<heads).map { h in (0..<l).reduce(0.0) { $0 + Double(stored[h * l + $1]) } }
        // KV-head rows (three query heads each), one empty and one full.
        var rows: [[Int32]] = (0..<4).map { _ in (0..<l).filter { _ in r.next() % 4 != 0 }.map { Int32($0) } }
        rows[1] = []
        rows[2] = (0..<l).map { Int32($0) }
        let listed = LayerSelection(layer: 0, granularity: .kvHead, keptIndices: rows, capacityTokens: l, windowTokens: 0, compressed: true)
        let bits = LayerSelection(
            layer: 0, granularity: .kvHead, keptBitmaps: KeptBitmaps(positions: rows, length: l)!, capacityTokens: l, windowTokens: 0,
            compressed: true)
        let a = OrderedKeptSums.sums(tensor, selection: listed, queryHeadsPerKVHead: 3, length: l, totals: totals)
        let b = OrderedKeptSums.sums(tensor, selection: bits, queryHeadsPerKVHead: 3, length: l, totals: totals)
        #expect(a.map(\.bitPattern) == b.map(\.bitPattern))
        for h in 0..<heads {
            #expect(b[h].bitPattern == Self.naive(stored, head: h, length: l, row: rows[h / 3]).bitPattern, "head \(h)")
        }
    }
}

/// The bitmap rows' kernel (serialized: it switches the kernel off and on for every thread).
@Suite(.serialized) struct QualityLaneSumsTests {
    typealias Rand = QualitySumsTests.Rand
    static func naive(_ values: [Float], head: Int, length l: Int, row: [Int32]) -> Double {
        QualitySumsTests.naive(values, head: head, length: l, row: row)
    }

    /// Heads in vector lanes over the [position][head] copy (`starkv_kept_sums_bitmaps`) give
    /// each head's one-accumulator ascending sum, for head counts that fill no, one or two
    /// 32-lane blocks exactly, with −0 and lengths off the 64-position words; forcing the
    /// portable path gives the same bits through the positions.
    @Test(arguments: [(TensorDType.f32, 5, 70), (.f16, 28, 129), (.bf16, 40, 64), (.f32, 64, 1)])
    func bitmapRowsSumInVectorLanesBitForBit(dtype: TensorDType, heads: Int, l: Int) {
        var r = Rand(s: 0x1234_5678_9ABC_DEF1 &+ UInt64(heads))
        var values = (0..<(heads * l)).map { _ in r.unit() * Float(1 << (r.next() % 24)) / 4096 }
        values[0] = -0.0
        let tensor = Tensor(floats: values, shape: [heads, l], dtype: dtype)
        let stored = tensor.floats()
        let totals = (0..<heads).map { h in (0..<l).reduce(0.0) { $0 + Double(stored[h * l + $1]) } }
        for granularity in [HeadGranularity.queryHead, .kvHead, .shared] {
            // Four KV heads where the head count allows, else one query head per KV head.
            let g = granularity == .kvHead && heads % 4 == 0 ? heads / 4 : 1
            let rowCount = granularity == .shared ? 1 : heads / g
            let rows: [[Int32]] = (0..<rowCount).map { i in
                i == 1 ? [] : (0..<l).filter { _ in r.next() % UInt64(2 + i % 5) != 0 }.map { Int32($0) }
            }
            let bits = LayerSelection(
                layer: 0, granularity: granularity, keptBitmaps: KeptBitmaps(positions: rows, length: l)!, capacityTokens: l,
                windowTokens: 0, compressed: true)
            let copy = HeadMajorCopy(tensor, heads: heads, length: l)
            #expect(copy != nil)
            let lanes = OrderedKeptSums.sums(tensor, selection: bits, queryHeadsPerKVHead: g, length: l, totals: totals, transposed: copy)
            for h in 0..<heads {
                let row = rows[bits.keptRowIndex(forQueryHead: h, queryHeadsPerKVHead: g)]
                #expect(lanes[h].bitPattern == Self.naive(stored, head: h, length: l, row: row).bitPattern, "\(granularity) head \(h)")
            }
            starkv_kept_sums_force_portable(1)
            let portable = OrderedKeptSums.sums(tensor, selection: bits, queryHeadsPerKVHead: g, length: l, totals: totals, transposed: copy)
            starkv_kept_sums_force_portable(0)
            #expect(portable.map(\.bitPattern) == lanes.map(\.bitPattern))
        }
    }
}
