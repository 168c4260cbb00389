import Testing
@testable import StarKVMemory

private let MiB = 1 << 20

/// Hand-worked sequences against docs/memory-model.md §5.1 (PyTorch CUDACachingAllocator rules).
@Suite struct CachingAllocatorTests {
    func make(_ capacityMiB: Int, _ options: CachingAllocatorOptions = .init()) -> CachingAllocator {
        CachingAllocator(capacityBytes: capacityMiB * MiB, options: options)
    }

    @Test func requestsRoundUpTo512ByteMultiples() {
        let a = make(64)
        #expect(a.roundSize(0) == 512)
        #expect(a.roundSize(1) == 512)
        #expect(a.roundSize(512) == 512)
        #expect(a.roundSize(513) == 1024)
        #expect(a.roundSize(10 * MiB + 1) == 10 * MiB + 512)
    }

    @Test func powerOfTwoDivisionsApplyOnlyAbove512TimesDivisions() {
        // roundup_power2_next_division's own example: 1200 with 4 divisions → 1280.
        #expect(CachingAllocator.roundupPower2NextDivision(1200, divisions: 4) == 1280)
        #expect(CachingAllocator.roundupPower2NextDivision(4096, divisions: 4) == 4096)
        let a = make(64, .init(roundupPower2Divisions: 4))
        // round_size only uses divisions when size > 512·4 = 2048: 1200 → 1536 (512 multiple).
        #expect(a.roundSize(1200) == 1536)
        // 5000 lies in [4096, 8192) split in 4 steps of 1024 → 5120.
        #expect(a.roundSize(5000) == 5120)
    }

    @Test func smallAllocationsShareOneTwoMiBSegment() {
        var a = make(64)
        let x = a.malloc(1).handle!
        let y = a.malloc(513).handle!
        #expect(a.blockSize(x) == 512)
        #expect(a.blockSize(y) == 1024)
        #expect(a.blockAddress(y) == a.blockAddress(x) + 512)
        #expect(a.stats.reservedBytes.current == 2 * MiB)
        #expect(a.stats.segments.current == 1)
        #expect(a.stats.allocatedBytes.current == 1536)
        #expect(a.stats.requestedBytes.current == 514)
    }

    @Test func oneMiBIsSmallPoolAndOneByteMoreIsLargePool() {
        var a = make(64)
        _ = a.malloc(MiB)
        #expect(a.stats.reservedBytes.current == 2 * MiB)
        _ = a.malloc(MiB + 1)
        #expect(a.stats.reservedBytes.current == 2 * MiB + 20 * MiB)
        let segments = a.snapshot()
        #expect(segments.count == 2)
        #expect(segments[0].isSmallPool && !segments[1].isSmallPool)
    }

    @Test func segmentSizesFollowGetAllocationSize() {
        #expect(CachingAllocator.allocationSize(512) == 2 * MiB)
        #expect(CachingAllocator.allocationSize(MiB) == 2 * MiB)
        #expect(CachingAllocator.allocationSize(MiB + 512) == 20 * MiB)
        #expect(CachingAllocator.allocationSize(10 * MiB - 512) == 20 * MiB)
        #expect(CachingAllocator.allocationSize(10 * MiB) == 10 * MiB)
        #expect(CachingAllocator.allocationSize(11 * MiB + 512) == 12 * MiB)
    }

    @Test func largeBlocksSplitOnlyWhenMoreThanOneMiBRemains() {
        var a = make(256)
        // 5 MiB in a fresh 20 MiB segment: 15 MiB remain (> 1 MiB) → split.
        let x = a.malloc(5 * MiB).handle!
        #expect(a.blockSize(x) == 5 * MiB)
        #expect(a.stats.inactiveSplitBytes.current == 15 * MiB)
        // 19.5 MiB does not fit the 15 MiB remainder → new 20 MiB segment; 0.5 MiB remains
        // (≤ 1 MiB) → not split: the slack counts as allocated.
        let y = a.malloc(19 * MiB + MiB / 2).handle!
        #expect(a.blockSize(y) == 20 * MiB)
        #expect(a.stats.allocatedBytes.current == 25 * MiB)
        #expect(a.stats.requestedBytes.current == 24 * MiB + MiB / 2)
        #expect(a.stats.reservedBytes.current == 40 * MiB)
        // 11 MiB + 100 B (→ 11 MiB + 512 B) best-fits the cached 15 MiB remainder, which is
        // split again (≈ 4 MiB remain): no new segment.
        let z = a.malloc(11 * MiB + 100).handle!
        #expect(a.blockSize(z) == 11 * MiB + 512)
        #expect(a.blockAddress(z) == a.blockAddress(x) + 5 * MiB)
        #expect(a.stats.reservedBytes.current == 40 * MiB)
        // On an empty cache the same request gets its own 2 MiB-rounded 12 MiB segment, and the
        // remaining 1 MiB − 512 B is not split.
        var b = make(256)
        let w = b.malloc(11 * MiB + 100).handle!
        #expect(b.blockSize(w) == 12 * MiB)
        #expect(b.stats.reservedBytes.current == 12 * MiB)
        #expect(b.stats.inactiveSplitBytes.current == 0)
    }

    @Test func smallPoolSplitsAnyRemainderOfAtLeast512Bytes() {
        var a = make(64)
        let x = a.malloc(MiB).handle!
        #expect(a.blockSize(x) == MiB)
        #expect(a.stats.inactiveSplitBytes.current == MiB)
        let y = a.malloc(MiB - 512).handle!
        #expect(a.blockAddress(y) == a.blockAddress(x) + MiB)
        // The last 512 B stay a separate free block.
        #expect(a.snapshot()[0].blocks.map(\.sizeBytes) == [MiB, MiB - 512, 512])
    }

    @Test func bestFitTakesTheSmallestAdequateCachedBlock() {
        var a = make(256)
        let big = a.malloc(14 * MiB).handle!
        let small = a.malloc(12 * MiB).handle!
        let bigAddress = a.blockAddress(big), smallAddress = a.blockAddress(small)
        a.free(big)
        a.free(small)
        let reused = a.malloc(11 * MiB + MiB / 2).handle!
        #expect(a.blockAddress(reused) == smallAddress)
        #expect(a.blockAddress(reused) != bigAddress)
        #expect(a.blockSize(reused) == 12 * MiB)  // 0.5 MiB remainder not split
        #expect(a.stats.reservedBytes.current == 26 * MiB)
        #expect(a.stats.numDeviceAlloc == 2)
    }

    @Test func equalSizedCachedBlocksAreTakenLowestAddressFirst() {
        var a = make(256)
        let first = a.malloc(12 * MiB).handle!
        let second = a.malloc(12 * MiB).handle!
        let firstAddress = a.blockAddress(first)
        a.free(second)
        a.free(first)
        #expect(a.blockAddress(a.malloc(12 * MiB).handle!) == firstAddress)
    }

    @Test func freedNeighboursMergeInsideTheirSegment() {
        var a = make(256)
        let x = a.malloc(4 * MiB).handle!
        let y = a.malloc(4 * MiB).handle!
        #expect(a.snapshot()[0].blocks.map(\.sizeBytes) == [4 * MiB, 4 * MiB, 12 * MiB])
        #expect(a.stats.inactiveSplitBytes.current == 12 * MiB)
        a.free(x)
        #expect(a.stats.inactiveSplitBytes.current == 16 * MiB)
        #expect(a.stats.inactiveSplitBlocks.current == 2)
        a.free(y)
        let blocks = a.snapshot()[0].blocks
        #expect(blocks.count == 1 && blocks[0].sizeBytes == 20 * MiB && !blocks[0].allocated)
        #expect(a.stats.inactiveSplitBytes.current == 0)
        #expect(a.stats.inactiveSplitBytes.peak == 16 * MiB)
        a.emptyCache()
        #expect(a.stats.reservedBytes.current == 0)
        #expect(a.snapshot().isEmpty)
    }

    @Test func segmentsNeverMergeWithEachOther() {
        var a = make(256)
        let x = a.malloc(12 * MiB).handle!
        let y = a.malloc(12 * MiB).handle!
        a.free(x)
        a.free(y)
        // 24 MiB needs a new segment although 24 MiB are cached in two segments.
        _ = a.malloc(24 * MiB)
        #expect(a.stats.reservedBytes.current == 48 * MiB)
        #expect(a.snapshot().count == 3)
    }

    @Test func failedCudaMallocReleasesUnsplitCacheThenRetries() {
        var a = make(64)
        let x = a.malloc(30 * MiB).handle!
        _ = a.malloc(30 * MiB)
        a.free(x)
        // 32 MiB: no cached block fits, 60 + 32 > 64 → free the cached 30 MiB segment, retry.
        let result = a.malloc(32 * MiB)
        #expect(result.handle != nil)
        #expect(a.stats.numAllocRetries == 1)
        #expect(a.stats.reservedBytes.current == 62 * MiB)
        // 8 MiB wants a 20 MiB segment: nothing cached to release → OOM.
        guard case .outOfMemory(let info) = a.malloc(8 * MiB) else {
            Issue.record("expected an OOM")
            return
        }
        #expect(info.roundedBytes == 8 * MiB)
        #expect(info.reservedButUnallocatedBytes == 0)
        #expect(a.stats.numOOMs == 1)
        #expect(a.stats.numAllocRetries == 2)
    }

    @Test func splitSegmentsCannotBeReleasedSoFragmentationCausesOOM() {
        var a = make(40)
        let x = a.malloc(4 * MiB).handle!
        let y = a.malloc(4 * MiB).handle!
        _ = a.malloc(4 * MiB)
        _ = x
        a.free(y)  // a 4 MiB hole and an 8 MiB tail inside a 20 MiB segment
        guard case .outOfMemory(let info) = a.malloc(21 * MiB) else {
            Issue.record("expected an OOM")
            return
        }
        #expect(info.reservedBytes == 20 * MiB)
        #expect(info.reservedButUnallocatedBytes == 12 * MiB)
    }

    @Test func expandableSegmentsGrowInPlaceWhereTheDefaultAllocatorFails() {
        var a = make(40, .init(expandableSegments: true))
        let x = a.malloc(4 * MiB).handle!
        let y = a.malloc(4 * MiB).handle!
        _ = a.malloc(4 * MiB)
        _ = x
        // One 20 MiB page mapped; remainders of any size ≥ 512 B are split.
        #expect(a.stats.reservedBytes.current == 20 * MiB)
        a.free(y)
        // 21 MiB: the 8 MiB free tail plus one more mapped 20 MiB page (40 MiB ≤ capacity).
        let z = a.malloc(21 * MiB).handle!
        #expect(a.blockAddress(z) == a.blockAddress(x) + 12 * MiB)
        #expect(a.stats.reservedBytes.current == 40 * MiB)
        #expect(a.stats.numOOMs == 0)
        #expect(a.blockSize(z) == 21 * MiB)
    }

    @Test func expandableSegmentsUnmapFreePagesOnEmptyCache() {
        var a = make(100, .init(expandableSegments: true))
        let x = a.malloc(5 * MiB).handle!
        let y = a.malloc(19 * MiB).handle!
        #expect(a.blockAddress(y) == a.blockAddress(x) + 5 * MiB)
        #expect(a.stats.reservedBytes.current == 40 * MiB)
        #expect(a.stats.allocatedBytes.current == 24 * MiB)
        a.free(x)
        a.emptyCache()
        // Page 0 still holds y's first 15 MiB: nothing can be unmapped.
        #expect(a.stats.reservedBytes.current == 40 * MiB)
        a.free(y)
        a.emptyCache()
        #expect(a.stats.reservedBytes.current == 0)
    }

    @Test func maxSplitSizeKeepsOversizeBlocksForLargeRequests() {
        var a = make(256, .init(maxSplitSizeBytes: 32 * MiB))
        let big = a.malloc(40 * MiB).handle!
        let bigAddress = a.blockAddress(big)
        a.free(big)
        // Below max_split_size: may not take the 40 MiB oversize block → new segment.
        let small = a.malloc(20 * MiB).handle!
        #expect(a.blockAddress(small) != bigAddress)
        #expect(a.stats.reservedBytes.current == 60 * MiB)
        // At/above it: may take a cached block smaller than request + 20 MiB, unsplit.
        let reuse = a.malloc(39 * MiB).handle!
        #expect(a.blockAddress(reuse) == bigAddress)
        #expect(a.blockSize(reuse) == 40 * MiB)
    }

    @Test func resetPeakStatsSetsPeakToCurrent() {
        var a = make(256)
        let x = a.malloc(50 * MiB).handle!
        a.free(x)
        #expect(a.stats.allocatedBytes.peak == 50 * MiB)
        a.resetPeakStats()
        #expect(a.stats.allocatedBytes.peak == 0)
        #expect(a.stats.reservedBytes.peak == 50 * MiB)
    }
}
