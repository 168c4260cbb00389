import Foundation
import Testing
import StarKVModel
import StarKVTrace
@testable import StarKVPolicies

/// Registry, typed errors, quality proxies and the kept-set dump record.
@Suite struct InterfaceTests {
    @Test func registryBuildsEveryPolicyByNameWithUniqueNames() throws {
        let names = PolicyRegistry.names
        #expect(Set(names).count == names.count && names.count == 10)
        for n in names { #expect(try PolicyRegistry.make(n).name == n) }
    }

    @Test func registryRefusesUnknownPoliciesOptionsAndBadValues() throws {
        #expect(throws: PolicyError.unknownPolicy(name: "nope", known: PolicyRegistry.names)) { try PolicyRegistry.make("nope") }
        #expect(throws: PolicyError.self) { try PolicyRegistry.make("snapkv", options: PolicyOptions(["windw": "8"])) }
        #expect(throws: PolicyError.badOption(policy: "snapkv", option: "pooling", value: "mean", expected: "one of avgpool, maxpool")) {
            try PolicyRegistry.make("snapkv", options: PolicyOptions(["pooling": "mean"]))
        }
        #expect(throws: PolicyError.self) { try PolicyRegistry.make("starkv", options: PolicyOptions(["aeb": "maybe"])) }
        #expect(throws: PolicyError.self) { try PolicyOptions(parsing: "alpha", policy: "starkv") }
        #expect(try PolicyOptions(parsing: "alpha=1.5, aeb=off", policy: "starkv").values == ["alpha": "1.5", "aeb": "off"])
    }

    @Test func missingFieldNamesTheFieldAndTheFidelityThatRecordsIt() {
        let core = Fixture.header(fields: TraceField.fields(at: .core))
        let error = PolicyError.missingField(policy: "h2o", field: TraceField.colsumAll, fidelity: .standard)
        #expect(throws: error) { try H2OPolicy().validate(header: core) }
        #expect(error.description.contains("colsum_all") && error.description.contains("standard"))
        #expect(throws: PolicyError.missingField(policy: "vlcache", field: TraceField.colsumPostvis, fidelity: .standard)) { try VLCachePolicy().validate(header: core) }
        #expect(throws: Never.self) { try StarKVPolicy().validate(header: core) }
        #expect(throws: Never.self) { try GUIKVPolicy().validate(header: core) }
    }

    @Test func malformedStepsAreRefusedWithTypedErrors() throws {
        var s = Fixture.step(length: 10)
        Fixture.add(&s, TraceField.winSum, layer: 0, Fixture.winSum([[Float]](repeating: [1, 2, 3], count: 4)))
        #expect(throws: PolicyError.badShape(policy: "snapkv", field: TraceField.winSum, layer: 0, episode: "ep", step: 0, expected: [8, 4, 10], found: [8, 4, 3])) {
            try SnapKVPolicy(window: 2).compress(input(s, .percent(50)), state: .empty)
        }
        var ok = Fixture.step(length: 10)
        Fixture.addWinSum(&ok, [[Float]](repeating: [Float](repeating: 1, count: 10), count: 4))
        // A window that was not recorded falls back to the nearest recorded one with a note;
        // a trace without any win_sum window cannot score at all.
        let notes = PolicyNotes()
        _ = try SnapKVPressPolicy(window: 9).compress(
            PolicyStepInput(header: Fixture.header(), step: ok, budget: .percent(50), notes: notes), state: .empty)
        #expect(notes.all.count == 1 && notes.all[0].contains("window 9 is not among the recorded win_sum windows"))
        var noWindows = Fixture.header()
        noWindows.windowSizes = []
        #expect(throws: PolicyError.windowNotRecorded(policy: "snapkv-kvpress", window: 9, recorded: [], episode: "ep", step: 0)) {
            try SnapKVPressPolicy(window: 9).compress(input(ok, .percent(50), header: noWindows), state: .empty)
        }
        var badSpan = ok
        badSpan.images = [Fixture.image(8, 12)]
        #expect(throws: PolicyError.self) { try StarKVPolicy().compress(input(badSpan, .percent(50)), state: .empty) }
        let wrongState = PolicyState(StarKVPolicy.State(layers: [StarKVPolicy.LayerState()]))
        #expect(throws: PolicyError.self) { try StarKVPolicy().compress(input(ok, .percent(50)), state: wrongState) }
    }

    @Test func vlCacheRefusesZeroValidEntries() {
        var s = Fixture.step(length: 10, images: [Fixture.image(1, 5)])
        for l in 0..<2 {
            Fixture.add(&s, TraceField.colsumPostvis, layer: l, Fixture.rows([[Float]](repeating: [Float](repeating: 1, count: 10), count: 4)))
            Fixture.add(&s, TraceField.countGt001, layer: l, Tensor(int64: [1, 1, 1, 1], shape: [4]))
            Fixture.add(&s, TraceField.nValid, layer: l, Tensor(int64: [0], shape: [1]))
        }
        #expect(throws: PolicyError.self) { try VLCachePolicy().compress(input(s, .percent(50)), state: .empty) }
    }

    @Test func keptMassShareCountsEachHeadAgainstTheRowItReads() {
        let w: [[Float]] = [[1, 2, 3, 4], [4, 3, 2, 1]]
        let shared = LayerSelection(layer: 0, granularity: .shared, keptIndices: [[1, 3]], capacityTokens: 2, windowTokens: 1, compressed: true)
        #expect(QualityProxy.keptMassShare(weights: w, selection: shared, queryHeadsPerKVHead: 1) == 0.5)
        let perHead = LayerSelection(layer: 0, granularity: .queryHead, keptIndices: [[0], [0]], capacityTokens: 1, windowTokens: 0, compressed: true)
        #expect(QualityProxy.keptMassShare(weights: w, selection: perHead, queryHeadsPerKVHead: 1) == 0.25)
        let kv = LayerSelection(layer: 0, granularity: .kvHead, keptIndices: [[0], [3]], capacityTokens: 1, windowTokens: 0, compressed: true)
        let four = [[Float]](repeating: [1, 1, 1, 1], count: 4)
        #expect(QualityProxy.keptMassShare(weights: four, selection: kv, queryHeadsPerKVHead: 2) == 0.25)
        // Restricted to columns [0, 2): kept {1} of {0, 1}: (2 + 3) / (1 + 2 + 4 + 3).
        #expect(QualityProxy.keptMassShare(weights: w, selection: shared, queryHeadsPerKVHead: 1, columns: 0..<2) == 0.5)
        #expect(QualityProxy.keptMassShare(weights: [[0, 0]], selection: shared, queryHeadsPerKVHead: 1) == nil)
    }

    @Test func decodeShareIsOneForTheFullCacheAndBelowForSnapKV() throws {
        let s = Fixture.randomStep(seed: 5, length: 40, images: [Fixture.image(2, 20)])
        let h = Fixture.header()
        let full = try FullCachePolicy().compress(input(s, .percent(20)), state: .empty)
        #expect(try QualityProxy.decodeAttentionShares(header: h, step: s, output: full).allSatisfy { abs($0! - 1) < 1e-12 })
        let snap = try SnapKVPolicy().compress(input(s, .percent(20)), state: .empty)
        let shares = try QualityProxy.decodeAttentionShares(header: h, step: s, output: snap)
        #expect(shares.allSatisfy { $0! > 0 && $0! < 1 })
    }

    @Test func nextWindowShareScoresTheNextStepsPastColumns() throws {
        var next = Fixture.step(length: 6)
        Fixture.addWinSum(&next, [[Float]](repeating: [1, 2, 3, 4, 50, 50], count: 4))
        let cached = LayerSelection(layer: 1, granularity: .shared, keptIndices: [[0, 3]], capacityTokens: 2, windowTokens: 0, compressed: true)
        // window 2 → columns [0, 4): (1 + 4) / 10.
        let share = try QualityProxy.nextWindowShare(header: Fixture.header(), nextStep: next, layer: 1, window: 2, stillCached: cached)
        #expect(share == 0.5)
    }

    @Test func keptSetRecordIsOneSortedKeyJSONLineThatRoundTrips() throws {
        let s = Fixture.step(length: 5, index: 3, episode: "e1")
        let sel = LayerSelection(layer: 2, granularity: .kvHead, keptIndices: [[0, 4], [1, 4]], capacityTokens: 2, windowTokens: 1, compressed: true)
        let r = KeptSetRecord(policy: "snapkv-kvpress", budget: .percent(40), step: s, selection: sel)
        let line = try r.jsonLine()
        #expect(line == #"{"budget":"40%","capacity":2,"compressed":true,"episode":"e1","granularity":"kv_head","kept":[[0,4],[1,4]],"layer":2,"policy":"snapkv-kvpress","prompt_length":5,"step":3,"step_in_episode":3,"window":1}"#)
        #expect(try KeptSetRecord(jsonLine: line) == r)
        let out = PolicyStepOutput(layers: [sel, sel], scoringFLOPs: 0, state: .empty)
        #expect(KeptSetRecord.records(policy: "x", budget: .tokens(2), step: s, output: out).map(\.budget) == ["2tok", "2tok"])
        #expect(out.keptTokensPerLayer == [2, 2])
    }
}
