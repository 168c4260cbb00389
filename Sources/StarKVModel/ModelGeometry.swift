/// Shapes of a vision-language model's language decoder and vision tower — everything the
/// trace format, the policies and the memory simulator need to know about a model.
///
/// Implements docs/memory-model.md §1 (model constants) and §1.3 (parameter
/// counts, computed from shapes rather than copied).
public struct ModelGeometry: Sendable, Hashable, Codable {
    /// Short identifier used on the command line and in traces, e.g. `qwen2.5-vl-7b`.
    public var id: String
    /// Human-readable name, e.g. `Qwen2.5-VL-7B / UI-TARS-1.5-7B`.
    public var displayName: String
    /// Decoder layers (N_l).
    public var numLayers: Int
    /// Residual width (D).
    public var hiddenSize: Int
    /// SwiGLU intermediate width (I).
    public var intermediateSize: Int
    /// Query heads (H).
    public var numQueryHeads: Int
    /// Key/value heads (H_kv); query head h uses KV head ⌊h / (H / H_kv)⌋.
    public var numKVHeads: Int
    /// Per-head width (d).
    public var headDim: Int
    /// Vocabulary size (rows of the embedding and of the LM head).
    public var vocabSize: Int
    /// Whether the LM head shares the embedding matrix.
    public var tiedEmbeddings: Bool
    /// Whether the q/k/v projections carry a bias (o_proj never does in Qwen2).
    public var qkvBias: Bool
    /// The vision tower, or nil for a text-only model.
    public var vision: VisionGeometry?
    /// Where the constants were read (spec section or config mirror).
    public var source: String

    public init(
        id: String, displayName: String, numLayers: Int, hiddenSize: Int, intermediateSize: Int,
        numQueryHeads: Int, numKVHeads: Int, headDim: Int, vocabSize: Int, tiedEmbeddings: Bool,
        qkvBias: Bool = true, vision: VisionGeometry?, source: String
    ) {
        self.id = id
        self.displayName = displayName
        self.numLayers = numLayers
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.numQueryHeads = numQueryHeads
        self.numKVHeads = numKVHeads
        self.headDim = headDim
        self.vocabSize = vocabSize
        self.tiedEmbeddings = tiedEmbeddings
        self.qkvBias = qkvBias
        self.vision = vision
        self.source = source
    }

    /// Query heads per KV head (G = H / H_kv).
    public var queryHeadsPerKVHead: Int { numQueryHeads / max(1, numKVHeads) }

    /// The KV head a query head reads (the `repeat_kv` layout: consecutive query heads share one).
    public func kvHead(ofQueryHead h: Int) -> Int { h / queryHeadsPerKVHead }

    /// Parameters of one decoder layer: attention projections, SwiGLU MLP and two RMSNorms.
    public var parametersPerDecoderLayer: Int {
        let q = hiddenSize * numQueryHeads * headDim + (qkvBias ? numQueryHeads * headDim : 0)
        let kv = 2 * (hiddenSize * numKVHeads * headDim + (qkvBias ? numKVHeads * headDim : 0))
        let o = numQueryHeads * headDim * hiddenSize
        let mlp = 3 * hiddenSize * intermediateSize
        return q + kv + o + mlp + 2 * hiddenSize
    }

    /// Parameters of the language model: embeddings, decoder layers, final norm and LM head.
    public var languageModelParameters: Int {
        let embedding = vocabSize * hiddenSize
        let head = tiedEmbeddings ? 0 : vocabSize * hiddenSize
        return embedding + numLayers * parametersPerDecoderLayer + hiddenSize + head
    }

    /// Parameters of the vision tower (0 without one).
    public var visionParameters: Int { vision?.parameters(outputSize: hiddenSize) ?? 0 }

    /// Every parameter of the model.
    public var totalParameters: Int { languageModelParameters + visionParameters }

    /// KV-cache bytes per token over all layers, keys and values, at `storedHeads` heads of
    /// `bytesPerElement` bytes: `2 · N_l · heads · d · bytes` (docs/memory-model.md §1.4).
    public func kvBytesPerToken(storedHeads: Int, bytesPerElement: Int = 2) -> Int {
        2 * numLayers * storedHeads * headDim * bytesPerElement
    }
}

/// Shapes of a Qwen2.5-VL-style vision tower (ViT with 2×2 patch merger).
///
/// Implements docs/memory-model.md §1.2.
public struct VisionGeometry: Sendable, Hashable, Codable {
    /// Transformer blocks.
    public var depth: Int
    /// ViT hidden width.
    public var hiddenSize: Int
    /// ViT attention heads.
    public var numHeads: Int
    /// ViT SwiGLU intermediate width (with bias).
    public var intermediateSize: Int
    /// Spatial patch edge in pixels.
    public var patchSize: Int
    /// Frames per temporal patch (a still image is duplicated in time).
    public var temporalPatchSize: Int
    /// Patches merged per LLM token along each axis.
    public var spatialMergeSize: Int
    /// Window-attention window edge in pixels.
    public var windowSizePixels: Int
    /// Blocks that use full (per-image) attention instead of window attention.
    public var fullAttentionBlocks: [Int]
    /// Input channels.
    public var inChannels: Int

    public init(
        depth: Int, hiddenSize: Int, numHeads: Int, intermediateSize: Int, patchSize: Int = 14,
        temporalPatchSize: Int = 2, spatialMergeSize: Int = 2, windowSizePixels: Int = 112,
        fullAttentionBlocks: [Int] = [7, 15, 23, 31], inChannels: Int = 3
    ) {
        self.depth = depth
        self.hiddenSize = hiddenSize
        self.numHeads = numHeads
        self.intermediateSize = intermediateSize
        self.patchSize = patchSize
        self.temporalPatchSize = temporalPatchSize
        self.spatialMergeSize = spatialMergeSize
        self.windowSizePixels = windowSizePixels
        self.fullAttentionBlocks = fullAttentionBlocks
        self.inChannels = inChannels
    }

    /// Pixel edge that one LLM visual token covers (patch · merge, 28 for Qwen2.5-VL).
    public var pixelsPerTokenEdge: Int { patchSize * spatialMergeSize }

    /// Values in one flattened patch: channels · temporal · patch² (1,176).
    public var valuesPerPatch: Int { inChannels * temporalPatchSize * patchSize * patchSize }

    /// Parameters: patch embedding (no bias), blocks (qkv/proj/MLP with bias, 2 RMSNorms)
    /// and the merger (RMSNorm → Linear(4D,4D)+GELU → Linear(4D, outputSize)).
    public func parameters(outputSize: Int) -> Int {
        let patchEmbed = valuesPerPatch * hiddenSize
        let qkv = hiddenSize * 3 * hiddenSize + 3 * hiddenSize
        let proj = hiddenSize * hiddenSize + hiddenSize
        let mlp = 2 * (hiddenSize * intermediateSize + intermediateSize)
            + intermediateSize * hiddenSize + hiddenSize
        let block = qkv + proj + mlp + 2 * hiddenSize
        let merged = hiddenSize * spatialMergeSize * spatialMergeSize
        let merger = hiddenSize + (merged * merged + merged) + (merged * outputSize + outputSize)
        return patchEmbed + depth * block + merger
    }
}
