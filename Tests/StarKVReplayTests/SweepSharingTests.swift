import Foundation
import StarKVMemory
import StarKVPolicies
import StarKVTrace
import Testing
@testable import StarKVReplay

/// Issue 15: a sweep that scores a policy once for all its budgets (and shares each step's
/// quality inputs) gives the same kept sets, digests, step facts and notes as replaying each
/// budget on its own (the per-pair path), for every policy, in both numerics.
@Suite struct SweepSharingTests {
    static let policies = ["full", "streamingllm", "h2o", "snapkv", "snapkv-kvpress", "pyramidkv", "adakv", "vlcache", "guikv", "starkv"]

    @Test func aSweepResultEqualsEachBudgetReplayedAlone() throws {
        let trace = try ReplayFixtures.trace()
        let policies = ["starkv", "vlcache"]
        let budgets: [KVBudget] = [.percent(10), .percent(40)]
        let sweep = try Replay.run(ReplayFixtures.request(trace, policies: policies, budgets: budgets, threads: 2))
        #expect(sweep.runs.count == policies.count * budgets.count)
        for run in sweep.runs {
            let budget = try #require(KVBudget(parsing: run.budget))
            let alone = try Replay.run(ReplayFixtures.request(trace, policies: [run.policy], budgets: [budget]))
            #expect(try #require(alone.runs.first) == run, "\(run.policy) \(run.budget)")
        }
    }

    @Test(arguments: [ReplayNumerics.fp32, .bf16Reference])
    func everyPairOfASweepEqualsItsPairReplayedAlone(numerics: ReplayNumerics) throws {
        #expect(Set(Self.policies) == Set(PolicyRegistry.all.map { $0.policyName }))
        let reader = try TraceReader(path: try ReplayFixtures.trace(ReplayFixtures.config(steps: 3)))
        // 1 % clamps the window below the others' (a group of its own); 100 % does not compress
        // for several policies.
        let budgets: [KVBudget] = [.percent(1), .percent(10), .percent(40), .percent(100)]
        func replay(_ policies: [String], _ budgets: [KVBudget], threads: Int) throws -> [PairReplay] {
            var replayer = PolicyReplayer(reader: reader, policies: policies.map { PolicySpec(name: $0) }, budgets: budgets, loop: .reprefill, threads: threads)
            replayer.numerics = numerics
            return try replayer.run()
        }
        let sweep = try replay(Self.policies, budgets, threads: 2)
        #expect(sweep.count == (Self.policies.count - 1) * budgets.count + 1)
        for pair in sweep {
            let alone = try #require(try replay([pair.policy.name], [pair.budget], threads: 1).first)
            #expect(alone.keptDigest == pair.keptDigest, "\(pair.policy.name) \(pair.budget)")
            #expect(alone.steps == pair.steps, "\(pair.policy.name) \(pair.budget)")
            #expect(alone.notes == pair.notes, "\(pair.policy.name) \(pair.budget)")
        }
    }
}
