/// The results of a replay: the versioned JSON schema of `results.json` (docs/replay.md) that
/// `starkv report` re-renders. Every number is a pure function of the trace and the flags,
/// never of the thread count or the wall clock.
public struct ReplayResults: Sendable, Codable, Equatable {
    /// Bumped on an incompatible change of this schema.
    public static let currentSchemaVersion = 1

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
        public var attention: String
        public var visionAttention: String
        public var storedKVHeads: Int
        public var logits: String
        public var allocator: String
        public var retainPreviousCache: Bool
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
