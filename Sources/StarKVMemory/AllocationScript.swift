import StarKVModel

/// What a live tensor is for — the stacked terms of a memory timeline (docs/memory-model.md §3, §8
/// "beat them on" (1)).
public enum MemoryCategory: Int, Sendable, Hashable, Codable, CaseIterable {
    case weights
    /// This step's KV cache (and the carried cache in the persistent loop).
    case kvNow
    /// The previous step's cache, still referenced by the retained `generate` output.
    case kvPrevious
    case logits
    /// pixel_values, input ids, image embeddings, inputs_embeds, position ids, RoPE tables.
    case inputs
    /// The eager 4-D additive causal mask.
    case attentionMask
    /// Residual stream, normed input, q/k/v, attention output, o_proj (per decoder layer).
    case activations
    /// SwiGLU gate/up/act/product/down.
    case mlpTransient
    /// Score matrices, softmax copies, repeat_kv copies, log-sum-exp.
    case attentionTransient
    /// Every vision-tower temporary.
    case vitTransient
    /// Window scores, pooled scores, top-k indices.
    case compressionScratch
    /// Per-token decode activations.
    case decodeTransient
}

/// Where in a step an event happens.
public enum MemoryPhase: Int, Sendable, Hashable, Codable, CaseIterable, Comparable {
    case load, inputs, vision, embed, prefill, lmHead, decode, stepEnd
    public static func < (a: MemoryPhase, b: MemoryPhase) -> Bool { a.rawValue < b.rawValue }
    public var label: String {
        switch self {
        case .load: return "load"
        case .inputs: return "inputs"
        case .vision: return "vision"
        case .embed: return "embed"
        case .prefill: return "prefill"
        case .lmHead: return "lm_head"
        case .decode: return "decode"
        case .stepEnd: return "step_end"
        }
    }
}

/// One allocation, free, or re-labelling of a tensor, in program order.
///
/// Implements docs/memory-model.md §5.3 ("a per-layer ordered event script … derived from §3").
public struct AllocationEvent: Sendable, Hashable {
    public enum Kind: UInt8, Sendable, Hashable { case alloc, free, retag }
    public var kind: Kind
    public var tensor: Int
    public var bytes: Int
    /// Category of the tensor (for `retag`, the new one).
    public var category: MemoryCategory
    /// For `retag`, the old category.
    public var previousCategory: MemoryCategory
    public var phase: MemoryPhase
    /// Decoder layer, ViT block or decode token index; -1 when not applicable.
    public var index: Int32

    public init(kind: Kind, tensor: Int, bytes: Int, category: MemoryCategory, previousCategory: MemoryCategory? = nil, phase: MemoryPhase, index: Int32 = -1) {
        self.kind = kind
        self.tensor = tensor
        self.bytes = bytes
        self.category = category
        self.previousCategory = previousCategory ?? category
        self.phase = phase
        self.index = index
    }

    /// "prefill layer 27", "vision block 7", "decode token 3", "lm_head".
    public var location: String {
        guard index >= 0 else { return phase.label }
        switch phase {
        case .prefill: return "prefill layer \(index)"
        case .vision: return "vision block \(index)"
        case .decode: return "decode token \(index)"
        default: return "\(phase.label) \(index)"
        }
    }
}

/// A live tensor the script refers to later.
public struct TensorRef: Sendable, Hashable, Codable {
    public var id: Int
    public var bytes: Int
    public var category: MemoryCategory
}

/// Appends events with fresh tensor ids.
struct ScriptWriter {
    var events: [AllocationEvent] = []
    var nextID: Int
    var phase: MemoryPhase = .inputs
    var index: Int32 = -1

    init(nextID: Int) { self.nextID = nextID }

    mutating func alloc(_ bytes: Int, _ category: MemoryCategory) -> TensorRef {
        let ref = TensorRef(id: nextID, bytes: max(0, bytes), category: category)
        nextID += 1
        events.append(AllocationEvent(kind: .alloc, tensor: ref.id, bytes: ref.bytes, category: category, phase: phase, index: index))
        return ref
    }

    mutating func free(_ ref: TensorRef) {
        events.append(AllocationEvent(kind: .free, tensor: ref.id, bytes: ref.bytes, category: ref.category, phase: phase, index: index))
    }

    mutating func free(_ refs: TensorRef?...) { for r in refs { if let r { free(r) } } }

    mutating func retag(_ ref: TensorRef, to category: MemoryCategory) -> TensorRef {
        events.append(AllocationEvent(kind: .retag, tensor: ref.id, bytes: ref.bytes, category: category, previousCategory: ref.category, phase: phase, index: index))
        return TensorRef(id: ref.id, bytes: ref.bytes, category: category)
    }
}

extension ScriptWriter {
    /// The second half of a decoder layer or ViT block, in the order PyTorch allocates it: RMSNorm
    /// (fp32 temporary, bf16 output), SwiGLU MLP (gate, act, up, product, down) and the residual
    /// add. Frees `residual` and returns the block's output.
    mutating func normSwiGLUResidual(
        _ residual: TensorRef, rows: Int, hidden: Int, intermediate: Int,
        activations: MemoryCategory, transient: MemoryCategory
    ) -> TensorRef {
        let normTemp = alloc(rows * hidden * 4, activations)
        let normed = alloc(rows * hidden * 2, activations)
        free(normTemp)
        let gate = alloc(rows * intermediate * 2, transient)
        let act = alloc(rows * intermediate * 2, transient)
        free(gate)
        let up = alloc(rows * intermediate * 2, transient)
        let product = alloc(rows * intermediate * 2, transient)
        free(act, up)
        let down = alloc(rows * hidden * 2, transient)
        free(product)
        let output = alloc(rows * hidden * 2, activations)
        free(residual, down, normed)
        return output
    }
}

/// The weight tensors of a model, one allocation per parameter tensor, in load order.
///
/// Sums to `ModelGeometry.totalParameters` × bytes per parameter (docs/memory-model.md §1.3).
public func weightTensorBytes(_ m: ModelGeometry, bytesPerParameter b: Int) -> [Int] {
    var sizes: [Int] = []
    let h = m.hiddenSize
    sizes.append(m.vocabSize * h * b)
    for _ in 0..<m.numLayers {
        let qOut = m.numQueryHeads * m.headDim, kvOut = m.numKVHeads * m.headDim
        sizes.append(h * qOut * b)
        if m.qkvBias { sizes.append(qOut * b) }
        sizes.append(h * kvOut * b)
        if m.qkvBias { sizes.append(kvOut * b) }
        sizes.append(h * kvOut * b)
        if m.qkvBias { sizes.append(kvOut * b) }
        sizes.append(qOut * h * b)
        sizes.append(h * m.intermediateSize * b)
        sizes.append(h * m.intermediateSize * b)
        sizes.append(m.intermediateSize * h * b)
        sizes.append(h * b)
        sizes.append(h * b)
    }
    sizes.append(h * b)
    if !m.tiedEmbeddings { sizes.append(m.vocabSize * h * b) }
    if let v = m.vision {
        let d = v.hiddenSize, i = v.intermediateSize
        sizes.append(v.valuesPerPatch * d * b)
        for _ in 0..<v.depth {
            sizes.append(contentsOf: [3 * d * d * b, 3 * d * b, d * d * b, d * b])
            sizes.append(contentsOf: [d * i * b, i * b, d * i * b, i * b, i * d * b, d * b])
            sizes.append(contentsOf: [d * b, d * b])
        }
        let merged = d * v.spatialMergeSize * v.spatialMergeSize
        sizes.append(contentsOf: [d * b, merged * merged * b, merged * b, merged * h * b, h * b])
    }
    return sizes
}

/// State the script carries from one step to the next (explicit, per the style rules).
struct ScriptState: Sendable {
    var nextTensorID = 0
    var weights: [TensorRef] = []
    /// Previous step's cache still alive (re-prefill loop with retention).
    var previousCache: [TensorRef] = []
    /// Per-layer K and V of the cache carried by the persistent loop.
    var carriedKeys: [TensorRef] = []
    var carriedValues: [TensorRef] = []
    /// Tokens per layer in the carried cache.
    var carriedTokens: [Int] = []
    var previousPromptTokens = 0
}

/// Per-step quantities the simulator reports next to the memory.
struct StepShape: Sendable {
    var prefilledTokens: Int
    var pastTokens: Int
    var encodedPatches: [Int]
    var keptPerLayer: [Int]
    var contextPerLayerAfterPrefill: [Int]
    var decodePasses: Int
    var logitRows: Int
}

/// Builds the allocation events of one agent step (docs/memory-model.md §3 and §5.3), following the
/// forward code of transformers' Qwen2.5-VL (vision tower, decoder layers, LM head) and
/// `generate`'s decode loop with DynamicCache concatenation.
enum StepScriptBuilder {
    static func weightsScript(config: MemorySimulationConfig, state: inout ScriptState) -> [AllocationEvent] {
        var w = ScriptWriter(nextID: state.nextTensorID)
        w.phase = .load
        for bytes in weightTensorBytes(config.model, bytesPerParameter: config.weightDtype.bytesPerParameter) {
            state.weights.append(w.alloc(bytes, .weights))
        }
        state.nextTensorID = w.nextID
        return w.events
    }

    static func shape(config: MemorySimulationConfig, input: MemoryStepInput, state: ScriptState, isFirstStep: Bool) -> StepShape {
        let m = config.model
        let L = input.promptTokens
        let patchesPerToken = (m.vision?.spatialMergeSize ?? 2) * (m.vision?.spatialMergeSize ?? 2)
        let allPatches = input.visualTokensPerScreenshot.map { $0 * patchesPerToken }
        var q = L, past = 0
        var encoded = allPatches
        if config.loop == .persistentCache && !state.carriedTokens.isEmpty {
            let newShots = input.newScreenshots ?? min(1, allPatches.count)
            encoded = Array(allPatches.suffix(newShots))
            let newVisual = input.visualTokensPerScreenshot.suffix(newShots).reduce(0, +)
            q = min(L, max(newVisual + 2 * newShots + 1, L - state.previousPromptTokens))
            past = state.carriedTokens.max() ?? 0
        }
        let context = (0..<m.numLayers).map { l in
            (config.loop == .persistentCache && !state.carriedTokens.isEmpty ? state.carriedTokens[l] : 0) + q
        }
        let kept: [Int]
        if let resolved = input.resolvedKeptPerLayer(numLayers: m.numLayers) {
            kept = zip(resolved, context).map { min($0, $1) }
        } else {
            kept = context
        }
        let rows = config.logits == .lastToken ? 1 : q
        return StepShape(
            prefilledTokens: q, pastTokens: past, encodedPatches: encoded, keptPerLayer: kept,
            contextPerLayerAfterPrefill: context, decodePasses: max(0, input.generatedTokens - 1), logitRows: rows)
    }

    // swiftlint:disable:next function_body_length
    static func stepScript(config: MemorySimulationConfig, input: MemoryStepInput, shape: StepShape, state: inout ScriptState) -> [AllocationEvent] {
        let m = config.model
        let H = m.hiddenSize, I = m.intermediateSize, V = m.vocabSize
        let HQ = m.numQueryHeads, HKV = m.numKVHeads, HD = m.headDim, hs = config.storedKVHeads
        let L = input.promptTokens
        let q = shape.prefilledTokens
        let persistent = config.loop == .persistentCache
        var w = ScriptWriter(nextID: state.nextTensorID)

        // The previous step's cache becomes "previous" (it is still referenced by `outputs`).
        w.phase = .inputs
        state.previousCache = state.previousCache.map { w.retag($0, to: .kvPrevious) }

        // Processor outputs kept in the `inputs` dict for the whole step.
        let P = shape.encodedPatches.reduce(0, +)
        let allPatches = input.visualTokensPerScreenshot.reduce(0, +) * 4
        let inputIDs = w.alloc(L * 8, .inputs)
        let attentionMask2D = w.alloc(L * 8, .inputs)
        let valuesPerPatch = m.vision?.valuesPerPatch ?? 1176
        let pixelValues: TensorRef? = allPatches > 0 ? w.alloc(allPatches * valuesPerPatch * 4, .inputs) : nil
        let gridTHW: TensorRef? = input.visualTokensPerScreenshot.isEmpty ? nil : w.alloc(input.visualTokensPerScreenshot.count * 3 * 8, .inputs)

        // Vision tower.
        var imageEmbeds: TensorRef?
        if P > 0, let v = m.vision {
            w.phase = .vision
            imageEmbeds = visionScript(&w, config: config, vision: v, patches: shape.encodedPatches)
        }

        // Embedding and position tensors of the language model.
        w.phase = .embed
        w.index = -1
        let e0 = w.alloc(q * H * 2, .inputs)
        let imageMask = w.alloc(q, .inputs)
        let inputsEmbeds = w.alloc(q * H * 2, .inputs)
        w.free(e0, imageMask)
        let positionIDs = w.alloc(3 * q * 8, .inputs)
        let ropeCos = w.alloc(3 * q * HD * 2, .inputs)
        let ropeSin = w.alloc(3 * q * HD * 2, .inputs)
        let keysPerQuery = (0..<m.numLayers).map { shape.contextPerLayerAfterPrefill[$0] }
        let maxKeys = keysPerQuery.max() ?? q
        let mask4D: TensorRef? = config.llmAttention == .eager ? w.alloc(q * maxKeys * 2, .attentionMask) : nil

        // Decoder layers.
        w.phase = .prefill
        var residual = inputsEmbeds
        var newKeys: [TensorRef] = []
        var newValues: [TensorRef] = []
        let compressing = input.keptTokensPerLayer != nil
        for l in 0..<m.numLayers {
            w.index = Int32(l)
            let keys = keysPerQuery[l]
            let kept = shape.keptPerLayer[l]
            let t = w.alloc(q * H * 4, .activations)
            let normed = w.alloc(q * H * 2, .activations)
            w.free(t)
            let qProj = w.alloc(q * HQ * HD * 2, .activations)
            let kProj = w.alloc(q * HKV * HD * 2, .activations)
            // Original path without compression and without a carried cache: DynamicCache keeps
            // the RoPE'd key and the value tensors themselves (no copy).
            let storesProjections = hs == HKV && !compressing && !(persistent && !state.carriedKeys.isEmpty)
            let vProj = w.alloc(q * HKV * HD * 2, storesProjections ? .kvNow : .activations)
            let qRot = w.alloc(q * HQ * HD * 2, .activations)
            let kRot = w.alloc(q * HKV * HD * 2, storesProjections ? .kvNow : .activations)
            w.free(qProj, kProj)

            // Full-length K/V of this layer at the stored width (repeat_kv in the compression path).
            var fullK: TensorRef? = nil, fullV: TensorRef? = nil
            var fullIsCache = false
            if persistent && !state.carriedKeys.isEmpty {
                // torch.cat(carried, new) at the stored width.
                let catK = w.alloc(keys * hs * HD * 2, .kvNow)
                w.free(state.carriedKeys[l])
                let catV = w.alloc(keys * hs * HD * 2, .kvNow)
                w.free(state.carriedValues[l])
                fullK = catK
                fullV = catV
                fullIsCache = true
            } else if hs != HKV {
                let stored = !compressing
                fullK = w.alloc(keys * hs * HD * 2, stored ? .kvNow : .attentionTransient)
                fullV = w.alloc(keys * hs * HD * 2, stored ? .kvNow : .attentionTransient)
                fullIsCache = stored
            }

            // Compression: window scores, pooled scores, top-k, gather (docs/memory-model.md §3.9).
            var cacheK: TensorRef, cacheV: TensorRef
            if compressing {
                let window = min(config.compressionWindow, keys)
                let scores = w.alloc(HQ * window * keys * 4, .compressionScratch)
                let scoresBF16 = w.alloc(HQ * window * keys * 2, .compressionScratch)
                w.free(scores)
                let pooled = w.alloc(HQ * keys * 2, .compressionScratch)
                let indices = w.alloc(max(1, hs * kept) * 8, .compressionScratch)
                w.free(scoresBF16)
                cacheK = w.alloc(kept * hs * HD * 2, .kvNow)
                cacheV = w.alloc(kept * hs * HD * 2, .kvNow)
                w.free(pooled, indices)
            } else if let fk = fullK, let fv = fullV, fullIsCache {
                cacheK = fk
                cacheV = fv
            } else {
                cacheK = kRot
                cacheV = vProj
            }

            // Attention over `keys` keys for q queries (prefill output uses the full K/V).
            let attnOut: TensorRef
            switch config.llmAttention {
            case .flash:
                let lse = w.alloc(HQ * q * 4, .attentionTransient)
                attnOut = w.alloc(q * HQ * HD * 2, .activations)
                w.free(lse)
            case .eager:
                var repK: TensorRef? = nil, repV: TensorRef? = nil
                if fullK == nil || hs != HQ {
                    repK = w.alloc(keys * HQ * HD * 2, .attentionTransient)
                    repV = w.alloc(keys * HQ * HD * 2, .attentionTransient)
                }
                let e = HQ * q * keys
                let scores = w.alloc(2 * e, .attentionTransient)
                let scaled = w.alloc(2 * e, .attentionTransient)
                w.free(scores)
                let masked = w.alloc(2 * e, .attentionTransient)
                w.free(scaled)
                let upcast = w.alloc(4 * e, .attentionTransient)
                let softmax = w.alloc(4 * e, .attentionTransient)
                w.free(upcast)
                let probs = w.alloc(2 * e, .attentionTransient)
                w.free(softmax, masked)
                attnOut = w.alloc(q * HQ * HD * 2, .activations)
                w.free(probs)
                w.free(repK, repV)
            }
            w.free(qRot)
            if cacheK.id != kRot.id { w.free(kRot, vProj) }
            if let fk = fullK, fk.id != cacheK.id { w.free(fk) }
            if let fv = fullV, fv.id != cacheV.id { w.free(fv) }
            newKeys.append(cacheK)
            newValues.append(cacheV)

            let oProj = w.alloc(q * H * 2, .activations)
            w.free(attnOut)
            let afterAttention = w.alloc(q * H * 2, .activations)
            w.free(oProj, normed)
            if residual.id != inputsEmbeds.id { w.free(residual) }
            residual = afterAttention

            residual = w.normSwiGLUResidual(residual, rows: q, hidden: H, intermediate: I,
                                            activations: .activations, transient: .mlpTransient)
        }

        // Final norm and LM head; generate copies the last row to fp32 and drops the rest.
        w.phase = .lmHead
        w.index = -1
        let tf = w.alloc(q * H * 4, .activations)
        let finalNormed = w.alloc(q * H * 2, .activations)
        w.free(tf, residual)
        let logits = w.alloc(shape.logitRows * V * 2, .logits)
        let logitsF32: TensorRef? = config.logits == .fullFloat32 ? w.alloc(shape.logitRows * V * 4, .logits) : nil
        w.free(finalNormed, inputsEmbeds, imageEmbeds, positionIDs, ropeCos, ropeSin, mask4D)
        let nextTokenLogits = w.alloc(V * 4, .logits)
        w.free(logits, logitsF32)
        let probs = w.alloc(V * 4, .logits)
        w.free(probs, nextTokenLogits)

        // Decode: one forward per generated token after the first; DynamicCache concatenates.
        w.phase = .decode
        var contexts = shape.keptPerLayer
        for t in 0..<shape.decodePasses {
            w.index = Int32(t + 1)
            let embed = w.alloc(H * 2, .decodeTransient)
            for l in 0..<m.numLayers {
                let mlp = w.alloc(3 * I * 2, .decodeTransient)
                w.free(mlp)
                let grownK = w.alloc((contexts[l] + 1) * hs * HD * 2, .kvNow)
                w.free(newKeys[l])
                let grownV = w.alloc((contexts[l] + 1) * hs * HD * 2, .kvNow)
                w.free(newValues[l])
                newKeys[l] = grownK
                newValues[l] = grownV
                contexts[l] += 1
            }
            let stepLogits = w.alloc(V * 2, .logits)
            let stepLogitsF32: TensorRef? = config.logits == .fullFloat32 ? w.alloc(V * 4, .logits) : nil
            let copy = w.alloc(V * 4, .logits)
            w.free(stepLogits, stepLogitsF32, copy, embed)
        }

        // End of step: the inputs dict is replaced, the previous `outputs` is dropped.
        w.phase = .stepEnd
        w.index = -1
        w.free(inputIDs, attentionMask2D, pixelValues, gridTHW)
        for ref in state.previousCache { w.free(ref) }
        state.previousCache = []
        switch config.loop {
        case .rePrefill:
            if config.retainPreviousCache {
                state.previousCache = newKeys + newValues
            } else {
                for ref in newKeys + newValues { w.free(ref) }
            }
            state.carriedKeys = []
            state.carriedValues = []
            state.carriedTokens = []
        case .persistentCache:
            state.carriedKeys = newKeys
            state.carriedValues = newValues
            state.carriedTokens = contexts
        }
        state.previousPromptTokens = L
        state.nextTensorID = w.nextID
        return w.events
    }

    /// Vision tower (docs/memory-model.md §3.4, §3.5): patch embedding, 2-D RoPE tables, window
    /// reordering, `depth` blocks (window or per-image full attention), merger. Returns the
    /// image embeddings, which stay alive while the LLM runs.
    static func visionScript(_ w: inout ScriptWriter, config: MemorySimulationConfig, vision v: VisionGeometry, patches: [Int]) -> TensorRef {
        let m = config.model
        let P = patches.reduce(0, +)
        let d = v.hiddenSize, vi = v.intermediateSize, heads = v.numHeads
        let headDim = d / max(1, heads)
        let merge = v.spatialMergeSize * v.spatialMergeSize
        let tokens = P / merge
        w.index = -1
        let pixelsBF16 = w.alloc(P * v.valuesPerPatch * 2, .vitTransient)
        var hidden = w.alloc(P * d * 2, .vitTransient)
        w.free(pixelsBF16)
        let rotary = w.alloc(P * (headDim / 2) * 4, .vitTransient)
        let emb = w.alloc(P * headDim * 4, .vitTransient)
        w.free(rotary)
        let cos = w.alloc(P * headDim * 4, .vitTransient)
        let sin = w.alloc(P * headDim * 4, .vitTransient)
        let reordered = w.alloc(P * d * 2, .vitTransient)
        w.free(hidden)
        hidden = reordered
        let windowEdge = v.windowSizePixels / max(1, v.patchSize)
        let windowPatches = windowEdge * windowEdge
        let largestImage = patches.max() ?? 0
        for b in 0..<v.depth {
            w.index = Int32(b)
            let t = w.alloc(P * d * 4, .vitTransient)
            let n1 = w.alloc(P * d * 2, .vitTransient)
            w.free(t)
            let qkv = w.alloc(P * 3 * d * 2, .vitTransient)
            let qf = w.alloc(P * d * 4, .vitTransient)
            let kf = w.alloc(P * d * 4, .vitTransient)
            let t1 = w.alloc(P * d * 4, .vitTransient)
            let t2 = w.alloc(P * d * 4, .vitTransient)
            w.free(t1, t2)
            let qr = w.alloc(P * d * 2, .vitTransient)
            let kr = w.alloc(P * d * 2, .vitTransient)
            w.free(qf, kf)
            let out: TensorRef
            switch config.visionAttention {
            case .flash:
                let lse = w.alloc(heads * P * 4, .vitTransient)
                out = w.alloc(P * d * 2, .vitTransient)
                w.free(lse)
            case .eager:
                // Segments run one after another; the largest one dominates.
                let segment = v.fullAttentionBlocks.contains(b) ? largestImage : min(windowPatches, largestImage)
                let e = heads * segment * segment
                let scores = w.alloc(2 * e, .vitTransient)
                let scaled = w.alloc(2 * e, .vitTransient)
                w.free(scores)
                let upcast = w.alloc(4 * e, .vitTransient)
                let softmax = w.alloc(4 * e, .vitTransient)
                w.free(upcast)
                let probs = w.alloc(2 * e, .vitTransient)
                w.free(softmax, scaled)
                out = w.alloc(P * d * 2, .vitTransient)
                w.free(probs)
            }
            w.free(qr, kr, qkv)
            let proj = w.alloc(P * d * 2, .vitTransient)
            w.free(out)
            let h1 = w.alloc(P * d * 2, .vitTransient)
            w.free(hidden, proj, n1)
            hidden = h1
            hidden = w.normSwiGLUResidual(hidden, rows: P, hidden: d, intermediate: vi,
                                          activations: .vitTransient, transient: .vitTransient)
        }
        w.index = -1
        let ln = w.alloc(P * d * 2, .vitTransient)
        w.free(hidden)
        let fc1 = w.alloc(tokens * d * merge * 2, .vitTransient)
        let gelu = w.alloc(tokens * d * merge * 2, .vitTransient)
        w.free(fc1, ln)
        let fc2 = w.alloc(tokens * m.hiddenSize * 2, .vitTransient)
        w.free(gelu)
        let embeds = w.alloc(tokens * m.hiddenSize * 2, .inputs)
        w.free(fc2, emb, cos, sin)
        return embeds
    }
}
