import Foundation
import StarKVMemory
import StarKVModel
import StarKVPolicies
import StarKVReplay
import StarKVSynth
import StarKVTrace

/// Small synthetic traces (tiny-vl decoder, 280×280 screenshots = 100 visual tokens each) and
/// replay requests for the replay tests.
enum ReplayFixtures {
    static func tempPath(_ name: String, ext: String = "starkv") -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("starkv-replay-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent("\(name)-\(UUID().uuidString).\(ext)").path
    }

    static func config(steps: Int = 4, fidelity: Fidelity = .standard, seed: UInt64 = 3) -> SynthConfig {
        SynthConfig(
            model: ModelPresets.tinyVL, steps: steps, screen: ScreenSize(width: 280, height: 280), imageSlots: 3,
            fidelity: fidelity, seed: seed, windowSizes: [8, 16, 32, 64], winRowsMax: 8)
    }

    /// Writes a synthetic trace; `transform` may edit each step (e.g. add golden sets).
    static func trace(
        _ config: SynthConfig = config(), extraFields: [String] = [], transform: ((inout StepRecord) -> Void)? = nil
    ) throws -> String {
        let agent = try SyntheticAgent(config)
        var header = agent.header
        header.fields += extraFields
        let path = tempPath("trace")
        let w = try TraceWriter(path: path, header: header, options: TraceWriteOptions(fsyncOnClose: false))
        for k in 0..<config.steps {
            var s = agent.step(k)
            transform?(&s)
            try w.append(s)
        }
        try w.close()
        return path
    }

    static func request(
        _ trace: String, policies: [String] = ["snapkv", "starkv", "guikv"], budgets: [KVBudget] = [.percent(20), .percent(40)],
        loop: CacheLoop = .reprefill, threads: Int = 1, dump: String? = nil
    ) -> ReplayRequest {
        ReplayRequest(
            tracePath: trace, policies: policies.map { PolicySpec(name: $0) }, budgets: budgets, loop: loop,
            memory: MemorySimulationConfig(), threads: threads, dumpKeptPath: dump, generator: "starkv tests")
    }
}
