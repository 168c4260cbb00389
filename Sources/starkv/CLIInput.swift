import ArgumentParser
import Foundation
import StarKVTrace

#if canImport(Glibc)
    import Glibc
#endif

/// Exit statuses of every `starkv` command (README "Exit codes").
enum ExitStatus {
    static let intact: Int32 = 0
    static let corruptOrInvalid: Int32 = 1
    static let incomplete: Int32 = 2
    static let usage: Int32 = 64

    /// The paragraph every `--help` ends with.
    static let help = """
        Exit status: 0 success (trace intact); 1 corrupt or invalid input, or a file-system error; \
        2 incomplete but recoverable trace (no footer, every complete step intact, only a torn tail: \
        run 'starkv recover'); 64 usage error (bad flags or values).
        """
}

/// Prints one line to standard error.
func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// Opens traces for the commands that read them: applies the limits flag and turns the
/// reader's integrity into the documented exit status.
enum TraceOpening {
    /// Opens `path`. A corrupt trace is an error (exit 1). An incomplete one exits 2 with the
    /// recover hint, unless `allowIncomplete`, in which case a note goes to standard error and
    /// the complete steps are read.
    static func open(_ path: String, allowIncomplete: Bool, maxChunkMiB: Int?) throws -> TraceReader {
        let limits = maxChunkMiB.map { TraceReadLimits.scaled(chunkMiB: $0) } ?? .default
        let reader = try TraceReader(path: path, limits: limits)
        switch reader.integrity {
        case .intact:
            return reader
        case .incomplete(let note):
            if allowIncomplete {
                printError("note: \(path): incomplete trace (\(note)); reading its \(reader.stepCount) complete steps")
                return reader
            }
            printError(
                "\(path): incomplete trace: \(note).\n"
                    + "  It holds \(reader.stepCount) complete steps. Run 'starkv recover \(path)' to write a complete copy, "
                    + "or pass --allow-incomplete to read it as it is (e.g. a recording in progress).")
            throw ExitCode(ExitStatus.incomplete)
        case .corrupt(let offset, let note):
            throw TraceError.malformed(TraceLocation(path: path, offset: offset), note)
        }
    }
}

/// Parsers for numeric flags: they are declared with `parsing: .unconditional` so that `-5`
/// reaches them (instead of being taken for a flag), and they say when a number is negative.
enum NumberInput {
    static func integer(_ flag: String, _ range: ClosedRange<Int>) -> @Sendable (String) throws -> Int {
        { text in
            let t = text.trimmingCharacters(in: .whitespaces)
            if t.hasPrefix("-"), Int(t) != nil, range.lowerBound >= 0 {
                throw ValidationError("\(flag) \(t): negative numbers are not allowed (expected \(describe(range)))")
            }
            guard let v = Int(t) else { throw ValidationError("\(flag) '\(t)' is not an integer (expected \(describe(range)))") }
            guard range.contains(v) else { throw ValidationError("\(flag) \(v) is out of range (expected \(describe(range)))") }
            return v
        }
    }

    static func unsigned(_ flag: String) -> @Sendable (String) throws -> UInt64 {
        { text in
            let t = text.trimmingCharacters(in: .whitespaces)
            if t.hasPrefix("-") { throw ValidationError("\(flag) \(t): negative numbers are not allowed") }
            guard let v = UInt64(t) else { throw ValidationError("\(flag) '\(t)' is not a non-negative integer") }
            return v
        }
    }

    static func describe(_ r: ClosedRange<Int>) -> String {
        r.upperBound == Int.max ? "an integer ≥ \(r.lowerBound)" : "an integer in \(r.lowerBound)...\(r.upperBound)"
    }

    /// `WIDTHxHEIGHT` with positive integers; a negative dimension is named as such.
    static func screen(_ flag: String, _ text: String) throws -> (width: Int, height: Int) {
        let parts = text.lowercased().split(separator: "x", omittingEmptySubsequences: false)
        if text.contains("-") { throw ValidationError("\(flag) '\(text)': negative numbers are not allowed (expected WIDTHxHEIGHT, e.g. 1920x1080)") }
        guard parts.count == 2, let w = Int(parts[0]), let h = Int(parts[1]), w > 0, h > 0 else {
            throw ValidationError("\(flag) '\(text)' is not WIDTHxHEIGHT with positive integers (e.g. 1920x1080)")
        }
        return (w, h)
    }
}

/// Checks an output path before anything is written: not an input (same device and inode, after
/// symlinks), not an existing file unless `--force`, and its folder exists. Errors are one line
/// naming the path.
enum OutputCheck {
    static func check(_ output: String, inputs: [String], force: Bool, flag: String) throws {
        do { try OutputFile.checkWritable(output, inputs: inputs, overwrite: force) } catch {
            throw ValidationError("\(flag): \(error.description)")
        }
        let folder = (output as NSString).deletingLastPathComponent
        let dir = folder.isEmpty ? "." : folder
        var isDir: ObjCBool = false
        if !FileManager.default.fileExists(atPath: dir, isDirectory: &isDir) {
            throw CLIFailure("\(output): cannot write: folder \(dir) does not exist")
        } else if !isDir.boolValue {
            throw CLIFailure("\(output): cannot write: \(dir) is not a folder")
        } else if access(dir, W_OK) != 0 {
            throw CLIFailure("\(output): cannot write: folder \(dir): \(String(cString: strerror(errno)))")
        }
    }
}

/// A one-line error that exits with status 1 (a file-system problem, a damaged input).
struct CLIFailure: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}
