import Testing
import StarKVModel
@testable import StarKVPolicies

/// The C top-k cut select of 32-bit keys (`starkv_topk_cuts_u32_using`,
/// Sources/CStarKVSupport/topk_select.c) against the Swift selects it replaces: the same
/// (key, ties, equal) for every rank, on every pass the CPU runs, with and without the sample.
@Suite struct TopKSelectTests {
    /// Every pass this CPU runs, each with and without the sampled brackets.
    static let variants: [(pass: TopKPass, sample: Bool)] = TopKPass.available.flatMap { [($0, true), ($0, false)] }

    /// Checks every variant against the plain radix select and, for rows short enough, the sort.
    static func expectAllEqual(_ keys: [UInt32], _ ranks: [Int], _ label: String) {
        let reference = radixCuts(keys, ranks: ranks)
        if keys.count <= 4000 { #expect(sortedCuts(keys, ranks: ranks) == reference, "\(label): sort") }
        #expect(bucketedCuts(keys, ranks: ranks) == reference, "\(label): bucketed")
        #expect(kthLargestKeys(keys, ranks: ranks) == reference, "\(label): kthLargestKeys")
        for v in variants {
            let got = nativeCuts(keys, ranks: ranks, pass: v.pass, sample: v.sample)
            #expect(got?.cuts == reference, "\(label): pass \(v.pass) sample \(v.sample)")
        }
    }

    /// Rows of many kinds: few distinct values (many ties), Float scores with NaN and −0 (through
    /// `orderKey`), the whole key range, one value, two values far apart; lengths around the
    /// sorted-row and sampled-row thresholds; ranks 1 and n, repeated and out of order.
    @Test func nativeCutsEqualTheSwiftSelectsOnEveryPass() {
        var g = SplitMix64(seed: 2026)
        let lengths = [1, 2, 5, 63, 64, 65, 100, 1023, 1024, 1025, 3000, 9000, 14500]
        for (trial, n) in (lengths + lengths + lengths).enumerated() {
            let kind = trial % 6
            let keys: [UInt32] = (0..<n).map { _ in
                switch kind {
                case 0:  // few levels: heavy ties
                    return Float(Int(g.next() % 5)).orderKey
                case 1:  // scores with NaN and −0 among them
                    let u = g.next() % 1000
                    if u < 30 { return Float.nan.orderKey }
                    if u < 60 { return Float(-0.0).orderKey }
                    if u < 90 { return Float(0.0).orderKey }
                    return Float(g.nextFloat() * 0.01 - 0.002).orderKey
                case 2: return UInt32(truncatingIfNeeded: g.next())  // the whole range
                case 3: return 0x8000_0000  // one value (a row of zeros)
                case 4: return g.next() % 3 == 0 ? UInt32.max : 0  // two values at the ends
                default:  // a wide tie group in attention-like scores
                    return g.next() % 2 == 0 ? Float(0.125).orderKey : Float(g.nextFloat()).orderKey
                }
            }
            let random = (0..<3).map { _ in 1 + Int(g.next() % UInt64(n)) }
            let ranks = [n, 1, n / 2, n / 10, n / 2, n - 1, (4 * n) / 5].filter { $0 >= 1 } + random
            Self.expectAllEqual(keys, ranks, "trial \(trial) n \(n) kind \(kind)")
            Self.expectAllEqual(keys, [1 + Int(g.next() % UInt64(n))], "trial \(trial) n \(n) kind \(kind), one rank")
        }
    }

    /// More ranks than the sampled brackets take (eight) go to the exact select, still equal.
    @Test func manyRanksEqualTheSwiftSelects() {
        var g = SplitMix64(seed: 11)
        let keys: [UInt32] = (0..<5000).map { _ in Float(Int(g.next() % 700)).orderKey }
        let ranks = (0..<40).map { _ in 1 + Int(g.next() % 5000) }
        Self.expectAllEqual(keys, ranks, "40 ranks")
    }

    /// A row ascending by position: the stride sample is exact quantiles, so every bracket holds
    /// its rank (the kernel reports `sampled`), and the cuts are the row's.
    @Test func aRepresentativeSampleAnswersEveryRankFromItsBrackets() {
        let n = 6000
        let keys: [UInt32] = (0..<n).map { 0x8000_0000 + UInt32($0 / 3) }  // ties of three
        let ranks = [1, 600, 1200, 2400, 3600, 4800, n]
        for v in Self.variants where v.sample {
            let got = nativeCuts(keys, ranks: ranks, pass: v.pass, sample: true)
            #expect(got?.sampled == true, "pass \(v.pass)")
            #expect(got?.cuts == radixCuts(keys, ranks: ranks), "pass \(v.pass)")
        }
        // Hand-checked: rank 1 is the last position's key, tied with the two before it.
        let top: UInt32 = 0x8000_0000 + 1999, next: UInt32 = 0x8000_0000 + 1998
        let expected: [TopKCut<UInt32>] = [
            TopKCut(key: top, ties: 1, equal: 3), TopKCut(key: top, ties: 2, equal: 3), TopKCut(key: next, ties: 1, equal: 3),
        ]
        #expect(kthLargestKeys(keys, ranks: [1, 2, 4]) == expected)
    }

    /// A tie group at a bracket's end is counted apart, not copied: rows where two positions in
    /// five hold one value V and the rest distinct values, laid out so that the stride sample
    /// (every 16th position for n = 4000) sees the same mix. With V below every other key, ranks
    /// just past the distinct keys land in the group at the bracket's low end; with V above,
    /// ranks near the group's end land in it at the high end (ranks far enough from 1 and n that
    /// the bracket ends are sample keys). Hand-checked cuts; the brackets hold every rank.
    @Test func tieGroupsAtBracketEndsGiveTheRowsCounts() {
        let n = 4000
        for vOnTop in [false, true] {
            let v: UInt32 = vOnTop ? 0xC000_0000 : 0x9000_0000
            let keys: [UInt32] = (0..<n).map { j in j % 5 < 2 ? v : 0xA000_0000 + UInt32(j) * 7 }
            let distinct = n - 1600
            let ranks = vOnTop ? [1590, 1595, 1600, 1601, 1610] : [distinct - 3, distinct + 1, distinct + 7]
            let expected: [TopKCut<UInt32>] = vOnTop
                ? [TopKCut(key: v, ties: 1590, equal: 1600), TopKCut(key: v, ties: 1595, equal: 1600),
                   TopKCut(key: v, ties: 1600, equal: 1600), TopKCut(key: 0xA000_0000 + 3999 * 7, ties: 1, equal: 1),
                   TopKCut(key: 0xA000_0000 + 3984 * 7, ties: 1, equal: 1)]
                : [TopKCut(key: 0xA000_0000 + 7 * 7, ties: 1, equal: 1), TopKCut(key: v, ties: 1, equal: 1600),
                   TopKCut(key: v, ties: 7, equal: 1600)]
            #expect(radixCuts(keys, ranks: ranks) == expected, "V on top: \(vOnTop)")
            for p in Self.variants where p.sample {
                let got = nativeCuts(keys, ranks: ranks, pass: p.pass, sample: true)
                #expect(got?.sampled == true, "V on top: \(vOnTop), pass \(p.pass)")
                #expect(got?.cuts == expected, "V on top: \(vOnTop), pass \(p.pass)")
            }
        }
    }

    /// A row whose sampled positions (the middle of every n/256-th stretch for n = 4096,
    /// topk_select.c) hold large keys and every other position small ones: the sample says
    /// nothing about the middle ranks, their brackets miss, and the exact select answers them
    /// with the same cuts.
    @Test func anUnrepresentativeSampleFallsBackToTheExactSelect() {
        var g = SplitMix64(seed: 5)
        let n = 4096
        let keys: [UInt32] = (0..<n).map { j in
            j % 16 == 8 ? 0xF000_0000 + UInt32(g.next() % 50) : 0x8000_0000 + UInt32(g.next() % 100_000)
        }
        let ranks = [n / 2, n / 3]
        for v in Self.variants where v.sample {
            let got = nativeCuts(keys, ranks: ranks, pass: v.pass, sample: true)
            #expect(got?.sampled == false, "pass \(v.pass)")
            #expect(got?.cuts == radixCuts(keys, ranks: ranks), "pass \(v.pass)")
        }
    }

    /// Ranks outside 1...n are refused (nil: the Swift select then traps, as before); no ranks
    /// give no cuts; keys of another width are not the kernel's.
    @Test func badRanksAndOtherWidthsAreRefused() {
        let keys: [UInt32] = [5, 3, 9, 1]
        #expect(nativeCuts(keys, ranks: [0]) == nil)
        #expect(nativeCuts(keys, ranks: [2, 5]) == nil)
        #expect(nativeCuts(keys, ranks: [-1]) == nil)
        #expect(nativeCuts([UInt32](), ranks: [1]) == nil)
        #expect(nativeCuts(keys, ranks: [])?.cuts == [TopKCut<UInt32>]())
        #expect(nativeCuts(keys.map(UInt64.init), ranks: [1]) == nil)
        let expected: [TopKCut<UInt32>] = [
            TopKCut(key: 9, ties: 1, equal: 1), TopKCut(key: 1, ties: 1, equal: 1), TopKCut(key: 5, ties: 1, equal: 1),
        ]
        #expect(nativeCuts(keys, ranks: [1, 4, 2])?.cuts == expected)
    }
}
