import StarKVModel

/// How attention is evaluated (docs/memory-model.md §3.5). `flash` stands for FlashAttention-2 and the
/// fused SDPA kernels (no score matrix); `eager` materialises scores with an fp32 softmax copy.
public enum AttentionImplementation: String, Sendable, Hashable, Codable, CaseIterable {
    case flash
    case eager
}

/// Which logits the prefill materialises (docs/memory-model.md §3.7).
public enum LogitsPolicy: String, Sendable, Hashable, Codable, CaseIterable {
    /// bf16 logits for every prompt position (transformers 4.54-era Qwen2.5-VL).
    case full
    /// Only the last position (`logits_to_keep=1`, vLLM).
    case lastToken
    /// Every position, plus a `.float()` up-cast copy (older transformers).
    case fullFloat32
}

/// How the agent carries the KV cache between steps (issue 4, "two agent loops").
public enum AgentLoop: String, Sendable, Hashable, Codable, CaseIterable {
    /// Every step re-prefills the whole prompt (the reference drivers, docs/algorithms.md §1.2).
    case rePrefill
    /// The compressed cache is carried across steps; each step prefills only its new tokens.
    case persistentCache
}

/// Which memory accounting produces allocated/reserved bytes.
public enum AllocatorKind: String, Sendable, Hashable, Codable, CaseIterable {
    /// The replica of PyTorch's CUDA caching allocator (docs/memory-model.md §5.1).
    case torchCaching
    /// A vLLM-style preallocated paged KV pool (docs/memory-model.md §5.4).
    case vllmPaged
    /// Requested bytes only (no allocator; fastest).
    case analytic
}

/// Storage type of the weights (docs/memory-model.md §1.3: bf16 in the evals, fp32 when loaded
/// without `torch_dtype` by older transformers).
public enum WeightDtype: String, Sendable, Hashable, Codable, CaseIterable {
    case bf16
    case fp32
    public var bytesPerParameter: Int { self == .bf16 ? 2 : 4 }
}

/// Settings of the vLLM-style paged KV pool (docs/memory-model.md §5.4).
public struct PagedPoolOptions: Sendable, Hashable, Codable {
    /// Tokens per block (vLLM DEFAULT_BLOCK_SIZE 16).
    public var blockTokens: Int
    /// `gpu_memory_utilization` (0.90 in older vLLM, 0.92 in current docs).
    public var gpuMemoryUtilization: Double
    /// Tokens of the profiling dummy prefill (`max_num_batched_tokens`).
    public var profileTokens: Int
    /// When true, compression copies survivors into fresh blocks; when false only blocks whose
    /// every token was evicted are freed.
    public var compactAfterEviction: Bool

    public init(blockTokens: Int = 16, gpuMemoryUtilization: Double = 0.90, profileTokens: Int = 8192, compactAfterEviction: Bool = false) {
        self.blockTokens = blockTokens
        self.gpuMemoryUtilization = gpuMemoryUtilization
        self.profileTokens = profileTokens
        self.compactAfterEviction = compactAfterEviction
    }
}

/// Everything fixed for a whole simulated trajectory.
///
/// Implements the configuration knobs docs/memory-model.md §4.1 asks traces to record: attention
/// implementation (LLM and ViT separately), stored KV heads, logits policy, weight dtype,
/// previous-step retention, and the allocator.
public struct MemorySimulationConfig: Sendable, Hashable, Codable {
    /// Model simulated (geometry comes from here, never from a trace's kept array).
    public var model: ModelGeometry
    public var accelerator: Accelerator
    public var llmAttention: AttentionImplementation
    public var visionAttention: AttentionImplementation
    /// KV heads actually stored: `numKVHeads` (4, original path) or `numQueryHeads` (28, the
    /// STaR-KV/GUI-KV compression path stores repeat_kv-expanded tensors, docs/memory-model.md §1.4).
    public var storedKVHeads: Int
    public var logits: LogitsPolicy
    public var loop: AgentLoop
    /// Whether the previous step's `generate` output (and its cache) stays alive during the next
    /// step (docs/memory-model.md §2.3). Only meaningful for `rePrefill`.
    public var retainPreviousCache: Bool
    public var allocator: AllocatorKind
    public var cachingOptions: CachingAllocatorOptions
    public var pagedOptions: PagedPoolOptions
    public var weightDtype: WeightDtype
    /// Observation window w of the compression scratch (docs/algorithms.md §1.3).
    public var compressionWindow: Int
    /// Call `torch.cuda.empty_cache()` after every step.
    public var emptyCacheBetweenSteps: Bool
    public var rooflineEfficiency: RooflineEfficiency

    public init(
        model: ModelGeometry = ModelPresets.qwen25VL7B, accelerator: Accelerator = .h100SXM,
        llmAttention: AttentionImplementation = .flash, visionAttention: AttentionImplementation? = nil,
        storedKVHeads: Int? = nil, logits: LogitsPolicy = .full, loop: AgentLoop = .rePrefill,
        retainPreviousCache: Bool = true, allocator: AllocatorKind = .torchCaching,
        cachingOptions: CachingAllocatorOptions = .init(), pagedOptions: PagedPoolOptions = .init(),
        weightDtype: WeightDtype = .bf16, compressionWindow: Int = 8, emptyCacheBetweenSteps: Bool = false,
        rooflineEfficiency: RooflineEfficiency = .init()
    ) {
        self.model = model
        self.accelerator = accelerator
        self.llmAttention = llmAttention
        self.visionAttention = visionAttention ?? llmAttention
        self.storedKVHeads = storedKVHeads ?? model.numKVHeads
        self.logits = logits
        self.loop = loop
        self.retainPreviousCache = retainPreviousCache
        self.allocator = allocator
        self.cachingOptions = cachingOptions
        self.pagedOptions = pagedOptions
        self.weightDtype = weightDtype
        self.compressionWindow = compressionWindow
        self.emptyCacheBetweenSteps = emptyCacheBetweenSteps
        self.rooflineEfficiency = rooflineEfficiency
    }

    /// Weight bytes (all parameters at `weightDtype`).
    public var weightBytes: Int { model.totalParameters * weightDtype.bytesPerParameter }

    /// Checks the configuration; throws a `MemorySimulationError` naming the field.
    public func validate() throws(MemorySimulationError) {
        let m = model
        guard m.numLayers > 0, m.hiddenSize > 0, m.intermediateSize > 0, m.numQueryHeads > 0,
            m.numKVHeads > 0, m.headDim > 0, m.vocabSize > 0, m.numLayers <= 1024, m.hiddenSize <= 1 << 20
        else { throw .invalidConfig(field: "model", reason: "geometry of '\(m.id)' has a non-positive or absurd dimension") }
        guard storedKVHeads > 0, storedKVHeads <= m.numQueryHeads else {
            throw .invalidConfig(field: "storedKVHeads", reason: "\(storedKVHeads) must be in 1...\(m.numQueryHeads) (query heads of \(m.id))")
        }
        guard accelerator.allocatorCapacityBytes > 0 else {
            throw .invalidConfig(field: "accelerator", reason: "\(accelerator.id) leaves no memory for the allocator")
        }
        guard pagedOptions.blockTokens > 0, pagedOptions.blockTokens <= 4096,
            pagedOptions.gpuMemoryUtilization > 0, pagedOptions.gpuMemoryUtilization <= 1
        else { throw .invalidConfig(field: "pagedOptions", reason: "block tokens must be 1...4096 and utilisation in (0, 1]") }
        guard compressionWindow >= 0, compressionWindow <= 1 << 16 else {
            throw .invalidConfig(field: "compressionWindow", reason: "\(compressionWindow) must be in 0...65536")
        }
        if let s = cachingOptions.maxSplitSizeBytes, s <= CachingAllocator.smallSize {
            throw .invalidConfig(field: "cachingOptions.maxSplitSizeBytes", reason: "must exceed 1 MiB (PyTorch requires > 1 MB)")
        }
    }
}

/// What one agent step contributes: token counts from the trace, kept counts and scoring FLOPs
/// from the policy.
///
/// Notation of docs/memory-model.md §3.0: L = promptTokens, v_i = visualTokensPerScreenshot (patches
/// p_i = 4·v_i), T = textTokens, g = generatedTokens.
public struct MemoryStepInput: Sendable, Hashable, Codable {
    /// Prefill length L (all prompt tokens this step).
    public var promptTokens: Int
    /// LLM visual tokens of each screenshot in the prompt, oldest first (current last).
    public var visualTokensPerScreenshot: [Int]
    /// Text tokens T (informational; L is authoritative).
    public var textTokens: Int
    /// Tokens generated this step g.
    public var generatedTokens: Int
    /// Prompt tokens kept per layer after compression, or nil for the full cache. Per-head
    /// policies pass the per-layer mean over heads (rounded up). When the count differs from
    /// the model's layer count (a reduced test geometry), the mean is used for every layer.
    public var keptTokensPerLayer: [Int]?
    /// Compression-stage scoring FLOPs computed by the policy (docs/algorithms.md §11).
    public var scoringFLOPs: Int
    /// Persistent loop only: how many of the last screenshots are new this step (default 1, or
    /// all on the first step).
    public var newScreenshots: Int?
    /// Optional sorted union over layers/heads of kept prompt positions (vLLM block occupancy).
    public var keptPositions: [Int]?

    public init(
        promptTokens: Int, visualTokensPerScreenshot: [Int], textTokens: Int = 0, generatedTokens: Int = 0,
        keptTokensPerLayer: [Int]? = nil, scoringFLOPs: Int = 0, newScreenshots: Int? = nil, keptPositions: [Int]? = nil
    ) {
        self.promptTokens = promptTokens
        self.visualTokensPerScreenshot = visualTokensPerScreenshot
        self.textTokens = textTokens
        self.generatedTokens = generatedTokens
        self.keptTokensPerLayer = keptTokensPerLayer
        self.scoringFLOPs = scoringFLOPs
        self.newScreenshots = newScreenshots
        self.keptPositions = keptPositions
    }
}

/// Errors of the memory simulator: a bad configuration or a step input that cannot describe a
/// real prompt. Messages name the step and field.
public enum MemorySimulationError: Error, Equatable, CustomStringConvertible {
    case invalidConfig(field: String, reason: String)
    case invalidStep(step: Int, field: String, reason: String)

    public var description: String {
        switch self {
        case .invalidConfig(let field, let reason):
            return "memory simulation configuration: \(field): \(reason)"
        case .invalidStep(let step, let field, let reason):
            return "memory simulation step \(step): \(field): \(reason)"
        }
    }
}

/// Largest prompt the simulator accepts (tokens); keeps event sizes far from overflow.
public let maximumSimulatedPromptTokens = 4_000_000
/// Largest number of generated tokens per step the simulator accepts.
public let maximumSimulatedGeneratedTokens = 100_000

extension MemoryStepInput {
    /// Validates against the model; throws naming `step` and the field.
    public func validate(step: Int, model: ModelGeometry) throws(MemorySimulationError) {
        func bad(_ field: String, _ reason: String) -> MemorySimulationError {
            .invalidStep(step: step, field: field, reason: reason)
        }
        guard promptTokens > 0, promptTokens <= maximumSimulatedPromptTokens else {
            throw bad("promptTokens", "\(promptTokens) must be in 1...\(maximumSimulatedPromptTokens)")
        }
        guard visualTokensPerScreenshot.count <= 1024 else {
            throw bad("visualTokensPerScreenshot", "\(visualTokensPerScreenshot.count) screenshots; at most 1024")
        }
        var visual = 0
        for (i, v) in visualTokensPerScreenshot.enumerated() {
            guard v > 0, v <= promptTokens else {
                throw bad("visualTokensPerScreenshot[\(i)]", "\(v) must be in 1...promptTokens (\(promptTokens))")
            }
            visual += v
        }
        guard visual <= promptTokens else {
            throw bad("visualTokensPerScreenshot", "sum \(visual) exceeds promptTokens \(promptTokens)")
        }
        if !visualTokensPerScreenshot.isEmpty && model.vision == nil {
            throw bad("visualTokensPerScreenshot", "model \(model.id) has no vision tower")
        }
        guard textTokens >= 0, textTokens <= promptTokens else {
            throw bad("textTokens", "\(textTokens) must be in 0...promptTokens (\(promptTokens))")
        }
        guard generatedTokens >= 0, generatedTokens <= maximumSimulatedGeneratedTokens else {
            throw bad("generatedTokens", "\(generatedTokens) must be in 0...\(maximumSimulatedGeneratedTokens)")
        }
        guard scoringFLOPs >= 0 else { throw bad("scoringFLOPs", "\(scoringFLOPs) is negative") }
        if let kept = keptTokensPerLayer {
            guard !kept.isEmpty, kept.count <= 4096 else {
                throw bad("keptTokensPerLayer", "\(kept.count) entries; need 1...4096 (one per layer)")
            }
            for (l, k) in kept.enumerated() {
                guard k >= 0, k <= promptTokens else {
                    throw bad("keptTokensPerLayer[\(l)]", "\(k) must be in 0...promptTokens (\(promptTokens))")
                }
            }
        }
        if let n = newScreenshots, n < 0 || n > visualTokensPerScreenshot.count {
            throw bad("newScreenshots", "\(n) must be in 0...\(visualTokensPerScreenshot.count)")
        }
        if let positions = keptPositions {
            guard positions.count <= promptTokens else {
                throw bad("keptPositions", "\(positions.count) positions exceed promptTokens \(promptTokens)")
            }
            var last = -1
            for (i, p) in positions.enumerated() {
                guard p > last, p < promptTokens else {
                    throw bad("keptPositions[\(i)]", "\(p) must be increasing and below promptTokens (\(promptTokens))")
                }
                last = p
            }
        }
    }

    /// Kept tokens per layer resolved against `numLayers`: nil for the full cache; the given
    /// array when it has one entry per layer; otherwise the mean (rounded up) for every layer.
    public func resolvedKeptPerLayer(numLayers: Int) -> [Int]? {
        guard let kept = keptTokensPerLayer, !kept.isEmpty else { return nil }
        if kept.count == numLayers { return kept }
        let total = kept.reduce(0, +)
        let mean = (total + kept.count - 1) / kept.count
        return Array(repeating: mean, count: numLayers)
    }
}
