import Foundation
import StarKVModel
@testable import StarKVTrace

/// A small multi-step trace with every catalog field, built from simple formulas so that each
/// value can be recomputed by hand.
enum TraceFixtures {
    static let model = RecordedModel(
        id: "tiny-vl", numLayers: 2, numQueryHeads: 4, numKVHeads: 2, headDim: 8, hiddenSize: 32, vocabSize: 100,
        intermediateSize: 64)

    static func header(fidelity: Fidelity = .full) -> TraceHeader {
        var fields = TraceField.fields(at: fidelity)
        if fidelity == .full { fields.append("golden_kept.snapkv.20") }
        return TraceHeader(
            model: model, recorder: RecorderInfo(name: "fixture", version: "1", seed: 7), fidelity: fidelity,
            fields: fields, windowSizes: [2, 4], agent: AgentLoopInfo(storedKVHeads: 2, screenWidth: 56, screenHeight: 28),
            metadata: ["b": "2", "a": "1"], winRowsMax: 2)
    }

    /// Step `i` has `1 + i` images of 2×2 tokens (at most 3), 6 text tokens before and 4 after.
    static func step(_ i: Int, header h: TraceHeader = header()) -> StepRecord {
        let images = min(3, 1 + i)
        var types: [TokenType] = Array(repeating: .system, count: 6)
        var entries: [ImageEntry] = []
        for f in 0..<images {
            types.append(.visionMarker)
            let start = types.count
            types += Array(repeating: .visual, count: 4)
            entries.append(ImageEntry(spanStart: start, spanEnd: start + 4, gridH: 2, gridW: 2, frameAge: images - 1 - f))
            types.append(.visionMarker)
        }
        types += [.instruction, .instruction, .generationPrompt, .generationPrompt]
        let L = types.count
        var step = StepRecord(
            episodeID: "ep\(i / 2)", stepIndex: i, stepInEpisode: i % 2, reset: i % 2 == 0, promptLength: L,
            generatedTokens: 3 + i, tokenTypes: types, tokenIDs: (0..<L).map { Int32($0 * 3 + i) }, images: entries,
            metadata: ["action": "click \(i)"])
        let H = model.numQueryHeads
        let V = 4 * images
        let vPrev = V - 4
        func values(_ n: Int, _ seed: Int) -> [Float] { (0..<n).map { Float(($0 * 37 + seed * 11) % 101) / 64 } }
        for layer in 0..<model.numLayers {
            let s = i * 10 + layer
            for field in h.fields {
                let t: Tensor
                switch field {
                case TraceField.winSum: t = Tensor(floats: values(2 * H * L, s), shape: [2, H, L], dtype: .f16)
                case TraceField.hidNorm: t = Tensor(floats: values(V, s + 1), shape: [V])
                case TraceField.guikvResid:
                    guard vPrev > 0 else { continue }
                    t = Tensor(floats: values(2 * vPrev, s + 2), shape: [2, vPrev], dtype: .f16)
                case TraceField.colsumAll, TraceField.colsumPostvis, TraceField.decodeAttnSum:
                    t = Tensor(floats: values(H * L, s + field.count), shape: [H, L])
                case TraceField.countGt001: t = Tensor(int64: (0..<H).map { Int64($0 + s) }, shape: [H])
                case TraceField.nValid: t = Tensor(int64: [Int64(1000 + s)], shape: [1])
                case TraceField.winRows: t = Tensor(floats: values(H * 2 * L, s + 3), shape: [H, 2, L], dtype: .bf16)
                default: t = Tensor(int32: [0, 2, Int32(L - 1)], shape: [1, 3])
                }
                step.chunks.append(TensorChunk(field: field, layer: layer, tensor: t))
            }
        }
        return step
    }

    static func temporaryPath(_ name: String) -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("starkv-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent("\(name)-\(UUID().uuidString).starkv").path
    }

    /// Writes `steps` steps; returns the path.
    @discardableResult
    static func write(steps: Int, to path: String, options: TraceWriteOptions = TraceWriteOptions(fsyncOnClose: false))
        throws -> String
    {
        let h = header()
        let w = try TraceWriter(path: path, header: h, options: options)
        for i in 0..<steps { try w.append(step(i, header: h)) }
        try w.close()
        return path
    }

    static func bytes(_ path: String) -> [UInt8] { [UInt8](FileManager.default.contents(atPath: path)!) }

    static func store(_ bytes: [UInt8], _ path: String) { FileManager.default.createFile(atPath: path, contents: Data(bytes)) }
}
