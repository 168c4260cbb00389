import Testing
@testable import StarKVMemory
import StarKVPolicies
@testable import StarKVReplay

/// Verdicts on other GPUs reuse a simulated run only where the GPU cannot change it
/// (`CapacityEnvelope`, docs/memory-model.md "Verdicts on other GPUs"): with reuse they equal
/// simulating every pair on every GPU afresh.
@Suite struct GPUVerdictTests {
    @Test func anEnvelopeRecordsTheLargestCheckAndAnyFailure() {
        var e = CapacityEnvelope()
        let first = e.check(50, capacity: 100), second = e.check(30, capacity: 100)
        #expect(first && second)
        #expect(e.largestCheckedBytes == 50 && !e.failed)
        #expect(e.samePath(capacityBytes: 50) && !e.samePath(capacityBytes: 49))
        let over = e.check(101, capacity: 100)
        #expect(!over)
        #expect(e.failed && e.largestCheckedBytes == 101)
        #expect(!e.samePath(capacityBytes: 1 << 40))
    }

    @Test func reusedVerdictsEqualFreshSimulationsOnEveryGPU() throws {
        let trace = try ReplayFixtures.trace()
        let gib = 1 << 30
        // Two cards the runs fit, one between the weights and the runs' needs, one too small for the weights.
        let gpus: [Accelerator] = [.a100SXM, .h200, .custom(torchVisibleBytes: 17 * gib), .custom(torchVisibleBytes: 8 * gib)]
        for allocator in [AllocatorKind.torchCaching, .analytic] {
            var request = ReplayFixtures.request(trace, policies: ["snapkv", "full"], budgets: [.percent(20), .percent(60)])
            request.memory.allocator = allocator
            let (_, pairs, memory) = try Replay.execute(request)
            let simulated = try MemoryPass.simulateWithEnvelopes(pairs: pairs, config: memory, threads: 1)
            #expect(simulated.envelopes.allSatisfy { $0 != nil })
            // The H200's runs are reused, the 8 GiB card's simulated again.
            #expect(simulated.envelopes.allSatisfy { $0!.samePath(capacityBytes: Accelerator.h200.allocatorCapacityBytes) })
            #expect(!simulated.envelopes.contains { $0!.samePath(capacityBytes: Accelerator.custom(torchVisibleBytes: 8 * gib).allocatorCapacityBytes) })
            let reused = try Replay.gpuVerdicts(pairs: pairs, memory: memory, gpus: gpus, threads: 1, simulated: simulated)
            let fresh = try Replay.gpuVerdicts(pairs: pairs, memory: memory, gpus: gpus, threads: 1)
            #expect(reused == fresh, "\(allocator)")
            // Both outcomes occur: runs that fit and runs that do not.
            #expect(fresh?.contains { $0.runs.contains { $0.firstOOMStep != nil } } == true)
            #expect(fresh?.contains { $0.runs.contains { $0.firstOOMStep == nil } } == true)
        }
    }
}
