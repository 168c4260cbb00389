// The reader's libFuzzer target (`make fuzz`; README "Fuzzing").
//
// Built with `-sanitize=fuzzer,address`, libFuzzer's LLVMFuzzerRunDriver drives
// TraceFuzzing.exercise over mutated inputs. Built normally (as `swift build` does for every
// target), the same binary replays the files or folders given on the command line through the
// same harness, so a crash input can be checked without the sanitizer toolchain. `--make-seeds DIR`
// writes the seed corpus (Fuzz/corpus); `--make-hostile DIR` the hostile inputs of README "Damaged and
// hostile traces" (for measuring peak RSS with /usr/bin/time -v).
//
// STARKV_FUZZ_REPAIR: "1" recomputes the CRCs of every input before reading it (mutations get
// past the checksums), "0" reads inputs as they are, "both" (default) does one then the other.
import Foundation
import StarKVTrace

#if canImport(Glibc)
    import Glibc
#endif

typealias FuzzCallback = @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32

let repairMode = ProcessInfo.processInfo.environment["STARKV_FUZZ_REPAIR"] ?? "both"
let workDirectory = ProcessInfo.processInfo.environment["STARKV_FUZZ_WORKDIR"] ?? NSTemporaryDirectory()
let workPath = (workDirectory as NSString).appendingPathComponent("starkv-fuzz-\(getpid()).starkv")

func runOne(_ bytes: [UInt8]) {
    if repairMode != "1" { TraceFuzzing.exercise(bytes, workPath: workPath, repairChecksums: false) }
    if repairMode != "0" { TraceFuzzing.exercise(bytes, workPath: workPath, repairChecksums: true) }
}

let callback: FuzzCallback = { data, size in
    let bytes = size > 0 && data != nil ? Array(UnsafeBufferPointer(start: data, count: size)) : []
    runOne(bytes)
    return 0
}

/// Writes named inputs into a folder.
func writeAll(_ files: [(name: String, bytes: [UInt8])], to dir: String) throws {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    for f in files { try Data(f.bytes).write(to: URL(fileURLWithPath: (dir as NSString).appendingPathComponent(f.name))) }
}

if CommandLine.arguments.count == 3, ["--make-seeds", "--make-hostile"].contains(CommandLine.arguments[1]) {
    do {
        let files = CommandLine.arguments[1] == "--make-seeds" ? try TraceFuzzing.seedTraces() : try TraceFuzzing.hostileTraces()
        try writeAll(files, to: CommandLine.arguments[2])
    } catch {
        FileHandle.standardError.write(Data("starkv-fuzz: \(error)\n".utf8))
        exit(1)
    }
    exit(0)
}

#if STARKV_FUZZ
    // libFuzzer's driver (linked by -sanitize=fuzzer; `make fuzz` also passes -DSTARKV_FUZZ).
    @_silgen_name("LLVMFuzzerRunDriver")
    func LLVMFuzzerRunDriver(
        _ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
        _ callback: FuzzCallback
    ) -> Int32

    var fuzzArgc = CommandLine.argc
    var fuzzArgv = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&fuzzArgc, &fuzzArgv, callback))
#endif

// Without libFuzzer: replay files and folders.
var files: [String] = []
for arg in CommandLine.arguments.dropFirst() where !arg.hasPrefix("-") {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: arg, isDirectory: &isDir) else {
        FileHandle.standardError.write(Data("starkv-fuzz: \(arg): no such file or folder\n".utf8))
        exit(64)
    }
    if isDir.boolValue {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: arg)) ?? []
        files += names.sorted().map { (arg as NSString).appendingPathComponent($0) }
    } else {
        files.append(arg)
    }
}
for f in files {
    guard let data = FileManager.default.contents(atPath: f) else { continue }
    runOne([UInt8](data))
}
unlink(workPath)
print("starkv-fuzz: replayed \(files.count) inputs without a crash (not a libFuzzer build; use `make fuzz` to fuzz)")
