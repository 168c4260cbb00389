/// Options of the PyTorch CUDA caching allocator that change its decisions
/// (`PYTORCH_CUDA_ALLOC_CONF`).
///
/// Implements docs/memory-model.md §5.1 rules 1, 4, 5 and 10.
public struct CachingAllocatorOptions: Sendable, Hashable, Codable {
    /// `expandable_segments:True` — one growing virtual segment per pool, mapped in 2 MiB
    /// (small pool) or 20 MiB (large pool) pages.
    public var expandableSegments: Bool
    /// `max_split_size_mb` in bytes; nil means unlimited (PyTorch's default `SIZE_MAX`).
    public var maxSplitSizeBytes: Int?
    /// `max_non_split_rounding_mb` in bytes: a request ≥ max_split_size may only take a cached
    /// block smaller than request + this (default 20 MiB = kLargeBuffer).
    public var maxNonSplitRoundingBytes: Int
    /// `roundup_power2_divisions` (one value for every size class); 0 or 1 disables it.
    public var roundupPower2Divisions: Int

    public init(
        expandableSegments: Bool = false, maxSplitSizeBytes: Int? = nil,
        maxNonSplitRoundingBytes: Int = CachingAllocator.largeBuffer, roundupPower2Divisions: Int = 0
    ) {
        self.expandableSegments = expandableSegments
        self.maxSplitSizeBytes = maxSplitSizeBytes
        self.maxNonSplitRoundingBytes = maxNonSplitRoundingBytes
        self.roundupPower2Divisions = roundupPower2Divisions
    }
}

/// A current value and its high-water mark, like PyTorch's `Stat` (current / peak).
public struct StatCounter: Sendable, Hashable, Codable {
    public var current: Int = 0
    public var peak: Int = 0
    public init(current: Int = 0, peak: Int = 0) {
        self.current = current
        self.peak = peak
    }
    mutating func increase(_ amount: Int) {
        current += amount
        if current > peak { peak = current }
    }
    mutating func decrease(_ amount: Int) { current -= amount }
    mutating func resetPeak() { peak = current }
}

/// The statistics `torch.cuda.memory_stats()` exposes (aggregate over both pools).
///
/// Implements docs/memory-model.md §5.1 rule 8.
public struct CachingAllocatorStats: Sendable, Hashable, Codable {
    /// Bytes of blocks handed out, including unsplit slack (`memory_allocated`).
    public var allocatedBytes = StatCounter()
    /// Bytes obtained from CUDA (`memory_reserved`).
    public var reservedBytes = StatCounter()
    /// Bytes of blocks in use (allocated; equal to allocated here: no cross-stream events).
    public var activeBytes = StatCounter()
    /// Bytes the callers asked for (before rounding).
    public var requestedBytes = StatCounter()
    /// Free bytes inside partly used (split) segments — fragmentation.
    public var inactiveSplitBytes = StatCounter()
    /// Count of free split blocks.
    public var inactiveSplitBlocks = StatCounter()
    /// Count of live allocations.
    public var allocations = StatCounter()
    /// Count of `cudaMalloc`ed segments (non-expandable).
    public var segments = StatCounter()
    /// Times an allocation had to free cached memory and retry (`num_alloc_retries`).
    public var numAllocRetries = 0
    /// Allocations that failed even after freeing the cache (`num_ooms`).
    public var numOOMs = 0
    /// `cudaMalloc` calls or page mappings.
    public var numDeviceAlloc = 0
    /// `cudaFree` calls or page unmappings.
    public var numDeviceFree = 0

    public init() {}
}

/// Opaque handle of an allocated block.
public struct BlockHandle: Hashable, Sendable, Codable {
    public let index: Int
}

/// What a failed `malloc` would have printed in PyTorch's OOM message.
public struct OutOfMemoryInfo: Sendable, Hashable, Codable {
    /// Caller's request.
    public var requestedBytes: Int
    /// Request after rounding.
    public var roundedBytes: Int
    /// `memory_allocated()` at the failure.
    public var allocatedBytes: Int
    /// `memory_reserved()` at the failure (after the cache was released).
    public var reservedBytes: Int
    /// The allocator's capacity.
    public var capacityBytes: Int
    /// "X is reserved by PyTorch but unallocated".
    public var reservedButUnallocatedBytes: Int { reservedBytes - allocatedBytes }
}

/// The outcome of `CachingAllocator.malloc`.
public enum MallocResult: Sendable, Hashable {
    case allocated(BlockHandle)
    case outOfMemory(OutOfMemoryInfo)

    /// The handle, or nil after an OOM.
    public var handle: BlockHandle? {
        if case .allocated(let h) = self { return h }
        return nil
    }
}

/// One block of a segment, as `torch.cuda.memory_snapshot()` lists it.
public struct BlockSnapshot: Sendable, Hashable, Codable {
    public var address: Int
    public var sizeBytes: Int
    public var allocated: Bool
    /// What the caller asked for (0 for a free block), as torch's `requested_size`.
    public var requestedBytes: Int = 0
    /// The allocation's frame in the recorded history (-1 when free or not recorded).
    public var frame: Int32 = -1
}

/// One segment (one `cudaMalloc`, or one contiguous mapped range of an expandable segment).
public struct SegmentSnapshot: Sendable, Hashable, Codable {
    public var address: Int
    public var isSmallPool: Bool
    public var isExpandable: Bool
    public var blocks: [BlockSnapshot]
    public var totalBytes: Int { blocks.reduce(0) { $0 + $1.sizeBytes } }
}

/// A replica of PyTorch's native CUDA caching allocator (`DeviceCachingAllocator` in
/// `c10/cuda/CUDACachingAllocator.cpp`) for one device and one stream, over simulated addresses.
///
/// Implements docs/memory-model.md §5.1 rules 1–10: 512 B rounding (optionally power-of-two
/// divisions), small (≤ 1 MiB) / large pools, 2 MiB / 20 MiB / 2 MiB-rounded segments, best fit
/// by (size, address), splitting thresholds, merging with free neighbours inside a segment,
/// release-cached-and-retry on a failed `cudaMalloc`, `max_split_size`, expandable segments, and the
/// allocated / reserved / inactive-split statistics with peaks. Not modelled: multiple streams and
/// cross-stream events, CUDA graphs' private pools, `garbage_collection_threshold`, memory-fraction
/// caps. `cudaMalloc` returns increasing 2 MiB-aligned addresses (a bump pointer) — only tie-breaks
/// between equal-sized free blocks depend on addresses. See docs/memory-model.md.
public struct CachingAllocator: Sendable {
    /// Every size is rounded to a multiple of this (kMinBlockSize).
    public static let minBlockSize = 512
    /// Largest small-pool request (kSmallSize, 1 MiB).
    public static let smallSize = 1 << 20
    /// Small-pool segment (kSmallBuffer, 2 MiB).
    public static let smallBuffer = 2 << 20
    /// Segment for 1–10 MiB requests (kLargeBuffer, 20 MiB).
    public static let largeBuffer = 20 << 20
    /// Requests from this size get their own 2 MiB-rounded segment (kMinLargeAlloc, 10 MiB).
    public static let minLargeAlloc = 10 << 20
    /// Rounding of large segments (kRoundLarge, 2 MiB).
    public static let roundLarge = 2 << 20

    struct Block: Sendable {
        var address: Int
        var size: Int
        var requestedSize = 0
        var prev = -1
        var next = -1
        var allocated = false
        var mapped = true
        var isSmall: Bool
        var expandableSegment = -1
        var live = true
        /// `currentFrame` when allocated (history recording only).
        var frame: Int32 = -1
    }

    struct SizeKey: Sendable, Comparable {
        var size: Int
        var address: Int
        var index: Int
        static func < (a: SizeKey, b: SizeKey) -> Bool {
            a.size != b.size ? a.size < b.size : a.address < b.address
        }
    }

    struct Pool: Sendable {
        /// Free mapped blocks ordered by (size, address).
        var blocks: [SizeKey] = []
        /// Free unmapped blocks of expandable segments ordered by address (stored in `size` = 0).
        var unmapped: [SizeKey] = []
    }

    struct ExpandableSegmentState: Sendable {
        var base: Int
        var virtualSize: Int
        var pageSize: Int
        var live = true
    }

    /// Bytes `cudaMalloc` may hand out in total before it fails.
    public let capacityBytes: Int
    /// Device total used to size expandable segments' address space (1.125 ×).
    public let deviceTotalBytes: Int
    public let options: CachingAllocatorOptions
    public private(set) var stats = CachingAllocatorStats()
    /// Every comparison with the capacity so far (`CapacityEnvelope`).
    public private(set) var capacityEnvelope = CapacityEnvelope()

    var blocks: [Block] = []
    var freeSlots: [Int] = []
    var smallPool = Pool()
    var largePool = Pool()
    var segmentsExpandable: [ExpandableSegmentState] = []
    var nextAddress = 1 << 32
    var ignoreCapacity = false
    /// The allocation history (`torch.cuda.memory._record_memory_history`): nil when not recording.
    /// Every malloc, free, segment allocation, release, page (un)mapping and OOM is appended.
    public var history: [AllocatorTraceEvent]? = nil
    /// Frame attached to the events recorded next (the caller's program location).
    public var currentFrame: Int32 = 0

    @inline(__always)
    mutating func record(_ action: AllocatorTraceEvent.Action, _ address: Int, _ size: Int, block: Int = 0) {
        history?.append(AllocatorTraceEvent(action: action, address: address, sizeBytes: size, blockBytes: block, frame: currentFrame))
    }

    public init(capacityBytes: Int, deviceTotalBytes: Int? = nil, options: CachingAllocatorOptions = .init()) {
        self.capacityBytes = capacityBytes
        self.deviceTotalBytes = deviceTotalBytes ?? capacityBytes
        self.options = options
    }

    // MARK: rules 1-3

    /// `round_size`: < 512 B → 512 B; power-of-two divisions when configured; else 512 B multiple.
    public func roundSize(_ size: Int) -> Int {
        let m = Self.minBlockSize
        if size < m { return m }
        let d = options.roundupPower2Divisions
        if d > 1 && size > m * d { return Self.roundupPower2NextDivision(size, divisions: d) }
        return m * ((size + m - 1) / m)
    }

    /// `roundup_power2_next_division`: e.g. 1200 with 4 divisions → 1280.
    public static func roundupPower2NextDivision(_ size: Int, divisions: Int) -> Int {
        if size > 0 && size & (size - 1) == 0 { return size }
        let floorPow2 = 1 << (Int.bitWidth - 1 - size.leadingZeroBitCount)
        let log2Div = Int.bitWidth - 1 - divisions.leadingZeroBitCount
        let step = floorPow2 >> log2Div
        if step == 0 { return floorPow2 << 1 }
        let floored = size & ~(step - 1)
        return floored == size ? size : floored + step
    }

    /// Rule 2: rounded sizes ≤ 1 MiB use the small pool.
    public static func usesSmallPool(_ roundedSize: Int) -> Bool { roundedSize <= smallSize }

    /// `get_allocation_size` (rule 3).
    public static func allocationSize(_ size: Int) -> Int {
        if size <= smallSize { return smallBuffer }
        if size < minLargeAlloc { return largeBuffer }
        return roundLarge * ((size + roundLarge - 1) / roundLarge)
    }

    // MARK: public operations

    /// `malloc`: best-fit from the cache, else a new segment, else release cache and retry.
    public mutating func malloc(_ requestedBytes: Int) -> MallocResult {
        let orig = max(0, requestedBytes)
        let size = roundSize(orig)
        let small = Self.usesSmallPool(size)
        let allocSize = Self.allocationSize(size)
        var found = getFreeBlock(small: small, size: size)
        if found == nil {
            found = allocBlock(small: small, size: size, allocSize: allocSize, isRetry: false)
            if found == nil, releaseAvailableCachedBlocks(small: small, size: size) {
                found = allocBlock(small: small, size: size, allocSize: allocSize, isRetry: false)
            }
            if found == nil {
                releaseCachedBlocks()
                found = allocBlock(small: small, size: size, allocSize: allocSize, isRetry: true)
            }
        }
        guard let index = found else {
            stats.numOOMs += 1
            record(.oom, max(0, capacityBytes - stats.reservedBytes.current), size)
            return .outOfMemory(OutOfMemoryInfo(
                requestedBytes: orig, roundedBytes: size, allocatedBytes: stats.allocatedBytes.current,
                reservedBytes: stats.reservedBytes.current, capacityBytes: capacityBytes))
        }
        let split = shouldSplit(index, size: size)
        let block = allocFoundBlock(index, size: size, orig: orig, split: split)
        if history != nil {
            blocks[block].frame = currentFrame
            record(.alloc, blocks[block].address, orig, block: blocks[block].size)
        }
        return .allocated(BlockHandle(index: block))
    }

    /// Allocates even beyond the capacity (a what-if continuation after an OOM; the simulator
    /// flags the OOM and carries on so the step's hypothetical peak is still measured).
    public mutating func mallocIgnoringCapacity(_ requestedBytes: Int) -> BlockHandle {
        ignoreCapacity = true
        defer { ignoreCapacity = false }
        return malloc(requestedBytes).handle!
    }

    /// `free`: the block returns to its pool and merges with free neighbours (rule 6).
    public mutating func free(_ handle: BlockHandle) {
        let i = handle.index
        precondition(i >= 0 && i < blocks.count && blocks[i].live && blocks[i].allocated, "double free")
        if history != nil {
            record(.freeRequested, blocks[i].address, blocks[i].requestedSize, block: blocks[i].size)
            record(.freeCompleted, blocks[i].address, blocks[i].requestedSize, block: blocks[i].size)
        }
        blocks[i].allocated = false
        stats.allocations.decrease(1)
        stats.allocatedBytes.decrease(blocks[i].size)
        freeBlock(i)
    }

    /// `empty_cache()`: releases every entirely free segment (rule 9).
    public mutating func emptyCache() { releaseCachedBlocks() }

    /// `reset_peak_memory_stats()`: every peak becomes the current value.
    public mutating func resetPeakStats() {
        stats.allocatedBytes.resetPeak()
        stats.reservedBytes.resetPeak()
        stats.activeBytes.resetPeak()
        stats.requestedBytes.resetPeak()
        stats.inactiveSplitBytes.resetPeak()
        stats.inactiveSplitBlocks.resetPeak()
        stats.allocations.resetPeak()
        stats.segments.resetPeak()
    }

    /// Size of the block behind a handle (the rounded, possibly unsplit size).
    public func blockSize(_ handle: BlockHandle) -> Int { blocks[handle.index].size }

    /// Address of the block behind a handle.
    public func blockAddress(_ handle: BlockHandle) -> Int { blocks[handle.index].address }

    /// Segments and their blocks, by address (like `torch.cuda.memory_snapshot()`).
    public func snapshot() -> [SegmentSnapshot] {
        var heads: [Int] = []
        for (i, b) in blocks.enumerated() where b.live && b.mapped {
            if b.prev == -1 || !blocks[b.prev].mapped { heads.append(i) }
        }
        heads.sort { blocks[$0].address < blocks[$1].address }
        return heads.map { head in
            var list: [BlockSnapshot] = []
            var j = head
            while j != -1 && blocks[j].mapped {
                list.append(
                    BlockSnapshot(
                        address: blocks[j].address, sizeBytes: blocks[j].size, allocated: blocks[j].allocated,
                        requestedBytes: blocks[j].allocated ? blocks[j].requestedSize : 0,
                        frame: blocks[j].allocated ? blocks[j].frame : -1))
                j = blocks[j].next
            }
            return SegmentSnapshot(
                address: blocks[head].address, isSmallPool: blocks[head].isSmall,
                isExpandable: blocks[head].expandableSegment >= 0, blocks: list)
        }
    }

    // MARK: block storage

    mutating func newBlock(_ block: Block) -> Int {
        if let slot = freeSlots.popLast() {
            blocks[slot] = block
            return slot
        }
        blocks.append(block)
        return blocks.count - 1
    }

    mutating func killBlock(_ i: Int) {
        blocks[i].live = false
        freeSlots.append(i)
    }

    func isSplit(_ i: Int) -> Bool { blocks[i].prev != -1 || blocks[i].next != -1 }

    // MARK: pools (ordered arrays)

    static func lowerBound(_ keys: [SizeKey], size: Int, address: Int) -> Int {
        var lo = 0, hi = keys.count
        while lo < hi {
            let mid = (lo + hi) >> 1
            let k = keys[mid]
            if k.size < size || (k.size == size && k.address < address) { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    mutating func withPool<R>(small: Bool, _ body: (inout Pool) -> R) -> R {
        small ? body(&smallPool) : body(&largePool)
    }

    mutating func insertFree(_ i: Int) {
        let key = SizeKey(size: blocks[i].size, address: blocks[i].address, index: i)
        withPool(small: blocks[i].isSmall) { pool in
            pool.blocks.insert(key, at: Self.lowerBound(pool.blocks, size: key.size, address: key.address))
        }
    }

    mutating func eraseFree(_ i: Int) {
        let size = blocks[i].size, address = blocks[i].address
        withPool(small: blocks[i].isSmall) { pool in
            let at = Self.lowerBound(pool.blocks, size: size, address: address)
            precondition(at < pool.blocks.count && pool.blocks[at].index == i, "free-pool index out of sync")
            pool.blocks.remove(at: at)
        }
    }

    mutating func insertUnmapped(_ i: Int) {
        let key = SizeKey(size: 0, address: blocks[i].address, index: i)
        withPool(small: blocks[i].isSmall) { pool in
            pool.unmapped.insert(key, at: Self.lowerBound(pool.unmapped, size: 0, address: key.address))
        }
    }

    mutating func eraseUnmapped(_ i: Int) {
        let address = blocks[i].address
        withPool(small: blocks[i].isSmall) { pool in
            let at = Self.lowerBound(pool.unmapped, size: 0, address: address)
            precondition(at < pool.unmapped.count && pool.unmapped[at].index == i, "unmapped index out of sync")
            pool.unmapped.remove(at: at)
        }
    }

    // MARK: rule 4 (best fit)

    mutating func getFreeBlock(small: Bool, size: Int) -> Int? {
        let keys = small ? smallPool.blocks : largePool.blocks
        var at = Self.lowerBound(keys, size: size, address: 0)
        guard at < keys.count else { return nil }
        if blocks[keys[at].index].expandableSegment >= 0 && options.expandableSegments {
            // Best fit by the size a block can grow to (itself + a following unmapped range).
            func expandableSize(_ i: Int) -> Int {
                let b = blocks[i]
                return b.size + (b.next != -1 && !blocks[b.next].mapped ? blocks[b.next].size : 0)
            }
            var next = at + 1
            while blocks[keys[at].index].expandableSegment >= 0 && next < keys.count
                && expandableSize(keys[next].index) < expandableSize(keys[at].index)
            {
                at = next
                next += 1
            }
        }
        let i = keys[at].index
        if let maxSplit = options.maxSplitSizeBytes {
            if size < maxSplit && blocks[i].size >= maxSplit { return nil }
            if size >= maxSplit && blocks[i].size >= size + options.maxNonSplitRoundingBytes { return nil }
        }
        _ = withPool(small: small) { $0.blocks.remove(at: at) }
        return i
    }

    // MARK: rule 3 / 7 (new segments, release and retry)

    mutating func allocBlock(small: Bool, size: Int, allocSize: Int, isRetry: Bool) -> Int? {
        if isRetry { stats.numAllocRetries += 1 }
        if options.expandableSegments { return tryAllocateExpandableBlock(small: small, size: size) }
        if !ignoreCapacity && !capacityEnvelope.check(stats.reservedBytes.current + allocSize, capacity: capacityBytes) { return nil }
        let address = nextAddress
        nextAddress += ((allocSize + Self.roundLarge - 1) / Self.roundLarge) * Self.roundLarge
        stats.reservedBytes.increase(allocSize)
        stats.segments.increase(1)
        stats.numDeviceAlloc += 1
        record(.segmentAlloc, address, allocSize)
        return newBlock(Block(address: address, size: allocSize, isSmall: small))
    }

    /// `release_available_cached_blocks`: only with `max_split_size` — frees one oversize cached
    /// segment large enough, or several oversize ones from the largest down.
    mutating func releaseAvailableCachedBlocks(small: Bool, size: Int) -> Bool {
        guard let maxSplit = options.maxSplitSizeBytes else { return false }
        let keySize = max(size, maxSplit)
        let keys = small ? smallPool.blocks : largePool.blocks
        let at = Self.lowerBound(keys, size: keySize, address: 0)
        if at == keys.count || blocks[keys[at].index].expandableSegment >= 0 {
            if at == 0 { return false }
            var released = 0
            var j = at - 1
            while released < keySize && j >= 0 && blocks[keys[j].index].size >= maxSplit {
                let i = keys[j].index
                if blocks[i].expandableSegment < 0 {
                    released += blocks[i].size
                    releaseBlock(i)
                }
                j -= 1
            }
            return released >= keySize
        }
        releaseBlock(keys[at].index)
        return true
    }

    /// `release_cached_blocks`: frees every unsplit cached segment; unmaps free pages of
    /// expandable segments.
    mutating func releaseCachedBlocks() {
        for small in [false, true] {
            let keys = small ? smallPool.blocks : largePool.blocks
            var toUnmap: [Int] = []
            for key in keys {
                let i = key.index
                if blocks[i].expandableSegment >= 0 {
                    toUnmap.append(i)
                } else if !isSplit(i) {
                    releaseBlock(i)
                }
            }
            // Unmap in ascending address order (the pool's (size, address) order in PyTorch;
            // the result does not depend on the order).
            for i in toUnmap where blocks[i].live && blocks[i].mapped && !blocks[i].allocated {
                unmapBlock(i)
                if blocks[i].live && !blocks[i].mapped && !isSplit(i) { releaseExpandableSegment(i) }
            }
        }
    }

    mutating func releaseBlock(_ i: Int) {
        record(.segmentFree, blocks[i].address, blocks[i].size)
        eraseFree(i)
        stats.reservedBytes.decrease(blocks[i].size)
        stats.segments.decrease(1)
        stats.numDeviceFree += 1
        killBlock(i)
    }

    // MARK: rule 5 (split) and allocation bookkeeping

    func shouldSplit(_ i: Int, size: Int) -> Bool {
        let remaining = blocks[i].size - size
        if blocks[i].isSmall || options.expandableSegments { return remaining >= Self.minBlockSize }
        let belowMaxSplit = options.maxSplitSizeBytes.map { size < $0 } ?? true
        return belowMaxSplit && remaining > Self.smallSize
    }

    mutating func allocFoundBlock(_ found: Int, size: Int, orig: Int, split: Bool) -> Int {
        var i = found
        let alreadySplit = isSplit(found)
        let expandable = blocks[found].expandableSegment >= 0
        if split {
            let remaining = found
            var b = Block(address: blocks[remaining].address, size: size, isSmall: blocks[remaining].isSmall)
            b.expandableSegment = blocks[remaining].expandableSegment
            b.prev = blocks[remaining].prev
            b.next = remaining
            i = newBlock(b)
            if b.prev != -1 { blocks[b.prev].next = i }
            blocks[remaining].prev = i
            blocks[remaining].address += size
            blocks[remaining].size -= size
            insertFree(remaining)
            if alreadySplit && !expandable {
                stats.inactiveSplitBytes.decrease(size)
            } else if !expandable {
                stats.inactiveSplitBytes.increase(blocks[remaining].size)
                stats.inactiveSplitBlocks.increase(1)
            }
        } else if alreadySplit && !expandable {
            stats.inactiveSplitBytes.decrease(blocks[i].size)
            stats.inactiveSplitBlocks.decrease(1)
        }
        blocks[i].allocated = true
        blocks[i].requestedSize = orig
        stats.allocations.increase(1)
        stats.allocatedBytes.increase(blocks[i].size)
        stats.activeBytes.increase(blocks[i].size)
        stats.requestedBytes.increase(orig)
        return i
    }

    // MARK: rule 6 (free and merge)

    mutating func freeBlock(_ i: Int) {
        let originalSize = blocks[i].size
        let requested = blocks[i].requestedSize
        var netBlocks = 0
        var netBytes = 0
        for candidate in [blocks[i].prev, blocks[i].next] {
            let subsumed = tryMergeBlocks(i, candidate)
            if subsumed > 0 {
                netBlocks -= 1
                netBytes -= subsumed
            }
        }
        insertFree(i)
        if isSplit(i) {
            netBlocks += 1
            netBytes += blocks[i].size
        }
        if blocks[i].expandableSegment < 0 {
            if netBlocks > 0 { stats.inactiveSplitBlocks.increase(netBlocks) } else if netBlocks < 0 {
                stats.inactiveSplitBlocks.decrease(-netBlocks)
            }
            if netBytes > 0 { stats.inactiveSplitBytes.increase(netBytes) } else if netBytes < 0 {
                stats.inactiveSplitBytes.decrease(-netBytes)
            }
        }
        stats.activeBytes.decrease(originalSize)
        stats.requestedBytes.decrease(requested)
    }

    /// `try_merge_blocks(dst, src)`: absorbs a free neighbour with the same mapped state.
    /// `dst` must not be in a free set while this runs.
    mutating func tryMergeBlocks(_ dst: Int, _ src: Int) -> Int {
        guard src != -1, !blocks[src].allocated, blocks[dst].mapped == blocks[src].mapped else { return 0 }
        if blocks[dst].prev == src {
            blocks[dst].address = blocks[src].address
            blocks[dst].prev = blocks[src].prev
            if blocks[dst].prev != -1 { blocks[blocks[dst].prev].next = dst }
        } else {
            blocks[dst].next = blocks[src].next
            if blocks[dst].next != -1 { blocks[blocks[dst].next].prev = dst }
        }
        let subsumed = blocks[src].size
        if blocks[src].mapped { eraseFree(src) } else { eraseUnmapped(src) }
        blocks[dst].size += subsumed
        killBlock(src)
        return subsumed
    }

    // MARK: rule 10 (expandable segments)

    func pageSize(small: Bool) -> Int { small ? Self.smallBuffer : Self.largeBuffer }

    mutating func findExpandableBlock(small: Bool, size: Int) -> Int {
        let unmapped = small ? smallPool.unmapped : largePool.unmapped
        for key in unmapped {
            var c = key.index
            let p = blocks[c].prev
            if p != -1 && !blocks[p].allocated { c = p }
            var bytes = 0
            var b = c
            while bytes < size && b != -1 && !blocks[b].allocated {
                bytes += blocks[b].size
                b = blocks[b].next
            }
            if bytes >= size { return c }
        }
        let page = pageSize(small: small)
        let wanted = max(deviceTotalBytes + deviceTotalBytes / 8, size)
        let virtualSize = ((wanted + page - 1) / page) * page
        let base = ((nextAddress + page - 1) / page) * page
        nextAddress = base + virtualSize
        segmentsExpandable.append(ExpandableSegmentState(base: base, virtualSize: virtualSize, pageSize: page))
        var block = Block(address: base, size: virtualSize, isSmall: small)
        block.mapped = false
        block.expandableSegment = segmentsExpandable.count - 1
        let i = newBlock(block)
        insertUnmapped(i)
        return i
    }

    mutating func tryAllocateExpandableBlock(small: Bool, size: Int) -> Int? {
        var candidate = findExpandableBlock(small: small, size: size)
        if !blocks[candidate].mapped {
            guard mapBlock(candidate, size: min(blocks[candidate].size, size)) else { return nil }
        }
        while blocks[candidate].size < size {
            let remaining = size - blocks[candidate].size
            let next = blocks[candidate].next
            guard next != -1, mapBlock(next, size: min(remaining, blocks[next].size)) else { return nil }
            candidate = next
        }
        eraseFree(candidate)
        return candidate
    }

    /// Maps whole pages covering [address, address + size) of an unmapped block.
    mutating func mapBlock(_ i: Int, size: Int) -> Bool {
        let seg = segmentsExpandable[blocks[i].expandableSegment]
        let offset = blocks[i].address - seg.base
        let begin = offset / seg.pageSize
        let end = (offset + size + seg.pageSize - 1) / seg.pageSize
        let mappedSize = (end - begin) * seg.pageSize
        if !ignoreCapacity && !capacityEnvelope.check(stats.reservedBytes.current + mappedSize, capacity: capacityBytes) { return false }
        record(.segmentMap, blocks[i].address, mappedSize)
        eraseUnmapped(i)
        blocks[i].mapped = true
        if mappedSize < blocks[i].size {
            var rest = Block(address: blocks[i].address + mappedSize, size: blocks[i].size - mappedSize, isSmall: blocks[i].isSmall)
            rest.mapped = false
            rest.expandableSegment = blocks[i].expandableSegment
            rest.prev = i
            rest.next = blocks[i].next
            let r = newBlock(rest)
            if rest.next != -1 { blocks[rest.next].prev = r }
            blocks[i].next = r
            blocks[i].size = mappedSize
            insertUnmapped(r)
        }
        _ = tryMergeBlocks(i, blocks[i].prev)
        _ = tryMergeBlocks(i, blocks[i].next)
        insertFree(i)
        stats.reservedBytes.increase(mappedSize)
        stats.numDeviceAlloc += 1
        return true
    }

    /// Unmaps the whole pages inside a free mapped block (rounding inward).
    mutating func unmapBlock(_ i: Int) {
        let seg = segmentsExpandable[blocks[i].expandableSegment]
        let start = blocks[i].address - seg.base
        let stop = start + blocks[i].size
        let begin = (start + seg.pageSize - 1) / seg.pageSize
        let end = stop / seg.pageSize
        guard begin < end else { return }
        let unmappedAddress = seg.base + begin * seg.pageSize
        let unmappedSize = (end - begin) * seg.pageSize
        record(.segmentUnmap, unmappedAddress, unmappedSize)
        eraseFree(i)
        let beforeSize = unmappedAddress - blocks[i].address
        if beforeSize > 0 {
            var before = Block(address: blocks[i].address, size: beforeSize, isSmall: blocks[i].isSmall)
            before.expandableSegment = blocks[i].expandableSegment
            before.prev = blocks[i].prev
            before.next = i
            let b = newBlock(before)
            if before.prev != -1 { blocks[before.prev].next = b }
            blocks[i].prev = b
            insertFree(b)
        }
        let afterSize = blocks[i].size - (beforeSize + unmappedSize)
        if afterSize > 0 {
            var after = Block(address: unmappedAddress + unmappedSize, size: afterSize, isSmall: blocks[i].isSmall)
            after.expandableSegment = blocks[i].expandableSegment
            after.prev = i
            after.next = blocks[i].next
            let a = newBlock(after)
            if after.next != -1 { blocks[after.next].prev = a }
            blocks[i].next = a
            insertFree(a)
        }
        blocks[i].address = unmappedAddress
        blocks[i].size = unmappedSize
        blocks[i].mapped = false
        _ = tryMergeBlocks(i, blocks[i].prev)
        _ = tryMergeBlocks(i, blocks[i].next)
        insertUnmapped(i)
        stats.reservedBytes.decrease(unmappedSize)
        stats.numDeviceFree += 1
    }

    mutating func releaseExpandableSegment(_ i: Int) {
        eraseUnmapped(i)
        segmentsExpandable[blocks[i].expandableSegment].live = false
        killBlock(i)
    }
}

/// What a run's comparisons with the device capacity were (docs/memory-model.md, "Verdicts on
/// other GPUs"): the largest byte count any check compared with the capacity, and whether one
/// failed. The capacity enters an allocator's trajectory only through these checks, so a run with
/// no failed check takes exactly the same path on any device whose capacity is at least
/// `largestCheckedBytes` (same peaks, no OOM), and need not be simulated again for it.
public struct CapacityEnvelope: Sendable, Equatable {
    /// The largest `reserved + new segment` (or live bytes, analytic) compared with the capacity.
    public var largestCheckedBytes = 0
    /// Whether some check found the capacity exceeded.
    public var failed = false

    public init() {}

    /// Records one check of `bytes` against `capacity`; true when it fits.
    mutating func check(_ bytes: Int, capacity: Int) -> Bool {
        largestCheckedBytes = max(largestCheckedBytes, bytes)
        if bytes > capacity {
            failed = true
            return false
        }
        return true
    }

    /// Whether a run on a device of `capacityBytes` (everything else equal) takes this run's path.
    public func samePath(capacityBytes: Int) -> Bool { !failed && largestCheckedBytes <= capacityBytes }
}
