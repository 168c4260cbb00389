import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Why an output could not be written. Each case names the path and says what to do.
public enum OutputFileError: Error, Equatable, CustomStringConvertible {
    /// The output is the same file (device and inode, after symlinks) as an input.
    case sameAsInput(output: String, input: String)
    /// The output exists and overwriting was not allowed.
    case exists(path: String)
    /// A system call failed; `reason` is the system's message (e.g. "No space left on device").
    case io(path: String, operation: String, reason: String)

    public var description: String {
        switch self {
        case .sameAsInput(let output, let input):
            return "\(output): refusing to write an output over the input \(input) (same file); choose another output path"
        case .exists(let path):
            return "\(path): already exists; pass --force to overwrite it or choose another path"
        case .io(let path, let operation, let reason):
            return "\(path): cannot \(operation): \(reason)"
        }
    }
}

/// Writes outputs so that no reader ever sees a partial file and no input is destroyed.
///
/// Every output goes to a temporary name in the same folder (`NAME.tmp-PID-N`) and is renamed into
/// place only when complete and flushed (`rename(2)` within one file system is atomic). Before
/// anything is opened for writing, an output that is the same file as one of the inputs — compared
/// by device and inode, so symlinks and hard links are caught — is refused.
public enum OutputFile {
    /// True when both paths exist and name the same file (same device and inode after following
    /// symlinks).
    public static func isSameFile(_ a: String, _ b: String) -> Bool {
        var sa = stat(), sb = stat()
        guard stat(a, &sa) == 0, stat(b, &sb) == 0 else { return false }
        return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino
    }

    /// Throws `.sameAsInput` when `output` is the same file as any of `inputs`, and `.exists`
    /// when it exists and `overwrite` is false. Call it before opening anything for writing.
    public static func checkWritable(_ output: String, inputs: [String], overwrite: Bool) throws(OutputFileError) {
        for input in inputs where isSameFile(output, input) {
            throw .sameAsInput(output: output, input: input)
        }
        if !overwrite && FileManager.default.fileExists(atPath: output) {
            throw .exists(path: output)
        }
    }

    nonisolated(unsafe) private static var counter = 0
    private static let counterLock = NSLock()

    /// A fresh temporary path beside `path`: same folder, `NAME.tmp-PID-N`.
    public static func temporaryPath(for path: String) -> String {
        counterLock.lock()
        counter += 1
        let n = counter
        counterLock.unlock()
        return "\(path).tmp-\(getpid())-\(n)"
    }

    /// Renames a complete temporary file onto `path` (replacing it when `overwrite`), after
    /// checking again that `path` is not one of `inputs`. Removes the temporary file on failure.
    public static func commit(temporary: String, to path: String, inputs: [String] = [], overwrite: Bool = true) throws(OutputFileError) {
        do {
            try checkWritable(path, inputs: inputs, overwrite: overwrite)
        } catch {
            unlink(temporary)
            throw error
        }
        if rename(temporary, path) != 0 {
            let reason = String(cString: strerror(errno))
            unlink(temporary)
            throw .io(path: path, operation: "rename \(temporary) into place", reason: reason)
        }
    }

    /// Writes `data` to `path` through a flushed temporary file and a rename. Nothing is written
    /// when `path` is an input, or exists and `overwrite` is false.
    public static func write(_ data: Data, to path: String, inputs: [String] = [], overwrite: Bool = true) throws(OutputFileError) {
        try checkWritable(path, inputs: inputs, overwrite: overwrite)
        let temp = try stage(data, for: path)
        try commit(temporary: temp, to: path, inputs: inputs, overwrite: overwrite)
    }

    /// Writes `data` in full to a fresh temporary file beside `path`, flushed, and returns its
    /// path; `commit` renames it into place. Used to write several outputs before renaming any.
    /// The temporary file is removed when writing fails.
    public static func stage(_ data: Data, for path: String) throws(OutputFileError) -> String {
        let temp = temporaryPath(for: path)
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw .io(path: path, operation: "create a temporary file", reason: String(cString: strerror(errno)))
        }
        var failure: OutputFileError?
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            var offset = 0
            while offset < raw.count {
                let n = systemWrite(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = .io(path: path, operation: "write", reason: String(cString: strerror(errno)))
                    return
                }
                offset += n
            }
        }
        if failure == nil && fsync(fd) != 0 {
            failure = .io(path: path, operation: "flush", reason: String(cString: strerror(errno)))
        }
        if close(fd) != 0 && failure == nil {
            failure = .io(path: path, operation: "close", reason: String(cString: strerror(errno)))
        }
        if let failure {
            unlink(temp)
            throw failure
        }
        return temp
    }
}

#if canImport(Glibc)
private let systemWrite = Glibc.write
#elseif canImport(Darwin)
private let systemWrite = Darwin.write
#endif
