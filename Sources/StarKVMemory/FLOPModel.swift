import StarKVModel

/// FLOPs of one agent step by phase, in both attention conventions.
///
/// Implements docs/memory-model.md §6 (1 multiply-add = 2 FLOP) and docs/algorithms.md §11 (the policy's
/// scoring FLOPs arrive as an input number). "Nominal" counts every query×key pair of a prefill
/// (LLM-Viewer / llm-analysis / Vidur convention); "causal" counts what a causal kernel does,
/// k_eff = past + (q+1)/2. Decode and the vision tower are the same in both conventions.
public struct FLOPCounts: Sendable, Hashable, Codable {
    /// Vision tower over the images encoded this step.
    public var visionFLOPs: Int = 0
    /// Prefill q/k/v/o projections and SwiGLU MLPs (all layers).
    public var prefillLinearFLOPs: Int = 0
    /// Prefill QKᵀ + AV, every pair counted.
    public var prefillAttentionNominalFLOPs: Int = 0
    /// Prefill QKᵀ + AV, causal half.
    public var prefillAttentionCausalFLOPs: Int = 0
    /// LM head over the prefill rows the logits policy computes (L, or 1).
    public var prefillLMHeadFLOPs: Int = 0
    /// All decode forwards (linear + attention + head).
    public var decodeFLOPs: Int = 0
    /// Compression-stage scoring FLOPs reported by the policy (docs/algorithms.md §11).
    public var scoringFLOPs: Int = 0

    public init() {}

    /// Everything, nominal attention.
    public var nominalTotalFLOPs: Int {
        visionFLOPs + prefillLinearFLOPs + prefillAttentionNominalFLOPs + prefillLMHeadFLOPs + decodeFLOPs + scoringFLOPs
    }
    /// Everything, causal attention.
    public var causalTotalFLOPs: Int {
        visionFLOPs + prefillLinearFLOPs + prefillAttentionCausalFLOPs + prefillLMHeadFLOPs + decodeFLOPs + scoringFLOPs
    }
    /// Prefill (linear + nominal attention + head).
    public var prefillNominalFLOPs: Int { prefillLinearFLOPs + prefillAttentionNominalFLOPs + prefillLMHeadFLOPs }
    /// Prefill (linear + causal attention + head).
    public var prefillCausalFLOPs: Int { prefillLinearFLOPs + prefillAttentionCausalFLOPs + prefillLMHeadFLOPs }
}

/// Closed-form FLOP formulas (docs/memory-model.md §6.1, §6.2).
public enum FLOPModel {
    /// Linear FLOPs per token per decoder layer: 2·(H·(HQ·HD + 2·HKV·HD) + HQ·HD·H + 3·H·I)
    /// (466.09 M for the 7B; biases and norms ignored).
    public static func linearFLOPsPerTokenPerLayer(_ m: ModelGeometry) -> Int {
        let qkv = m.hiddenSize * (m.numQueryHeads * m.headDim + 2 * m.numKVHeads * m.headDim)
        let o = m.numQueryHeads * m.headDim * m.hiddenSize
        let mlp = 3 * m.hiddenSize * m.intermediateSize
        return 2 * (qkv + o + mlp)
    }

    /// QKᵀ + AV FLOPs per query per key per layer: 4·HQ·HD (14,336 for the 7B).
    public static func attentionFLOPsPerPairPerLayer(_ m: ModelGeometry) -> Int {
        4 * m.numQueryHeads * m.headDim
    }

    /// LM head FLOPs per row: 2·H·V (1.09 G for the 7B).
    public static func lmHeadFLOPsPerRow(_ m: ModelGeometry) -> Int { 2 * m.hiddenSize * m.vocabSize }

    /// Prefill of `newTokens` queries over `pastTokens` cached keys: (linear, nominal attention,
    /// causal attention), all layers.
    public static func prefill(_ m: ModelGeometry, newTokens q: Int, pastTokens c: Int) -> (linear: Int, nominal: Int, causal: Int) {
        let linear = m.numLayers * linearFLOPsPerTokenPerLayer(m) * q
        let nominal = m.numLayers * attentionFLOPsPerPairPerLayer(m) * q * (c + q)
        // 4·HQ·HD·q·(c + (q+1)/2) = 2·HQ·HD·q·(2c + q + 1), exact in integers.
        let causal = m.numLayers * 2 * m.numQueryHeads * m.headDim * q * (2 * c + q + 1)
        return (linear, nominal, causal)
    }

    /// One decode forward with `contextTokens` keys visible (including the token itself).
    public static func decodePass(_ m: ModelGeometry, contextTokens c: Int) -> Int {
        m.numLayers * (linearFLOPsPerTokenPerLayer(m) + attentionFLOPsPerPairPerLayer(m) * c) + lmHeadFLOPsPerRow(m)
    }

    /// `passes` decode forwards whose contexts are start+1, start+2, …, start+passes (closed form).
    public static func decode(_ m: ModelGeometry, startContext: Int, passes: Int) -> Int {
        guard passes > 0 else { return 0 }
        let contextSum = passes * startContext + passes * (passes + 1) / 2
        return passes * (m.numLayers * linearFLOPsPerTokenPerLayer(m) + lmHeadFLOPsPerRow(m))
            + m.numLayers * attentionFLOPsPerPairPerLayer(m) * contextSum
    }

    /// Vision tower FLOPs for one image of `patches` ViT patches (docs/memory-model.md §6.2): patch
    /// embedding, block linears, window attention (window² patches per query), per-image full
    /// attention in the full-attention blocks, and the 2×2 merger.
    public static func vision(_ m: ModelGeometry, patches p: Int) -> Int {
        guard let v = m.vision, p > 0 else { return 0 }
        let d = v.hiddenSize
        let patchEmbed = 2 * v.valuesPerPatch * d * p
        let blockLinear = 2 * p * (d * 3 * d + d * d + 3 * d * v.intermediateSize)
        let fullBlocks = v.fullAttentionBlocks.filter { $0 >= 0 && $0 < v.depth }.count
        let windowEdge = v.windowSizePixels / v.patchSize
        let window = windowEdge * windowEdge
        let windowAttention = (v.depth - fullBlocks) * 4 * d * min(window, p) * p
        let fullAttention = fullBlocks * 4 * d * p * p
        let merged = d * v.spatialMergeSize * v.spatialMergeSize
        let merger = (p / (v.spatialMergeSize * v.spatialMergeSize)) * (2 * merged * merged + 2 * merged * m.hiddenSize)
        return patchEmbed + v.depth * blockLinear + windowAttention + fullAttention + merger
    }
}

/// Fractions of peak a roofline estimate assumes (1.0 = the ideal lower bound).
public struct RooflineEfficiency: Sendable, Hashable, Codable {
    /// Fraction of the dense bf16 peak reached by GEMMs and attention.
    public var computeFraction: Double
    /// Fraction of HBM bandwidth reached.
    public var bandwidthFraction: Double
    public init(computeFraction: Double = 1, bandwidthFraction: Double = 1) {
        self.computeFraction = computeFraction
        self.bandwidthFraction = bandwidthFraction
    }
}

/// Roofline time lower bounds of one step (docs/memory-model.md §6.3, §4.2): each phase takes
/// max(FLOPs / peak, bytes moved / bandwidth).
public struct RooflineEstimate: Sendable, Hashable, Codable {
    public var visionSeconds: Double = 0
    /// Prefill with nominal attention FLOPs (the convention of docs/memory-model.md §4.2).
    public var prefillSeconds: Double = 0
    /// Prefill with causal attention FLOPs.
    public var prefillCausalSeconds: Double = 0
    public var decodeSeconds: Double = 0
    /// Mean decode time per generated-token forward (0 without decode).
    public var decodeSecondsPerToken: Double = 0
    public var scoringSeconds: Double = 0
    public init() {}
    /// vision + prefill (nominal) + decode + scoring.
    public var totalSeconds: Double { visionSeconds + prefillSeconds + decodeSeconds + scoringSeconds }
}
