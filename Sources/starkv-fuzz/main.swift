// The reader's libFuzzer target (`make fuzz`; README "Fuzzing").
//
// Built with `-sanitize=fuzzer,address`, libFuzzer's LLVMFuzzerRunDriver drives
// TraceFuzzing.exercise over mutated inputs. Built normally (as `swift build` does for every
// target), the same binary replays the files or folders given on the command line through the
// same harness, so a crash input can be checked without the sanitizer toolchain. `--make-seeds DIR`
// writes the seed corpus (Fuzz/corpus).
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

/// Writes the small seed traces of Fuzz/corpus (`make fuzz-seeds`): tiny geometry, every field
/// kind, compressed and raw chunks, and a torn (footer-less) one.
func writeSeeds(to dir: String) throws {
    let model = RecordedModel(
        id: "fuzz-tiny", numLayers: 2, numQueryHeads: 2, numKVHeads: 1, headDim: 4, hiddenSize: 8, vocabSize: 16,
        intermediateSize: 16)
    func header(_ fidelity: Fidelity) -> TraceHeader {
        var fields = TraceField.fields(at: fidelity)
        if fidelity == .full { fields.append("golden_kept.snapkv.50") }
        return TraceHeader(
            model: model, recorder: RecorderInfo(name: "fuzz-seed", version: "1"), fidelity: fidelity, fields: fields,
            windowSizes: [2], agent: AgentLoopInfo(storedKVHeads: 1, screenWidth: 28, screenHeight: 28), winRowsMax: 1)
    }
    func step(_ i: Int, _ h: TraceHeader) -> StepRecord {
        let images = min(2, i + 1)
        var types: [TokenType] = [.system, .template]
        var entries: [ImageEntry] = []
        for f in 0..<images {
            types.append(.visionMarker)
            entries.append(ImageEntry(spanStart: types.count, spanEnd: types.count + 2, gridH: 1, gridW: 2, frameAge: images - 1 - f))
            types += [.visual, .visual, .visionMarker]
        }
        types += [.instruction, .generationPrompt]
        let L = types.count
        var s = StepRecord(
            episodeID: "e", stepIndex: i, stepInEpisode: i, reset: i == 0, promptLength: L, generatedTokens: 1,
            tokenTypes: types, tokenIDs: (0..<L).map { Int32($0) }, images: entries)
        let V = 2 * images
        func values(_ n: Int) -> [Float] { (0..<n).map { Float(($0 * 7 + i) % 5) / 4 } }
        for layer in 0..<2 {
            for field in h.fields {
                let t: Tensor
                switch field {
                case TraceField.winSum: t = Tensor(floats: values(2 * L), shape: [1, 2, L], dtype: .f16)
                case TraceField.hidNorm: t = Tensor(floats: values(V), shape: [V])
                case TraceField.guikvResid:
                    guard V > 2 else { continue }
                    t = Tensor(floats: values(V - 2), shape: [1, V - 2], dtype: .f16)
                case TraceField.colsumAll, TraceField.colsumPostvis, TraceField.decodeAttnSum: t = Tensor(floats: values(2 * L), shape: [2, L])
                case TraceField.countGt001: t = Tensor(int64: [1, 2], shape: [2])
                case TraceField.nValid: t = Tensor(int64: [3], shape: [1])
                case TraceField.winRows: t = Tensor(floats: values(2 * L), shape: [2, 1, L], dtype: .bf16)
                default: t = Tensor(int32: [0, Int32(L - 1)], shape: [1, 2])
                }
                s.chunks.append(TensorChunk(field: field, layer: layer, tensor: t))
            }
        }
        return s
    }
    func write(_ name: String, _ fidelity: Fidelity, steps: Int, options: TraceWriteOptions, killed: Bool = false) throws {
        let h = header(fidelity)
        let path = (dir as NSString).appendingPathComponent(name)
        let w = try TraceWriter(path: path, header: h, options: options)
        for i in 0..<steps { try w.append(step(i, h)) }
        if killed {
            // Keep the steps, tear the last one: as a recorder killed mid-write leaves it.
            var data = try Data(contentsOf: URL(fileURLWithPath: w.temporaryPath))
            data.removeLast(7)
            try data.write(to: URL(fileURLWithPath: path))
            w.abandon()
        } else {
            try w.close()
        }
    }
    let opts = TraceWriteOptions(zstdLevel: 3, fsyncOnClose: false)
    try write("core-2step.starkv", .core, steps: 2, options: opts)
    try write("standard-raw-1step.starkv", .standard, steps: 1, options: TraceWriteOptions(byteShuffle: false, compress: false, fsyncOnClose: false))
    try write("full-1step.starkv", .full, steps: 1, options: opts)
    try write("torn-3step.starkv", .core, steps: 3, options: opts, killed: true)
}

if CommandLine.arguments.count == 3, CommandLine.arguments[1] == "--make-seeds" {
    do { try writeSeeds(to: CommandLine.arguments[2]) } catch {
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
