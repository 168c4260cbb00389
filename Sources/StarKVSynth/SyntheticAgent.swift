import StarKVModel
import StarKVTrace

/// What to synthesise: model, trajectory shape, fidelity, seed (issue 3; the CLI flags of
/// `starkv record synth` map one to one).
public struct SynthConfig: Sendable, Hashable {
    public var model: ModelGeometry
    /// Agent steps (screenshots) in the trajectory.
    public var steps: Int
    /// Original screenshot size in pixels.
    public var screen: ScreenSize
    /// Screenshots in a prompt at most (history + current); older ones are dropped.
    public var imageSlots: Int
    public var fidelity: Fidelity
    public var seed: UInt64
    /// `win_sum` window sizes, strictly ascending.
    public var windowSizes: [Int]
    /// Rows of `win_rows` at `full` fidelity.
    public var winRowsMax: Int
    /// Storage dtype of `win_sum` (f16 or f32).
    public var winSumDType: TensorDType
    /// Storage dtype of `guikv_resid` (f16 or f32).
    public var residualDType: TensorDType
    /// Previous replies kept as history text (docs/memory-model.md §2.3: 10).
    public var maxHistorySteps: Int
    public var resizer: ImageResizer
    public var parameters: SynthParameters
    public var episodeID: String
    /// Recorded in the header for provenance.
    public var commandLine: String

    public init(
        model: ModelGeometry = ModelPresets.qwen25VL7B, steps: Int = 10,
        screen: ScreenSize = ScreenSize(width: 1920, height: 1080), imageSlots: Int = 5,
        fidelity: Fidelity = .standard, seed: UInt64 = 1, windowSizes: [Int] = [8, 16, 32, 64],
        winRowsMax: Int = 8, winSumDType: TensorDType = .f16, residualDType: TensorDType = .f16,
        maxHistorySteps: Int = 10, resizer: ImageResizer = .uiTars15,
        parameters: SynthParameters = SynthParameters(), episodeID: String = "synth-0", commandLine: String = ""
    ) {
        self.model = model
        self.steps = steps
        self.screen = screen
        self.imageSlots = imageSlots
        self.fidelity = fidelity
        self.seed = seed
        self.windowSizes = windowSizes
        self.winRowsMax = winRowsMax
        self.winSumDType = winSumDType
        self.residualDType = residualDType
        self.maxHistorySteps = maxHistorySteps
        self.resizer = resizer
        self.parameters = parameters
        self.episodeID = episodeID
        self.commandLine = commandLine
    }
}

/// Why a synthetic trace cannot be generated.
public enum SynthError: Error, Equatable, CustomStringConvertible {
    case invalidSteps(Int)
    case invalidImageSlots(Int)
    case invalidScreen(String)
    case invalidWindowSizes([Int])
    case invalidWinRows(Int)
    case invalidDType(field: String, dtype: TensorDType)
    case invalidModel(String)
    case invalidHistory(Int)
    case tooLarge(promptLength: Int, stepBytes: Int)

    public var description: String {
        switch self {
        case .invalidSteps(let n):
            return "synthetic trace: --steps \(n) must be between 1 and \(SyntheticAgent.maxSteps)"
        case .invalidImageSlots(let n):
            return "synthetic trace: --image-slots \(n) must be between 1 and \(SyntheticAgent.maxImageSlots)"
        case .invalidScreen(let why):
            return "synthetic trace: bad --screen: \(why)"
        case .invalidWindowSizes(let w):
            return "synthetic trace: window sizes \(w) must be non-empty, strictly ascending, each in 1...4096"
        case .invalidWinRows(let w):
            return "synthetic trace: win_rows rows \(w) must be between 1 and 4096"
        case .invalidDType(let field, let dtype):
            return "synthetic trace: \(field) cannot be stored as \(dtype); use f16 or f32"
        case .invalidModel(let why):
            return "synthetic trace: model geometry not usable: \(why)"
        case .invalidHistory(let n):
            return "synthetic trace: history length \(n) must be between 0 and 1000"
        case .tooLarge(let l, let bytes):
            return "synthetic trace: a step would have prompt length \(l) and hold \(bytes / (1 << 20)) MiB of fields in memory "
                + "(limit \(SyntheticAgent.maxPromptLength) tokens, \(SyntheticAgent.maxStepBytes >> 30) GiB); "
                + "use fewer --image-slots, a smaller --screen or lower --fields"
        }
    }
}

/// A deterministic synthetic GUI agent: plans a trajectory of screens and actions from a
/// seed, then produces, step by step, the `StepRecord` (token layout, image table and every
/// catalog field) that a recorder attached to a Qwen2.5-VL-class model would have written.
///
/// Implements issue 3 and the fields of `schemas/FORMAT.md` / docs/algorithms.md §10.2 from one
/// per-head attention model (docs/synthetic-agent.md). Steps are independent given the
/// plan, so `step(_:)` can be called in any order and always returns the same record.
public struct SyntheticAgent: Sendable {
    public static let maxSteps = 10_000
    public static let maxImageSlots = 64
    public static let maxPromptLength = 1 << 20
    public static let maxStepBytes = 8 << 30

    public let config: SynthConfig
    public let grid: ScreenshotTokens
    public let plan: TrajectoryPlan
    public let header: TraceHeader

    public init(_ config: SynthConfig) throws {
        guard (1...SyntheticAgent.maxSteps).contains(config.steps) else { throw SynthError.invalidSteps(config.steps) }
        guard (1...SyntheticAgent.maxImageSlots).contains(config.imageSlots) else {
            throw SynthError.invalidImageSlots(config.imageSlots)
        }
        guard (0...1000).contains(config.maxHistorySteps) else { throw SynthError.invalidHistory(config.maxHistorySteps) }
        let w = config.windowSizes
        guard !w.isEmpty, w.allSatisfy({ (1...4096).contains($0) }), zip(w, w.dropFirst()).allSatisfy({ $0 < $1 })
        else { throw SynthError.invalidWindowSizes(w) }
        if config.fidelity >= .full {
            guard (1...4096).contains(config.winRowsMax) else { throw SynthError.invalidWinRows(config.winRowsMax) }
        }
        for (name, dt) in [(TraceField.winSum, config.winSumDType), (TraceField.guikvResid, config.residualDType)]
        where dt != .f16 && dt != .f32 {
            throw SynthError.invalidDType(field: name, dtype: dt)
        }
        let m = config.model
        guard (1...1024).contains(m.numLayers), (1...1024).contains(m.numQueryHeads), m.numKVHeads >= 1,
            m.numQueryHeads % m.numKVHeads == 0
        else {
            throw SynthError.invalidModel(
                "\(m.id): layers \(m.numLayers), query heads \(m.numQueryHeads), KV heads \(m.numKVHeads) "
                    + "(need 1...1024 layers and heads, query heads a multiple of KV heads)")
        }
        let grid: ScreenshotTokens
        do {
            grid = try config.resizer.tokenGrid(width: config.screen.width, height: config.screen.height)
        } catch {
            throw SynthError.invalidScreen("\(error)")
        }
        guard grid.gridRows >= 2, grid.gridCols >= 2 else {
            throw SynthError.invalidScreen("\(config.screen) resizes to a \(grid.gridRows)x\(grid.gridCols) token grid; need at least 2x2")
        }
        // Bound memory before planning: the longest prompt and one step's fields.
        let images = min(config.imageSlots, config.steps)
        let history = min(config.maxHistorySteps, config.steps - 1)
        let maxL = 400 + 48 + history * 126 + images * (grid.visualTokens + 10)
        let perLayerFloats = config.model.numQueryHeads * maxL
            * (config.windowSizes.count + (config.fidelity >= .standard ? 3 : 0)
                + (config.fidelity >= .full ? config.winRowsMax : 0)) + 2 * images * grid.visualTokens
        let stepBytes = perLayerFloats * 4 * config.model.numLayers
        guard maxL <= SyntheticAgent.maxPromptLength, stepBytes <= SyntheticAgent.maxStepBytes else {
            throw SynthError.tooLarge(promptLength: maxL, stepBytes: stepBytes)
        }

        self.config = config
        self.grid = grid
        self.plan = TrajectoryPlan(steps: config.steps, grid: grid, seed: config.seed)
        var fields = TraceField.fields(at: config.fidelity)
        if config.steps < 2 || config.imageSlots < 2 { fields.removeAll { $0 == TraceField.guikvResid } }
        self.header = TraceHeader(
            model: RecordedModel(config.model),
            recorder: RecorderInfo(
                name: "starkv-synth", version: SyntheticAgent.version, seed: config.seed, commandLine: config.commandLine),
            fidelity: config.fidelity, fields: fields, windowSizes: config.windowSizes,
            agent: AgentLoopInfo(
                attnImplementation: "synthetic", visionAttnImplementation: "synthetic",
                storedKVHeads: config.model.numKVHeads, screenWidth: config.screen.width,
                screenHeight: config.screen.height, minPixels: config.resizer.minPixels,
                maxPixels: config.resizer.maxPixels, imageSlots: config.imageSlots, maxNewTokens: 1000,
                benchmark: "synthetic-gui-trajectory"),
            metadata: [
                "synth.grid": "\(grid.gridRows)x\(grid.gridCols)",
                "synth.visual_tokens_per_image": "\(grid.visualTokens)",
                "synth.steps": "\(config.steps)",
                "synth.max_history_steps": "\(config.maxHistorySteps)",
                "synth.win_sum_dtype": config.winSumDType.description,
                "synth.model_doc": "docs/synthetic-agent.md",
            ],
            winRowsMax: config.fidelity >= .full ? config.winRowsMax : 0)
    }

    /// Version of the generative model; bump when outputs change for the same flags.
    public static let version = "1.0"

    /// The prompt layout of step `index` (no fields; cheap).
    public func layout(step index: Int) -> PromptLayout {
        PromptLayout.build(
            plan: plan, step: index, imageSlots: config.imageSlots, maxHistorySteps: config.maxHistorySteps,
            seed: config.seed)
    }

    /// The complete record of step `index` (0-based), every field of the header's fidelity.
    public func step(_ index: Int) -> StepRecord {
        precondition(index >= 0 && index < config.steps, "step index out of range")
        let synth = StepSynthesizer(agent: self, step: index)
        return synth.record()
    }

    /// All steps in order; `progress` is told (done, total) after each.
    public func allSteps(progress: (Int, Int) -> Void = { _, _ in }) -> [StepRecord] {
        var out = [StepRecord]()
        for k in 0..<config.steps {
            out.append(step(k))
            progress(k + 1, config.steps)
        }
        return out
    }

    /// Which element role (0...3, `ElementKind.role`) KV group `group` prefers at `layer`.
    /// Roles are a seeded permutation per block of `roleBlockLayers` layers, and consecutive
    /// blocks always differ (the "migration across layers").
    public func preferredRole(group: Int, layer: Int) -> Int {
        let blockLayers = config.parameters.roleBlockLayers > 0
            ? config.parameters.roleBlockLayers : max(1, config.model.numLayers / 7)
        let block = layer / blockLayers
        return rolePermutation(block: block)[group % ElementKind.roleCount]
    }

    private func rolePermutation(block: Int) -> [Int] {
        var previous: [Int] = []
        var current: [Int] = []
        for b in 0...block {
            var rng = SplitMix64(seed: config.seed).fork(0x524F_4C45 &+ UInt64(b))
            repeat {
                current = [0, 1, 2, 3]
                for i in stride(from: 3, to: 0, by: -1) { current.swapAt(i, rng.int(in: 0...i)) }
            } while current == previous
            previous = current
        }
        return current
    }
}
