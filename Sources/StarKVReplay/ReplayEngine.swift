import Dispatch
import Foundation
import StarKVModel
import StarKVPolicies
import StarKVTrace

/// The token-level facts of one replayed step that the memory simulator and the reports need.
public struct ReplayedStep: Sendable, Equatable, Codable {
    public var step: Int
    public var episode: String
    public var reset: Bool
    public var promptLength: Int
    public var generatedTokens: Int
    /// Visual tokens of each screenshot, prompt order (last = current).
    public var visualTokensPerImage: [Int]
    /// Tokens that are not visual (text, markers, template).
    public var textTokens: Int
    /// Kept prompt tokens per layer (mean over heads), after compression.
    public var keptTokensPerLayer: [Double]
    /// Compression-stage scoring FLOPs of this step (docs/algorithms.md §11).
    public var scoringFLOPs: Double
    /// Share of the full-cache run's decode attention (decode_attn_sum) on kept tokens; nil when
    /// the trace lacks the field.
    public var decodeMassRetained: Double?
    /// The same per layer (empty when the trace lacks decode_attn_sum).
    public var decodeMassRetainedPerLayer: [Double]
    /// Persistent loop: share of this step's window attention on tokens still cached before its
    /// compression; nil in the re-prefill loop.
    public var cachedWindowMass: Double?
    /// Per screenshot: share of the prompt before compression and of the kept cache after
    /// (means over layers and heads).
    public var imageShareBefore: [Double]
    public var imageShareAfter: [Double]
    /// Tokens new at this step (persistent loop: not carried from the previous step).
    public var newTokens: Int
}

/// What replaying one (policy, budget) pair over a trace produced, before the memory simulation.
public struct PairReplay: Sendable {
    public var policy: PolicySpec
    public var budget: KVBudget
    public var steps: [ReplayedStep]
    /// SHA-256 over every kept index set of the pair, in step/layer/head order, in the
    /// replayer's `keptDigestVersion` encoding.
    public var keptDigest: String
    /// Agreement with golden kept sets recorded in the trace for this policy and budget.
    public var golden: GoldenAgreement?
    /// Warnings the policy raised (deduplicated, first-seen order).
    public var notes: [String] = []
}

/// Running agreement between replayed and golden kept sets (FORMAT.md `golden_kept.*`).
public struct GoldenAgreement: Sendable, Equatable {
    public var field: String
    public var layers = 0
    public var identicalLayers = 0
    public var jaccardSum = 0.0

    /// The golden field name of a policy and budget: `golden_kept.snapkv.20` (percent budgets
    /// without the % sign) or `golden_kept.snapkv.512tok`.
    public static func fieldName(policy: String, budget: KVBudget) -> String {
        let b = budget.description
        return TraceField.goldenKeptPrefix + policy + "." + (b.hasSuffix("%") ? String(b.dropLast()) : b)
    }

    /// Adds one layer: Jaccard similarity per row (rows matched by index; a single golden or
    /// replayed row is compared with every row of the other), averaged over rows.
    mutating func add(golden: [[Int32]], replayed: [[Int32]]) {
        let rows = max(golden.count, replayed.count)
        guard rows > 0 else { return }
        var sum = 0.0
        var identical = true
        for r in 0..<rows {
            let g = golden[golden.count == 1 ? 0 : min(r, golden.count - 1)]
            let k = replayed[replayed.count == 1 ? 0 : min(r, replayed.count - 1)]
            let gs = Set(g), ks = Set(k)
            let union = gs.union(ks).count
            sum += union == 0 ? 1 : Double(gs.intersection(ks).count) / Double(union)
            if gs != ks { identical = false }
        }
        layers += 1
        jaccardSum += sum / Double(rows)
        if identical { identicalLayers += 1 }
    }
}

/// Replays a trace under (policy, budget) pairs (issue: replay engine). Streams the trace one
/// step at a time; at each step the pairs run in parallel, each with its own carried policy
/// state, and write into fixed slots, so results (and the kept-set dump) do not depend on the
/// thread count. Issue 15 (docs/policies.md "Sweeps"): the budgets of a policy that shares its
/// scores form one work unit (`KVPolicy.compressMany`), the quality proxy's inputs are prepared
/// once per step (`StepDecodeMass`), and with more than one thread the next step is read while
/// the current one is scored.
public struct PolicyReplayer {
    public var reader: TraceReader
    public var policies: [PolicySpec]
    public var budgets: [KVBudget]
    public var loop: CacheLoop
    public var threads: Int
    /// Arithmetic the policies follow (docs/algorithms.md §1.5).
    public var numerics: ReplayNumerics = .fp32
    /// The kept-set digest's encoding (docs/replay.md "Digest").
    public var keptDigestVersion: KeptDigestVersion = .v2

    public init(reader: TraceReader, policies: [PolicySpec], budgets: [KVBudget], loop: CacheLoop, threads: Int) {
        self.reader = reader
        self.policies = policies
        self.budgets = budgets
        self.loop = loop
        self.threads = max(1, threads)
    }

    /// Per-pair mutable replay state (one slot per pair).
    struct PairState {
        var policy: any KVPolicy
        var spec: PolicySpec
        var budget: KVBudget
        var state: PolicyState
        var residency = CacheResidency()
        var digest: KeptSetDigest
        var steps: [ReplayedStep] = []
        var error: String?
        var dumpLines: [UInt8] = []
        var golden: GoldenAgreement?
        /// One collector per pair, so that the notes' order does not depend on the threads.
        var notes = PolicyNotes()
        /// Wall time of the pair's unit on the previous step (scheduling only; never in a result).
        var lastStepSeconds = 0.0
    }

    /// Runs every pair over every step. `dump` receives each step's kept-set JSON lines (pairs in
    /// order) when non-nil. `progress` is called after each step.
    public func run(
        dump: ((_ bytes: [UInt8]) throws -> Void)? = nil, progress: ((ReplayProgress) -> Void)? = nil
    ) throws -> [PairReplay] {
        let header = reader.header
        var pairs: [PairState] = []
        for spec in policies {
            let policy: any KVPolicy
            do {
                policy = try PolicyRegistry.make(spec.name, options: PolicyOptions(spec.options))
                try policy.validate(header: header)
            } catch let e as PolicyError {
                throw ReplayError.policy("\(reader.path): \(e)")
            }
            // The full cache ignores the budget: it runs once, as the 100% baseline.
            let pairBudgets = spec.name == FullCachePolicy.policyName ? [KVBudget.percent(100)] : budgets
            for budget in pairBudgets {
                var pair = PairState(
                    policy: policy, spec: spec, budget: budget, state: policy.initialState, digest: KeptSetDigest(version: keptDigestVersion))
                let goldenField = GoldenAgreement.fieldName(policy: spec.name, budget: budget)
                if spec.options.isEmpty, header.has(goldenField) { pair.golden = GoldenAgreement(field: goldenField) }
                pairs.append(pair)
            }
        }
        var needed = Set(pairs.flatMap { $0.policy.requiredFields })
        for p in pairs { if let g = p.golden { needed.insert(g.field) } }
        // Raw window rows, when recorded, give exact window sums for windows the recorder did not
        // store (short prompts, VL-Cache's budget − 1 fallback; docs/policies.md).
        for f in [TraceField.decodeAttnSum, TraceField.winSum, TraceField.winRows] where header.has(f) { needed.insert(f) }
        let layers = header.model.numLayers
        let loop = self.loop
        let dumping = dump != nil
        let numerics = self.numerics
        // Work units: the pairs of a policy that shares its scores across budgets form one unit
        // (scored once per step, every budget selected from it: `KVPolicy.compressMany`);
        // every other pair is a unit of its own. Units hold consecutive pairs, so flattening
        // them gives the pairs back in order.
        var units: [[PairState]] = []
        for pair in pairs {
            if loop == .reprefill, pair.policy.sharesScoresAcrossBudgets, let last = units.last?.last, last.spec == pair.spec {
                units[units.count - 1].append(pair)
            } else {
                units.append([pair])
            }
        }
        pairs = []
        let workers = min(threads, max(1, units.count))
        let decodeMass = header.has(TraceField.decodeAttnSum)

        // With more than one thread, the first chunks of step i + 1 are read (CRC, zstd,
        // un-shuffle) on their own thread while step i is scored, within a memory bound, and the
        // rest on every thread once step i is done (StepPrefetch); errors surface in the same
        // order as reading in line.
        let prefetching = threads > 1
        func prefetch(_ i: Int) -> StepPrefetch? {
            prefetching && i < reader.stepCount ? StepPrefetch(reader: reader, index: i, fields: needed, threads: threads) : nil
        }
        var next = prefetch(0)
        for i in 0..<reader.stepCount {
            let step = try next?.get() ?? reader.readStep(at: i, fields: needed)
            next = prefetch(i + 1)
            // Quality-proxy inputs once per step for every pair (layers in parallel).
            // Lane copies only where policies hand over bitmap rows (the re-prefill loop; the
            // persistent loop lists each pair's positions after masking).
            let mass = decodeMass ? StepDecodeMass(header: header, step: step, workers: threads, laneCopies: loop == .reprefill) : nil
            // Costliest units first (by their time on the previous step), so that the step does
            // not end with one long unit running alone; results do not depend on the order.
            let order = units.indices.sorted { (units[$0][0].lastStepSeconds, $1) > (units[$1][0].lastStepSeconds, $0) }
            DeterministicParallel.updateDynamically(&units, workers: workers, order: order) { unit in
                let start = DispatchTime.now().uptimeNanoseconds
                PolicyReplayer.advance(&unit, step: step, header: header, layers: layers, loop: loop, numerics: numerics, dumping: dumping, mass: mass)
                unit[0].lastStepSeconds = Double(DispatchTime.now().uptimeNanoseconds &- start) * 1e-9
            }
            if let failed = units.lazy.flatMap({ $0 }).first(where: { $0.error != nil }) {
                // Errors name the policy, episode, step and layer (PolicyError).
                throw ReplayError.policy("\(reader.path): \(failed.error!)")
            }
            if let dump {
                for u in units.indices {
                    for p in units[u].indices {
                        try dump(units[u][p].dumpLines)
                        units[u][p].dumpLines.removeAll(keepingCapacity: true)
                    }
                }
            }
            progress?(ReplayProgress(stepsDone: i + 1, stepsTotal: reader.stepCount, pairs: units.reduce(0) { $0 + $1.count }, phase: "policies"))
        }
        return units.flatMap { $0 }.map {
            PairReplay(policy: $0.spec, budget: $0.budget, steps: $0.steps, keptDigest: $0.digest.finalize(), golden: $0.golden, notes: $0.notes.all)
        }
    }

    /// One unit (a pair, or the pairs of a score-sharing policy), one step.
    static func advance(
        _ unit: inout [PairState], step: StepRecord, header: TraceHeader, layers: Int, loop: CacheLoop, numerics: ReplayNumerics,
        dumping: Bool, mass: StepDecodeMass?
    ) {
        let live = unit.indices.filter { unit[$0].error == nil }
        if unit.count > 1 && loop == .reprefill && !live.isEmpty {
            let inputs = live.map {
                PolicyStepInput(header: header, step: step, budget: unit[$0].budget, numerics: numerics, notes: unit[$0].notes)
            }
            let outputs = unit[live[0]].policy.compressMany(inputs, states: live.map { unit[$0].state })
            // The decode proxy of every budget at once (each layer's values read once for all).
            let succeeded = outputs.indices.filter { if case .success = outputs[$0] { return true } else { return false } }
            var quality = [Int: Result<[Double?], any Error>]()
            if let mass {
                let shares = mass.shares(ofEach: succeeded.map { j in (try? outputs[j].get())?.layers ?? [] })
                for (n, j) in succeeded.enumerated() { quality[j] = shares[n] }
            }
            for (j, p) in live.enumerated() {
                switch outputs[j] {
                case .success(let output):
                    finish(
                        &unit[p], output: output, step: step, availability: nil, cachedMass: nil, newTokens: step.promptLength, dumping: dumping,
                        mass: mass, quality: quality[j])
                case .failure(let error):
                    unit[p].error = "\(error)"
                }
            }
            return
        }
        for p in live {
            advance(&unit[p], step: step, header: header, layers: layers, loop: loop, numerics: numerics, dumping: dumping, mass: mass)
        }
    }

    /// One pair, one step: mask for the persistent loop, compress, score quality, hash.
    static func advance(
        _ p: inout PairState, step: StepRecord, header: TraceHeader, layers: Int, loop: CacheLoop, numerics: ReplayNumerics = .fp32,
        dumping: Bool, mass: StepDecodeMass? = nil
    ) {
        var input = step
        var availability: [[Bool]]? = nil
        var cachedMass: Double? = nil
        var newTokens = step.promptLength
        if loop == .persistent {
            let avail = p.residency.availability(for: step, layers: layers)
            availability = avail
            cachedMass = CacheResidency.retainedWindowMass(step, availability: avail)
            input = CacheResidency.mask(step, header: header, availability: avail)
            let keys = CacheResidency.keys(of: step)
            if !(step.reset || p.residency.episodeID != step.episodeID) {
                newTokens = keys.enumerated().filter { $0.element == nil || !CacheResidency.existedBefore($0.element!, step: step) }.count
            }
        }
        let output: PolicyStepOutput
        do {
            output = try p.policy.compress(
                PolicyStepInput(header: header, step: input, budget: p.budget, numerics: numerics, notes: p.notes), state: p.state)
        } catch {
            p.error = "\(error)"
            return
        }
        finish(&p, output: output, step: step, availability: availability, cachedMass: cachedMass, newTokens: newTokens, dumping: dumping, mass: mass)
    }

    /// The rest of one pair's step once its policy has compressed: persistent-loop masking,
    /// digest, golden agreement, dump, quality proxy and the step's facts.
    static func finish(
        _ p: inout PairState, output: PolicyStepOutput, step: StepRecord, availability: [[Bool]]?, cachedMass: Double?, newTokens: Int,
        dumping: Bool, mass: StepDecodeMass?, quality: Result<[Double?], any Error>? = nil
    ) {
        p.state = output.state
        var selections = output.layers
        if let availability {
            for l in selections.indices where l < availability.count {
                selections[l].keptIndices = selections[l].keptIndices.map { row in row.filter { availability[l][Int($0)] } }
            }
            p.residency = p.residency.advanced(step: step, keptPerLayer: selections.map(\.keptIndices))
        }
        // Digest and dump.
        p.digest.add(step: step.stepIndex, promptLength: step.promptLength, selections: selections)
        if let field = p.golden?.field {
            for sel in selections {
                guard let chunk = step.chunk(field, layer: sel.layer), chunk.tensor.shape.count == 2 else { continue }
                let values = chunk.tensor.int64s()
                let width = chunk.tensor.shape[1]
                let rows = (0..<chunk.tensor.shape[0]).map { r in values[r * width..<(r + 1) * width].map { Int32(clamping: $0) } }
                p.golden!.add(golden: rows, replayed: sel.keptIndices)
            }
        }
        var perLayerQuality: [Double] = []
        do {
            if dumping {
                for sel in selections {
                    let line = try KeptSetRecord(policy: p.spec.label, budget: p.budget, step: step, selection: sel).jsonLine()
                    p.dumpLines += Array((line + "\n").utf8)
                }
            }
            if let quality {
                perLayerQuality = try quality.get().compactMap { $0 }
            } else if let mass {
                perLayerQuality = try mass.shares(of: selections).compactMap { $0 }
            }
        } catch {
            p.error = "\(error)"
            return
        }
        let quality = perLayerQuality.isEmpty ? nil : perLayerQuality.reduce(0, +) / Double(perLayerQuality.count)
        let shares = imageShares(step: step, selections: selections)
        let visual = step.images.map(\.length)
        p.steps.append(
            ReplayedStep(
                step: step.stepIndex, episode: step.episodeID, reset: step.reset, promptLength: step.promptLength,
                generatedTokens: step.generatedTokens, visualTokensPerImage: visual,
                textTokens: step.promptLength - visual.reduce(0, +), keptTokensPerLayer: selections.map(\.keptTokensMean),
                scoringFLOPs: output.scoringFLOPs, decodeMassRetained: quality, decodeMassRetainedPerLayer: perLayerQuality,
                cachedWindowMass: cachedMass,
                imageShareBefore: shares.before, imageShareAfter: shares.after, newTokens: newTokens))
    }

    /// Per screenshot: its share of the prompt and of the kept cache (mean over layers and rows).
    static func imageShares(step: StepRecord, selections: [LayerSelection]) -> (before: [Double], after: [Double]) {
        let L = Double(step.promptLength)
        let before = step.images.map { Double($0.length) / L }
        var after = [Double](repeating: 0, count: step.images.count)
        var rows = 0
        for sel in selections {
            if let bitmaps = sel.keptBitmaps {
                for r in 0..<bitmaps.rowCount where bitmaps.counts[r] > 0 {
                    rows += 1
                    for (f, img) in step.images.enumerated() {
                        after[f] += Double(bitmaps.count(row: r, in: img.spanStart..<img.spanEnd)) / Double(bitmaps.counts[r])
                    }
                }
                continue
            }
            for row in sel.keptIndices where !row.isEmpty {
                rows += 1
                for (f, img) in step.images.enumerated() {
                    // Rows are ascending: count positions inside [spanStart, spanEnd) by binary search.
                    let lo = lowerBound(row, Int32(img.spanStart))
                    let hi = lowerBound(row, Int32(img.spanEnd))
                    after[f] += Double(hi - lo) / Double(row.count)
                }
            }
        }
        if rows > 0 { after = after.map { $0 / Double(rows) } }
        return (before, after)
    }

    static func lowerBound(_ a: [Int32], _ x: Int32) -> Int {
        var lo = 0
        var hi = a.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if a[mid] < x { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }
}


/// Reads one step ahead within a memory bound: on a background thread, the step's first chunks
/// in file order up to `aheadFraction` of its decoded size (the step being scored and this one
/// must fit in the peak-memory bound of benchmarks/replay/README.md, "Sweep"); `get`, called
/// once the previous step is done with, decodes the rest on `threads` threads and returns it.
final class StepPrefetch: @unchecked Sendable {
    /// Share of a step's decoded bytes read while the previous step is still in memory.
    /// (Settable so that tests can vary it; results do not depend on it.)
    nonisolated(unsafe) static var aheadFraction = 0.0625
    private let done = DispatchSemaphore(value: 0)
    // Written once by the reading thread before `done` is signalled, read after the wait.
    private var plan: Result<StepReading, any Error>?
    private let threads: Int

    /// TraceReader holds only constants and reads with pread, so chunks may be decoded on other
    /// threads while the caller reads nothing else from it.
    private struct Source: @unchecked Sendable { let reader: TraceReader }

    init(reader: TraceReader, index: Int, fields: Set<String>, threads: Int) {
        let source = Source(reader: reader)
        let fraction = Self.aheadFraction
        self.threads = threads
        DispatchQueue.global().async { [self] in
            plan = Result {
                let p = try source.reader.planStep(at: index, fields: fields)
                p.decode(upTo: UInt64(Double(p.rawBytes) * fraction))
                return p
            }
            done.signal()
        }
    }

    func get() throws -> StepRecord {
        done.wait()
        done.signal()
        return try plan!.get().finish(threads: threads)
    }

    /// Raw bytes the background thread decoded (waits for it; before `get`).
    func bytesReadAhead() -> (decoded: UInt64, step: UInt64) {
        done.wait()
        done.signal()
        guard case .success(let p) = plan! else { return (0, 0) }
        return (p.decodedBytes, p.rawBytes)
    }
}
