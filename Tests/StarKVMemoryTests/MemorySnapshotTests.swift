import Foundation
import Testing
import StarKVModel
@testable import StarKVMemory

/// The pickle writer, the allocator history and the memory snapshot (docs/report.md §3).
@Suite struct PickleWriterTests {
    @Test func aOneKeyDictionaryHasTheProtocol2Bytes() {
        var w = PickleWriter()
        w.beginDict()
        w.string("a")
        w.int(1)
        w.endDict()
        // PROTO 2, EMPTY_DICT, MARK, BINUNICODE len=1 'a', BINPUT 0, BININT1 1, SETITEMS, STOP.
        #expect(w.finish() == [0x80, 0x02, 0x7D, 0x28, 0x58, 0x01, 0x00, 0x00, 0x00, 0x61, 0x71, 0x00, 0x4B, 0x01, 0x75, 0x2E])
    }

    @Test func integersUseTheSmallestOpcodeThatHoldsThem() {
        func bytes(_ v: Int) -> [UInt8] {
            var w = PickleWriter()
            w.int(v)
            return Array(w.finish().dropFirst(2).dropLast())
        }
        #expect(bytes(255) == [0x4B, 0xFF])
        #expect(bytes(300) == [0x4D, 0x2C, 0x01])
        #expect(bytes(-1) == [0x4A, 0xFF, 0xFF, 0xFF, 0xFF])
        #expect(bytes(Int(Int32.max)) == [0x4A, 0xFF, 0xFF, 0xFF, 0x7F])
        // 2^31 needs a fifth byte to keep the sign positive; 2^32 likewise.
        #expect(bytes(1 << 31) == [0x8A, 0x05, 0x00, 0x00, 0x00, 0x80, 0x00])
        #expect(bytes(1 << 32) == [0x8A, 0x05, 0x00, 0x00, 0x00, 0x00, 0x01])
        #expect(bytes(-(1 << 40)) == [0x8A, 0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF])
    }

    @Test func aRepeatedStringIsFetchedFromTheMemo() {
        var w = PickleWriter()
        w.beginList()
        w.string("size")
        w.string("size")
        w.endList()
        #expect(w.finish() == [0x80, 0x02, 0x5D, 0x28, 0x58, 0x04, 0x00, 0x00, 0x00] + Array("size".utf8) + [0x71, 0x00, 0x68, 0x00, 0x65, 0x2E])
    }
}

@Suite struct AllocatorHistoryTests {
    static func config(_ attention: AttentionImplementation = .flash) -> MemorySimulationConfig {
        MemorySimulationConfig(model: ModelPresets.qwen25VL7B, accelerator: .h100SXM, llmAttention: attention)
    }

    static func steps(screenshots: [Int], budget: Double? = nil) throws -> [MemoryStepInput] {
        let tokens = try SyntheticWorkload.visualTokens(width: 1920, height: 1080)
        return SyntheticWorkload(visualTokensPerScreenshot: tokens, screenshotCounts: screenshots, budgetPercent: budget)
            .steps(numLayers: ModelPresets.qwen25VL7B.numLayers)
    }

    @Test func recordingTheHistoryChangesNoFigure() throws {
        let steps = try Self.steps(screenshots: [1, 2, 3], budget: 20)
        var plain = try MemorySimulator(config: Self.config())
        var recording = try MemorySimulator(config: Self.config(), recordHistory: true)
        for s in steps {
            let a = try plain.step(s)
            let b = try recording.step(s)
            #expect(a == b)
        }
        #expect((recording.allocator?.history?.count ?? 0) > 1000)
        #expect(plain.allocator?.history == nil)
    }

    @Test func replayingTheTraceGivesThePeaksOfTheSimulator() throws {
        let steps = try Self.steps(screenshots: [1, 2, 3])
        let report = try MemorySimulator.run(config: Self.config(.eager), steps: steps)
        let snap = try #require(try MemorySimulator.snapshot(config: Self.config(.eager), steps: steps))
        var reserved = 0, allocated = 0, requested = 0
        var maxReserved = 0, maxAllocated = 0, maxRequested = 0
        for e in snap.events {
            switch e.action {
            case .segmentAlloc, .segmentMap: reserved += e.sizeBytes
            case .segmentFree, .segmentUnmap: reserved -= e.sizeBytes
            case .alloc:
                allocated += e.blockBytes
                requested += e.sizeBytes
            case .freeCompleted:
                allocated -= e.blockBytes
                requested -= e.sizeBytes
            case .freeRequested, .oom: break
            }
            maxReserved = max(maxReserved, reserved)
            maxAllocated = max(maxAllocated, allocated)
            maxRequested = max(maxRequested, requested)
        }
        #expect(maxReserved == report.peakReservedBytes)
        #expect(maxAllocated == report.peakAllocatedBytes)
        #expect(maxRequested == report.peakRequestedBytes)
        // The segments are those of the allocated peak: their allocated blocks sum to it.
        #expect(snap.segmentsAllocatedBytes == report.peakAllocatedBytes)
        #expect(snap.peakAllocatedBytes == report.peakAllocatedBytes && snap.peakReservedBytes == report.peakReservedBytes)
        // Every segment is tiled by its blocks without gaps.
        for seg in snap.segments {
            var next = seg.address
            for b in seg.blocks {
                #expect(b.address == next)
                next += b.sizeBytes
            }
        }
    }

    @Test func anOOMIsRecordedWithTheFreeDeviceBytes() throws {
        let tokens = try SyntheticWorkload.visualTokens(width: 3840, height: 2160)
        let steps = SyntheticWorkload(visualTokensPerScreenshot: tokens, screenshotCounts: [5]).steps(numLayers: 28)
        var config = Self.config()
        config.accelerator = .custom(torchVisibleBytes: 40_000_000_000)
        let snap = try #require(try MemorySimulator.snapshot(config: config, steps: steps))
        let oom = try #require(snap.events.first { $0.action == .oom })
        #expect(oom.address >= 0 && oom.address < config.accelerator.allocatorCapacityBytes)
        #expect(oom.sizeBytes > 0)
    }

    @Test func theLargestTensorAtALogitsPeakIsTheFullLogits() throws {
        // Full-sequence bf16 logits of a 4K five-screenshot prompt dwarf every other tensor.
        let tokens = try SyntheticWorkload.visualTokens(width: 3840, height: 2160)
        let steps = SyntheticWorkload(visualTokensPerScreenshot: tokens, screenshotCounts: [5]).steps(numLayers: 28)
        var config = Self.config()
        config.storedKVHeads = 28
        let r = try MemorySimulator.run(config: config, steps: steps).steps[0]
        #expect(r.peakPhase == "lm_head")
        let top = try #require(r.peakTensors.first)
        #expect(top.category == "logits")
        #expect(top.bytes == steps[0].promptTokens * ModelPresets.qwen25VL7B.vocabSize * 2)
        #expect(r.peakTensors.count == LiveTensor.reportedCount)
        #expect(zip(r.peakTensors, r.peakTensors.dropFirst()).allSatisfy { $0.bytes >= $1.bytes })
        #expect(r.peakTensors.reduce(0) { $0 + $1.bytes } <= r.requestedPeakBytes)
    }

    @Test func customGPUsAreNamedByTheirCapacityOrByTheUser() throws {
        #expect(try Accelerator.named("custom:20GB").displayName == "custom 20 GB")
        #expect(try Accelerator.named("custom:20GB").id == "custom-20GB")
        #expect(try Accelerator.named("custom:48GiB").displayName == "custom 51.5 GB")
        let named = try Accelerator.named("custom:20GB").renamed("RTX 4090 box")
        #expect(named.displayName == "RTX 4090 box" && named.torchVisibleBytes == 20_000_000_000)
    }
}
