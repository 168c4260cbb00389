import Foundation
#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Rewrites a footer-less trace (a recorder killed mid-write, or a trace in progress under its
/// temporary name) as a complete one: every complete step is copied byte for byte and a footer
/// index with `recovered = true` is appended (FORMAT.md "Footer and trailer").
///
/// The output goes to a temporary name beside it and is renamed into place only when complete
/// (`OutputFile`); an output that is the same file as the input (also through a symlink or a hard
/// link) is refused before anything is opened for writing, and an existing output is kept unless
/// `overwrite` is set.
public enum TraceRecovery {
    /// What `recover` did.
    public struct Report: Sendable, Hashable {
        public var steps: Int
        public var droppedTailBytes: UInt64
        public var alreadyComplete: Bool
        /// The input was damaged (not just cut off) and `salvage` kept the steps before the damage.
        public var salvagedFromDamage: Bool
        public var outputPath: String
    }

    /// The default output for `input`: a temporary-name suffix (`.tmp-PID-N`) and `.starkv` are
    /// dropped and `.recovered.starkv` is appended.
    public static func defaultOutput(for input: String) -> String {
        var base = input
        if let r = base.range(of: #"\.tmp-[0-9]+-[0-9]+$"#, options: .regularExpression) { base.removeSubrange(r) }
        if base.hasSuffix(".starkv") { base.removeLast(7) }
        return base + ".recovered.starkv"
    }

    /// Recovers `input` into `output`; `input` is never modified. A damaged input (not a torn
    /// tail) is refused unless `salvage` is set, in which case the intact steps before the damage
    /// are kept. When `input` already has a valid footer the output is an identical copy and
    /// `alreadyComplete` is true.
    public static func recover(
        input: String, output: String, overwrite: Bool = false, limits: TraceReadLimits = .default, salvage: Bool = false
    ) throws -> Report {
        do { try OutputFile.checkWritable(output, inputs: [input], overwrite: overwrite) } catch {
            throw TraceError.invalidInput(TraceLocation(path: output), error.description)
        }
        let reader = try TraceReader(path: input, limits: limits)
        if case .corrupt(let offset, let note) = reader.integrity, !salvage {
            throw TraceError.malformed(
                TraceLocation(path: input, offset: offset),
                "\(note); the file is damaged, not just cut off (pass --salvage to keep the \(reader.stepCount) steps before the damage)")
        }
        // Every step that will be indexed must read back cleanly (CRCs, zstd, shapes).
        _ = try reader.validateSteps()
        let source = try TraceFile.openForReading(input)
        let temp = OutputFile.temporaryPath(for: output)
        let sink = try TraceFile.create(temp)
        do {
            // Copy the file header, HEAD and all complete steps in 8 MiB pieces.
            var pos: UInt64 = 0
            while pos < reader.endOfSteps {
                let n = Int(min(8 << 20, reader.endOfSteps - pos))
                try sink.write(try source.read(n, at: pos))
                pos += UInt64(n)
            }
            var raw: UInt64 = 0
            for s in try reader.summaries() { raw = Checked.add(raw, s.rawBytes) ?? .max }
            let stored = Checked.sum(reader.index.lazy.map(\.length)) ?? .max
            let wasComplete = reader.footer == .present
            try TraceWriter.writeFooter(to: sink, entries: reader.index, totalRaw: raw, totalStored: stored, recovered: !wasComplete)
            try sink.sync()
            sink.close()
        } catch {
            sink.close()
            unlink(temp)
            throw error
        }
        do { try OutputFile.commit(temporary: temp, to: output, inputs: [input], overwrite: overwrite) } catch {
            throw TraceError.io(TraceLocation(path: output), error.description)
        }
        let wasComplete = reader.footer == .present
        let dropped = wasComplete ? 0 : source.size - reader.endOfSteps
        var salvaged = false
        if case .corrupt = reader.integrity { salvaged = true }
        return Report(
            steps: reader.stepCount, droppedTailBytes: dropped, alreadyComplete: wasComplete, salvagedFromDamage: salvaged,
            outputPath: output)
    }
}
