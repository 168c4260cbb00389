/// The knobs of the synthetic agent's attention, hidden-state and key model, in logit units
/// (natural log of unnormalised attention weight) unless stated. Defaults are what
/// `starkv record synth` uses; docs/synthetic-agent.md explains each and what it produces.
public struct SynthParameters: Sendable, Hashable {
    // Text keys.
    /// Logit of the first prompt token (the attention sink), before the per-head jitter.
    public var sinkLogit: Double = 9.0
    /// ± range of the per-head sink jitter.
    public var sinkJitter: Double = 1.5
    public var templateLogit: Double = 0.5
    public var visionMarkerLogit: Double = 1.0
    public var systemLogit: Double = -0.5
    public var instructionLogit: Double = 3.0
    public var historyLogit: Double = 1.5
    /// Logit lost per step of age of a history reply.
    public var historyAgeDecay: Double = 0.25
    public var generationPromptLogit: Double = 1.5
    /// Std of the per-token, per-head Gaussian noise on text logits (log-normal weights).
    public var textNoise: Double = 1.0

    // Visual keys.
    public var backgroundLogit: Double = -3.0
    /// Amplitude of the smooth 2-D saliency field (low-resolution lattice + centre bias).
    public var smoothAmplitude: Double = 0.8
    /// Logit of an element's tokens by kind, indexed by `ElementKind.rawValue`.
    public var elementLogit: [Double] = [-0.8, 0.3, 0.8, 0.8, 0.6, 0.0]
    /// Added as `interestAmplitude × interest` (interest ∈ [0, 1] per element).
    public var interestAmplitude: Double = 1.5
    /// Added on elements whose role is the KV group's preferred role at this layer.
    public var rolePreference: Double = 1.8
    /// Added on elements of the other roles.
    public var roleAversion: Double = -0.6
    /// Layers per block that share one group→role assignment (0 = numLayers / 7, at least 1).
    public var roleBlockLayers: Int = 0
    /// Added on the current step's target element in the current screenshot.
    public var targetBoost: Double = 3.5
    /// Share of `targetBoost` the current target gets where it appears in history screenshots.
    public var historyTargetShare: Double = 0.6
    /// Added on every token of the current screenshot.
    public var currentFrameBonus: Double = 0.5
    /// Logit lost per frame of age by tokens of history screenshots, times (1 − relevance).
    public var frameAgeDecay: Double = 0.7
    /// Share of a 2-D blur (two passes of [1, 2, 1]/4 each way over the merged grid) mixed into
    /// each group's visual logits, standing in for the vision tower's mixing of neighbouring
    /// patches; makes attention smooth in 2-D rather than along the raster order.
    public var spatialBlur: Double = 0.7
    /// Std of the per-head noise on visual logits, keyed by token content (so an unchanged
    /// token keeps its noise across screenshots).
    public var visualNoise: Double = 0.35
    /// Std of a per-element, per-group, per-layer logit offset (spatially coherent noise:
    /// one value over the whole element).
    public var elementNoise: Double = 0.5

    // Sharpness (inverse temperature) multiplying every logit.
    /// Sharpness of the first layers (broad attention); used for layer ℓ < max(1, N_l / 14),
    /// i.e. layers 0-1 of a 28-layer model, layer 0 of a 4-layer one.
    public var earlyLayerSharpness: [Double] = [0.35, 0.7]
    public var lastLayerSharpness: Double = 1.2
    /// Middle layers: middleLayerSharpness ± layerSharpnessSpread (seeded per layer).
    public var middleLayerSharpness: Double = 1.4
    public var layerSharpnessSpread: Double = 0.2
    /// Per head: 1 ± this (seeded).
    public var headSharpnessSpread: Double = 0.15
    /// Sharpness multiplier changes as exp(−entropyDrift · (progress − 0.5)) along the
    /// trajectory (progress 0 → 1): positive = attention grows flatter (entropy rises).
    public var entropyDrift: Double = 0.3
    /// Std of the per-step random part of log sharpness.
    public var stepSharpnessNoise: Double = 0.05

    // Recency kernels, weights relative to the sink key's weight.
    /// Post-vision (generation prompt) queries: weight at distance d = postRecency · decay^d.
    public var postRecency: Double = 0.02
    /// Text queries (system, instruction, history rows).
    public var textRecency: Double = 0.15
    /// Visual queries: previous tokens on the same row and the row above (2-D locality).
    public var visualRecency: Double = 0.08
    public var recencyDecay: Double = 0.85
    /// Multiplier of visual keys seen from text queries (before the image, they see none).
    public var textQueryVisualWeight: Double = 0.5

    // Decoding (the G generated tokens of the full-cache run).
    /// Extra logit on the current target for generated tokens (the coordinates they write).
    public var decodeTargetBoost: Double = 2.0
    /// Weight of each of the last 16 generated keys (relative to the sink) for a generated query.
    public var decodeSelfWeight: Double = 0.03

    // Hidden-state norms (attention input after RMSNorm) and GUI-KV residuals.
    public var hiddenNormBase: Double = 18.0
    public var hiddenNormPerLayer: Double = 1.5
    /// Relative norm increase on element tokens (times kind strength).
    public var hiddenNormContrast: Double = 0.45
    public var hiddenNormNoise: Double = 0.05
    /// Residual ‖k − UUᵀk‖ / ‖k‖ for repeated and for changed previous-frame tokens.
    public var repeatedResidual: Double = 0.22
    public var changedResidual: Double = 0.75
    public var keyNormBase: Double = 14.0

    public init() {}

    /// Hidden-norm strength of an element kind (0 = background).
    func hiddenStrength(_ kind: ElementKind) -> Double {
        switch kind {
        case .bar: return 0.35
        case .text: return 0.9
        case .button: return 1.0
        case .icon: return 1.1
        case .field: return 0.8
        case .image: return 0.7
        }
    }
}
