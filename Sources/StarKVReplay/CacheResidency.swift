import StarKVTrace

/// Which prompt positions are still in the KV cache when the agent keeps its cache across
/// steps (the persistent-cache loop) instead of re-prefilling.
///
/// Token identity across steps of one episode: a visual token is the same token in a later step
/// when it belongs to the same screenshot (captured at `stepInEpisode − frameAge`) at the same
/// offset; the tokens before the first screenshot (system prompt, template) are the same when the
/// prefix has the same length; every other token (history text, instruction, generation prompt)
/// is new at each step. A token is missing from the cache only if an earlier compression of the
/// episode evicted it (no head of that layer kept it); tokens never seen before are prefilled at
/// this step, so a policy that evicts nothing (`full`) keeps the whole prompt at every step.
/// This is an open-loop approximation: the attention the
/// policies score with comes from the recorded re-prefill run, renormalised over what is still
/// cached (docs/memory-model.md §2.3 discusses the two loops).
public struct CacheResidency: Sendable, Equatable {
    /// Identity of a prompt token across steps.
    enum TokenKey: Hashable, Sendable {
        case prefix(Int)
        case visual(frame: Int, offset: Int)
    }

    /// Per layer: the keys of tokens that a compression of this episode evicted (they never come
    /// back: a later step cannot re-read them from a cache that no longer holds them).
    var evictedKeysPerLayer: [Set<TokenKey>] = []
    var episodeID: String?

    public init() {}

    /// Stable keys of a step's positions (nil = a token that is new at this step).
    static func keys(of step: StepRecord) -> [TokenKey?] {
        var keys = [TokenKey?](repeating: nil, count: step.promptLength)
        let prefixEnd = step.images.first?.spanStart ?? 0
        // The marker token right before the first image is part of that image's framing, so the
        // prefix stops before it.
        for p in 0..<max(0, prefixEnd - 1) { keys[p] = .prefix(p) }
        for img in step.images {
            let frame = step.stepInEpisode - img.frameAge
            for u in 0..<img.length { keys[img.spanStart + u] = .visual(frame: frame, offset: u) }
        }
        return keys
    }

    /// Availability per layer of every position of `step` (true = in the cache before this
    /// step's compression). All true on the first step of an episode or after a reset.
    public func availability(for step: StepRecord, layers: Int) -> [[Bool]] {
        let fresh = step.reset || episodeID != step.episodeID || evictedKeysPerLayer.count != layers
        guard !fresh else { return Array(repeating: Array(repeating: true, count: step.promptLength), count: layers) }
        let keys = CacheResidency.keys(of: step)
        return (0..<layers).map { layer in
            let evicted = evictedKeysPerLayer[layer]
            if evicted.isEmpty { return Array(repeating: true, count: step.promptLength) }
            return keys.map { key in
                guard let key else { return true }
                return !evicted.contains(key)
            }
        }
    }

    /// A visual key of the current screenshot did not exist in the previous step; prefix keys did.
    static func existedBefore(_ key: TokenKey, step: StepRecord) -> Bool {
        switch key {
        case .prefix: return true
        case .visual(let frame, _): return frame < step.stepInEpisode
        }
    }

    /// The residency after this step's compression kept `kept[layer]` (union over heads): the
    /// positions of this step that no head kept join the episode's evicted set.
    public func advanced(step: StepRecord, keptPerLayer: [[[Int32]]]) -> CacheResidency {
        let keys = CacheResidency.keys(of: step)
        let continuing = !step.reset && episodeID == step.episodeID && evictedKeysPerLayer.count == keptPerLayer.count
        var next = CacheResidency()
        next.episodeID = step.episodeID
        next.evictedKeysPerLayer = keptPerLayer.enumerated().map { layer, rows in
            var kept = [Bool](repeating: false, count: keys.count)
            for row in rows {
                for p in row where p >= 0 && Int(p) < keys.count { kept[Int(p)] = true }
            }
            var set = continuing ? evictedKeysPerLayer[layer] : Set<TokenKey>()
            for (p, key) in keys.enumerated() where !kept[p] { if let key { set.insert(key) } }
            return set
        }
        return next
    }

    /// Zeroes the attention fields of evicted positions and rescales every head row so that its
    /// mass over cached positions equals its recorded total (renormalisation over what is still
    /// cached). Fields without a key axis (hid_norm, guikv_resid, counts) are left as recorded.
    public static func mask(_ step: StepRecord, header: TraceHeader, availability: [[Bool]]) -> StepRecord {
        var out = step
        let L = step.promptLength
        for i in out.chunks.indices {
            let c = out.chunks[i]
            guard let layer = c.layer, layer < availability.count,
                [TraceField.winSum, TraceField.colsumAll, TraceField.colsumPostvis, TraceField.decodeAttnSum, TraceField.winRows]
                    .contains(c.field),
                c.tensor.dtype.isFloatingPoint, c.tensor.shape.last == L
            else { continue }
            let avail = availability[layer]
            if avail.allSatisfy({ $0 }) { continue }
            var values = c.tensor.floats()
            let rows = values.count / max(1, L)
            for r in 0..<rows {
                let base = r * L
                var total = 0.0
                var kept = 0.0
                for j in 0..<L {
                    total += Double(values[base + j])
                    if avail[j] { kept += Double(values[base + j]) }
                }
                let scale = kept > 0 ? total / kept : 0
                for j in 0..<L { values[base + j] = avail[j] ? Float(Double(values[base + j]) * scale) : 0 }
            }
            out.chunks[i].tensor = Tensor(floats: values, shape: c.tensor.shape, dtype: .f32)
        }
        return out
    }

    /// Share of the step's recorded attention (smallest recorded window, summed over heads and
    /// layers) that falls on positions still cached: the persistent-loop quality proxy.
    public static func retainedWindowMass(_ step: StepRecord, availability: [[Bool]]) -> Double? {
        var total = 0.0
        var kept = 0.0
        let L = step.promptLength
        var found = false
        for c in step.chunks where c.field == TraceField.winSum {
            guard let layer = c.layer, layer < availability.count, c.tensor.shape.count == 3, c.tensor.shape[2] == L else { continue }
            found = true
            let values = c.tensor.floats()
            let heads = c.tensor.shape[1]
            for h in 0..<heads {
                for j in 0..<L {
                    let v = Double(values[h * L + j])  // window index 0 = smallest window
                    total += v
                    if availability[layer][j] { kept += v }
                }
            }
        }
        return found && total > 0 ? kept / total : nil
    }
}
