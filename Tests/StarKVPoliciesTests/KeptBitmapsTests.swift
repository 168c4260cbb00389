import CStarKVSupport
import Testing
@testable import StarKVPolicies

/// Kept rows stored as bitmaps (docs/policies.md "Sweeps"): built straight from a ranking's order
/// keys and cuts, they hold exactly the positions `topKAscending` lists, on the AVX-512 and the
/// portable path alike, and a selection answers the same whichever way its rows are stored.
@Suite(.serialized) struct KeptBitmapsTests {
    struct Rand {
        var s: UInt64
        mutating func next() -> UInt64 { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return s }
    }

    static func positions(_ b: KeptBitmaps) -> [[Int32]] { (0..<b.rowCount).map { b.positions(row: $0) } }

    @Test func aHandCheckedRowKeepsItsBestPositionsAndTheWindow() {
        // Order: 3@1, 3@2, 3@4, 2@3, 1@0; window [5, 8).
        let r = ScoreRanking<Float>([1, 3, 3, 2, 3], counts: [2])
        let b = KeptBitmaps(ranked: [r], count: 2, promptLength: 8)
        #expect(b.words == [0b1110_0110])
        #expect(b.counts == [5])
        #expect(b.positions(row: 0) == [1, 2, 5, 6, 7])
        #expect(b.count(row: 0, in: 0..<3) == 2)
        #expect(b.count(row: 0, in: 2..<100) == 4)
        // k ≤ 0: the window alone; k ≥ n: everything.
        #expect(Self.positions(KeptBitmaps(ranked: [r], count: 0, promptLength: 7)) == [[5, 6]])
        #expect(Self.positions(KeptBitmaps(ranked: [r], count: 9, promptLength: 6)) == [[0, 1, 2, 3, 4, 5]])
        // A tie at the cut (k = 1 among three 3s) keeps the lowest position.
        #expect(Self.positions(KeptBitmaps(ranked: [r], count: 1, promptLength: 5, window: false)) == [[1]])
    }

    @Test(arguments: [false, true])
    func bitmapsHoldTheListedTopKOnRandomRowsWithTiesAndNaN(portable: Bool) {
        starkv_keptrows_force_portable(portable ? 1 : 0)
        defer { starkv_keptrows_force_portable(0) }
        var g = Rand(s: 0x5DEE_CE66_D1CE_4E5B)
        for trial in 0..<200 {
            // Lengths around the 64-key blocks and the 16-key vectors, and long rows.
            let n = trial < 40 ? trial * 3 : 1 + Int(g.next() % 2000)
            let levels = trial % 3 == 0 ? 3 : 500  // few distinct values: ties at the cut
            let row: [Float] = (0..<n).map { _ in
                let u = Int(g.next() % UInt64(levels))
                if u == 0 && trial % 5 == 0 { return .nan }
                return Float(u) * (g.next() % 2 == 0 ? 1 : -1) / 3
            }
            let ks = [0, 1, n / 4, n / 2, n - 1, n, n + 1]
            let r = ScoreRanking(row, counts: ks)
            let wide = ScoreRanking(row.map(Double.init), counts: ks)
            let window = Int(g.next() % 70)
            for k in ks {
                let listed = r.topKWithWindow(count: k, promptLength: n + window)
                let b = KeptBitmaps(ranked: [r, r], counts: [k, k], promptLength: n + window)
                #expect(Self.positions(b) == [listed, listed], "n \(n) k \(k) window \(window)")
                #expect(b.counts == [listed.count, listed.count])
                #expect(Self.positions(KeptBitmaps(ranked: [wide], count: k, promptLength: n + window)) == [listed], "fp64 n \(n) k \(k)")
                #expect(KeptBitmaps(positions: [listed], length: n + window) == KeptBitmaps(ranked: [r], count: k, promptLength: n + window))
            }
        }
    }

    @Test(arguments: [false, true])
    func positionsAndCountsOfABitmapEqualAPlainScan(portable: Bool) {
        starkv_keptrows_force_portable(portable ? 1 : 0)
        defer { starkv_keptrows_force_portable(0) }
        var g = Rand(s: 77)
        for length in [0, 1, 15, 16, 17, 63, 64, 65, 200, 1000] {
            var rows: [[Int32]] = [(0..<length).map { Int32($0) }, []]
            for r in 2..<4 {
                let every = UInt64(r + 1)
                rows.append((0..<length).filter { _ in g.next() % every == 0 }.map { Int32($0) })
            }
            let b = KeptBitmaps(positions: rows, length: length)!
            #expect(Self.positions(b) == rows, "length \(length)")
            for _ in 0..<10 {
                let lo = length == 0 ? 0 : Int(g.next() % UInt64(length)), hi = lo + Int(g.next() % 80)
                for r in rows.indices {
                    #expect(b.count(row: r, in: lo..<hi) == rows[r].filter { Int($0) >= lo && Int($0) < hi }.count)
                }
            }
        }
        #expect(KeptBitmaps(positions: [[3, 2]], length: 5) == nil)
        #expect(KeptBitmaps(positions: [[1, 5]], length: 5) == nil)
    }

    @Test func aSelectionAnswersTheSameWhetherItsRowsAreListsOrBitmaps() {
        let rows: [[Int32]] = [[0, 2, 3], [1], [], [0, 1, 2, 3, 4]]
        let listed = LayerSelection(layer: 2, granularity: .kvHead, keptIndices: rows, capacityTokens: 3, windowTokens: 1, compressed: true)
        let bits = LayerSelection(
            layer: 2, granularity: .kvHead, keptBitmaps: KeptBitmaps(positions: rows, length: 5)!, capacityTokens: 3, windowTokens: 1,
            compressed: true)
        #expect(listed == bits)
        #expect(bits.keptIndices == rows)
        #expect(bits.keptTokensMean == listed.keptTokensMean)
        #expect(bits.keptTokensMean == 9.0 / 4)
        #expect((0..<8).map { bits.keptIndices(forQueryHead: $0, queryHeadsPerKVHead: 2) } == (0..<8).map { listed.keptIndices(forQueryHead: $0, queryHeadsPerKVHead: 2) })
        var other = bits
        other.keptIndices = [[0, 2, 3], [1], [4], [0, 1, 2, 3, 4]]
        #expect(other != listed)
        #expect(other.keptBitmaps == nil)
    }
}
