import StarKVModel
import StarKVTrace

/// StreamingLLM at prefill (docs/algorithms.md §7): `sinks` attention-sink tokens plus the most recent
/// `C − sinks` tokens, one shared set per layer. KVCache-Factory's runner form (window = C − 4,
/// i.e. 4 sinks); equals kvpress `StreamingLLMPress` (n_sink = 4). No attention needed; zero
/// scoring FLOPs.
public struct StreamingLLMPolicy: KVPolicy {
    public static let policyName = "streamingllm"
    public static let summary = "attention sinks + recent tokens (StreamingLLM; KVCache-Factory/kvpress prefill form)"
    public static let optionSpecs: [PolicyOptionSpec] = [
        PolicyOptionSpec("sinks", "4", "sink tokens kept at the start of the prompt"),
    ]

    public var sinks: Int

    public init(options: PolicyOptions) throws {
        sinks = try options.int("sinks", policy: Self.policyName, default: 4, range: 0...1_000_000)
    }

    public init(sinks: Int = 4) { self.sinks = sinks }

    public var requiredFields: [String] { [] }

    /// Kept positions for a prompt of `l` tokens at capacity `c`.
    func kept(promptLength l: Int, capacity c: Int) -> [Int32] {
        if c >= l { return allPositions(l) }
        let s = min(sinks, c)
        let recent = c - s
        var out = (0..<s).map { Int32($0) }
        var j = l - recent
        while j < l { out.append(Int32(j)); j += 1 }
        return out
    }

    public func compress(_ input: PolicyStepInput, state: PolicyState) throws -> PolicyStepOutput {
        try StepFields.checkStep(policy: Self.policyName, input: input)
        let l = input.step.promptLength
        let c = input.budget.capacity(promptLength: l)
        let set = kept(promptLength: l, capacity: c)
        let compressed = c < l
        let layers = (0..<input.header.model.numLayers).map {
            LayerSelection(
                layer: $0, granularity: .shared, keptIndices: [set], capacityTokens: min(c, l),
                windowTokens: compressed ? max(0, c - min(sinks, c)) : 0, compressed: compressed)
        }
        return PolicyStepOutput(layers: layers, scoringFLOPs: 0, state: state)
    }
}
