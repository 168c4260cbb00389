import StarKVModel
import StarKVTrace

/// The catalog of policies by name. Adding a policy = one file with a `KVPolicy` type and one
/// line in `all`.
public enum PolicyRegistry {
    /// Every registered policy type, in the order reports list them.
    public static let all: [any KVPolicy.Type] = [
        FullCachePolicy.self,
        StreamingLLMPolicy.self,
        H2OPolicy.self,
        SnapKVPolicy.self,
        SnapKVPressPolicy.self,
        PyramidKVPolicy.self,
        AdaKVPolicy.self,
        VLCachePolicy.self,
        GUIKVPolicy.self,
        StarKVPolicy.self,
    ]

    /// Registered names.
    public static var names: [String] { all.map { $0.policyName } }

    /// The policy type registered as `name`.
    public static func type(named name: String) -> (any KVPolicy.Type)? {
        all.first { $0.policyName == name.lowercased() }
    }

    /// Builds policy `name` with `options`; unknown names and options are refused.
    public static func make(_ name: String, options: PolicyOptions = PolicyOptions()) throws -> any KVPolicy {
        guard let t = type(named: name) else { throw PolicyError.unknownPolicy(name: name, known: names) }
        let known = t.optionSpecs.map(\.name)
        for key in options.values.keys.sorted() where !known.contains(key) {
            throw PolicyError.unknownOption(policy: t.policyName, option: key, known: known)
        }
        return try t.init(options: options)
    }
}
