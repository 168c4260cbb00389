/// One GPU as the simulator sees it: memory the caching allocator may use, HBM bandwidth and
/// dense bf16 throughput (for the roofline time column).
///
/// Implements docs/memory-model.md §7 (accelerator figures) and §3.10 (memory outside the caching
/// allocator). `torchVisibleBytes` is what `torch.cuda.mem_get_info()` reports as total (vLLM logs
/// "79.22GiB" on an H100 80GB); `nonTorchBytes` (CUDA context, cuBLAS workspaces) is subtracted
/// before the allocator gets any memory.
public struct Accelerator: Sendable, Hashable, Codable {
    /// Command-line identifier, e.g. `h100-sxm-80gb`.
    public var id: String
    /// Human-readable name.
    public var displayName: String
    /// Marketing HBM size in bytes (80 GB = 80·10⁹ B).
    public var marketedBytes: Int
    /// Total device memory as torch/CUDA report it (`mem_get_info` total).
    public var torchVisibleBytes: Int
    /// Memory held outside the caching allocator (CUDA context, library workspaces) [I].
    public var nonTorchBytes: Int
    /// HBM bandwidth in bytes per second.
    public var memoryBandwidthBytesPerSecond: Double
    /// Dense bf16 tensor-core peak, FLOP per second.
    public var bf16DenseFLOPsPerSecond: Double
    /// Where the figures come from.
    public var source: String

    public init(
        id: String, displayName: String, marketedBytes: Int, torchVisibleBytes: Int,
        nonTorchBytes: Int = Accelerator.defaultNonTorchBytes,
        memoryBandwidthBytesPerSecond: Double, bf16DenseFLOPsPerSecond: Double, source: String
    ) {
        self.id = id
        self.displayName = displayName
        self.marketedBytes = marketedBytes
        self.torchVisibleBytes = torchVisibleBytes
        self.nonTorchBytes = nonTorchBytes
        self.memoryBandwidthBytesPerSecond = memoryBandwidthBytesPerSecond
        self.bf16DenseFLOPsPerSecond = bf16DenseFLOPsPerSecond
        self.source = source
    }

    /// 512 MiB for the CUDA context and cuBLAS workspaces (vLLM logs 0.13–1.79 GiB "non-torch"
    /// on H100s; docs/memory-model.md §3.10) [I].
    public static let defaultNonTorchBytes = 512 << 20

    /// Bytes the caching allocator can obtain with `cudaMalloc` before it fails.
    public var allocatorCapacityBytes: Int { max(0, torchVisibleBytes - nonTorchBytes) }

    static func gib(_ value: Double) -> Int { Int((value * ByteUnits.bytesPerGiB).rounded()) }

    /// H100 SXM5 80GB: 79.22 GiB torch-visible (vLLM PR #10511 log), 3.35 TB/s, 989 TFLOP/s.
    public static let h100SXM = Accelerator(
        id: "h100-sxm-80gb", displayName: "NVIDIA H100 SXM5 80GB", marketedBytes: 80_000_000_000,
        torchVisibleBytes: gib(79.22), memoryBandwidthBytesPerSecond: 3.35e12,
        bf16DenseFLOPsPerSecond: 989e12,
        source: "docs/memory-model.md §7: llm-analysis gpu_configs, vLLM PR #10511 (79.22 GiB)")
    /// H100 PCIe 80GB: HBM2e, 2.0 TB/s, 756 TFLOP/s; torch-visible taken equal to the SXM part [I].
    public static let h100PCIe = Accelerator(
        id: "h100-pcie-80gb", displayName: "NVIDIA H100 PCIe 80GB", marketedBytes: 80_000_000_000,
        torchVisibleBytes: gib(79.22), memoryBandwidthBytesPerSecond: 2.0e12,
        bf16DenseFLOPsPerSecond: 756e12, source: "docs/memory-model.md §7 (llm-analysis gpu_configs)")
    /// A100 SXM4 80GB: 2.039 TB/s, 312 TFLOP/s; ~79.15 GiB torch-visible [I].
    public static let a100SXM = Accelerator(
        id: "a100-sxm-80gb", displayName: "NVIDIA A100 SXM4 80GB", marketedBytes: 80_000_000_000,
        torchVisibleBytes: gib(79.15), memoryBandwidthBytesPerSecond: 2.039e12,
        bf16DenseFLOPsPerSecond: 312e12, source: "docs/memory-model.md §7 (llm-analysis, glennklockwood A100)")
    /// A100 PCIe 80GB: 1.935 TB/s, 312 TFLOP/s; ~79.15 GiB torch-visible [I].
    public static let a100PCIe = Accelerator(
        id: "a100-pcie-80gb", displayName: "NVIDIA A100 PCIe 80GB", marketedBytes: 80_000_000_000,
        torchVisibleBytes: gib(79.15), memoryBandwidthBytesPerSecond: 1.935e12,
        bf16DenseFLOPsPerSecond: 312e12, source: "docs/memory-model.md §7 (llm-analysis, thundercompute)")
    /// H200 141GB: 4.8 TB/s, 989 TFLOP/s; ~139 GiB torch-visible [I].
    public static let h200 = Accelerator(
        id: "h200-141gb", displayName: "NVIDIA H200 141GB", marketedBytes: 141_000_000_000,
        torchVisibleBytes: gib(139.0), memoryBandwidthBytesPerSecond: 4.8e12,
        bf16DenseFLOPsPerSecond: 989e12, source: "docs/memory-model.md §7 (vendor spec) [I]")

    /// Every preset.
    public static let presets: [Accelerator] = [h100SXM, h100PCIe, a100SXM, a100PCIe, h200]

    /// Aliases accepted on the command line.
    public static let aliases: [String: String] = [
        "h100": "h100-sxm-80gb", "h100-80gb": "h100-sxm-80gb", "h100-sxm": "h100-sxm-80gb",
        "h100-pcie": "h100-pcie-80gb", "a100": "a100-sxm-80gb", "a100-80gb": "a100-sxm-80gb",
        "a100-sxm": "a100-sxm-80gb", "a100-pcie": "a100-pcie-80gb", "h200": "h200-141gb",
    ]

    /// A card with a user-given torch-visible capacity and H100 SXM speeds.
    /// Named by its capacity in GB ("custom 48 GB") unless renamed with `named(_:)`.
    public static func custom(torchVisibleBytes: Int) -> Accelerator {
        var gb = ByteUnits.fixed(ByteUnits.gigabytes(torchVisibleBytes), 1)
        if gb.hasSuffix(".0") { gb.removeLast(2) }
        return Accelerator(
            id: "custom-\(gb)GB", displayName: "custom \(gb) GB",
            marketedBytes: torchVisibleBytes, torchVisibleBytes: torchVisibleBytes,
            memoryBandwidthBytesPerSecond: h100SXM.memoryBandwidthBytesPerSecond,
            bf16DenseFLOPsPerSecond: h100SXM.bf16DenseFLOPsPerSecond,
            source: "user-given capacity; H100 SXM speeds")
    }

    /// The same card under a user-given name (`--gpu-name`): id and display name both become
    /// `name`; capacity and speeds are unchanged.
    public func renamed(_ name: String) -> Accelerator {
        var a = self
        a.id = name
        a.displayName = name
        return a
    }

    /// Resolves a preset id or alias, or `custom:48GiB` / `custom:48GB` / `custom:<bytes>`.
    public static func named(_ name: String) throws(AcceleratorError) -> Accelerator {
        let key = name.lowercased()
        if key.hasPrefix("custom:") {
            let spec = String(key.dropFirst("custom:".count))
            let (digits, scale): (Substring, Double) =
                spec.hasSuffix("gib") ? (spec.dropLast(3), ByteUnits.bytesPerGiB)
                : spec.hasSuffix("gb") ? (spec.dropLast(2), ByteUnits.bytesPerGB) : (Substring(spec), 1)
            guard let value = Double(digits), value > 0, value * scale <= 1e15 else {
                throw .badCustomCapacity(name)
            }
            return custom(torchVisibleBytes: Int((value * scale).rounded()))
        }
        let id = aliases[key] ?? key
        guard let preset = presets.first(where: { $0.id == id }) else { throw .unknown(name) }
        return preset
    }
}

/// Errors resolving an accelerator name.
public enum AcceleratorError: Error, Equatable, CustomStringConvertible {
    case unknown(String)
    case badCustomCapacity(String)

    public var description: String {
        switch self {
        case .unknown(let name):
            let known = (Accelerator.presets.map(\.id) + Accelerator.aliases.keys.sorted()).joined(separator: ", ")
            return "unknown GPU '\(name)'; use one of \(known), or custom:<N>GiB / custom:<N>GB"
        case .badCustomCapacity(let name):
            return "cannot read a capacity from '\(name)'; write e.g. custom:48GiB or custom:40GB (positive, at most 1 PB)"
        }
    }
}
