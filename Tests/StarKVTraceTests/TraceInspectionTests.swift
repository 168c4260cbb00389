import Testing
@testable import StarKVTrace

@Suite struct TraceInspectionTests {
    @Test func tableListsEveryStepWithItsSizesAndRatio() throws {
        let path = try TraceFixtures.write(steps: 3, to: TraceFixtures.temporaryPath("inspect"))
        let r = try TraceReader(path: path)
        let steps = try r.summaries()
        let text = TraceInspection.render(header: r.header, footer: r.footer, minorVersion: 0, steps: steps, fileBytes: 1234)
        #expect(text.contains("tiny-vl: 2 layers, 4 query heads, 2 KV heads"))
        #expect(text.contains("footer present"))
        let rows = text.split(separator: "\n").filter { $0.hasPrefix("   ") || $0.first?.isNumber == true }
        #expect(rows.count >= 3)
        let s = steps[2]
        let expectedRatio = TraceInspection.ratio(s.rawBytes, s.storedBytes)
        #expect(text.contains(expectedRatio))
        #expect(text.contains("3 steps"))
    }
}
