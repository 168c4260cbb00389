/// The models StarKV knows by name. `ModelPresets.named(_:)` resolves a CLI or trace id.
///
/// Constants from docs/memory-model.md §1 (7B, verified against config mirrors);
/// the other sizes from their public config.json files, as cited on each preset.
public enum ModelPresets {
    /// Qwen2.5-VL vision tower shared by the 3B and 7B models.
    public static let qwen25VisionSmall = VisionGeometry(
        depth: 32, hiddenSize: 1280, numHeads: 16, intermediateSize: 3420)
    /// Qwen2.5-VL vision tower of the 32B and 72B models (intermediate 3456).
    public static let qwen25VisionLarge = VisionGeometry(
        depth: 32, hiddenSize: 1280, numHeads: 16, intermediateSize: 3456)

    /// UI-TARS-1.5-7B / Qwen2.5-VL-7B: 8,292,166,656 parameters (docs/memory-model.md §1.3).
    public static let qwen25VL7B = ModelGeometry(
        id: "qwen2.5-vl-7b", displayName: "Qwen2.5-VL-7B / UI-TARS-1.5-7B", numLayers: 28,
        hiddenSize: 3584, intermediateSize: 18944, numQueryHeads: 28, numKVHeads: 4, headDim: 128,
        vocabSize: 152064, tiedEmbeddings: false, vision: qwen25VisionSmall,
        source: "docs/memory-model.md §1.1-1.3 (Qwen2.5-VL-7B config.json)")

    /// OpenCUA-7B: the Qwen2.5-VL-7B shapes with a Qwen2 (1-D RoPE) language model.
    public static let openCUA7B = ModelGeometry(
        id: "opencua-7b", displayName: "OpenCUA-7B", numLayers: 28, hiddenSize: 3584,
        intermediateSize: 18944, numQueryHeads: 28, numKVHeads: 4, headDim: 128,
        vocabSize: 152064, tiedEmbeddings: false, vision: qwen25VisionSmall,
        source: "docs/algorithms.md §1.1 (same 28/4/128 layout); vocabulary assumed as Qwen2.5-VL-7B")

    /// Qwen2.5-VL-3B (tied embeddings).
    public static let qwen25VL3B = ModelGeometry(
        id: "qwen2.5-vl-3b", displayName: "Qwen2.5-VL-3B", numLayers: 36, hiddenSize: 2048,
        intermediateSize: 11008, numQueryHeads: 16, numKVHeads: 2, headDim: 128,
        vocabSize: 151936, tiedEmbeddings: true, vision: qwen25VisionSmall,
        source: "Qwen2.5-VL-3B-Instruct config.json")

    /// Qwen2.5-VL-32B.
    public static let qwen25VL32B = ModelGeometry(
        id: "qwen2.5-vl-32b", displayName: "Qwen2.5-VL-32B", numLayers: 64, hiddenSize: 5120,
        intermediateSize: 27648, numQueryHeads: 40, numKVHeads: 8, headDim: 128,
        vocabSize: 152064, tiedEmbeddings: false, vision: qwen25VisionLarge,
        source: "Qwen2.5-VL-32B-Instruct config.json")

    /// Qwen2.5-VL-72B.
    public static let qwen25VL72B = ModelGeometry(
        id: "qwen2.5-vl-72b", displayName: "Qwen2.5-VL-72B", numLayers: 80, hiddenSize: 8192,
        intermediateSize: 29568, numQueryHeads: 64, numKVHeads: 8, headDim: 128,
        vocabSize: 152064, tiedEmbeddings: false, vision: qwen25VisionLarge,
        source: "Qwen2.5-VL-72B-Instruct config.json")

    /// A reduced decoder (4 layers, 8 query heads, 4 KV heads) with the 7B's vision tower, so
    /// token counts are those of the real model. Used for small shipped traces and tests; the
    /// memory simulator still models the 7B for such traces (see README).
    public static let tinyVL = ModelGeometry(
        id: "tiny-vl", displayName: "tiny-vl (4-layer test decoder, 7B vision)", numLayers: 4,
        hiddenSize: 256, intermediateSize: 512, numQueryHeads: 8, numKVHeads: 4, headDim: 32,
        vocabSize: 152064, tiedEmbeddings: false, vision: qwen25VisionSmall,
        source: "StarKV test geometry")

    /// Every preset, default first.
    public static let all: [ModelGeometry] = [
        qwen25VL7B, openCUA7B, qwen25VL3B, qwen25VL32B, qwen25VL72B, tinyVL,
    ]

    /// Aliases accepted on the command line.
    public static let aliases: [String: String] = [
        "ui-tars-1.5-7b": "qwen2.5-vl-7b", "uitars-1.5-7b": "qwen2.5-vl-7b",
        "qwen2.5-vl-7b-instruct": "qwen2.5-vl-7b",
    ]

    /// The preset with this id or alias (case-insensitive), or nil.
    public static func named(_ name: String) -> ModelGeometry? {
        let key = name.lowercased()
        let id = aliases[key] ?? key
        return all.first { $0.id == id }
    }
}
