import Foundation
import Testing
@testable import StarKVTrace

@Suite struct TraceRoundTripTests {
    @Test func everyFieldRoundTripsBitExactly() throws {
        let path = try TraceFixtures.write(steps: 4, to: TraceFixtures.temporaryPath("roundtrip"))
        let r = try TraceReader(path: path)
        #expect(r.header == TraceFixtures.header())
        #expect(r.footer == .present)
        #expect(r.stepCount == 4)
        for i in 0..<4 {
            #expect(try r.readStep(at: i) == TraceFixtures.step(i))
        }
    }

    @Test func uncompressedAndUnshuffledChunksRoundTrip() throws {
        let path = try TraceFixtures.write(
            steps: 2, to: TraceFixtures.temporaryPath("raw"),
            options: TraceWriteOptions(byteShuffle: false, compress: false, fsyncOnClose: false))
        let r = try TraceReader(path: path)
        #expect(try r.readStep(at: 1) == TraceFixtures.step(1))
    }

    @Test func sameInputsGiveByteIdenticalFiles() throws {
        let a = try TraceFixtures.write(steps: 3, to: TraceFixtures.temporaryPath("det-a"))
        let b = try TraceFixtures.write(steps: 3, to: TraceFixtures.temporaryPath("det-b"))
        #expect(TraceFixtures.bytes(a) == TraceFixtures.bytes(b))
    }

    @Test func fieldFilterSkipsOtherChunks() throws {
        let path = try TraceFixtures.write(steps: 2, to: TraceFixtures.temporaryPath("filter"))
        let step = try TraceReader(path: path).readStep(at: 1, fields: [TraceField.hidNorm])
        #expect(step.chunks.map(\.field) == [TraceField.hidNorm, TraceField.hidNorm])
        #expect(step.chunk(TraceField.hidNorm, layer: 1) == TraceFixtures.step(1).chunk(TraceField.hidNorm, layer: 1))
    }

    @Test func summariesReportSizesWithoutDecompressing() throws {
        let path = try TraceFixtures.write(steps: 2, to: TraceFixtures.temporaryPath("summary"))
        let s = try TraceReader(path: path).summaries()
        let expectedRaw = TraceFixtures.step(1).chunks.reduce(UInt64(0)) { $0 + UInt64($1.tensor.bytes.count) }
        #expect(s[1].rawBytes == expectedRaw)
        #expect(s[1].images == 2 && s[1].visualTokens == 8)
        #expect(s[1].promptLength == TraceFixtures.step(1).promptLength)
        #expect(s[0].fields.contains(TraceField.winSum) && !s[0].fields.contains(TraceField.guikvResid))
    }

    @Test func float16AndBFloat16ConvertExactlyForRepresentableValues() {
        let values: [Float] = [0, 1, -2.5, 0.125, 65504]
        #expect(Tensor(floats: values, shape: [5], dtype: .f16).floats() == values)
        #expect(Tensor(floats: values, shape: [5], dtype: .bf16).floats() == [0, 1, -2.5, 0.125, 65536])
    }

    @Test func crc32cMatchesTheStandardTestVector() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }
}

@Suite struct TraceWriterValidationTests {
    @Test func undeclaredFieldIsRefused() throws {
        var h = TraceFixtures.header()
        h.fields.removeAll { $0 == TraceField.winRows }
        let w = try TraceWriter(path: TraceFixtures.temporaryPath("undeclared"), header: h)
        var s = TraceFixtures.step(0, header: h)
        s.chunks.append(TensorChunk(field: TraceField.winRows, layer: 0, tensor: Tensor(floats: [0], shape: [1])))
        #expect(throws: TraceError.self) { try w.append(s) }
    }

    @Test func wrongShapeIsRefusedNamingTheFieldAndLayer() throws {
        let h = TraceFixtures.header()
        let w = try TraceWriter(path: TraceFixtures.temporaryPath("shape"), header: h)
        var s = TraceFixtures.step(0, header: h)
        let i = s.chunks.firstIndex { $0.field == TraceField.colsumAll && $0.layer == 1 }!
        s.chunks[i].tensor = Tensor(floats: [Float](repeating: 0, count: 4), shape: [4])
        do {
            try w.append(s)
            Issue.record("expected a shape error")
        } catch let e as TraceError {
            guard case .shapeMismatch(let loc, _) = e else { Issue.record("wrong error \(e)"); return }
            #expect(loc.field == TraceField.colsumAll && loc.layer == 1 && loc.step == 0)
        }
    }

    @Test func outOfOrderStepsAndBadSpansAreRefused() throws {
        let h = TraceFixtures.header()
        let w = try TraceWriter(path: TraceFixtures.temporaryPath("order"), header: h)
        #expect(throws: TraceError.self) { try w.append(TraceFixtures.step(1, header: h)) }
        var s = TraceFixtures.step(0, header: h)
        s.images[0].spanEnd = s.promptLength + 1
        #expect(throws: TraceError.self) { try w.append(s) }
        var t = TraceFixtures.step(0, header: h)
        t.tokenTypes.removeLast()
        #expect(throws: TraceError.self) { try w.append(t) }
    }

    @Test func headerWithIndivisibleHeadsIsRefused() {
        var h = TraceFixtures.header()
        h.model.numKVHeads = 3
        #expect(throws: TraceError.self) { try TraceWriter(path: TraceFixtures.temporaryPath("heads"), header: h) }
    }
}
