import Foundation
import Testing
@testable import StarKVTrace

@Suite struct TraceTruncationTests {
    /// Offsets where each step starts and where the footer starts, from a complete file.
    static func layout(_ path: String) throws -> (steps: [StepIndexEntry], footer: UInt64, size: Int) {
        let r = try TraceReader(path: path)
        return (r.index, r.endOfSteps, TraceFixtures.bytes(path).count)
    }

    /// Cutting a trace anywhere returns exactly the steps that are complete before the cut, or a
    /// clear error when the cut is inside the file header or HEAD record — never a crash.
    @Test func cutAtEveryOffsetOfTheLastStepAndASampleOfEarlierOnes() throws {
        let full = try TraceFixtures.write(steps: 3, to: TraceFixtures.temporaryPath("cut-src"))
        let bytes = TraceFixtures.bytes(full)
        let (steps, footer, size) = try Self.layout(full)
        let lastStart = Int(steps.last!.offset)
        var offsets = Array(lastStart...size)
        offsets += stride(from: 0, to: lastStart, by: 7)
        let cutPath = TraceFixtures.temporaryPath("cut")
        let firstStep = Int(steps[0].offset)
        for cut in offsets {
            TraceFixtures.store(Array(bytes[0..<cut]), cutPath)
            if cut < firstStep {
                #expect(throws: TraceError.self, "cut at \(cut) inside the header") { try TraceReader(path: cutPath) }
                continue
            }
            let r = try TraceReader(path: cutPath)
            let complete = steps.filter { Int($0.offset + $0.length) <= cut }.count
            #expect(r.stepCount == complete, "cut at \(cut)")
            if cut == size {
                #expect(r.footer == .present)
            } else {
                guard case .missing = r.footer else { Issue.record("cut at \(cut): footer reported present"); continue }
                #expect(cut >= Int(footer) || r.endOfSteps <= UInt64(cut))
            }
            for i in 0..<r.stepCount { #expect(try r.readStep(at: i) == TraceFixtures.step(i)) }
        }
    }

    @Test func recoverWritesAFooterAndKeepsTheInputUntouched() throws {
        let full = try TraceFixtures.write(steps: 3, to: TraceFixtures.temporaryPath("rec-src"))
        let bytes = TraceFixtures.bytes(full)
        let r0 = try TraceReader(path: full)
        let cut = Int(r0.index[2].offset) + 40
        let damaged = TraceFixtures.temporaryPath("rec-damaged")
        TraceFixtures.store(Array(bytes[0..<cut]), damaged)
        let out = TraceFixtures.temporaryPath("rec-out")
        let report = try TraceRecovery.recover(input: damaged, output: out)
        #expect(report.steps == 2 && !report.alreadyComplete && report.droppedTailBytes == 40)
        #expect(TraceFixtures.bytes(damaged) == Array(bytes[0..<cut]))
        let r = try TraceReader(path: out)
        #expect(r.footer == .present && r.stepCount == 2)
        #expect(try r.readStep(at: 1) == TraceFixtures.step(1))
        #expect(throws: Never.self) { try r.validate() }
    }
}

@Suite struct TraceChecksumTests {
    /// Flipping any single bit of a step or chunk (sampled every few bytes) is caught by validate().
    @Test func bitFlipsAnywhereAfterTheHeaderAreDetected() throws {
        let full = try TraceFixtures.write(steps: 2, to: TraceFixtures.temporaryPath("flip-src"))
        let bytes = TraceFixtures.bytes(full)
        let r0 = try TraceReader(path: full)
        let start = Int(r0.index[0].offset)
        let path = TraceFixtures.temporaryPath("flip")
        var checked = 0
        for offset in stride(from: start, to: bytes.count, by: 5) {
            var b = bytes
            b[offset] ^= UInt8(1 << (offset % 8))
            TraceFixtures.store(b, path)
            do {
                let r = try TraceReader(path: path)
                _ = try r.validate()
                // A flip in the footer/trailer makes the reader fall back to scanning; all steps
                // still verify, so it must be reported as a missing footer.
                #expect(r.footer != .present, "flip at \(offset) went unnoticed")
            } catch is TraceError {
                checked += 1
            }
        }
        #expect(checked > 0)
    }

    @Test func badMagicAndNewerMajorVersionAreRefused() throws {
        let full = try TraceFixtures.write(steps: 1, to: TraceFixtures.temporaryPath("magic-src"))
        var b = TraceFixtures.bytes(full)
        let path = TraceFixtures.temporaryPath("magic")
        b[0] = UInt8(ascii: "X")
        TraceFixtures.store(b, path)
        #expect(throws: TraceError.badMagic(TraceLocation(path: path, offset: 0))) { try TraceReader(path: path) }
        b = TraceFixtures.bytes(full)
        b[8] = 2
        TraceFixtures.store(b, path)
        #expect(throws: TraceError.unsupportedVersion(TraceLocation(path: path, offset: 0), major: 2, minor: 0)) {
            try TraceReader(path: path)
        }
    }

    @Test func newerMinorVersionStillReads() throws {
        let full = try TraceFixtures.write(steps: 2, to: TraceFixtures.temporaryPath("minor-src"))
        var b = TraceFixtures.bytes(full)
        b[10] = 7
        let path = TraceFixtures.temporaryPath("minor")
        TraceFixtures.store(b, path)
        let r = try TraceReader(path: path)
        #expect(r.minorVersion == 7 && r.stepCount == 2)
    }

    @Test func absurdRecordLengthIsRefusedBeforeAllocating() throws {
        let full = try TraceFixtures.write(steps: 1, to: TraceFixtures.temporaryPath("len-src"))
        var b = TraceFixtures.bytes(full)
        // Rewrite the HEAD frame with a 1 TiB length and a valid frame CRC.
        var frame = Array(b[16..<40])
        frame.replaceSubrange(8..<16, with: withUnsafeBytes(of: UInt64(1 << 40).littleEndian, Array.init))
        frame.replaceSubrange(20..<24, with: withUnsafeBytes(of: CRC32C.checksum(Array(frame[0..<20])).littleEndian, Array.init))
        b.replaceSubrange(16..<40, with: frame)
        let path = TraceFixtures.temporaryPath("len")
        TraceFixtures.store(b, path)
        do {
            _ = try TraceReader(path: path)
            Issue.record("expected a limit error")
        } catch let e as TraceError {
            guard case .limitExceeded = e else { Issue.record("wrong error: \(e)"); return }
        }
    }

    @Test func missingFileGivesAnIOErrorNamingThePath() {
        do {
            _ = try TraceReader(path: "/nonexistent/trace.starkv")
            Issue.record("expected an error")
        } catch let e as TraceError {
            #expect(e.description.contains("/nonexistent/trace.starkv"))
        } catch { Issue.record("wrong error type") }
    }
}
