import StarKVModel

/// A vLLM-style paged KV pool: preallocated once from `gpu_memory_utilization`, handed out in
/// fixed blocks of 16 tokens (all layers, K and V).
///
/// Implements docs/memory-model.md §5.4: `budget = torch-visible × utilisation`,
/// `kv_memory = budget − weights − activation peak − non-torch`, `num_blocks = ⌊kv_memory / block
/// bytes⌋`; eviction frees only blocks left without any surviving token, unless compaction
/// copies survivors into fresh blocks.
public struct PagedKVPool: Sendable, Hashable, Codable {
    public var blockTokens: Int
    /// `blockTokens · 2 · N_l · heads · d · 2` (896 KiB for the 7B at 4 heads).
    public var blockBytes: Int
    /// `torch-visible × gpu_memory_utilization`.
    public var budgetBytes: Int
    public var weightsBytes: Int
    /// The profiled activation peak (max of a `profileTokens` prefill and the ViT on the largest
    /// image) [I].
    public var activationProfileBytes: Int
    public var nonTorchBytes: Int
    /// Bytes left for KV blocks.
    public var poolBytes: Int
    public var totalBlocks: Int

    public init(config: MemorySimulationConfig, maxImagePatches: Int = 65_536) {
        let m = config.model
        let o = config.pagedOptions
        blockTokens = o.blockTokens
        blockBytes = o.blockTokens * m.kvBytesPerToken(storedHeads: config.storedKVHeads)
        budgetBytes = Int((Double(config.accelerator.torchVisibleBytes) * o.gpuMemoryUtilization).rounded(.down))
        weightsBytes = config.weightBytes
        let t = o.profileTokens
        let llmProfile = t * (3 * m.intermediateSize * 2 + 3 * m.hiddenSize * 2) + m.vocabSize * 4
        var vitProfile = 0
        if let v = m.vision {
            let p = maxImagePatches, d = v.hiddenSize
            vitProfile = 2 * p * d * 2 + max(4 * p * d * 4 + 3 * p * d * 2, 3 * p * v.intermediateSize * 2) + 3 * p * (d / v.numHeads) * 4
        }
        activationProfileBytes = max(llmProfile, vitProfile)
        nonTorchBytes = config.accelerator.nonTorchBytes
        poolBytes = max(0, budgetBytes - weightsBytes - activationProfileBytes - nonTorchBytes)
        totalBlocks = blockBytes > 0 ? poolBytes / blockBytes : 0
    }

    /// ⌈tokens / blockTokens⌉.
    public func blocksNeeded(tokens: Int) -> Int { (max(0, tokens) + blockTokens - 1) / blockTokens }

    /// Blocks still holding at least one of `positions` (sorted), plus blocks for `appended`
    /// tokens written after position `sequenceLength − 1` (they first fill the last block's slack).
    public func blocksOccupied(positions: [Int], sequenceLength: Int, appended: Int) -> Int {
        var count = 0
        var lastBlock = -1
        for p in positions {
            let b = p / blockTokens
            if b != lastBlock {
                count += 1
                lastBlock = b
            }
        }
        let slack = blocksNeeded(tokens: sequenceLength) * blockTokens - sequenceLength
        return count + blocksNeeded(tokens: max(0, appended - slack))
    }

    /// Kept positions when the policy did not say which: the last `window` positions plus the
    /// rest spread evenly over the selectable prefix (the case where eviction frees the fewest
    /// blocks for a given count) [I].
    public static func evenlySpreadPositions(sequenceLength n: Int, kept: Int, window: Int) -> [Int] {
        let k = min(max(0, kept), n)
        let w = min(window, k)
        let selectable = n - w
        let spread = k - w
        var positions: [Int] = []
        positions.reserveCapacity(k)
        if spread > 0 {
            for i in 0..<spread { positions.append(i * selectable / spread) }
        }
        for p in (n - w)..<n { positions.append(p) }
        return positions
    }
}

/// Block occupancy of one step in the paged pool.
public struct PagedStepReport: Sendable, Hashable, Codable {
    public var blockBytes: Int
    public var totalBlocks: Int
    public var poolBytes: Int
    /// Tokens in the sequence before compression (context + appended decode tokens).
    public var tokensWithoutEviction: Int
    /// Tokens after compression (+ appended).
    public var tokensKept: Int
    /// Blocks with no eviction at all.
    public var blocksWithoutEviction: Int
    /// Blocks when eviction frees only blocks that became empty.
    public var blocksEvictEmptyOnly: Int
    /// Blocks when survivors are compacted into fresh blocks.
    public var blocksCompacted: Int
    /// The figure for the configured mode.
    public var blocksUsed: Int
    /// Kept tokens / (blocks used · block tokens).
    public var occupancyFraction: Double
    /// Blocks used ≤ total blocks.
    public var fits: Bool
}
