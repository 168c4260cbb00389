#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The body of the reader's fuzz target (`make fuzz`, Sources/starkv-fuzz) and of the
/// regression test that replays every input the fuzzer ever crashed on
/// (Tests/StarKVTraceTests/FuzzRegressionTests.swift). It runs every reader entry point over
/// arbitrary bytes: open (header, footer or scan), step summaries, every step, validate and
/// recover. Errors are expected; a crash, a hang or an allocation out of proportion is a bug.
public enum TraceFuzzing {
    /// Limits for fuzzing: small, so that an input cannot make a legitimate 256 MiB allocation
    /// look like a leak; every check is the same as with the defaults.
    public static let limits = TraceReadLimits(
        maxRecordBytes: 1 << 20, maxChunkRawBytes: 4 << 20, maxStepRawBytes: 8 << 20, maxLayers: 64, maxHeads: 64,
        maxPromptLength: 1 << 16, maxSteps: 1 << 12)

    /// Writes `bytes` to `workPath` and runs every reader entry point on it; with `repairChecksums`
    /// the frame, payload and trailer CRCs are recomputed first so that mutations reach the
    /// protobuf, zstd and shape checks behind them. Returns how many steps read cleanly.
    @discardableResult
    public static func exercise(_ input: [UInt8], workPath: String, repairChecksums: Bool) -> Int {
        let bytes = repairChecksums ? TraceFuzzing.repairChecksums(input) : input
        guard store(bytes, at: workPath) else { return 0 }
        var good = 0
        guard let reader = try? TraceReader(path: workPath, limits: limits) else { return 0 }
        _ = reader.integrity
        _ = try? reader.summaries()
        for i in 0..<reader.stepCount {
            if (try? reader.readStep(at: i)) != nil { good += 1 }
        }
        _ = try? reader.readStep(at: 0, fields: [TraceField.winSum], layers: [0])
        _ = try? reader.validate()
        let out = workPath + ".recovered"
        unlink(out)
        _ = try? TraceRecovery.recover(input: workPath, output: out, limits: limits, salvage: true)
        unlink(out)
        return good
    }

    /// Recomputes every record frame's payload CRC and frame CRC, walking the frames from the
    /// file header, and the trailer's CRC when the file ends with the trailer magic. Lengths are
    /// left as they are; a frame whose payload runs past the end stops the walk.
    public static func repairChecksums(_ input: [UInt8]) -> [UInt8] {
        var b = input
        let frame = TraceFormat.frameHeaderBytes
        let trailerStart = b.count >= TraceFormat.trailerBytes && Array(b[(b.count - 8)...]) == TraceFormat.trailerMagic
            ? b.count - TraceFormat.trailerBytes : b.count
        var pos = TraceFormat.fileHeaderBytes
        while pos + frame <= trailerStart {
            let length = b.readLE(UInt64.self, at: pos + 8)
            guard length <= UInt64(trailerStart - pos - frame) else { break }
            let start = pos + frame
            let end = start + Int(length)
            let crc = b.withUnsafeBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[start..<end])) }
            b.writeLE(crc, at: pos + 16)
            b.writeLE(CRC32C.checksum(Array(b[pos..<(pos + 20)])), at: pos + 20)
            pos = end
        }
        if trailerStart < b.count {
            b.writeLE(CRC32C.checksum(Array(b[trailerStart..<(trailerStart + 12)])), at: trailerStart + 12)
        }
        return b
    }

    static func store(_ bytes: [UInt8], at path: String) -> Bool {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, bytes.count - done) }
            if n <= 0 { return false }
            done += n
        }
        return true
    }
}

extension Array where Element == UInt8 {
    mutating func writeLE<T: FixedWidthInteger>(_ v: T, at offset: Int) {
        var le = v.littleEndian
        Swift.withUnsafeBytes(of: &le) { src in
            for i in 0..<src.count { self[offset + i] = src[i] }
        }
    }
}
