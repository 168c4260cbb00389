import Foundation
import StarKVPolicies
import StarKVReplay
import StarKVSynth
import StarKVTrace
import Testing

/// The trace header's `numerics` and `--numerics` (docs/policies.md "Numerics").
@Suite struct NumericsReplayTests {
    static func trace(numerics: String?) throws -> String {
        let config = ReplayFixtures.config(steps: 2)
        let agent = try SyntheticAgent(config)
        var header = agent.header
        header.numerics = numerics
        let path = ReplayFixtures.tempPath("numerics")
        let w = try TraceWriter(path: path, header: header, options: TraceWriteOptions(fsyncOnClose: false))
        for k in 0..<config.steps { try w.append(agent.step(k)) }
        try w.close()
        return path
    }

    @Test func headerNumericsRoundTripsAndSelectsTheReplayNumerics() throws {
        let path = try Self.trace(numerics: "bf16-reference")
        #expect(try TraceReader(path: path).header.numerics == "bf16-reference")
        let fromHeader = try Replay.run(ReplayFixtures.request(path, policies: ["snapkv"], budgets: [.percent(20)]))
        #expect(fromHeader.notes.contains { $0.hasPrefix("Numerics: bf16-reference (from the trace header)") })
        var forced = ReplayFixtures.request(path, policies: ["snapkv"], budgets: [.percent(20)])
        forced.numerics = .fp32
        let fp32 = try Replay.run(forced)
        #expect(fp32.notes.contains { $0.contains("Numerics: fp32; the trace was recorded with bf16-reference") })
        // A trace without the field replays in fp32 and says nothing about numerics.
        let plain = try Replay.run(ReplayFixtures.request(try Self.trace(numerics: nil), policies: ["snapkv"], budgets: [.percent(20)]))
        #expect(try TraceReader(path: try Self.trace(numerics: nil)).header.numerics == nil)
        #expect(!plain.notes.contains { $0.hasPrefix("Numerics") })
    }

    @Test func anUnknownHeaderNumericsIsRefusedWithTheFlagToUse() throws {
        let path = try Self.trace(numerics: "fp8")
        #expect(throws: ReplayError.self) { try Replay.run(ReplayFixtures.request(path, policies: ["snapkv"], budgets: [.percent(20)])) }
        do {
            _ = try Replay.run(ReplayFixtures.request(path, policies: ["snapkv"], budgets: [.percent(20)]))
        } catch {
            #expect("\(error)".contains("'fp8' is unknown") && "\(error)".contains("--numerics"))
        }
        // Overriding it replays.
        var forced = ReplayFixtures.request(path, policies: ["snapkv"], budgets: [.percent(20)])
        forced.numerics = .bf16Reference
        #expect(try Replay.run(forced).runs.count == 1)
    }
}
