/// Rewrites a footer-less trace (a recorder killed mid-write) as a complete one: every complete
/// step is copied byte for byte and a footer index with `recovered = true` is appended
/// (FORMAT.md "Footer and trailer").
public enum TraceRecovery {
    /// What `recover` did.
    public struct Report: Sendable, Hashable {
        public var steps: Int
        public var droppedTailBytes: UInt64
        public var alreadyComplete: Bool
        public var outputPath: String
    }

    /// Recovers `input` into `output` (a new file; `input` is left untouched). When `input`
    /// already has a valid footer the output is an identical copy and `alreadyComplete` is true.
    public static func recover(input: String, output: String) throws -> Report {
        guard input != output else {
            throw TraceError.invalidInput(TraceLocation(path: output), "output must differ from the input trace")
        }
        let reader = try TraceReader(path: input)
        let source = try TraceFile.openForReading(input)
        let sink = try TraceFile.create(output)
        // Copy the file header, HEAD and all complete steps in 8 MiB pieces.
        var pos: UInt64 = 0
        while pos < reader.endOfSteps {
            let n = Int(min(8 << 20, reader.endOfSteps - pos))
            try sink.write(try source.read(n, at: pos))
            pos += UInt64(n)
        }
        var raw: UInt64 = 0
        for s in try reader.summaries() { raw += s.rawBytes }
        let stored = reader.index.reduce(UInt64(0)) { $0 + $1.length }
        let wasComplete = reader.footer == .present
        try TraceWriter.writeFooter(to: sink, entries: reader.index, totalRaw: raw, totalStored: stored, recovered: !wasComplete)
        try sink.sync()
        sink.close()
        let dropped = wasComplete ? 0 : source.size - reader.endOfSteps
        return Report(steps: reader.stepCount, droppedTailBytes: dropped, alreadyComplete: wasComplete, outputPath: output)
    }
}
