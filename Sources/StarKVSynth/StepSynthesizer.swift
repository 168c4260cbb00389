import StarKVModel
import StarKVTrace

/// Query-row classes of the attention model: each class sees keys with its own multipliers
/// and recency kernel (docs/synthetic-agent.md "Attention model").
enum QueryClass: Int {
    case text = 0, visual = 1, post = 2
}

/// A recency kernel: extra weight (relative to the sink key) on the key `offset` tokens
/// before the query (offset 0 = the query itself).
struct RecencyKernel {
    var offsets: [Int]
    var weights: [Double]
    /// weight by offset, 0 where none (length maxOffset + 1).
    var dense: [Double]
    /// Cumulative weight of offsets ≤ d (for rows near the start).
    var cumulative: [Double]

    init(pairs: [(Int, Double)]) {
        let maxOffset = pairs.map { $0.0 }.max() ?? 0
        var dense = [Double](repeating: 0, count: maxOffset + 1)
        for (d, w) in pairs { dense[d] += w }
        self.dense = dense
        offsets = dense.indices.filter { dense[$0] != 0 }
        weights = offsets.map { dense[$0] }
        var cumulative = dense
        for d in 1..<max(1, cumulative.count) { cumulative[d] += cumulative[d - 1] }
        self.cumulative = cumulative
    }

    /// Total kernel weight available to a query at position i.
    @inline(__always)
    func mass(at i: Int) -> Double { cumulative[min(i, cumulative.count - 1)] }

    @inline(__always)
    func weight(offset d: Int) -> Double { d < dense.count ? dense[d] : 0 }
}

/// Generates one step's record: token layout, image table and every field of the trace's
/// fidelity, from the per-head attention model
///   A_h[i, j] = (β_h,c(i)[j] + κ_c(i)[i − j]) / Z_h(i),   j ≤ i,
/// where β is a per-key weight exp(sharpness · logit) (one exponential per head and key),
/// c(i) the query class with its key multipliers and recency kernel κ, and Z the row's
/// normaliser. Every field is an exact function of these rows, computed with prefix and
/// suffix sums in O(H·L) per field per layer (docs/synthetic-agent.md "Fields").
struct StepSynthesizer {
    let agent: SyntheticAgent
    let k: Int
    let layout: PromptLayout
    let L: Int
    let p: SynthParameters
    let classOf: [UInt8]
    let isVisual: [Bool]
    /// Per token: logit of text tokens (group-independent); visual tokens use `visual*`.
    let textLogit: [Double]
    /// Per visual token (span order over all images): prompt position and attributes.
    let visualPositions: [Int]
    let visualRole: [Int8]
    let visualKind: [Int8]
    /// Visual logit before the 2-D blur (background, smooth field, element kind and
    /// interest, age decay) and the sharp part added after it (target boost).
    let visualBase: [Double]
    let visualBoost: [Double]
    let visualContent: [UInt64]
    /// Element id (−1 background) and version, for per-element noise.
    let visualElement: [Int64]
    let visualTarget: [Bool]
    let visualRepeated: [Bool]
    let visualIsCurrent: [Bool]
    let visualSmooth: [Double]
    let visualInterest: [Double]
    let kernels: [RecencyKernel]
    let stepSharpness: Double

    init(agent: SyntheticAgent, step k: Int) {
        self.agent = agent
        self.k = k
        let p = agent.config.parameters
        self.p = p
        let layout = agent.layout(step: k)
        self.layout = layout
        let L = layout.promptLength
        self.L = L
        let plan = agent.plan
        let seed = agent.config.seed

        var classOf = [UInt8](repeating: UInt8(QueryClass.text.rawValue), count: L)
        var isVisual = [Bool](repeating: false, count: L)
        var textLogit = [Double](repeating: 0, count: L)
        for j in 0..<L {
            let t = layout.tokenTypes[j]
            if t == .visual {
                isVisual[j] = true
                classOf[j] = UInt8(QueryClass.visual.rawValue)
            }
            if j >= layout.lastVisionEnd { classOf[j] = UInt8(QueryClass.post.rawValue) }
            switch t {
            case .system: textLogit[j] = p.systemLogit
            case .template: textLogit[j] = p.templateLogit
            case .visionMarker: textLogit[j] = p.visionMarkerLogit
            case .instruction: textLogit[j] = p.instructionLogit
            case .history: textLogit[j] = p.historyLogit - p.historyAgeDecay * Double(layout.historyAge[j] - 1)
            case .generationPrompt: textLogit[j] = p.generationPromptLogit
            case .visual: textLogit[j] = 0
            }
        }
        self.classOf = classOf
        self.isVisual = isVisual
        self.textLogit = textLogit

        // Visual tokens: element attributes per cell of each screenshot.
        let current = plan.steps[k]
        let currentTargetID = current.target.id
        let rows = plan.grid.gridRows, cols = plan.grid.gridCols
        let smooth = StepSynthesizer.smoothField(rows: rows, cols: cols, seed: seed)
        var positions = [Int](), roles = [Int8](), kinds = [Int8](), bases = [Double](), contents = [UInt64]()
        var elementKeys = [Int64]()
        var boosts = [Double]()
        var targets = [Bool](), repeated = [Bool](), isCurrent = [Bool](), smooths = [Double](), interests = [Double]()
        let total = layout.images.reduce(0) { $0 + $1.length }
        positions.reserveCapacity(total)
        bases.reserveCapacity(total)
        contents.reserveCapacity(total)
        for (f, image) in layout.images.enumerated() {
            let s = layout.imageSteps[f]
            let frame = plan.steps[s]
            let age = image.frameAge
            let frameTargetID = frame.target.id
            for u in 0..<image.length {
                let idx = Int(frame.cellElements[u])
                var logit = p.backgroundLogit + p.smoothAmplitude * smooth[u]
                var role: Int8 = -1, kind: Int8 = -1
                var relevance = 0.0
                var isTarget = false
                var interest = 0.0
                var elementKey: Int64 = -1
                var boost = 0.0
                if idx >= 0 {
                    let e = frame.screen.elements[idx]
                    elementKey = Int64(e.id) << 20 | Int64(e.version)
                    role = Int8(e.kind.role)
                    kind = Int8(e.kind.rawValue)
                    interest = e.interest
                    logit += p.elementLogit[Int(e.kind.rawValue)] + p.interestAmplitude * e.interest
                    if e.id == currentTargetID {
                        isTarget = true
                        boost = age == 0 ? p.targetBoost : p.historyTargetShare * p.targetBoost
                        relevance = 0.9
                    } else if e.id == frameTargetID {
                        relevance = 0.6
                    } else if e.kind == .bar {
                        relevance = 0.3
                    }
                }
                if age == 0 {
                    logit += p.currentFrameBonus
                } else {
                    logit -= p.frameAgeDecay * Double(age) * (1 - relevance)
                }
                positions.append(image.spanStart + u)
                roles.append(role)
                elementKeys.append(elementKey)
                kinds.append(kind)
                bases.append(logit)
                boosts.append(boost)
                // Content identity also carries the age so that repeated content in two
                // history frames does not share per-head noise exactly.
                contents.append(frame.contentIDs[u])
                targets.append(isTarget && age == 0)
                repeated.append(age > 0 && frame.contentIDs[u] == current.contentIDs[u])
                isCurrent.append(age == 0)
                smooths.append(smooth[u])
                interests.append(interest)
            }
        }
        visualPositions = positions
        visualRole = roles
        visualKind = kinds
        visualBase = bases
        visualContent = contents
        visualElement = elementKeys
        visualBoost = boosts
        visualTarget = targets
        visualRepeated = repeated
        visualIsCurrent = isCurrent
        visualSmooth = smooths
        visualInterest = interests

        // Recency kernels.
        func geometric(_ a: Double, _ n: Int) -> [(Int, Double)] {
            var out = [(Int, Double)]()
            var w = a
            for d in 0..<n {
                out.append((d, w))
                w *= p.recencyDecay
            }
            return out
        }
        let visualPairs: [(Int, Double)] = [
            (0, p.visualRecency), (1, 0.6 * p.visualRecency), (2, 0.3 * p.visualRecency),
            (cols - 1, 0.4 * p.visualRecency), (cols, 0.8 * p.visualRecency), (cols + 1, 0.4 * p.visualRecency),
        ]
        kernels = [
            RecencyKernel(pairs: geometric(p.textRecency, 32)),
            RecencyKernel(pairs: visualPairs),
            RecencyKernel(pairs: geometric(p.postRecency, 16)),
        ]
        let steps = agent.config.steps
        let progress = steps > 1 ? Double(k) / Double(steps - 1) : 0.5
        let noise = NoiseHash(seed: seed, 0x57E9).gaussian(k)
        stepSharpness = _exp(-p.entropyDrift * (progress - 0.5) + p.stepSharpnessNoise * noise)
    }

    /// A smooth 2-D saliency prior over the merged grid in about [−1, 1]: a bilinearly
    /// interpolated random lattice (cell 6 tokens) plus a centre bias. Same for every frame of
    /// a trajectory (layout saliency does not depend on the step).
    static func smoothField(rows: Int, cols: Int, seed: UInt64) -> [Double] {
        let cell = 6
        let lr = rows / cell + 2, lc = cols / cell + 2
        let h = NoiseHash(seed: seed, 0x5300)
        var lattice = [Double](repeating: 0, count: lr * lc)
        for i in 0..<(lr * lc) { lattice[i] = 2 * h.unit(i) - 1 }
        var out = [Double](repeating: 0, count: rows * cols)
        for r in 0..<rows {
            let y = Double(r) / Double(cell)
            let y0 = Int(y), fy = y - Double(y0)
            for c in 0..<cols {
                let x = Double(c) / Double(cell)
                let x0 = Int(x), fx = x - Double(x0)
                let v00 = lattice[y0 * lc + x0], v01 = lattice[y0 * lc + x0 + 1]
                let v10 = lattice[(y0 + 1) * lc + x0], v11 = lattice[(y0 + 1) * lc + x0 + 1]
                let v = (1 - fy) * ((1 - fx) * v00 + fx * v01) + fy * ((1 - fx) * v10 + fx * v11)
                let dy = Double(r) / Double(max(1, rows - 1)) - 0.4
                let dx = Double(c) / Double(max(1, cols - 1)) - 0.5
                out[r * cols + c] = 0.7 * v + 0.3 * (1 - 4 * (dx * dx + dy * dy))
            }
        }
        return out
    }

    /// Mixes `amount` of a separable [1, 2, 1]/4 blur (applied twice, edges clamped) into the
    /// image span of `x` that starts at `start` (raster order, `cols` per row).
    static func blur2D(_ x: inout [Double], start: Int, rows: Int, cols: Int, amount: Double, scratch: inout [Double]) {
        let n = rows * cols
        if scratch.count < 2 * n { scratch = [Double](repeating: 0, count: 2 * n) }
        for u in 0..<n { scratch[u] = x[start + u] }
        for _ in 0..<2 {
            for r in 0..<rows {
                for c in 0..<cols {
                    let l = scratch[r * cols + max(0, c - 1)], m = scratch[r * cols + c], rr = scratch[r * cols + min(cols - 1, c + 1)]
                    scratch[n + r * cols + c] = 0.25 * l + 0.5 * m + 0.25 * rr
                }
            }
            for r in 0..<rows {
                for c in 0..<cols {
                    let up = scratch[n + max(0, r - 1) * cols + c], m = scratch[n + r * cols + c]
                    let down = scratch[n + min(rows - 1, r + 1) * cols + c]
                    scratch[r * cols + c] = 0.25 * up + 0.5 * m + 0.25 * down
                }
            }
        }
        for u in 0..<n { x[start + u] = (1 - amount) * x[start + u] + amount * scratch[u] }
    }

    /// Sharpness of layer ℓ.
    func layerSharpness(_ layer: Int) -> Double {
        let n = agent.config.model.numLayers
        let early = min(max(1, n / 14), p.earlyLayerSharpness.count)
        if layer < early && layer < n - 1 { return p.earlyLayerSharpness[layer] }
        if layer == n - 1 && n > 2 { return p.lastLayerSharpness }
        let u = NoiseHash(seed: agent.config.seed, 0x1A7E).unit(layer)
        return p.middleLayerSharpness + p.layerSharpnessSpread * (2 * u - 1)
    }

    // MARK: - Record

    func record() -> StepRecord {
        let cfg = agent.config
        let model = cfg.model
        let H = model.numQueryHeads, Hkv = model.numKVHeads
        let groupSize = H / Hkv
        let fidelity = cfg.fidelity
        let hasResid = agent.header.has(TraceField.guikvResid) && layout.images.count >= 2
        let nPrev = layout.images.dropLast().reduce(0) { $0 + $1.length }
        let eStar = layout.lastVisionEnd
        let G = agent.plan.steps[k].generatedTokens
        let W = cfg.winRowsMax
        let windows = cfg.windowSizes
        var chunks = [TensorChunk]()

        var base = [Double](repeating: 0, count: L)
        var groupLogit = [Double](repeating: 0, count: L)
        var prefixAll = [Double](repeating: 0, count: L + 1)
        var prefixVis = [Double](repeating: 0, count: L + 1)
        var invZ = [Double](repeating: 0, count: L)
        var suffix = [[Double]](repeating: [Double](repeating: 0, count: L + 1), count: 3)
        var work = [Double](repeating: 0, count: L)
        var blurScratch = [Double]()

        for layer in 0..<model.numLayers {
            let sharpLayer = layerSharpness(layer) * stepSharpness
            var winSum = [Float](repeating: 0, count: windows.count * H * L)
            var colsumAll = [Float](), colsumPost = [Float](), decode = [Float]()
            var counts = [Int64](repeating: 0, count: H)
            var winRows = [Float]()
            if fidelity >= .standard {
                colsumAll = [Float](repeating: 0, count: H * L)
                colsumPost = [Float](repeating: 0, count: H * L)
                decode = [Float](repeating: 0, count: H * L)
            }
            if fidelity >= .full { winRows = [Float](repeating: 0, count: H * W * L) }

            for g in 0..<Hkv {
                // Group logits: text logits, visual logits with the group's role preference.
                let role = agent.preferredRole(group: g, layer: layer)
                let elementNoise = NoiseHash(seed: cfg.seed, 0xE1E, layer, g)
                for j in 0..<L where !isVisual[j] { groupLogit[j] = textLogit[j] }
                for v in 0..<visualPositions.count {
                    var x = visualBase[v]
                    if visualRole[v] >= 0 { x += p.elementNoise * elementNoise.gaussian(Int(visualElement[v])) }
                    groupLogit[visualPositions[v]] = x
                }
                // The vision tower mixes neighbouring patches: blur the visual logits in 2-D.
                if p.spatialBlur > 0 {
                    for image in layout.images {
                        StepSynthesizer.blur2D(
                            &groupLogit, start: image.spanStart, rows: image.gridH, cols: image.gridW,
                            amount: p.spatialBlur, scratch: &blurScratch)
                    }
                }
                // Query-key specific parts stay sharp: the group's role preference, the target.
                for v in 0..<visualPositions.count {
                    var x = visualBoost[v]
                    let r = Int(visualRole[v])
                    if r >= 0 { x += r == role ? p.rolePreference : p.roleAversion }
                    groupLogit[visualPositions[v]] += x
                }
                for hh in 0..<groupSize {
                    let h = g * groupSize + hh
                    let headKey = NoiseHash(seed: cfg.seed, 0x4EAD, layer, h)
                    let sharp = sharpLayer * (1 + p.headSharpnessSpread * (2 * headKey.unit(-1) - 1))
                    let sink = p.sinkLogit + p.sinkJitter * (2 * headKey.unit(-2) - 1)
                    let textNoise = NoiseHash(key: headKey.key ^ 0x7E17)
                    let visNoise = NoiseHash(key: headKey.key ^ 0x0815)
                    // β (relative to the sink key, whose β is 1).
                    for j in 0..<L {
                        var x = groupLogit[j]
                        if j == 0 {
                            x = sink
                        } else if !isVisual[j] {
                            x += p.textNoise * textNoise.gaussian(j)
                        }
                        base[j] = x
                    }
                    for v in 0..<visualPositions.count {
                        base[visualPositions[v]] += p.visualNoise * visNoise.gaussian(Int(truncatingIfNeeded: visualContent[v]))
                    }
                    for j in 0..<L { base[j] = _exp(sharp * (base[j] - sink)) }
                    // Prefix sums and row normalisers.
                    for j in 0..<L {
                        prefixAll[j + 1] = prefixAll[j] + base[j]
                        prefixVis[j + 1] = prefixVis[j] + (isVisual[j] ? base[j] : 0)
                    }
                    let tvw = p.textQueryVisualWeight
                    for i in 0..<L {
                        let c = Int(classOf[i])
                        var z = prefixAll[i + 1] + kernels[c].mass(at: i)
                        if c == QueryClass.text.rawValue { z -= (1 - tvw) * prefixVis[i + 1] }
                        invZ[i] = 1 / z
                    }
                    // Suffix sums of 1/Z per class.
                    for c in 0..<3 { suffix[c][L] = 0 }
                    for i in stride(from: L - 1, through: 0, by: -1) {
                        let c = Int(classOf[i])
                        for cc in 0..<3 { suffix[cc][i] = suffix[cc][i + 1] }
                        suffix[c][i] += invZ[i]
                    }
                    // win_sum for each window.
                    for (wi, w) in windows.enumerated() {
                        let start = max(0, L - w)
                        let off = (wi * H + h) * L
                        for j in 0..<L {
                            let from = max(j, start)
                            let m = isVisual[j] ? tvw : 1
                            work[j] = base[j] * (suffix[1][from] + suffix[2][from] + m * suffix[0][from])
                        }
                        addKernel(rows: start..<L, invZ: invZ, into: &work)
                        for j in 0..<L { winSum[off + j] = Float(work[j]) }
                    }
                    if fidelity >= .standard {
                        // colsum_all.
                        for j in 0..<L {
                            let m = isVisual[j] ? tvw : 1
                            work[j] = base[j] * (suffix[1][j] + suffix[2][j] + m * suffix[0][j])
                        }
                        addKernel(rows: 0..<L, invZ: invZ, into: &work)
                        for j in 0..<L { colsumAll[h * L + j] = Float(work[j]) }
                        // colsum_postvis: rows i ≥ e*, all of class post.
                        for j in 0..<L { work[j] = base[j] * suffix[2][max(j, eStar)] }
                        addKernel(rows: eStar..<L, invZ: invZ, into: &work)
                        for j in 0..<L { colsumPost[h * L + j] = Float(work[j]) }
                        // count_gt_001 over the post-vision rows, explicitly.
                        var count: Int64 = 0
                        for i in eStar..<L {
                            let threshold = 0.01 / invZ[i]
                            let kern = kernels[QueryClass.post.rawValue]
                            for j in 0...i where base[j] + kern.weight(offset: i - j) > threshold { count += 1 }
                        }
                        counts[h] = count
                        // decode_attn_sum.
                        decodeSums(base: base, sharp: sharp, generated: G, totalPrompt: prefixAll[L], into: &work)
                        for j in 0..<L { decode[h * L + j] = Float(work[j]) }
                    }
                    if fidelity >= .full {
                        for (ri, i) in ((L - W)..<L).enumerated() where i >= 0 {
                            let c = Int(classOf[i])
                            let kern = kernels[c]
                            let off = (h * W + ri) * L
                            let zinv = invZ[i]
                            for j in 0...i {
                                let m = (c == QueryClass.text.rawValue && isVisual[j]) ? tvw : 1
                                winRows[off + j] = Float((base[j] * m + kern.weight(offset: i - j)) * zinv)
                            }
                        }
                    }
                }
            }

            chunks.append(
                TensorChunk(
                    field: TraceField.winSum, layer: layer,
                    tensor: Tensor(floats: winSum, shape: [windows.count, H, L], dtype: cfg.winSumDType)))
            chunks.append(
                TensorChunk(
                    field: TraceField.hidNorm, layer: layer,
                    tensor: Tensor(floats: hiddenNorms(layer: layer), shape: [visualPositions.count], dtype: .f32)))
            if hasResid {
                chunks.append(
                    TensorChunk(
                        field: TraceField.guikvResid, layer: layer,
                        tensor: Tensor(
                            floats: residuals(layer: layer, kvHeads: Hkv, count: nPrev), shape: [Hkv, nPrev],
                            dtype: cfg.residualDType)))
            }
            if fidelity >= .standard {
                chunks.append(TensorChunk(field: TraceField.colsumAll, layer: layer, tensor: Tensor(floats: colsumAll, shape: [H, L])))
                chunks.append(
                    TensorChunk(field: TraceField.colsumPostvis, layer: layer, tensor: Tensor(floats: colsumPost, shape: [H, L])))
                chunks.append(TensorChunk(field: TraceField.countGt001, layer: layer, tensor: Tensor(int64: counts, shape: [H])))
                let valid = Int64((L - eStar) * (L + eStar + 1) / 2)
                chunks.append(TensorChunk(field: TraceField.nValid, layer: layer, tensor: Tensor(int64: [valid], shape: [1])))
                chunks.append(
                    TensorChunk(field: TraceField.decodeAttnSum, layer: layer, tensor: Tensor(floats: decode, shape: [H, L])))
            }
            if fidelity >= .full {
                chunks.append(
                    TensorChunk(field: TraceField.winRows, layer: layer, tensor: Tensor(floats: winRows, shape: [H, W, L], dtype: .f16)))
            }
        }

        let planned = agent.plan.steps[k]
        let t = planned.target
        return StepRecord(
            episodeID: cfg.episodeID, stepIndex: k, stepInEpisode: k, reset: k == 0, promptLength: L,
            generatedTokens: G, tokenTypes: layout.tokenTypes, tokenIDs: layout.tokenIDs, images: layout.images,
            chunks: chunks,
            metadata: [
                "synth.action": planned.action.rawValue,
                "synth.target": "\(t.kind) id \(t.id) rows \(t.row)..<\(t.row + t.rows) cols \(t.col)..<\(t.col + t.cols)",
            ])
    }

    /// Adds the recency-kernel part of Σ_{i ∈ rows} A[i, j] to `out[j]`.
    private func addKernel(rows: Range<Int>, invZ: [Double], into out: inout [Double]) {
        for i in rows {
            let kern = kernels[Int(classOf[i])]
            let zinv = invZ[i]
            for (d, w) in zip(kern.offsets, kern.weights) where d <= i { out[i - d] += w * zinv }
        }
    }

    /// Σ over the G generated tokens of their attention to each prompt key. Generated token t
    /// mixes the prompt weights with a target-focused version (weight a_t: 0.25 while writing
    /// the thought, 1 while writing the action's coordinates) and spends the rest on the
    /// generated keys before it (the last 16 of them, each `decodeSelfWeight`).
    private func decodeSums(base: [Double], sharp: Double, generated G: Int, totalPrompt: Double, into out: inout [Double]) {
        let boost = _exp(sharp * p.decodeTargetBoost) - 1
        var targetMass = 0.0
        for v in 0..<visualPositions.count where visualTarget[v] { targetMass += base[visualPositions[v]] }
        var plain = 0.0, focused = 0.0
        let actionStart = (G * 3) / 5
        for t in 0..<G {
            let a = t >= actionStart ? 1.0 : 0.25
            let z = totalPrompt + a * boost * targetMass + p.decodeSelfWeight * Double(min(t + 1, 16))
            plain += 1 / z
            focused += a / z
        }
        for j in 0..<L { out[j] = base[j] * plain }
        for v in 0..<visualPositions.count where visualTarget[v] {
            out[visualPositions[v]] += base[visualPositions[v]] * boost * focused
        }
    }

    /// `hid_norm` of every visual token at `layer`.
    func hiddenNorms(layer: Int) -> [Float] {
        let scale = p.hiddenNormBase + p.hiddenNormPerLayer * Double(layer)
        let noise = NoiseHash(seed: agent.config.seed, 0x41D, layer)
        var out = [Float](repeating: 0, count: visualPositions.count)
        for v in 0..<visualPositions.count {
            var rel = 1 + 0.08 * visualSmooth[v] + p.hiddenNormNoise * noise.gaussian(Int(truncatingIfNeeded: visualContent[v]))
            let kind = Int(visualKind[v])
            if kind >= 0, let ek = ElementKind(rawValue: UInt8(kind)) {
                rel += p.hiddenNormContrast * p.hiddenStrength(ek) * (0.8 + 0.4 * visualInterest[v])
            }
            if visualTarget[v] { rel += 0.25 }
            out[v] = Float(scale * max(0.05, rel))
        }
        return out
    }

    /// `guikv_resid` [Hkv, Vprev] at `layer`: small for previous-frame tokens whose content
    /// the current screenshot repeats at the same cell, large for changed ones.
    func residuals(layer: Int, kvHeads: Int, count: Int) -> [Float] {
        var out = [Float](repeating: 0, count: kvHeads * count)
        for g in 0..<kvHeads {
            let h = NoiseHash(seed: agent.config.seed, 0x4E5, layer, g)
            let keyNorm = p.keyNormBase * (0.8 + 0.4 * h.unit(-1))
            for v in 0..<count {
                let u = h.unit(v)
                var frac = visualRepeated[v] ? p.repeatedResidual * (0.7 + 0.6 * u) : p.changedResidual * (0.8 + 0.4 * u)
                if visualKind[v] >= 0 { frac *= 1.1 }
                out[g * count + v] = Float(keyNorm * frac)
            }
        }
        return out
    }
}

