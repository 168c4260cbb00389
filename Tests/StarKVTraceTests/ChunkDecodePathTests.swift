import Foundation
import Testing
@testable import StarKVTrace

/// Byte-shuffled zstd chunks are decoded in one shot below `ChunkCoder.smallChunk` and streamed
/// (un-shuffled as bytes arrive) above it. Both paths must give the same tensors and the same
/// errors; the fixture's chunks are small, so the streamed path is forced here.
@Suite(.serialized) struct ChunkDecodePathTests {
    @Test func streamedDecodeGivesTheSameTensorsAndCatchesDamage() throws {
        let path = try TraceFixtures.write(steps: 3, to: TraceFixtures.temporaryPath("paths"))
        let saved = ChunkCoder.smallChunk
        ChunkCoder.smallChunk = 0
        defer { ChunkCoder.smallChunk = saved }
        let r = try TraceReader(path: path)
        for i in 0..<3 { #expect(try r.readStep(at: i) == TraceFixtures.step(i)) }
        // Damage inside a shuffled zstd chunk: a checksum error either way.
        var bytes = TraceFixtures.bytes(path)
        let meta = try ProtoBridge.unpackStep(
            try TraceReader.readRecord(try TraceFile.openForReading(path), at: r.index[1].offset, limit: 1 << 20).1,
            at: TraceLocation(path: path))
        #expect(meta.descriptors[0].filter == .byteShuffle && meta.descriptors[0].codec == .zstd)
        let stepEnd = Int(r.index[1].offset) + 24
        let frameLength = Int(bytes.readLE(UInt64.self, at: Int(r.index[1].offset) + 8))
        let chunkPayload = stepEnd + frameLength + 24
        bytes[chunkPayload + 5] ^= 0x10
        let damaged = TraceFixtures.temporaryPath("paths-damaged")
        TraceFixtures.store(bytes, damaged)
        let d = try TraceReader(path: damaged)
        #expect(throws: TraceError.self) { try d.readStep(at: 1) }
        do { _ = try d.readStep(at: 1) } catch let e as TraceError {
            guard case .checksumMismatch = e else { Issue.record("\(e)"); return }
        }
    }
}
