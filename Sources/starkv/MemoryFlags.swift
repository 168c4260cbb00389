import ArgumentParser
import StarKVMemory

/// Flag values shared by `starkv memory` and `starkv replay`, so both accept the same words.
enum MemoryFlags {
    static let logits: [String: LogitsPolicy] = ["full": .full, "last": .lastToken, "fp32": .fullFloat32]
    static let allocators: [String: AllocatorKind] = ["torch": .torchCaching, "paged": .vllmPaged, "analytic": .analytic]
    static let attention: [String: AttentionImplementation] = [
        "eager": .eager, "flash": .flash, "flash_attention_2": .flash, "sdpa": .flash,
    ]
    /// The GPU names both commands accept (presets, aliases, custom capacities).
    static var gpuChoices: String {
        (Accelerator.presets.map(\.id) + Accelerator.aliases.keys.sorted()).joined(separator: ", ") + ", or custom:48GB / custom:40GiB"
    }
    static let weightDtypes: [String: WeightDtype] = ["bf16": .bf16, "fp32": .fp32]

    /// The table entry for `text` (case-insensitive), or a ValidationError listing the choices.
    static func pick<T>(_ text: String, _ flag: String, _ table: [String: T]) throws -> T {
        guard let v = table[text.lowercased()] else {
            throw ValidationError("\(flag) '\(text)' must be one of \(table.keys.sorted().joined(separator: ", "))")
        }
        return v
    }
}
