import Foundation
import Testing
@testable import StarKVTrace

/// Files crafted the way a hostile user or a crashed recorder would leave them: each must give a
/// clear error (or an honest "incomplete"), never a crash, and never an allocation sized by the
/// file's claims (issue: damaged and hostile traces).
@Suite struct HostileTraceTests {
    static func fixture(steps: Int = 2) throws -> [UInt8] {
        TraceFixtures.bytes(try TraceFixtures.write(steps: steps, to: TraceFixtures.temporaryPath("hostile-src")))
    }

    static func stored(_ bytes: [UInt8], _ name: String) -> String {
        let path = TraceFixtures.temporaryPath(name)
        TraceFixtures.store(bytes, path)
        return path
    }

    /// Opening and validating gives a TraceError or a non-intact integrity; returns what happened.
    @discardableResult
    static func refused(_ path: String, limits: TraceReadLimits = .default) -> String {
        do {
            let r = try TraceReader(path: path, limits: limits)
            _ = try? r.summaries()
            for i in 0..<r.stepCount { _ = try? r.readStep(at: i) }
            let report = try r.validate()
            if report.integrity.isIntact { Issue.record("\(path) validated as intact") }
            return "\(report.integrity)"
        } catch let e as TraceError {
            return e.description
        } catch {
            Issue.record("unexpected error type \(error)")
            return ""
        }
    }

    // MARK: finding 1 — lengths that overflow

    @Test func footerEntryOfLengthTwoToThe64IsCorruptNotACrash() throws {
        let s = TraceSurgery(try Self.fixture())
        let r0 = try TraceReader(path: Self.stored(s.complete(), "ok"))
        var entries = r0.index
        entries[0].length = .max
        let path = Self.stored(s.complete(footer: ProtoBridge.packFooter(entries, totalRaw: 0, totalStored: 0, recovered: false)), "foot-len")
        let r = try TraceReader(path: path)
        guard case .corrupt = r.integrity else { Issue.record("integrity \(r.integrity)"); return }
        #expect(Self.refused(path).contains("footer index inconsistent"))
    }

    @Test func chunkFrameAndDescriptorOfLengthTwoToThe64AreRefused() throws {
        var s = TraceSurgery(try Self.fixture())
        let step = s.index(of: "STEP")
        try s.editStep(step) { _, d in d[0].storedBytes = .max }
        s.records[step + 1].declaredLength = .max
        // Footer-less (scan) and complete (footer) files both refuse it.
        for (bytes, name) in [(s.footerless(), "chunk-len-scan"), (s.complete(), "chunk-len-foot")] {
            let message = Self.refused(Self.stored(bytes, name))
            #expect(message.contains("stored_bytes"), "\(name): \(message)")
        }
    }

    @Test func chunkFrameOfLengthTwoToThe64AloneIsDamageInAScan() throws {
        var s = TraceSurgery(try Self.fixture())
        s.records[s.index(of: "CHNK", 3)].declaredLength = .max
        let r = try TraceReader(path: Self.stored(s.footerless(), "chunk-frame"))
        guard case .corrupt(_, let note) = r.integrity else { Issue.record("integrity \(r.integrity)"); return }
        #expect(note.contains("disagrees with its descriptor") && r.stepCount == 0)
    }

    @Test func skippableRecordOfLengthTwoToThe64IsDamage() throws {
        var s = TraceSurgery(try Self.fixture())
        s.records.insert(
            TraceSurgery.Record(kind: Array("XTRA".utf8), flags: TraceFormat.skippableFlag, payload: [], declaredLength: .max),
            at: s.index(of: "STEP", 1))
        let r = try TraceReader(path: Self.stored(s.footerless(), "skip-len"))
        guard case .corrupt(_, let note) = r.integrity else { Issue.record("integrity \(r.integrity)"); return }
        #expect(note.contains("XTRA") && r.stepCount == 1)
    }

    @Test func descriptorSizesOfTwoToThe63DoNotOverflowTheSummaries() throws {
        var s = TraceSurgery(try Self.fixture())
        try s.editStep(s.index(of: "STEP")) { _, d in
            d[0].rawBytes = 1 << 63
            d[1].rawBytes = 1 << 63
            d[0].storedBytes = 1 << 63
            d[1].storedBytes = 1 << 63
        }
        let path = Self.stored(s.complete(), "raw-2-63")
        let r = try TraceReader(path: path)
        #expect(throws: TraceError.self) { try r.summaries() }
        #expect(Self.refused(path).contains("raw_bytes"))
    }

    // MARK: finding 4 — memory out of proportion

    @Test func zstdFrameDeclaringMoreThanRawBytesIsRefusedBeforeDecompressing() throws {
        var s = TraceSurgery(try Self.fixture())
        let step = s.index(of: "STEP")
        // A zstd frame header declaring 4 GiB of content (single segment, 4-byte content size).
        var frame: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD, 0xA0]
        frame.appendLE(UInt32.max)
        frame += [1, 0, 0]  // one empty raw block, last
        s.records[step + 1].payload = frame
        try s.editStep(step) { _, d in
            d[0].storedBytes = UInt64(frame.count)
            d[0].crc32c = CRC32C.checksum(frame)
        }
        let message = Self.refused(Self.stored(s.complete(), "zstd-4g"))
        #expect(message.contains("zstd frame declares 4294967295 content bytes"), "\(message)")
    }

    @Test func twoZstdFramesInOneChunkAreRefused() throws {
        var s = TraceSurgery(try Self.fixture())
        let step = s.index(of: "STEP")
        let meta = try ProtoBridge.unpackStep(s.records[step].payload, at: TraceLocation(path: "x"))
        // n_valid: 8 raw bytes, so two small frames still fit within the stored-size bound.
        let k = try #require(meta.descriptors.firstIndex { $0.field == TraceField.nValid })
        #expect(meta.descriptors[k].codec == .zstd)
        let doubled = s.records[step + 1 + k].payload + s.records[step + 1 + k].payload
        s.records[step + 1 + k].payload = doubled
        try s.editStep(step) { _, d in
            d[k].storedBytes = UInt64(doubled.count)
            d[k].crc32c = CRC32C.checksum(doubled)
        }
        let message = Self.refused(Self.stored(s.complete(), "zstd-two"))
        #expect(message.contains("after the end of the zstd frame"), "\(message)")
    }

    @Test func chunkAboveTheRawLimitIsRefusedNamingTheFlag() throws {
        let path = try TraceFixtures.write(steps: 1, to: TraceFixtures.temporaryPath("limit"))
        var limits = TraceReadLimits()
        limits.maxChunkRawBytes = 64
        let message = Self.refused(path, limits: limits)
        #expect(message.contains("limit 64") && message.contains("--max-chunk-mib"), "\(message)")
        #expect(TraceReadLimits.scaled(chunkMiB: 1024).maxChunkRawBytes == 1 << 30)
        #expect(TraceReadLimits.scaled(chunkMiB: 1024).maxStepRawBytes == 2 << 30)
    }

    @Test func stepWithMillionsOfImageEntriesIsRefusedBeforeProtobufAllocates() throws {
        var s = TraceSurgery(try Self.fixture())
        let step = s.index(of: "STEP")
        s.records[step].payload += TraceSurgery.emptyRepeated(field: 8, count: 4_000_000)
        let message = Self.refused(Self.stored(s.footerless(), "images"))
        #expect(message.contains("StepRecord.field 8 has more than 4096 entries"), "\(message)")
    }

    @Test func stepWithMillionsOfChunkDescriptorsIsRefused() throws {
        var s = TraceSurgery(try Self.fixture())
        let step = s.index(of: "STEP")
        s.records[step].payload += TraceSurgery.emptyRepeated(field: 9, count: 2_000_000)
        let message = Self.refused(Self.stored(s.complete(), "descriptors"))
        #expect(message.contains("StepRecord.field 9 has more than"), "\(message)")
    }

    @Test func packedTokenIDsAboveThePromptLimitAreRefused() throws {
        var s = TraceSurgery(try Self.fixture())
        let step = s.index(of: "STEP")
        let n = 70_000
        s.records[step].payload += TraceSurgery.varint(7 << 3 | 2) + TraceSurgery.varint(UInt64(n)) + [UInt8](repeating: 1, count: n)
        var limits = TraceReadLimits()
        limits.maxPromptLength = 65_536
        let message = Self.refused(Self.stored(s.complete(), "token-ids"), limits: limits)
        #expect(message.contains("token_ids has more than 65536"), "\(message)")
    }

    @Test func footerWithMillionsOfEntriesIsRefusedBeforeDecoding() throws {
        let s = TraceSurgery(try Self.fixture())
        let r0 = try TraceReader(path: Self.stored(s.complete(), "ok"))
        let footer = ProtoBridge.packFooter(r0.index, totalRaw: 0, totalStored: 0, recovered: false)
            + TraceSurgery.emptyRepeated(field: 1, count: 4_000_000)
        let r = try TraceReader(path: Self.stored(s.complete(footer: footer), "footer-entries"))
        guard case .corrupt(_, let note) = r.integrity else { Issue.record("integrity \(r.integrity)"); return }
        #expect(note.contains("TraceFooter.field 1 has more than"), "\(note)")
    }

    @Test func headerWithMillionsOfFieldNamesIsRefused() throws {
        var s = TraceSurgery(try Self.fixture())
        s.records[0].payload += TraceSurgery.emptyRepeated(field: 4, count: 4_000_000)
        let message = Self.refused(Self.stored(s.complete(), "head-fields"))
        #expect(message.contains("TraceHeader.fields has more than 4096"), "\(message)")
    }

    @Test func truncatedAndOverlongVarintsAreRefusedByThePreScan() {
        let schema = WireFormatScan.header()
        #expect(throws: WireScanError.self) { try WireFormatScan.check([0x22, 0x80], schema: schema) }
        #expect(throws: WireScanError.self) { try WireFormatScan.check([0x22, 0x05, 0x61], schema: schema) }
        #expect(throws: WireScanError.self) { try WireFormatScan.check([UInt8](repeating: 0xFF, count: 11) + [0], schema: schema) }
        #expect(throws: WireScanError.self) { try WireFormatScan.check([0x0B], schema: schema) }  // wire type 3
        #expect(throws: Never.self) { try WireFormatScan.check([0x22, 0x01, 0x61, 0x2A, 0x02, 0x08, 0x10], schema: schema) }
    }

    // MARK: finding 3 — damaged files are not intact

    @Test func fileHeaderReservedBytesAndNewerMinorVersionAreChecked() throws {
        var b = try Self.fixture(steps: 1)
        b[13] = 1
        #expect(Self.refused(Self.stored(b, "reserved")).contains("reserved"))
        b = try Self.fixture(steps: 1)
        b[10] = 1
        let path = Self.stored(b, "minor")
        let r = try TraceReader(path: path)
        #expect(r.minorVersion == 1 && r.stepCount == 1)
        #expect(throws: TraceError.unsupportedVersion(TraceLocation(path: path, offset: 10), major: 1, minor: 1)) { try r.validate() }
    }

    @Test func footerlessFileEndingAfterAStepIsIncompleteAndATornTailToo() throws {
        let s = TraceSurgery(try Self.fixture())
        let clean = s.footerless()
        for (bytes, name) in [(clean, "clean"), (Array(clean.dropLast(10)), "torn"), (clean + Array("ST".utf8), "partial-kind")] {
            let r = try TraceReader(path: Self.stored(bytes, name))
            guard case .incomplete = r.integrity else { Issue.record("\(name): \(r.integrity)"); continue }
            #expect(try r.validate().steps == (name == "torn" ? 1 : 2))
        }
        let garbage = try TraceReader(path: Self.stored(clean + Array("JUNK".utf8), "junk-tail"))
        guard case .corrupt = garbage.integrity else { Issue.record("junk tail: \(garbage.integrity)"); return }
    }

    @Test func insertedOrDeletedByteInsideAStepIsCorruptNotIncomplete() throws {
        let bytes = try Self.fixture(steps: 3)
        let r0 = try TraceReader(path: Self.stored(bytes, "src"))
        let first = Int(r0.index[0].offset)
        let end = Int(r0.endOfSteps)
        for offset in stride(from: first, to: end, by: max(1, (end - first) / 60)) {
            var inserted = bytes
            inserted.insert(0x5A, at: offset)
            var deleted = bytes
            deleted.remove(at: offset)
            for (b, what) in [(inserted, "insert"), (deleted, "delete")] {
                let r = try? TraceReader(path: Self.stored(b, what))
                if let r, case .incomplete = r.integrity { Issue.record("\(what) at \(offset) reported as merely incomplete") }
                Self.refused(Self.stored(b, what))
            }
        }
    }

    @Test func repeatedStepIndexIsRefused() throws {
        var s = TraceSurgery(try Self.fixture())
        try s.editStep(s.index(of: "STEP", 1)) { r, _ in r.stepIndex = 0 }
        for bytes in [s.complete(), s.footerless()] {
            let r = try TraceReader(path: Self.stored(bytes, "dup-step"))
            guard case .corrupt = r.integrity else { Issue.record("\(r.integrity)"); continue }
        }
    }

    // MARK: finding 5 — non-finite values

    @Test func nanInAPolicyFieldIsReportedWithStepLayerAndField() throws {
        let h = TraceFixtures.header()
        let path = TraceFixtures.temporaryPath("nan")
        let w = try TraceWriter(path: path, header: h, options: TraceWriteOptions(fsyncOnClose: false))
        try w.append(TraceFixtures.step(0, header: h))
        var step = TraceFixtures.step(1, header: h)
        let k = step.chunks.firstIndex { $0.field == TraceField.hidNorm && $0.layer == 1 }!
        var values = step.chunks[k].tensor.floats()
        values[3] = .nan
        step.chunks[k].tensor = Tensor(floats: values, shape: step.chunks[k].tensor.shape)
        try w.append(step)
        try w.close()
        let r = try TraceReader(path: path)
        do {
            _ = try r.validate()
            Issue.record("NaN passed validate")
        } catch let e as TraceError {
            guard case .nonFiniteValue(let loc, let m) = e else { Issue.record("wrong error \(e)"); return }
            #expect(loc.step == 1 && loc.layer == 1 && loc.field == TraceField.hidNorm && m.contains("element 3"))
        }
        #expect(throws: TraceError.self) { try r.readStep(at: 1, fields: [TraceField.hidNorm]) }
        r.requireFiniteValues = false
        #expect(try r.readStep(at: 1, fields: [TraceField.hidNorm]).chunks.count == 2)
        // Infinity in f16 and bf16 is caught as well.
        #expect(ChunkCoder.firstNonFinite(Tensor(floats: [1, .infinity], shape: [2], dtype: .f16).bytes, dtype: .f16)?.index == 1)
        #expect(ChunkCoder.firstNonFinite(Tensor(floats: [-.infinity], shape: [1], dtype: .bf16).bytes, dtype: .bf16)?.value == "-infinity")
        #expect(ChunkCoder.firstNonFinite(Tensor(floats: [0, 65504], shape: [2], dtype: .f16).bytes, dtype: .f16) == nil)
    }
}
