/// The results of a replay: the versioned JSON schema of `results.json` (docs/replay.md) that
/// `starkv report` re-renders. Every number is a pure function of the trace and the flags,
/// never of the thread count or the wall clock.
public struct ReplayResults: Sendable, Codable, Equatable {
    /// Bumped on a change of this schema. v2 (docs/report.md §4) adds each step's memory
    /// breakdown by term, the phase and largest tensors of its peak, and the GPU's display name;
    /// every v2 field is optional, so a v1 file decodes as is (those fields nil).
    public static let currentSchemaVersion = 2
    /// The oldest schema this version still reads.
    public static let oldestReadableSchemaVersion = 1

    public var schemaVersion: Int
    public var generator: String
    public var trace: TraceInfo
    public var settings: Settings
    public var runs: [RunResult]
    /// Caveats the report must show (e.g. the persistent loop's open-loop approximation).
    public var notes: [String]
    /// SHA-256 over every run's kept sets and memory curve (deterministic replay check).
    public var digest: String
    /// Trace path and SHA-256, sweep unit (docs/sweeps.md); absent in files written before it.
    public var provenance: Provenance? = nil
    /// v2: the same runs' memory on other GPUs (not part of the digest).
    public var gpuVerdicts: [GPUVerdict]? = nil

    /// Every run's peaks and first OOM when simulated on another GPU.
    public struct GPUVerdict: Sendable, Codable, Equatable {
        public var gpu: String
        public var gpuName: String
        public var gpuCapacityBytes: Double
        public var runs: [GPURun]
    }

    /// One run on another GPU.
    public struct GPURun: Sendable, Codable, Equatable {
        public var policy: String
        public var budget: String
        public var peakAllocatedBytes: Double
        public var peakReservedBytes: Double
        public var firstOOMStep: Int?
        public var firstOOMPhase: String?
    }

    /// What was replayed.
    public struct TraceInfo: Sendable, Codable, Equatable {
        public var file: String
        public var recordedModel: String
        public var recorder: String
        public var fidelity: String
        public var steps: Int
        public var screen: String
        public var imageSlots: Int
        public var footerPresent: Bool
        /// Golden kept sets found in the trace and how many agreed with the replay.
        public var goldenChecks: [GoldenCheck]
    }

    /// Agreement of the replay with a golden kept set recorded in the trace.
    public struct GoldenCheck: Sendable, Codable, Equatable {
        public var field: String
        public var layers: Int
        /// Mean Jaccard similarity of the replayed and golden kept sets.
        public var meanJaccard: Double
        public var identicalLayers: Int
    }

    /// The flags that shaped the results.
    public struct Settings: Sendable, Codable, Equatable {
        public var policies: [PolicySpec]
        public var budgets: [String]
        public var loop: String
        public var simulatedModel: String
        public var gpu: String
        public var gpuCapacityBytes: Double
        /// v2: the GPU's display name (`--gpu-name`, a preset's name, or "custom 48 GB").
        public var gpuName: String? = nil
        public var attention: String
        public var visionAttention: String
        public var storedKVHeads: Int
        public var logits: String
        public var allocator: String
        public var retainPreviousCache: Bool
        /// Encoding of the runs' `keptDigest` (`KeptDigestVersion`: 2 = bitmap rows, the
        /// default since issue 15; 1 = Int32 positions). Absent in files written before it: 1.
        public var keptDigestVersion: Int? = nil
    }

    /// One (policy, budget) pair.
    public struct RunResult: Sendable, Codable, Equatable {
        public var policy: String
        public var policyName: String
        public var budget: String
        /// Budget in percent when given as a percentage (nil for absolute token budgets).
        public var budgetPercent: Double?
        public var keptDigest: String
        public var steps: [StepResult]
        public var summary: RunSummary
    }

    /// One step of one run.
    public struct StepResult: Sendable, Codable, Equatable {
        public var step: Int
        public var episode: String
        public var promptLength: Int
        public var images: Int
        public var keptTokensMean: Double
        public var keptFraction: Double
        public var kvBytes: Double
        public var terms: MemoryTerms
        public var allocatedPeakBytes: Double
        public var reservedPeakBytes: Double
        public var inactiveSplitBytes: Double
        public var oom: Bool
        public var oomPhase: String?
        public var flops: FLOPs
        public var rooflineSeconds: Double
        public var decodeMassRetained: Double?
        public var cachedWindowMass: Double?
        public var imageShareBefore: [Double]
        public var imageShareAfter: [Double]
        /// v2: live bytes by term at the step's peak, and the reserved-but-unallocated bytes.
        public var breakdown: MemoryBreakdown? = nil
        /// v2: requested bytes (no allocator rounding) at the step's live-set peak.
        public var requestedPeakBytes: Double? = nil
        /// v2: phase ("prefill", "lm_head", …) and location ("prefill layer 27") of that peak.
        public var peakPhase: String? = nil
        public var peakLocation: String? = nil
        /// v2: the largest tensors live at that peak, largest first.
        public var peakTensors: [PeakTensor]? = nil
    }

    /// The terms of the report's stacked memory chart (docs/report.md §2), in bytes. The live
    /// terms sum to the step's requested peak; `reservedUnallocated` is reserved − allocated at
    /// the step's peaks (fragmentation and rounding).
    public struct MemoryBreakdown: Sendable, Codable, Equatable {
        public var weights: Double
        public var kvNow: Double
        public var kvPrevious: Double
        public var logits: Double
        /// SwiGLU intermediates and the per-layer activations (q/k/v, residual, o_proj).
        public var mlpActivations: Double
        /// Score matrices, softmax copies, repeat_kv copies, the eager mask.
        public var attentionWorkspace: Double
        public var vit: Double
        /// Inputs (pixels, embeddings, RoPE tables), compression scratch, decode transients.
        public var other: Double
        public var reservedUnallocated: Double

        public init(
            weights: Double, kvNow: Double, kvPrevious: Double, logits: Double, mlpActivations: Double, attentionWorkspace: Double,
            vit: Double, other: Double, reservedUnallocated: Double
        ) {
            self.weights = weights
            self.kvNow = kvNow
            self.kvPrevious = kvPrevious
            self.logits = logits
            self.mlpActivations = mlpActivations
            self.attentionWorkspace = attentionWorkspace
            self.vit = vit
            self.other = other
            self.reservedUnallocated = reservedUnallocated
        }

        /// Term names and values in stacking order (bottom first).
        public var terms: [(name: String, bytes: Double)] {
            [
                ("weights", weights), ("current KV", kvNow), ("retained previous KV", kvPrevious), ("logits", logits),
                ("MLP activations", mlpActivations), ("attention workspace", attentionWorkspace), ("ViT", vit),
                ("inputs & other", other), ("reserved, unallocated", reservedUnallocated),
            ]
        }

        public var liveBytes: Double { weights + kvNow + kvPrevious + logits + mlpActivations + attentionWorkspace + vit + other }
    }

    /// A tensor live at a step's peak.
    public struct PeakTensor: Sendable, Codable, Equatable {
        public var bytes: Double
        public var category: String
        public var allocatedAt: String

        public init(bytes: Double, category: String, allocatedAt: String) {
            self.bytes = bytes
            self.category = category
            self.allocatedAt = allocatedAt
        }
    }

    /// Live bytes at the step's peak, by term (docs/memory-model.md §3).
    public struct MemoryTerms: Sendable, Codable, Equatable {
        public var weights: Double
        public var kvNow: Double
        public var kvPrevious: Double
        public var logits: Double
        public var inputs: Double
        public var transients: Double
        /// Reserved − allocated at the peak (allocator slack).
        public var allocatorSlack: Double
    }

    /// FLOPs of one step by phase (docs/memory-model.md §6; docs/algorithms.md §11).
    public struct FLOPs: Sendable, Codable, Equatable {
        public var vision: Double
        public var prefillNominal: Double
        public var prefillCausal: Double
        public var decode: Double
        public var scoring: Double

        public var totalNominal: Double { vision + prefillNominal + decode + scoring }
    }

    /// Per-run aggregates.
    public struct RunSummary: Sendable, Codable, Equatable {
        public var peakAllocatedBytes: Double
        public var peakReservedBytes: Double
        public var firstOOMStep: Int?
        public var meanKeptFraction: Double
        public var meanDecodeMassRetained: Double?
        public var meanCachedWindowMass: Double?
        public var totalScoringFLOPs: Double
        public var totalFLOPs: Double
        /// Scoring FLOPs as a fraction of the prefill FLOPs (nominal).
        public var scoringOverhead: Double
    }
}
