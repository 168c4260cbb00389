import Foundation
import StarKVModel
import Testing
@testable import StarKVTrace

/// Reading a step in parts (StepReading: plan, read ahead within a byte budget, finish on many
/// threads) gives exactly the step, or exactly the error, that reading it in file order gives;
/// a read-ahead decodes nothing beyond its budget; the decode buffers reused across chunks do
/// not carry one chunk's bytes into another.
@Suite(.serialized) struct StepReadingTests {
    @Test func partsAndThreadsGiveTheSameStepsAsTheFixture() throws {
        let path = try TraceFixtures.write(steps: 3, to: TraceFixtures.temporaryPath("parts"))
        let r = try TraceReader(path: path)
        for i in 0..<3 {
            let expected = TraceFixtures.step(i)
            #expect(try r.readStep(at: i) == expected)
            #expect(try r.readStep(at: i, threads: 4) == expected)
            let total = try r.planStep(at: i).rawBytes
            for budget in [0, 1, total / 3, total / 2, total] {
                let plan = try r.planStep(at: i)
                plan.decode(upTo: budget)
                #expect(try plan.finish(threads: 2) == expected, "step \(i) budget \(budget)")
            }
            // Field and layer selection behave as in readStep.
            let some: Set<String> = [TraceField.winSum, TraceField.nValid]
            #expect(try r.readStep(at: i, fields: some, layers: [1, nil], threads: 3) == r.readStep(at: i, fields: some, layers: [1, nil]))
        }
    }

    @Test func readAheadStopsAtTheLastWholeChunkWithinItsBudget() throws {
        let path = try TraceFixtures.write(steps: 2, to: TraceFixtures.temporaryPath("budget"))
        let r = try TraceReader(path: path)
        let sizes = try r.planStep(at: 1).items.map(\.descriptor.rawBytes)
        #expect(sizes.count > 4)
        for budget in [UInt64(0), sizes[0] - 1, sizes[0], sizes[0] + sizes[1] + 1, sizes.reduce(0, +) - 1] {
            let plan = try r.planStep(at: 1)
            plan.decode(upTo: budget)
            // The longest prefix of chunks whose sizes fit the budget, and nothing else.
            var prefix = 0
            var sum: UInt64 = 0
            while prefix < sizes.count, sum + sizes[prefix] <= budget {
                sum += sizes[prefix]
                prefix += 1
            }
            #expect(plan.decodedBytes == sum, "budget \(budget)")
            #expect(plan.decodedBytes <= budget)
        }
    }

    /// Damages the stored bytes of chunks `ks` of step 1 (one bit in each payload).
    static func damaged(_ ks: [Int]) throws -> (String, [TraceLocation]) {
        let path = try TraceFixtures.write(steps: 3, to: TraceFixtures.temporaryPath("dmg"))
        let items = try TraceReader(path: path).planStep(at: 1).items
        var bytes = TraceFixtures.bytes(path)
        for k in ks { bytes[Int(items[k].payloadOffset) + Int(items[k].descriptor.storedBytes / 2)] ^= 0x10 }
        let out = TraceFixtures.temporaryPath("dmg-out")
        TraceFixtures.store(bytes, out)
        return (out, ks.map { items[$0].location })
    }

    static func errorText(_ body: () throws -> StepRecord) -> String? {
        do {
            _ = try body()
            return nil
        } catch {
            return "\(error)"
        }
    }

    @Test func theFirstDamagedChunkInFileOrderIsReportedWhateverTheThreadsAndReadAhead() throws {
        let (path, locations) = try Self.damaged([3, 9, 14])
        let r = try TraceReader(path: path)
        let inOrder = Self.errorText { try r.readStep(at: 1) }
        #expect(inOrder != nil)
        #expect(inOrder?.contains("field '\(locations[0].field ?? "")'") ?? false || inOrder?.contains(locations[0].field ?? "?") ?? false)
        // validate() walks the chunks one by one and must agree.
        do { _ = try r.validate() } catch { #expect("\(error)" == inOrder) }
        for threads in [1, 2, 4] {
            #expect(Self.errorText { try r.readStep(at: 1, threads: threads) } == inOrder, "threads \(threads)")
            for budget in [UInt64(0), 1 << 10, 1 << 40] {
                let plan = try r.planStep(at: 1)
                plan.decode(upTo: budget)
                #expect(Self.errorText { try plan.finish(threads: threads) } == inOrder, "threads \(threads) budget \(budget)")
            }
        }
        // The undamaged steps still read.
        #expect(try r.readStep(at: 0, threads: 2) == TraceFixtures.step(0))
        #expect(try r.readStep(at: 2, threads: 2) == TraceFixtures.step(2))
    }

    @Test func theStepSizeLimitIsReportedAtTheSameChunkWithoutDecodingPastIt() throws {
        let path = try TraceFixtures.write(steps: 2, to: TraceFixtures.temporaryPath("limit"))
        var limits = TraceReadLimits()
        let sizes = try TraceReader(path: path).planStep(at: 1).items.map(\.descriptor.rawBytes)
        limits.maxStepRawBytes = sizes[0] + sizes[1] + sizes[2] - 1  // exceeded by the third chunk
        let r = try TraceReader(path: path, limits: limits)
        let plan = try r.planStep(at: 1)
        #expect(plan.items.count == 3)
        #expect(plan.rawBytes == sizes[0] + sizes[1] + sizes[2])
        let inOrder = Self.errorText { try r.readStep(at: 1) }
        #expect(inOrder?.contains("exceed") == true)
        #expect(Self.errorText { try r.readStep(at: 1, threads: 4) } == inOrder)
    }

    @Test func reusedDecodeBuffersDoNotCarryBytesFromOneChunkToTheNext() throws {
        // One scratch decodes a large chunk, then a smaller one, then a damaged smaller one: the
        // second gives its own bytes and the third fails instead of returning stale bytes.
        let big = Tensor(floats: (0..<4000).map { Float($0 % 250) / 8 }, shape: [4000], dtype: .f32)
        let small = Tensor(floats: (0..<300).map { Float(300 - $0) / 4 }, shape: [300], dtype: .f16)
        let path = TraceFixtures.temporaryPath("scratch")
        var file: [UInt8] = []
        var descriptors: [(ChunkDescriptor, UInt64)] = []
        for t in [big, small, small] {
            let stored = try ChunkCoder.encode(t.bytes, elementWidth: t.dtype.byteWidth, filter: .byteShuffle, codec: .zstd, level: 3)
            let d = ChunkDescriptor(
                field: "x", layer: 0, dtype: t.dtype, shape: t.shape, filter: .byteShuffle, codec: .zstd,
                rawBytes: UInt64(t.bytes.count), storedBytes: UInt64(stored.count), crc32c: CRC32C.checksum(stored))
            descriptors.append((d, UInt64(file.count)))
            file += stored
        }
        file[Int(descriptors[2].1) + Int(descriptors[2].0.storedBytes) - 6] ^= 0x40  // inside the third frame
        TraceFixtures.store(file, path)
        let f = try TraceFile.openForReading(path)
        for smallChunk in [1 << 20, 0] {  // one-shot through the scratch, and streamed
            let saved = ChunkCoder.smallChunk
            ChunkCoder.smallChunk = smallChunk
            defer { ChunkCoder.smallChunk = saved }
            let scratch = ChunkScratch()
            #expect(try ChunkCoder.decode(file: f, offset: descriptors[0].1, descriptor: descriptors[0].0, scratch: scratch).bytes == big.bytes)
            let second = try ChunkCoder.decode(file: f, offset: descriptors[1].1, descriptor: descriptors[1].0, scratch: scratch)
            #expect(second.bytes == small.bytes)
            #expect(throws: ChunkCoder.DecodeError.self) {
                _ = try ChunkCoder.decode(file: f, offset: descriptors[2].1, descriptor: descriptors[2].0, scratch: scratch)
            }
        }
    }

    @Test func aNonFiniteValueIsFoundByTheFusedCheckOnEveryDecodePath() throws {
        for dtype in [TensorDType.f16, .bf16, .f32] {
            for at in [0, 17, 299] {
                var values = (0..<300).map { Float($0) / 3 }
                values[at] = at == 17 ? .nan : -.infinity
                let t = Tensor(floats: values, shape: [300], dtype: dtype)
                for filter in [ChunkFilter.byteShuffle, .none] {
                    let stored = try ChunkCoder.encode(t.bytes, elementWidth: dtype.byteWidth, filter: filter, codec: .zstd, level: 1)
                    let path = TraceFixtures.temporaryPath("nan")
                    TraceFixtures.store(stored, path)
                    let d = ChunkDescriptor(
                        field: "x", layer: 0, dtype: dtype, shape: [300], filter: filter, codec: .zstd,
                        rawBytes: UInt64(t.bytes.count), storedBytes: UInt64(stored.count), crc32c: CRC32C.checksum(stored))
                    let decoded = try ChunkCoder.decode(file: try TraceFile.openForReading(path), offset: 0, descriptor: d, scratch: ChunkScratch())
                    #expect(decoded.bytes == t.bytes)
                    #expect(decoded.mayBeNonFinite, "\(dtype) \(filter) at \(at)")
                    #expect(ChunkCoder.firstNonFinite(decoded.bytes, dtype: dtype)?.index == at)
                }
            }
            // All finite through the fused path: no scan needed.
            let fine = Tensor(floats: (0..<300).map { Float($0) }, shape: [300], dtype: dtype)
            let stored = try ChunkCoder.encode(fine.bytes, elementWidth: dtype.byteWidth, filter: .byteShuffle, codec: .zstd, level: 1)
            let path = TraceFixtures.temporaryPath("finite")
            TraceFixtures.store(stored, path)
            let d = ChunkDescriptor(
                field: "x", layer: 0, dtype: dtype, shape: [300], filter: .byteShuffle, codec: .zstd,
                rawBytes: UInt64(fine.bytes.count), storedBytes: UInt64(stored.count), crc32c: CRC32C.checksum(stored))
            #expect(try !ChunkCoder.decode(file: try TraceFile.openForReading(path), offset: 0, descriptor: d, scratch: ChunkScratch()).mayBeNonFinite)
        }
    }
}

/// zstd's own checksum of the decoded bytes is verified by `validate`'s decode and skipped by
/// the replay's reads, which rely on the CRC32C of the stored frame checked before decoding.
@Suite struct ZstdChecksumTests {
    @Test func validateChecksumIsVerifiedOnlyWhenAsked() throws {
        let t = Tensor(floats: (0..<500).map { Float($0) / 7 }, shape: [500], dtype: .f32)
        var stored = try ChunkCoder.encode(t.bytes, elementWidth: 4, filter: .byteShuffle, codec: .zstd, level: 3)
        stored[stored.count - 1] ^= 0x01  // the frame's last byte belongs to its XXH64 checksum
        let path = TraceFixtures.temporaryPath("xxh")
        TraceFixtures.store(stored, path)
        let d = ChunkDescriptor(
            field: "x", layer: 0, dtype: .f32, shape: [500], filter: .byteShuffle, codec: .zstd, rawBytes: UInt64(t.bytes.count),
            storedBytes: UInt64(stored.count), crc32c: CRC32C.checksum(stored))  // CRC32C of the altered frame
        let f = try TraceFile.openForReading(path)
        #expect(throws: ChunkCoder.DecodeError.self) {
            _ = try ChunkCoder.decode(file: f, offset: 0, descriptor: d, scratch: ChunkScratch(verifyZstdChecksum: true))
        }
        #expect(try ChunkCoder.decode(file: f, offset: 0, descriptor: d, scratch: ChunkScratch(verifyZstdChecksum: false)).bytes == t.bytes)
    }
}
