import Testing
import StarKVTrace
@testable import StarKVPolicies
@testable import StarKVReplay

/// Per-screenshot shares of the kept cache (`PolicyReplayer.imageShares`) count the same
/// positions whether a selection's rows are lists or bitmaps.
@Suite struct ImageSharesTests {
    @Test func bitmapRowsGiveTheSharesOfTheirPositions() {
        let l = 150
        let images = [ImageEntry(spanStart: 2, spanEnd: 70, gridH: 4, gridW: 17, frameAge: 1), ImageEntry(spanStart: 70, spanEnd: 140, gridH: 5, gridW: 14, frameAge: 0)]
        let step = StepRecord(
            episodeID: "e", stepIndex: 0, stepInEpisode: 0, reset: true, promptLength: l, generatedTokens: 1,
            tokenTypes: Array(repeating: .instruction, count: l), images: images)
        let rows: [[Int32]] = [[0, 1, 2, 69, 70, 71, 139, 140, 149], [], [64, 65, 66, 67, 68, 69, 70]]
        let listed = LayerSelection(layer: 0, granularity: .kvHead, keptIndices: rows, capacityTokens: 9, windowTokens: 0, compressed: true)
        let bits = LayerSelection(
            layer: 0, granularity: .kvHead, keptBitmaps: KeptBitmaps(positions: rows, length: l)!, capacityTokens: 9, windowTokens: 0,
            compressed: true)
        let a = PolicyReplayer.imageShares(step: step, selections: [listed])
        let b = PolicyReplayer.imageShares(step: step, selections: [bits])
        #expect(a.after == b.after)
        // Hand count, over the two non-empty rows: image 0 holds 2 of 9 and 6 of 7, image 1 holds 3 of 9 and 1 of 7.
        #expect(abs(b.after[0] - (2.0 / 9 + 6.0 / 7) / 2) < 1e-15)
        #expect(abs(b.after[1] - (3.0 / 9 + 1.0 / 7) / 2) < 1e-15)
    }
}
