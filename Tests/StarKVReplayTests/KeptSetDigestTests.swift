import Testing
@testable import StarKVPolicies
@testable import StarKVReplay

/// The kept-set digest's two encodings (docs/replay.md "Digest"), checked against byte streams
/// written out by hand.
@Suite struct KeptSetDigestTests {
    static func selection(layer: Int, rows: [[Int32]]) -> LayerSelection {
        LayerSelection(
            layer: layer, granularity: rows.count == 1 ? .shared : .queryHead, keptIndices: rows, capacityTokens: 4, windowTokens: 1,
            compressed: true)
    }

    static func u32(_ v: Int) -> [UInt8] { withUnsafeBytes(of: UInt32(v).littleEndian) { Array($0) } }

    @Test func v1HashesEveryPositionAsLittleEndianInt32() {
        var d = KeptSetDigest(version: .v1)
        d.add(step: 3, promptLength: 10, selections: [Self.selection(layer: 1, rows: [[1, 3, 9]])])
        var expected: [UInt8] = Self.u32(3) + Self.u32(1) + Self.u32(1) + Self.u32(3)
        expected += Self.u32(1) + Self.u32(3) + Self.u32(9)
        var h = SHA256()
        h.update(expected)
        #expect(d.finalize() == h.finalize())
    }

    @Test func v2HashesEachRowAsABitmapOverThePrompt() {
        var d = KeptSetDigest(version: .v2)
        d.add(step: 3, promptLength: 10, selections: [Self.selection(layer: 1, rows: [[1, 3, 9], []])])
        // Row [1, 3, 9] over 10 positions: bits 1 and 3 of byte 0 (0x0A), bit 1 of byte 1 (9 = 8 + 1).
        var expected = Array("starkv-kept-v2".utf8) + Self.u32(3) + Self.u32(10) + Self.u32(1) + Self.u32(2)
        expected += Self.u32(3) + [0, 0x0A, 0x02]
        expected += Self.u32(0) + [0, 0x00, 0x00]
        var h = SHA256()
        h.update(expected)
        #expect(d.finalize() == h.finalize())
    }

    @Test func v2BitmapSpansWordBoundaries() {
        // 130 positions: 17 bytes; positions 0, 63, 64 and 129.
        var d = KeptSetDigest(version: .v2)
        d.add(step: 0, promptLength: 130, selections: [Self.selection(layer: 0, rows: [[0, 63, 64, 129]])])
        var bitmap = [UInt8](repeating: 0, count: 17)
        for j in [0, 63, 64, 129] { bitmap[j / 8] |= UInt8(1) << UInt8(j % 8) }
        var expected = Array("starkv-kept-v2".utf8) + Self.u32(0) + Self.u32(130) + Self.u32(0) + Self.u32(1)
        expected += Self.u32(4) + [0] + bitmap
        var h = SHA256()
        h.update(expected)
        #expect(d.finalize() == h.finalize())
    }

    @Test(arguments: [0, 3, 63, 64, 70])
    func v2BitmapOfLongRunsEqualsThePositionByPositionBitmap(start: Int) {
        // Runs of 64 and more consecutive positions take the word-at-a-time path.
        let l = 400
        let row = (start..<(start + 150)).map { Int32($0) } + [Int32(start + 152), 399]
        var d = KeptSetDigest(version: .v2)
        d.add(step: 0, promptLength: l, selections: [Self.selection(layer: 0, rows: [row])])
        var bitmap = [UInt8](repeating: 0, count: 50)
        for j in row { bitmap[Int(j) / 8] |= UInt8(1) << UInt8(Int(j) % 8) }
        var expected = Array("starkv-kept-v2".utf8) + Self.u32(0) + Self.u32(l) + Self.u32(0) + Self.u32(1)
        expected += Self.u32(row.count) + [0] + bitmap
        var h = SHA256()
        h.update(expected)
        #expect(d.finalize() == h.finalize())
    }

    @Test(arguments: [[Int32]([3, 1]), [2, 2], [-1, 4], [4, 10]])
    func v2FallsBackToPositionsForRowsThatAreNotAscendingInsideThePrompt(row: [Int32]) {
        var d = KeptSetDigest(version: .v2)
        d.add(step: 0, promptLength: 10, selections: [Self.selection(layer: 0, rows: [row])])
        var expected = Array("starkv-kept-v2".utf8) + Self.u32(0) + Self.u32(10) + Self.u32(0) + Self.u32(1)
        expected += Self.u32(row.count) + [1]
        for v in row { expected += withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        var h = SHA256()
        h.update(expected)
        #expect(d.finalize() == h.finalize())
    }

    @Test func bothVersionsSeparateKeptSetsThatDifferInOnePosition() {
        for version in KeptDigestVersion.allCases {
            func digest(_ rows: [[Int32]]) -> String {
                var d = KeptSetDigest(version: version)
                d.add(step: 0, promptLength: 200, selections: [Self.selection(layer: 0, rows: rows)])
                return d.finalize()
            }
            let base: [[Int32]] = [[0, 5, 70, 199], [1, 2, 3]]
            #expect(digest(base) == digest(base))
            #expect(digest(base) != digest([[0, 5, 71, 199], [1, 2, 3]]), "\(version)")
            #expect(digest(base) != digest([[0, 5, 70, 199], [1, 2]]), "\(version)")
            #expect(digest(base) != digest([[1, 2, 3], [0, 5, 70, 199]]), "\(version)")
        }
    }

    @Test func versionNamesParse() {
        #expect(KeptDigestVersion(name: "v1") == .v1)
        #expect(KeptDigestVersion(name: "2") == .v2)
        #expect(KeptDigestVersion(name: "V2") == .v2)
        #expect(KeptDigestVersion(name: "v3") == nil)
        #expect(KeptDigestVersion(name: "bitmap") == nil)
    }
}

extension KeptSetDigestTests {
    @Test(arguments: [KeptDigestVersion.v1, .v2])
    func bitmapRowsHashLikeTheirPositions(version: KeptDigestVersion) {
        let rows: [[Int32]] = [[0, 63, 64, 129], [], [5]]
        let listed = Self.selection(layer: 4, rows: rows)
        let bits = LayerSelection(
            layer: 4, granularity: .queryHead, keptBitmaps: KeptBitmaps(positions: rows, length: 130)!, capacityTokens: 4, windowTokens: 1,
            compressed: true)
        var a = KeptSetDigest(version: version), b = KeptSetDigest(version: version)
        a.add(step: 1, promptLength: 130, selections: [listed])
        b.add(step: 1, promptLength: 130, selections: [bits])
        #expect(a.finalize() == b.finalize())
        // Bitmaps over another length than the step's prompt go through their positions.
        var c = KeptSetDigest(version: version)
        let longer = LayerSelection(
            layer: 4, granularity: .queryHead, keptBitmaps: KeptBitmaps(positions: rows, length: 200)!, capacityTokens: 4, windowTokens: 1,
            compressed: true)
        c.add(step: 1, promptLength: 130, selections: [longer])
        #expect(c.finalize() == a.finalize())
    }
}
