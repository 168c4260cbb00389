/// Bytes of each category at one moment — a stacked-timeline sample (docs/memory-model.md §8 (1)).
public struct MemoryTerms: Sendable, Hashable, Codable {
    public var weightsBytes = 0
    public var kvNowBytes = 0
    public var kvPreviousBytes = 0
    public var logitsBytes = 0
    public var inputsBytes = 0
    public var attentionMaskBytes = 0
    public var activationBytes = 0
    public var mlpTransientBytes = 0
    public var attentionTransientBytes = 0
    public var vitTransientBytes = 0
    public var compressionScratchBytes = 0
    public var decodeTransientBytes = 0
    /// Reserved − allocated at the step's peaks (0 without the caching allocator).
    public var allocatorSlackBytes = 0

    public init() {}

    init(categoryBytes c: [Int]) {
        weightsBytes = c[MemoryCategory.weights.rawValue]
        kvNowBytes = c[MemoryCategory.kvNow.rawValue]
        kvPreviousBytes = c[MemoryCategory.kvPrevious.rawValue]
        logitsBytes = c[MemoryCategory.logits.rawValue]
        inputsBytes = c[MemoryCategory.inputs.rawValue]
        attentionMaskBytes = c[MemoryCategory.attentionMask.rawValue]
        activationBytes = c[MemoryCategory.activations.rawValue]
        mlpTransientBytes = c[MemoryCategory.mlpTransient.rawValue]
        attentionTransientBytes = c[MemoryCategory.attentionTransient.rawValue]
        vitTransientBytes = c[MemoryCategory.vitTransient.rawValue]
        compressionScratchBytes = c[MemoryCategory.compressionScratch.rawValue]
        decodeTransientBytes = c[MemoryCategory.decodeTransient.rawValue]
    }

    /// Sum of the live-tensor terms (slack excluded).
    public var liveBytes: Int {
        weightsBytes + kvNowBytes + kvPreviousBytes + logitsBytes + inputsBytes + attentionMaskBytes
            + activationBytes + mlpTransientBytes + attentionTransientBytes + vitTransientBytes
            + compressionScratchBytes + decodeTransientBytes
    }
}

/// The highest live-set total reached inside one phase of a step.
public struct PhasePeak: Sendable, Hashable, Codable {
    public var phase: MemoryPhase
    /// Requested bytes (no allocator rounding) at the phase's peak.
    public var requestedPeakBytes: Int
    /// Where inside the phase ("prefill layer 27").
    public var location: String
}

/// Sums requested bytes by category over an event stream and remembers the peak moment.
struct LiveSetTracker: Sendable {
    var categoryBytes = [Int](repeating: 0, count: MemoryCategory.allCases.count)
    var totalBytes = 0
    var peakBytes = 0
    var peakCategories = [Int](repeating: 0, count: MemoryCategory.allCases.count)
    var peakLocation = "load"
    var peakPhase = MemoryPhase.load
    /// Index (in the step's event list) of the event that set the peak; -1 = the step's start.
    var peakEventIndex = -1
    var phasePeaks: [MemoryPhase: (bytes: Int, location: String)] = [:]

    mutating func resetPeak() {
        peakBytes = totalBytes
        peakCategories = categoryBytes
        peakLocation = "step start"
        peakPhase = .inputs
        peakEventIndex = -1
        phasePeaks = [:]
    }

    mutating func apply(_ e: AllocationEvent, at index: Int = -1) {
        switch e.kind {
        case .alloc:
            categoryBytes[e.category.rawValue] += e.bytes
            totalBytes += e.bytes
            if totalBytes > peakBytes {
                peakBytes = totalBytes
                peakCategories = categoryBytes
                peakLocation = e.location
                peakPhase = e.phase
                peakEventIndex = index
            }
            if totalBytes > (phasePeaks[e.phase]?.bytes ?? -1) {
                phasePeaks[e.phase] = (totalBytes, e.location)
            }
        case .free:
            categoryBytes[e.category.rawValue] -= e.bytes
            totalBytes -= e.bytes
        case .retag:
            categoryBytes[e.previousCategory.rawValue] -= e.bytes
            categoryBytes[e.category.rawValue] += e.bytes
        }
    }

    var orderedPhasePeaks: [PhasePeak] {
        phasePeaks.keys.sorted().map { PhasePeak(phase: $0, requestedPeakBytes: phasePeaks[$0]!.bytes, location: phasePeaks[$0]!.location) }
    }
}
