import StarKVPolicies

/// How the agent loop treats the KV cache between steps (docs/memory-model.md §2.3, docs/algorithms.md §1.2).
public enum CacheLoop: String, Sendable, Codable, CaseIterable {
    /// Every step re-prefills the whole prompt (how the reference drivers run).
    case reprefill
    /// The compressed cache carries to the next step (open-loop approximation, see `CacheResidency`).
    case persistent
}

/// One policy to replay, by registry name with its options.
public struct PolicySpec: Sendable, Hashable, Codable {
    public var name: String
    public var options: [String: String]

    public init(name: String, options: [String: String] = [:]) {
        self.name = name
        self.options = options
    }

    /// `snapkv` or `starkv(window=16,mi_grid=true)`-style label (options sorted).
    public var label: String {
        options.isEmpty ? name : name + "(" + options.keys.sorted().map { "\($0)=\(options[$0]!)" }.joined(separator: ",") + ")"
    }
}

/// A progress report from a running replay (the CLI draws it; the library never prints).
public struct ReplayProgress: Sendable {
    public var stepsDone: Int
    public var stepsTotal: Int
    public var pairs: Int
    public var phase: String
}

/// Errors of a replay request (bad flags, missing fields, digest mismatch).
public enum ReplayError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidRequest(String)
    case policy(String)
    case digestMismatch(expected: String, actual: String)
    case io(String)

    public var description: String {
        switch self {
        case .invalidRequest(let m): return m
        case .policy(let m): return m
        case .digestMismatch(let e, let a):
            return "replay digest \(a) does not match the expected \(e): the kept sets or memory curves differ from the run that produced the expected digest"
        case .io(let m): return m
        }
    }
}
