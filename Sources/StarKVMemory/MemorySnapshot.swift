/// One entry of the caching allocator's history, as `torch.cuda.memory._record_memory_history`
/// records it (`TraceEntry` in c10/cuda/CUDACachingAllocator.h).
///
/// Sizes follow PyTorch: `alloc` / `free_*` carry the caller's requested size (`orig_size`,
/// `requested_size`), segment events the segment's size; `blockBytes` keeps the rounded block
/// size for our own checks. For `oom`, `address` holds the free device bytes (torch's
/// `device_free`). Implements docs/report.md §3 (memory snapshot export).
public struct AllocatorTraceEvent: Sendable, Hashable {
    public enum Action: UInt8, Sendable, Hashable, CaseIterable {
        case alloc, freeRequested, freeCompleted, segmentAlloc, segmentFree, segmentMap, segmentUnmap, oom

        /// The action string torch writes into the snapshot.
        public var torchName: String {
            switch self {
            case .alloc: return "alloc"
            case .freeRequested: return "free_requested"
            case .freeCompleted: return "free_completed"
            case .segmentAlloc: return "segment_alloc"
            case .segmentFree: return "segment_free"
            case .segmentMap: return "segment_map"
            case .segmentUnmap: return "segment_unmap"
            case .oom: return "oom"
            }
        }
    }

    public var action: Action
    public var address: Int
    public var sizeBytes: Int
    public var blockBytes: Int
    /// Index into `MemorySnapshot.frames`.
    public var frame: Int32
}

/// The simulated program location of an allocation: agent step, phase and tensor category.
public struct AllocatorFrame: Sendable, Hashable, Codable {
    /// Agent step (-1 = loading the weights).
    public var step: Int
    /// Phase label ("prefill", "vision", "lm_head", …).
    public var phase: String
    /// Where inside the phase ("prefill layer 27").
    public var location: String
    /// Tensor category ("kv_now", "logits", …).
    public var category: String
}

/// The simulated allocator's state and history in the shape of `torch.cuda.memory._snapshot()`:
/// segments with their blocks at one moment, and the trace of every allocator event of the
/// trajectory. `pickle()` writes what `torch.cuda.memory._dump_snapshot` writes, so PyTorch's
/// memory viewer (memory_viz) opens it. Implements docs/report.md §3.
public struct MemorySnapshot: Sendable {
    /// Segments at `capturedAtEvent` (the trajectory's allocated peak).
    public var segments: [SegmentSnapshot]
    public var events: [AllocatorTraceEvent]
    public var frames: [AllocatorFrame]
    /// Index of the trace event after which `segments` were taken.
    public var capturedAtEvent: Int
    /// Step and location of that moment.
    public var capturedAtStep: Int
    public var capturedAtLocation: String
    /// Trajectory peaks of the simulator (the figures the snapshot must reproduce).
    public var peakAllocatedBytes: Int
    public var peakReservedBytes: Int
    public var peakRequestedBytes: Int
    public var options: CachingAllocatorOptions

    /// Bytes of allocated blocks in `segments` (what `torch.cuda._memory_viz.calc_active` sums).
    public var segmentsAllocatedBytes: Int {
        segments.reduce(0) { $0 + $1.blocks.reduce(0) { $0 + ($1.allocated ? $1.sizeBytes : 0) } }
    }

    /// Bytes of all segments (reserved at the capture).
    public var segmentsReservedBytes: Int { segments.reduce(0) { $0 + $1.totalBytes } }

    /// The pickle (protocol 2) of the snapshot dictionary: `segments`, `device_traces` (one
    /// device) and `allocator_settings`, with the dictionary keys torch writes.
    public func pickle() -> [UInt8] {
        var w = PickleWriter()
        var frameMemo = [UInt32?](repeating: nil, count: frames.count)
        /// Frames of an event or block: the tensor (innermost, as torch lists them), then the
        /// phase; each distinct list is written once and fetched from the memo after.
        func writeFrames(_ id: Int32) {
            let f = Int(id)
            guard f >= 0 && f < frames.count else { return w.emptyList() }
            if let memo = frameMemo[f] { return w.get(memo) }
            let frame = frames[f]
            w.beginList()
            w.beginDict()
            w.string("filename"); w.string(frame.category)
            w.string("line"); w.int(0)
            w.string("name"); w.string("\(frame.category) @ \(frame.location)")
            w.endDict()
            w.beginDict()
            w.string("filename"); w.string(frame.step < 0 ? "load" : "step \(frame.step)")
            w.string("line"); w.int(max(0, frame.step))
            w.string("name"); w.string(frame.phase)
            w.endDict()
            w.endList()
            frameMemo[f] = w.put()
        }
        w.beginDict()
        w.string("segments")
        w.beginList()
        for seg in segments {
            var allocated = 0
            var requested = 0
            for b in seg.blocks where b.allocated {
                allocated += b.sizeBytes
                requested += b.requestedBytes
            }
            w.beginDict()
            w.string("device"); w.int(0)
            w.string("address"); w.int(seg.address)
            w.string("total_size"); w.int(seg.totalBytes)
            w.string("allocated_size"); w.int(allocated)
            w.string("active_size"); w.int(allocated)
            w.string("requested_size"); w.int(requested)
            w.string("stream"); w.int(0)
            w.string("segment_type"); w.string(seg.isSmallPool ? "small" : "large")
            w.string("segment_pool_id"); w.tuple2(0, 0)
            w.string("is_expandable"); w.bool(seg.isExpandable)
            w.string("frames"); w.emptyList()
            w.string("blocks")
            w.beginList()
            for b in seg.blocks {
                w.beginDict()
                w.string("address"); w.int(b.address)
                w.string("size"); w.int(b.sizeBytes)
                w.string("requested_size"); w.int(b.requestedBytes)
                w.string("state"); w.string(b.allocated ? "active_allocated" : "inactive")
                w.string("frames"); writeFrames(b.frame)
                w.endDict()
            }
            w.endList()
            w.endDict()
        }
        w.endList()

        w.string("device_traces")
        w.beginList()
        w.beginList()
        for (i, e) in events.enumerated() {
            w.beginDict()
            w.string("action"); w.string(e.action.torchName)
            w.string(e.action == .oom ? "device_free" : "addr"); w.int(e.address)
            w.string("size"); w.int(e.sizeBytes)
            w.string("stream"); w.int(0)
            w.string("time_us"); w.int(i)
            w.string("frames")
            writeFrames(e.frame)
            w.endDict()
        }
        w.endList()
        w.endList()

        w.string("allocator_settings")
        w.beginDict()
        w.string("PYTORCH_CUDA_ALLOC_CONF")
        w.string(options.expandableSegments ? "expandable_segments:True" : "")
        w.string("max_split_size"); w.int(options.maxSplitSizeBytes ?? -1)
        w.string("garbage_collection_threshold"); w.int(0)
        w.string("expandable_segments"); w.bool(options.expandableSegments)
        w.endDict()
        w.endDict()
        return w.finish()
    }
}

/// A minimal writer of Python pickles, protocol 2 (PEP 307 opcodes): dicts, lists, 2-tuples,
/// ints of any size, booleans and str. Strings are memoised (written once, then fetched with
/// BINGET), which keeps the repeated dictionary keys of a long trace small.
public struct PickleWriter: Sendable {
    public private(set) var bytes: [UInt8] = [0x80, 0x02]
    var stringMemo: [String: UInt32] = [:]
    var nextMemo: UInt32 = 0

    public init() {}

    public mutating func int(_ v: Int) {
        if v >= 0 && v < 256 {
            bytes += [0x4B, UInt8(v)]  // BININT1
        } else if v >= 0 && v < 65536 {
            bytes += [0x4D, UInt8(v & 0xFF), UInt8(v >> 8)]  // BININT2
        } else if v >= Int(Int32.min) && v <= Int(Int32.max) {
            let u = UInt32(bitPattern: Int32(v))
            bytes += [0x4A, UInt8(u & 0xFF), UInt8((u >> 8) & 0xFF), UInt8((u >> 16) & 0xFF), UInt8(u >> 24)]  // BININT
        } else {
            // LONG1: little-endian two's complement, as few bytes as keep the sign.
            var le: [UInt8] = []
            var x = v
            repeat {
                le.append(UInt8(truncatingIfNeeded: x))
                x >>= 8
            } while !(x == 0 && le.last! < 0x80) && !(x == -1 && le.last! >= 0x80)
            bytes += [0x8A, UInt8(le.count)] + le
        }
    }

    public mutating func bool(_ b: Bool) { bytes.append(b ? 0x88 : 0x89) }

    public mutating func string(_ s: String) {
        if let m = stringMemo[s] { return get(m) }
        let utf8 = Array(s.utf8)
        let n = UInt32(utf8.count)
        bytes += [0x58, UInt8(n & 0xFF), UInt8((n >> 8) & 0xFF), UInt8((n >> 16) & 0xFF), UInt8(n >> 24)]  // BINUNICODE
        bytes += utf8
        stringMemo[s] = put()
    }

    public mutating func tuple2(_ a: Int, _ b: Int) {
        int(a)
        int(b)
        bytes.append(0x86)  // TUPLE2
    }

    public mutating func beginDict() { bytes += [0x7D, 0x28] }  // EMPTY_DICT, MARK
    public mutating func endDict() { bytes.append(0x75) }  // SETITEMS
    public mutating func beginList() { bytes += [0x5D, 0x28] }  // EMPTY_LIST, MARK
    public mutating func endList() { bytes.append(0x65) }  // APPENDS
    public mutating func emptyList() { bytes.append(0x5D) }

    /// Stores the top of the stack in the memo; returns its index.
    @discardableResult
    public mutating func put() -> UInt32 {
        let m = nextMemo
        nextMemo += 1
        if m < 256 {
            bytes += [0x71, UInt8(m)]  // BINPUT
        } else {
            bytes += [0x72, UInt8(m & 0xFF), UInt8((m >> 8) & 0xFF), UInt8((m >> 16) & 0xFF), UInt8(m >> 24)]  // LONG_BINPUT
        }
        return m
    }

    /// Pushes a memoised object.
    public mutating func get(_ m: UInt32) {
        if m < 256 {
            bytes += [0x68, UInt8(m)]  // BINGET
        } else {
            bytes += [0x6A, UInt8(m & 0xFF), UInt8((m >> 8) & 0xFF), UInt8((m >> 16) & 0xFF), UInt8(m >> 24)]  // LONG_BINGET
        }
    }

    /// The finished pickle (STOP appended).
    public func finish() -> [UInt8] { bytes + [0x2E] }
}

/// A tensor live at a step's memory peak (what memory_viz lists at its peak; docs/report.md §2, item 3).
public struct LiveTensor: Sendable, Hashable, Codable {
    /// How many of the largest live tensors a step report keeps.
    public static let reportedCount = 8
    public var bytes: Int
    /// Category label ("KV cache (this step)", "logits", …).
    public var category: String
    /// Where it was allocated ("step 3, prefill layer 27"; "load, …" for the weights).
    public var allocatedAt: String
}

extension MemoryCategory {
    /// Short identifier (frame file names in the memory snapshot).
    public var key: String {
        switch self {
        case .weights: return "weights"
        case .kvNow: return "kv_now"
        case .kvPrevious: return "kv_previous"
        case .logits: return "logits"
        case .inputs: return "inputs"
        case .attentionMask: return "attention_mask"
        case .activations: return "activations"
        case .mlpTransient: return "mlp"
        case .attentionTransient: return "attention_workspace"
        case .vitTransient: return "vit"
        case .compressionScratch: return "compression_scratch"
        case .decodeTransient: return "decode"
        }
    }

    /// Words for a report.
    public var label: String {
        switch self {
        case .weights: return "weights"
        case .kvNow: return "KV cache (this step)"
        case .kvPrevious: return "KV cache (previous step, retained)"
        case .logits: return "logits"
        case .inputs: return "inputs (pixels, embeddings)"
        case .attentionMask: return "attention mask"
        case .activations: return "layer activations"
        case .mlpTransient: return "MLP activations"
        case .attentionTransient: return "attention workspace"
        case .vitTransient: return "ViT activations"
        case .compressionScratch: return "compression scratch"
        case .decodeTransient: return "decode transients"
        }
    }
}
