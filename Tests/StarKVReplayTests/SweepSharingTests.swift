import Foundation
import StarKVMemory
import StarKVPolicies
import Testing
@testable import StarKVReplay

/// Issue 15: a sweep that scores a policy once for all its budgets (and shares each step's
/// quality inputs) gives the same kept sets, digests and step facts as replaying each budget on
/// its own (the per-pair path).
@Suite struct SweepSharingTests {
    @Test func aSweepEqualsEachBudgetReplayedAlone() throws {
        let trace = try ReplayFixtures.trace()
        let policies = ["snapkv", "pyramidkv", "streamingllm", "guikv"]
        let budgets: [KVBudget] = [.percent(10), .percent(20), .percent(40), .percent(100), .tokens(40)]
        let sweep = try Replay.run(ReplayFixtures.request(trace, policies: policies, budgets: budgets, threads: 2))
        #expect(sweep.runs.count == policies.count * budgets.count)
        for run in sweep.runs {
            let budget = try #require(KVBudget(parsing: run.budget))
            let alone = try Replay.run(ReplayFixtures.request(trace, policies: [run.policy], budgets: [budget]))
            let one = try #require(alone.runs.first)
            #expect(one.keptDigest == run.keptDigest, "\(run.policy) \(run.budget)")
            #expect(one == run, "\(run.policy) \(run.budget)")
        }
    }
}
