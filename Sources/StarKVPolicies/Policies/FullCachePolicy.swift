import StarKVModel
import StarKVTrace

/// Full cache: keeps every prompt position in every layer (the references' `original` path,
/// docs/algorithms.md §1.2). The baseline for quality proxies; zero scoring FLOPs.
public struct FullCachePolicy: KVPolicy {
    public static let policyName = "full"
    public static let summary = "keep the whole prompt (no compression)"
    public static let optionSpecs: [PolicyOptionSpec] = []

    public init(options: PolicyOptions) throws {}
    public init() {}

    public var requiredFields: [String] { [] }

    public func compress(_ input: PolicyStepInput, state: PolicyState) throws -> PolicyStepOutput {
        try StepFields.checkStep(policy: Self.policyName, input: input)
        let l = input.step.promptLength
        let all = allPositions(l)
        let layers = (0..<input.header.model.numLayers).map {
            LayerSelection(layer: $0, granularity: .shared, keptIndices: [all], capacityTokens: l, windowTokens: 0, compressed: false)
        }
        return PolicyStepOutput(layers: layers, scoringFLOPs: 0, state: state)
    }
}
