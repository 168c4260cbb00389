import Foundation
import Testing
import StarKVModel
import StarKVTrace
@testable import StarKVPolicies

/// "Score once, select many" (issue 15; docs/policies.md "Sweeps"): one ordering answers every
/// k exactly as `topKAscending`, and a policy's `compressMany` equals its per-budget `compress`.
@Suite struct ScoreSharingTests {
    /// Positions of the k best by a plain stable sort (score descending, NaN lowest, −0 = +0,
    /// ties to the lower position), ascending: the rule of docs/algorithms.md §1.4, written
    /// independently of the radix select.
    static func sortedTopK<T: BinaryFloatingPoint>(_ row: [T], _ k: Int) -> [Int32] {
        sortedTopK(order: rankOrder(row), k)
    }

    /// Positions best first (the order `sortedTopK` takes a prefix of).
    static func rankOrder<T: BinaryFloatingPoint>(_ row: [T]) -> [Int] {
        let value = row.map { $0.isNaN ? -T.infinity : ($0 == 0 ? 0 : $0) }
        return row.indices.sorted { value[$0] > value[$1] || (value[$0] == value[$1] && $0 < $1) }
    }

    static func sortedTopK(order: [Int], _ k: Int) -> [Int32] {
        order.prefix(max(0, k)).sorted().map { Int32($0) }
    }

    @Test func rankingGivesTheHandCheckedTopKForEveryK() {
        let r = ScoreRanking<Float>([1, 3, 3, 2, 3], counts: [2, 4, 0, 7])
        // Order: 3@1, 3@2, 3@4, 2@3, 1@0.
        #expect(r.topKAscending(count: 0) == [])
        #expect(r.topKAscending(count: 2) == [1, 2])
        #expect(r.topKAscending(count: 3) == [1, 2, 4])  // not prepared: selected on demand
        #expect(r.topKAscending(count: 4) == [1, 2, 3, 4])
        #expect(r.topKAscending(count: 9) == [0, 1, 2, 3, 4])
        // The window follows the selected past positions.
        #expect(r.topKWithWindow(count: 2, promptLength: 8) == [1, 2, 5, 6, 7])
        #expect(r.topKWithWindow(count: 0, promptLength: 6) == [5])
        #expect(r.topKWithWindow(count: 5, promptLength: 6) == [0, 1, 2, 3, 4, 5])
        // NaN ranks below −∞ ties with it; −0 ties +0 (lower position first).
        #expect(ScoreRanking<Float>([.nan, 0, -1, -0.0, -.infinity], counts: [3]).topKAscending(count: 3) == [1, 2, 3])
        #expect(ScoreRanking<Float>([.nan, -.infinity, 5], counts: [2]).topKAscending(count: 2) == [0, 2])
        #expect(ScoreRanking<Double>([0.5, .nan, 0.5, 0.25], counts: [1, 2, 3]).topKAscending(count: 3) == [0, 2, 3])
    }

    @Test func oneSharedSelectFindsEveryCutWithItsTies() {
        // Keys 9, 7, 7, 7, 5, 5, 1: rank 1 → 9 (lone), rank 3 → 7 with 2 of its 3 ties,
        // rank 4 → 7 with all 3, rank 6 → 5 with both, rank 7 → 1.
        let keys: [UInt32] = [7, 5, 9, 7, 1, 7, 5]
        let cuts = kthLargestKeys(keys, ranks: [3, 1, 6, 4, 7])
        #expect(cuts == [
            TopKCut(key: 7, ties: 2, equal: 3), TopKCut(key: 9, ties: 1, equal: 1), TopKCut(key: 5, ties: 2, equal: 2),
            TopKCut(key: 7, ties: 3, equal: 3), TopKCut(key: 1, ties: 1, equal: 1),
        ])
        #expect(collectTopK(keys, cut: cuts[0], count: 3, then: 7..<9) == [0, 2, 3, 7, 8])
        // Keys that differ only in their lowest digit, and keys spread over the top digit.
        let close: [UInt32] = [0x8000_0003, 0x8000_0001, 0x8000_0002, 0x8000_0001]
        #expect(kthLargestKeys(close, ranks: [2, 3]) == [TopKCut(key: 0x8000_0002, ties: 1, equal: 1), TopKCut(key: 0x8000_0001, ties: 1, equal: 2)])
        let spread: [UInt64] = [1 << 63, 5, 1 << 40, 7 << 60]
        #expect(kthLargestKeys(spread, ranks: [1, 2, 4]).map(\.key) == [1 << 63, 7 << 60, 5])
    }

    /// The bucketed select finds the same cuts as the plain radix select, for keys clustered in
    /// a narrow range, spread over the whole key space, attention-like, or all equal; on rows
    /// short enough to be sorted and long enough to be bucketed more than once.
    @Test func bucketedSelectEqualsThePlainRadixSelect() {
        var g = SplitMix64(seed: 7)
        for trial in 0..<80 {
            let n = trial % 5 == 4 ? 1 + Int(g.next() % 100) : 64 + Int(g.next() % 4000)
            let keys: [UInt32] = (0..<n).map { _ in
                switch trial % 4 {
                case 0: return 0x8000_0000 | UInt32(truncatingIfNeeded: g.next() % 5000)  // narrow: one level
                case 1: return UInt32(truncatingIfNeeded: g.next())  // the whole range
                case 2: return Float(g.nextFloat() * 0.01).orderKey  // attention-like scores
                default: return 42 + UInt32(truncatingIfNeeded: g.next() % 2) * UInt32(trial % 8 == 3 ? 0 : 1 << 20)
                }
            }
            let ranks = [1, 2, n / 10, n / 3, n / 3, n - 1, n].filter { $0 >= 1 }
            #expect(kthLargestKeys(keys, ranks: ranks) == radixCuts(keys, ranks: ranks), "trial \(trial)")
            let wide = keys.map { UInt64($0) << 17 | UInt64($0 & 0xFF) }
            #expect(kthLargestKeys(wide, ranks: ranks) == radixCuts(wide, ranks: ranks), "trial \(trial) (64-bit)")
        }
    }

    @Test func rankingMatchesTheSortedTopKOnRandomRowsWithTiesAndNaN() {
        var g = SplitMix64(seed: 15)
        for trial in 0..<300 {
            // Short rows take the plain radix select, long ones the bucketed one.
            let n = 1 + Int(g.next() % (trial % 2 == 0 ? 300 : 3000))
            let levels = trial % 3 == 0 ? 4 : 1000  // few distinct values: many ties
            let row: [Float] = (0..<n).map { _ in
                let u = Int(g.next() % UInt64(levels))
                if u == 0 && trial % 5 == 0 { return .nan }
                if u == 1 && trial % 7 == 0 { return -0.0 }
                return Float(u) * (g.next() % 2 == 0 ? 1 : -1) / 7
            }
            let ks = [0, 1, n / 3, n / 2, n - 1, n, n + 2]
            let r = ScoreRanking(row, counts: ks)
            let wide = ScoreRanking(row.map(Double.init), counts: Array(ks.prefix(3)))
            let order = Self.rankOrder(row)
            for k in ks {
                let expected = Self.sortedTopK(order: order, k)
                #expect(r.topKAscending(count: k) == expected, "n \(n) k \(k)")
                #expect(topKAscending(row, count: k) == expected, "n \(n) k \(k)")
                #expect(wide.topKAscending(count: k) == expected, "n \(n) k \(k) (fp64)")
                #expect(topKWithWindow(row, count: k, promptLength: n + 3) == expected + [Int32(n), Int32(n + 1), Int32(n + 2)])
            }
        }
    }

    /// A step whose float fields take only a few values (0, ¼, ½, ¾): ties at the k-th score
    /// everywhere, zero scores that tie with GUI-KV's zeroed tokens.
    static func tiedStep(seed: UInt64, length: Int, images: [ImageEntry], index: Int = 0) -> StepRecord {
        var step = Fixture.randomStep(seed: seed, length: length, images: images, index: index)
        for c in step.chunks.indices where step.chunks[c].tensor.dtype.isFloatingPoint {
            let t = step.chunks[c].tensor
            step.chunks[c].tensor = Tensor(floats: t.floats().map { ($0 * 4).rounded(.down) / 4 }, shape: t.shape, dtype: t.dtype)
        }
        return step
    }

    static let sharingPolicies: [any KVPolicy] = [
        SnapKVPolicy(), PyramidKVPolicy(), SnapKVPolicy(window: 16, kernel: 3, pooling: .max),
        GUIKVPolicy(), GUIKVPolicy(granularity: .kvHead), GUIKVPolicy(alpha: 0, temporal: true),
        AdaKVPolicy(), AdaKVPolicy(normalize: true), AdaKVPolicy(pooling: .avg, granularity: .queryHead),
        AdaKVPolicy(normalize: true, granularity: .queryHead),
        H2OPolicy(), H2OPolicy(observed: true), SnapKVPressPolicy(), SnapKVPressPolicy(window: 4, kernel: 3),
        VLCachePolicy(), VLCachePolicy(kernel: 3, pooling: .max, fallbackWindow: 2),
        StarKVPolicy(), StarKVPolicy(config: StarKVPolicy.Config.preset("screenspot-pro")!),
        StarKVPolicy(config: StarKVPolicy.Config.preset("cli-defaults")!),
        StarKVPolicy(config: { var c = StarKVPolicy.Config(); c.entropyBudget = true; c.miProfileSteps = 1; c.miRampSteps = 1; return c }()),
    ]

    @Test func everyPolicyExceptFullAndStreamingSharesScores() {
        let names = Set(Self.sharingPolicies.map(\.name))
        for entry in PolicyRegistry.all {
            let policy = try! PolicyRegistry.make(entry.policyName, options: PolicyOptions())
            #expect(policy.sharesScoresAcrossBudgets == names.contains(entry.policyName), "\(entry.policyName)")
        }
    }

    @Test func compressManyEqualsCompressPerBudgetForTheOptedInPolicies() throws {
        // Long prompts (every budget clamps to the same window) and short ones (small budgets
        // clamp the window differently, so budgets split into several sharing groups); random
        // and heavily tied scores; a 3-token prompt.
        let header = Fixture.header()
        let steps = [
            Fixture.randomStep(seed: 1, length: 300, images: [Fixture.image(10, 110), Fixture.image(120, 220)]),
            Self.tiedStep(seed: 4, length: 200, images: [Fixture.image(5, 80), Fixture.image(90, 150), Fixture.image(160, 190)], index: 3),
            Fixture.randomStep(seed: 2, length: 60, images: [Fixture.image(5, 45)], index: 1),
            Fixture.randomStep(seed: 3, length: 9, images: [], index: 2),
            Self.tiedStep(seed: 5, length: 3, images: [Fixture.image(0, 2)], index: 4),
        ]
        let budgets: [KVBudget] = [.percent(5), .percent(10), .percent(20), .percent(40), .percent(60), .percent(100), .percent(150), .tokens(3), .tokens(0)]
        for policy in Self.sharingPolicies {
            #expect(policy.sharesScoresAcrossBudgets)
            for step in steps {
                for numerics in ReplayNumerics.allCases {
                    let notes = budgets.map { _ in PolicyNotes() }
                    let inputs = budgets.indices.map { PolicyStepInput(header: header, step: step, budget: budgets[$0], numerics: numerics, notes: notes[$0]) }
                    let states = budgets.map { _ in policy.initialState }
                    let many = policy.compressMany(inputs, states: states)
                    for (i, input) in inputs.enumerated() {
                        var alone = input
                        alone.notes = PolicyNotes()
                        let one = try policy.compress(alone, state: states[i])
                        #expect(try many[i].get() == one, "\(policy.name) L \(step.promptLength) \(input.budget) \(numerics)")
                        #expect(notes[i].all == alone.notes!.all, "\(policy.name) \(input.budget) notes")
                    }
                }
            }
        }
    }

    /// STaR-KV carries state: across an episode each budget's chain of compressMany calls gives
    /// the same outputs and states as its own chain of compress calls, also when some budgets
    /// stop compressing on a short step (their states then differ from the others').
    @Test func starKVChainsEqualPerBudgetChainsAcrossAnEpisode() throws {
        let header = Fixture.header()
        let steps = [
            Fixture.randomStep(seed: 11, length: 120, images: [Fixture.image(10, 60)], reset: true, index: 0),
            Fixture.randomStep(seed: 12, length: 12, images: [Fixture.image(2, 8)], index: 1),
            Self.tiedStep(seed: 13, length: 160, images: [Fixture.image(10, 60), Fixture.image(70, 130)], index: 2),
            Fixture.randomStep(seed: 14, length: 200, images: [Fixture.image(10, 60), Fixture.image(70, 130), Fixture.image(140, 190)], index: 3),
        ]
        let budgets: [KVBudget] = [.percent(10), .percent(20), .percent(40), .percent(100), .tokens(13), .tokens(60)]
        let policies = Self.sharingPolicies.filter { $0.name == StarKVPolicy.policyName }
        for policy in policies {
            for numerics in ReplayNumerics.allCases {
                var shared = budgets.map { _ in policy.initialState }
                var alone = shared
                for step in steps {
                    let inputs = budgets.map { PolicyStepInput(header: header, step: step, budget: $0, numerics: numerics) }
                    let many = policy.compressMany(inputs, states: shared)
                    for i in budgets.indices {
                        let one = try policy.compress(inputs[i], state: alone[i])
                        let got = try many[i].get()
                        #expect(got == one, "step \(step.stepIndex) \(budgets[i]) \(numerics)")
                        shared[i] = got.state
                        alone[i] = one.state
                    }
                }
                // The 13-token budget skipped the 12-token step's compression, so its state
                // diverged from the others' and it was scored on its own afterwards (presets
                // that carry anything besides τ).
                let starKV = try #require(policy as? StarKVPolicy)
                if starKV.config.miEnabled && starKV.config.miProfileSteps > 0 { #expect(shared[4] != shared[0]) }
            }
        }
    }

    /// A broken step fails every budget in compressMany with the error compress gives it.
    @Test func compressManyFailsEachBudgetAsCompressDoes() throws {
        let header = Fixture.header()
        let base = Fixture.randomStep(seed: 21, length: 80, images: [Fixture.image(5, 30), Fixture.image(35, 60)])
        var missing = base
        missing.chunks.removeAll { $0.layer == 1 && $0.field != TraceField.decodeAttnSum }
        var badShape = base
        for c in badShape.chunks.indices where badShape.chunks[c].layer == 1 {
            let t = badShape.chunks[c].tensor
            if t.dtype.isFloatingPoint { badShape.chunks[c].tensor = Tensor(floats: Array(t.floats().dropLast()), shape: [t.floats().count - 1]) }
        }
        var zeroValid = base
        for c in zeroValid.chunks.indices where zeroValid.chunks[c].field == TraceField.nValid && zeroValid.chunks[c].layer == 1 {
            zeroValid.chunks[c].tensor = Tensor(int64: [0], shape: [1])
        }
        let budgets: [KVBudget] = [.percent(10), .percent(40), .percent(100), .tokens(2)]
        for policy in Self.sharingPolicies {
            for (s, step) in [missing, badShape, zeroValid].enumerated() {
                for numerics in ReplayNumerics.allCases {
                    let inputs = budgets.map { PolicyStepInput(header: header, step: step, budget: $0, numerics: numerics) }
                    let many = policy.compressMany(inputs, states: budgets.map { _ in policy.initialState })
                    for (i, input) in inputs.enumerated() {
                        let one = Result { try policy.compress(input, state: policy.initialState) }
                        switch (many[i], one) {
                        case (.success(let a), .success(let b)): #expect(a == b, "\(policy.name) \(input.budget)")
                        case (.failure(let a), .failure(let b)): #expect("\(a)" == "\(b)", "\(policy.name) \(input.budget)")
                        default: Issue.record("\(policy.name) \(input.budget): compressMany \(many[i]) but compress \(one)")
                        }
                    }
                    if s == 0 {
                        #expect(throws: PolicyError.self) { try many[0].get() }
                    }
                }
            }
        }
    }

    /// The shared per-step quality inputs give exactly the per-pair decode proxy, for every
    /// float dtype the field may be stored in, and the same error for a missing chunk.
    @Test func stepDecodeMassEqualsThePerPairDecodeProxy() throws {
        let header = Fixture.header()
        let base = Fixture.randomStep(seed: 9, length: 120, images: [Fixture.image(10, 50), Fixture.image(60, 100)])
        for dtype in [TensorDType.f32, .f16, .bf16] {
            var step = base
            for c in step.chunks.indices where step.chunks[c].field == TraceField.decodeAttnSum {
                let t = step.chunks[c].tensor
                step.chunks[c].tensor = Tensor(floats: t.floats(), shape: t.shape, dtype: dtype)
            }
            let mass = StepDecodeMass(header: header, step: step, workers: 2)
            for policy in [SnapKVPolicy(), GUIKVPolicy(granularity: .kvHead)] as [any KVPolicy] {
                for budget in [KVBudget.percent(10), .percent(50)] {
                    let out = try policy.compress(PolicyStepInput(header: header, step: step, budget: budget), state: .empty)
                    let expected = try QualityProxy.decodeAttentionShares(header: header, step: step, output: out)
                    #expect(try mass.shares(of: out.layers) == expected, "\(dtype) \(policy.name) \(budget)")
                    #expect(expected.allSatisfy { $0 != nil })
                }
            }
        }
        var missing = base
        missing.chunks.removeAll { $0.field == TraceField.decodeAttnSum && $0.layer == 1 }
        let out = try SnapKVPolicy().compress(PolicyStepInput(header: header, step: missing, budget: .percent(20)), state: .empty)
        #expect(throws: PolicyError.missingChunk(policy: "quality-proxy", field: TraceField.decodeAttnSum, layer: 1, episode: "ep", step: 0)) {
            try StepDecodeMass(header: header, step: missing).shares(of: out.layers)
        }
    }
}

extension ScoreSharingTests {
    /// The decode proxy of a sweep's budgets at once (`shares(ofEach:)`, bitmap rows summed in
    /// one pass per layer) equals each budget's own proxy, bit for bit, with more budgets than one
    /// pass takes and a budget whose rows are lists; a missing chunk fails every budget alike.
    @Test func decodeProxyOfEveryBudgetAtOnceEqualsEachBudgetsOwn() throws {
        let header = Fixture.header()
        let step = Fixture.randomStep(seed: 21, length: 150, images: [Fixture.image(10, 60), Fixture.image(70, 140)])
        let budgets: [KVBudget] = [.percent(5), .percent(10), .percent(20), .percent(30), .percent(40), .percent(50), .percent(60), .percent(80)]
        for policy in [SnapKVPolicy(), GUIKVPolicy(granularity: .kvHead), StarKVPolicy()] as [any KVPolicy] {
            let inputs = budgets.map { PolicyStepInput(header: header, step: step, budget: $0) }
            var selections = try policy.compressMany(inputs, states: inputs.map { _ in policy.initialState }).map { try $0.get().layers }
            #expect(selections[4][0].keptBitmaps != nil, "\(policy.name) selects bitmaps in a sweep")
            selections.append(selections[2].map { sel in var listed = sel; listed.keptIndices = sel.keptIndices; return listed })
            let mass = StepDecodeMass(header: header, step: step)
            let all = mass.shares(ofEach: selections)
            // Without the lane copies the bitmap rows go through their positions: same bits.
            let listed = StepDecodeMass(header: header, step: step, laneCopies: false).shares(ofEach: selections)
            for b in selections.indices {
                #expect(try all[b].get().map { $0?.bitPattern } == listed[b].get().map { $0?.bitPattern }, "\(policy.name) budget \(b) without lane copies")
            }
            for (b, sels) in selections.enumerated() {
                let expected = try QualityProxy.decodeAttentionShares(header: header, step: step, output: PolicyStepOutput(layers: sels, scoringFLOPs: 0, state: .empty))
                let got = try all[b].get()
                #expect(got.map { $0?.bitPattern } == expected.map { $0?.bitPattern }, "\(policy.name) budget \(b)")
            }
        }
        var missing = step
        missing.chunks.removeAll { $0.field == TraceField.decodeAttnSum && $0.layer == 1 }
        let inputs = budgets.prefix(2).map { PolicyStepInput(header: header, step: missing, budget: $0) }
        let selections = try SnapKVPolicy().compressMany(Array(inputs), states: [.empty, .empty]).map { try $0.get().layers }
        for result in StepDecodeMass(header: header, step: missing).shares(ofEach: selections) {
            #expect(throws: PolicyError.missingChunk(policy: "quality-proxy", field: TraceField.decodeAttnSum, layer: 1, episode: "ep", step: 0)) {
                try result.get()
            }
        }
    }
}
