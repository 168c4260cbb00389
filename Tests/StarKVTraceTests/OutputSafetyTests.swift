import Foundation
import Testing
@testable import StarKVTrace

/// No output is ever written over an input, a partial output never appears under the final name,
/// and a trace being written stays recoverable under its temporary name (issue finding 2).
@Suite struct OutputSafetyTests {
    static func cutTrace() throws -> (path: String, bytes: [UInt8]) {
        let full = try TraceFixtures.write(steps: 3, to: TraceFixtures.temporaryPath("out-src"))
        let bytes = TraceFixtures.bytes(full)
        let r = try TraceReader(path: full)
        let cut = Array(bytes[0..<(Int(r.index[2].offset) + 50)])
        let path = TraceFixtures.temporaryPath("out-cut")
        TraceFixtures.store(cut, path)
        return (path, cut)
    }

    @Test func recoverRefusesToWriteOverItsInputThroughSymlinksAndHardLinks() throws {
        let (input, bytes) = try Self.cutTrace()
        let symlink = input + ".link"
        let hardlink = input + ".hard"
        try FileManager.default.createSymbolicLink(atPath: symlink, withDestinationPath: input)
        #expect(link(input, hardlink) == 0)
        for output in [input, symlink, hardlink] {
            for overwrite in [false, true] {
                do {
                    _ = try TraceRecovery.recover(input: input, output: output, overwrite: overwrite)
                    Issue.record("recover wrote over its input via \(output)")
                } catch let e as TraceError {
                    #expect(e.description.contains("same file"))
                }
            }
        }
        #expect(TraceFixtures.bytes(input) == bytes)
    }

    @Test func recoverKeepsAnExistingOutputUnlessOverwriteIsGiven() throws {
        let (input, _) = try Self.cutTrace()
        let output = TraceFixtures.temporaryPath("existing")
        TraceFixtures.store(Array("keep me".utf8), output)
        #expect(throws: TraceError.self) { try TraceRecovery.recover(input: input, output: output) }
        #expect(TraceFixtures.bytes(output) == Array("keep me".utf8))
        let report = try TraceRecovery.recover(input: input, output: output, overwrite: true)
        #expect(report.steps == 2)
        #expect(try TraceReader(path: output).integrity == .intact)
        #expect(Self.leftovers(beside: output).isEmpty)
    }

    @Test func recoverRefusesADamagedInputUnlessSalvaging() throws {
        let full = try TraceFixtures.write(steps: 3, to: TraceFixtures.temporaryPath("dmg-src"))
        var bytes = TraceFixtures.bytes(full)
        let r = try TraceReader(path: full)
        bytes[Int(r.index[1].offset) + 2] ^= 0x01  // STEP 1's frame: damage, not a torn tail
        let input = TraceFixtures.temporaryPath("dmg")
        TraceFixtures.store(Array(bytes[0..<Int(r.endOfSteps)]), input)
        let output = TraceFixtures.temporaryPath("dmg-out")
        #expect(throws: TraceError.self) { try TraceRecovery.recover(input: input, output: output) }
        #expect(!FileManager.default.fileExists(atPath: output))
        let report = try TraceRecovery.recover(input: input, output: output, salvage: true)
        #expect(report.steps == 1 && report.salvagedFromDamage)
        #expect(try TraceReader(path: output).validate().steps == 1)
    }

    @Test func writerWritesUnderATemporaryNameUntilClose() throws {
        let path = TraceFixtures.temporaryPath("writer")
        let h = TraceFixtures.header()
        let w = try TraceWriter(path: path, header: h, options: TraceWriteOptions(fsyncOnClose: false))
        try w.append(TraceFixtures.step(0, header: h))
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(FileManager.default.fileExists(atPath: w.temporaryPath))
        #expect(w.temporaryPath.hasPrefix(path + ".tmp-"))
        try w.close()
        #expect(FileManager.default.fileExists(atPath: path))
        #expect(!FileManager.default.fileExists(atPath: w.temporaryPath))
        #expect(throws: TraceError.self) { try TraceWriter(path: path, header: h, overwrite: false) }
    }

    @Test func aTraceInProgressIsRecoverableUnderItsTemporaryName() throws {
        let path = TraceFixtures.temporaryPath("inprogress")
        let h = TraceFixtures.header()
        let w = try TraceWriter(path: path, header: h, options: TraceWriteOptions(fsyncOnClose: false))
        for i in 0..<2 { try w.append(TraceFixtures.step(i, header: h)) }
        // The recorder is "killed" here: no close. The temporary file is an incomplete trace.
        let r = try TraceReader(path: w.temporaryPath)
        guard case .incomplete = r.integrity else { Issue.record("\(r.integrity)"); return }
        #expect(r.stepCount == 2)
        let output = TraceRecovery.defaultOutput(for: w.temporaryPath)
        #expect(output == String(path.dropLast(".starkv".count)) + ".recovered.starkv")
        let report = try TraceRecovery.recover(input: w.temporaryPath, output: output)
        #expect(report.steps == 2 && report.droppedTailBytes == 0)
        #expect(try TraceReader(path: output).validate().integrity == .intact)
        w.abandon()
        #expect(!FileManager.default.fileExists(atPath: w.temporaryPath))
    }

    /// A full disk: a small tmpfs (needs root, as CI runs). Writer and recover fail with the
    /// system's reason, nothing appears under the final name and no temporary file is left.
    @Test func aFullDiskLeavesNoPartialOutput() throws {
        guard getuid() == 0 else {
            print("skipped aFullDiskLeavesNoPartialOutput: needs root to mount a small tmpfs")
            return
        }
        let mountPoint = TraceFixtures.temporaryPath("tmpfs")
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mount = Process()
        mount.executableURL = URL(fileURLWithPath: "/bin/mount")
        mount.arguments = ["-t", "tmpfs", "-o", "size=64k", "tmpfs", mountPoint]
        mount.standardError = FileHandle.nullDevice
        try mount.run()
        mount.waitUntilExit()
        guard mount.terminationStatus == 0 else {
            print("skipped aFullDiskLeavesNoPartialOutput: cannot mount a tmpfs here (container without CAP_SYS_ADMIN?)")
            return
        }
        defer {
            let umount = Process()
            umount.executableURL = URL(fileURLWithPath: "/bin/umount")
            umount.arguments = [mountPoint]
            try? umount.run()
            umount.waitUntilExit()
        }
        // Writer: a trace bigger than 64 KiB.
        let big = mountPoint + "/big.starkv"
        let h = TraceFixtures.header()
        var failed = false
        do {
            let w = try TraceWriter(path: big, header: h, options: TraceWriteOptions(compress: false))
            do {
                for i in 0..<40 { try w.append(TraceFixtures.step(i, header: h)) }
                try w.close()
            } catch {
                w.abandon()
                throw error
            }
        } catch let e as TraceError {
            failed = true
            #expect(e.description.contains("No space left on device"), "\(e)")
        }
        #expect(failed)
        #expect(!FileManager.default.fileExists(atPath: big))
        // recover onto the full disk.
        let (input, _) = try Self.cutTrace()
        let filler = mountPoint + "/filler"
        TraceFixtures.store([UInt8](repeating: 1, count: 60 << 10), filler)
        let out = mountPoint + "/recovered.starkv"
        #expect(throws: TraceError.self) { try TraceRecovery.recover(input: input, output: out) }
        #expect(!FileManager.default.fileExists(atPath: out))
        #expect(Self.leftovers(beside: out).isEmpty)
        #expect(Self.leftovers(beside: big).isEmpty)
    }

    static func leftovers(beside path: String) -> [String] {
        let dir = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        return ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasPrefix(name + ".tmp-") }
    }
}
