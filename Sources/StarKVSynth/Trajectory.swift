import StarKVModel
import StarKVTrace

/// One screenshot-step of a synthetic trajectory: the screen the agent saw, what it acted on
/// and how long its reply was. Ground truth for tests and analyses.
public struct PlannedStep: Sendable, Hashable {
    public var screen: ScreenState
    /// Per cell (raster order), index into `screen.elements` or -1 (background).
    public var cellElements: [Int32]
    /// Per cell, the content identity (`ScreenState.contentIDs`).
    public var contentIDs: [UInt64]
    /// Index into `screen.elements` of the element acted on at this step.
    public var targetIndex: Int
    /// The action taken on this step's screenshot (it produces the next screenshot).
    public var action: AgentAction
    /// Tokens the agent generated (its reply incl. the closing `<|im_end|>`).
    public var generatedTokens: Int

    /// The target element.
    public var target: UIElement { screen.elements[targetIndex] }
}

/// The whole trajectory's screens and actions, computed up front from the seed (cheap: no
/// attention), so any step's prompt and fields can be generated independently.
public struct TrajectoryPlan: Sendable, Hashable {
    public var grid: ScreenshotTokens
    public var steps: [PlannedStep]
    /// Token lengths of the fixed prompt parts.
    public var systemTokens: Int
    public var taskPromptTokens: Int
    public var instructionTokens: Int

    /// Plans `count` steps on a screen of `grid` from `seed`.
    public init(steps count: Int, grid: ScreenshotTokens, seed: UInt64) {
        self.grid = grid
        var rng = SplitMix64(seed: seed).fork(0x504C_414E)
        var factory = ScreenFactory(rows: grid.gridRows, cols: grid.gridCols)
        var screen = factory.newScreen(&rng)
        var dialogOpen = false
        var planned = [PlannedStep]()
        planned.reserveCapacity(count)
        systemTokens = 6
        taskPromptTokens = rng.int(in: 300...360)
        instructionTokens = rng.int(in: 16...48)
        for _ in 0..<count {
            let target: Int
            if dialogOpen, let last = screen.elements.lastIndex(where: { $0.kind == .button }) {
                target = last
            } else {
                target = factory.chooseTarget(screen, &rng)
            }
            let cells = screen.cellElementIndices()
            let ids = screen.contentIDs(cellElements: cells)
            let (action, next, open) = factory.apply(to: screen, target: target, dialogOpen: dialogOpen, &rng)
            // "Thought: ...\nAction: click(start_box='(x,y)')" replies of UI-TARS: 30-110 tokens.
            let generated = rng.int(in: 30...110)
            planned.append(
                PlannedStep(
                    screen: screen, cellElements: cells, contentIDs: ids, targetIndex: target,
                    action: action, generatedTokens: generated))
            screen = next
            dialogOpen = open
        }
        self.steps = planned
    }
}

/// Where each prompt part of one step sits: the token layout that the attention model and
/// the `StepRecord` share (docs/algorithms.md §1.1 span rules, §10.2 token types).
public struct PromptLayout: Sendable, Hashable {
    public var tokenTypes: [TokenType]
    public var tokenIDs: [Int32]
    /// Image spans in prompt order (last = current screenshot).
    public var images: [ImageEntry]
    /// For each image, the trajectory step whose screenshot it shows.
    public var imageSteps: [Int]
    /// For each history-text token, how many steps ago that reply was written (1 = previous);
    /// 0 for other tokens.
    public var historyAge: [Int32]
    /// Index of the last `<|vision_end|>` (e*), the first post-vision query row.
    public var lastVisionEnd: Int

    public var promptLength: Int { tokenTypes.count }
}

/// Qwen2 special token ids (Qwen2.5-VL tokenizer).
enum SpecialToken {
    static let imStart: Int32 = 151_644
    static let imEnd: Int32 = 151_645
    static let visionStart: Int32 = 151_652
    static let visionEnd: Int32 = 151_653
    static let imagePad: Int32 = 151_655
    static let newline: Int32 = 198
    static let roleSystem: Int32 = 8948
    static let roleUser: Int32 = 872
    static let roleAssistant: Int32 = 77_091
}

extension PromptLayout {
    /// The UI-TARS-style prompt of step `k`: system message, user message with the
    /// computer-use prompt and the instruction, then for each earlier step (at most
    /// `maxHistorySteps`) its screenshot (only for the last `imageSlots − 1` of them) and the
    /// agent's reply, then the current screenshot and the generation prompt.
    static func build(plan: TrajectoryPlan, step k: Int, imageSlots: Int, maxHistorySteps: Int, seed: UInt64) -> PromptLayout {
        var types = [TokenType]()
        var ids = [Int32]()
        var age = [Int32]()
        var images = [ImageEntry]()
        var imageSteps = [Int]()
        let visual = plan.grid.visualTokens
        let firstHistory = max(0, k - maxHistorySteps)
        let firstImage = max(0, k - (imageSlots - 1))
        var estimate = plan.systemTokens + plan.taskPromptTokens + plan.instructionTokens + 32
        for s in firstHistory..<k { estimate += plan.steps[s].generatedTokens + 16 + (s >= firstImage ? visual : 0) }
        estimate += visual
        types.reserveCapacity(estimate)
        ids.reserveCapacity(estimate)
        age.reserveCapacity(estimate)

        func add(_ t: TokenType, _ id: Int32, _ a: Int32 = 0) {
            types.append(t)
            ids.append(id)
            age.append(a)
        }
        func text(_ t: TokenType, count: Int, stream: Int, _ a: Int32 = 0) {
            let h = NoiseHash(seed: seed, 0x7E47, stream)
            for i in 0..<count { add(t, Int32(truncatingIfNeeded: 1000 + h.bits(i) % 150_000), a) }
        }
        func open(_ role: Int32) {
            add(.template, SpecialToken.imStart)
            add(.template, role)
            add(.template, SpecialToken.newline)
        }
        func close() {
            add(.template, SpecialToken.imEnd)
            add(.template, SpecialToken.newline)
        }
        func image(of s: Int) {
            add(.visionMarker, SpecialToken.visionStart)
            let start = types.count
            for _ in 0..<visual { add(.visual, SpecialToken.imagePad) }
            images.append(
                ImageEntry(
                    spanStart: start, spanEnd: types.count, gridT: 1, gridH: plan.grid.gridRows,
                    gridW: plan.grid.gridCols, originalWidth: plan.grid.originalWidth,
                    originalHeight: plan.grid.originalHeight, resizedWidth: plan.grid.resizedWidth,
                    resizedHeight: plan.grid.resizedHeight, frameAge: k - s))
            imageSteps.append(s)
            add(.visionMarker, SpecialToken.visionEnd)
        }

        open(SpecialToken.roleSystem)
        text(.system, count: plan.systemTokens, stream: 1)
        close()
        open(SpecialToken.roleUser)
        text(.system, count: plan.taskPromptTokens, stream: 2)
        text(.instruction, count: plan.instructionTokens, stream: 3)
        close()
        for s in firstHistory..<k {
            if s >= firstImage {
                open(SpecialToken.roleUser)
                image(of: s)
                close()
            }
            open(SpecialToken.roleAssistant)
            // The reply as history text; its final token is the `<|im_end|>` closed below.
            text(.history, count: max(1, plan.steps[s].generatedTokens - 1), stream: 100 + s, Int32(k - s))
            close()
        }
        open(SpecialToken.roleUser)
        image(of: k)
        let lastVisionEnd = types.count - 1
        close()
        add(.generationPrompt, SpecialToken.imStart)
        add(.generationPrompt, SpecialToken.roleAssistant)
        add(.generationPrompt, SpecialToken.newline)
        return PromptLayout(
            tokenTypes: types, tokenIDs: ids, images: images, imageSteps: imageSteps, historyAge: age,
            lastVisionEnd: lastVisionEnd)
    }
}
