import Foundation
import StarKVModel
import StarKVTrace

/// One line of `starkv replay --dump-kept FILE` (JSON lines; docs/policies.md "Kept-set dump
/// format"): the kept prompt positions of one policy, budget, step and layer, one row per head
/// at the selection's granularity, ascending.
public struct KeptSetRecord: Codable, Sendable, Equatable {
    public var policy: String
    /// `20%` or `512tok`.
    public var budget: String
    public var episode: String
    /// Step index within the trace (0-based).
    public var step: Int
    public var stepInEpisode: Int
    public var layer: Int
    public var promptLength: Int
    /// `shared`, `query_head` or `kv_head`.
    public var granularity: String
    public var capacity: Int
    public var window: Int
    public var compressed: Bool
    /// One ascending row per head (one row for `shared`).
    public var kept: [[Int32]]

    enum CodingKeys: String, CodingKey {
        case policy, budget, episode, step
        case stepInEpisode = "step_in_episode"
        case layer
        case promptLength = "prompt_length"
        case granularity, capacity, window, compressed, kept
    }

    public init(policy: String, budget: KVBudget, step: StepRecord, selection: LayerSelection) {
        self.policy = policy
        self.budget = budget.description
        episode = step.episodeID
        self.step = step.stepIndex
        stepInEpisode = step.stepInEpisode
        layer = selection.layer
        promptLength = step.promptLength
        granularity = selection.granularity.rawValue
        capacity = selection.capacityTokens
        window = selection.windowTokens
        compressed = selection.compressed
        kept = selection.keptIndices
    }

    /// One record per layer of `output`, in layer order.
    public static func records(policy: String, budget: KVBudget, step: StepRecord, output: PolicyStepOutput) -> [KeptSetRecord] {
        output.layers.map { KeptSetRecord(policy: policy, budget: budget, step: step, selection: $0) }
    }

    /// The record as one JSON line (sorted keys, no trailing newline).
    public func jsonLine() throws -> String {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try enc.encode(self), as: UTF8.self)
    }

    /// Parses one JSON line.
    public init(jsonLine: String) throws {
        self = try JSONDecoder().decode(KeptSetRecord.self, from: Data(jsonLine.utf8))
    }
}
