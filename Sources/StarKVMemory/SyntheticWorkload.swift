import StarKVModel

/// Step inputs for a trajectory without a trace: n = 1, 2, … screenshots of one screen size, the
/// text of docs/memory-model.md §4 (T = base + perHistory·(n−1)), and a uniform budget.
///
/// Implements the assumptions of docs/memory-model.md §4 (worked examples) so the CLI and the tests
/// can reproduce tables A, B and I/J.
public struct SyntheticWorkload: Sendable, Hashable, Codable {
    /// Visual tokens of one screenshot (after smart_resize).
    public var visualTokensPerScreenshot: Int
    /// Screenshot counts of the steps, e.g. [1, 2, 3, 4, 5].
    public var screenshotCounts: [Int]
    /// T = textBaseTokens + textTokensPerHistoryStep · (n − 1).
    public var textBaseTokens: Int
    public var textTokensPerHistoryStep: Int
    public var generatedTokens: Int
    /// Percentage of prompt tokens kept per layer (⌊L·b/100⌋); nil or 100 = full cache.
    public var budgetPercent: Double?
    /// Scoring FLOPs per step, if a policy figure is known.
    public var scoringFLOPsPerStep: Int
    /// An absolute budget: prompt tokens kept per layer (min(L, n)); overrides `budgetPercent`.
    public var budgetTokens: Int? = nil

    public init(
        visualTokensPerScreenshot: Int, screenshotCounts: [Int], textBaseTokens: Int = 600,
        textTokensPerHistoryStep: Int = 150, generatedTokens: Int = 0, budgetPercent: Double? = nil,
        scoringFLOPsPerStep: Int = 0
    ) {
        self.visualTokensPerScreenshot = visualTokensPerScreenshot
        self.screenshotCounts = screenshotCounts
        self.textBaseTokens = textBaseTokens
        self.textTokensPerHistoryStep = textTokensPerHistoryStep
        self.generatedTokens = generatedTokens
        self.budgetPercent = budgetPercent
        self.scoringFLOPsPerStep = scoringFLOPsPerStep
    }

    /// Visual tokens of a `width`×`height` screenshot under a resizer (UI-TARS-1.5 bounds by default).
    public static func visualTokens(width: Int, height: Int, resizer: ImageResizer = .uiTars15) throws -> Int {
        try resizer.tokenGrid(width: width, height: height).visualTokens
    }

    /// L = n·(v + 2) + T.
    public func promptTokens(screenshots n: Int) -> Int {
        n * (visualTokensPerScreenshot + 2) + textBaseTokens + textTokensPerHistoryStep * max(0, n - 1)
    }

    /// One step input per screenshot count.
    public func steps(numLayers: Int) -> [MemoryStepInput] {
        screenshotCounts.map { n in
            let L = promptTokens(screenshots: n)
            var kept: [Int]? = nil
            if let n = budgetTokens {
                if n < L { kept = Array(repeating: n, count: numLayers) }
            } else if let b = budgetPercent, b < 100 {
                // ⌊L·b/100⌋ in exact arithmetic for budgets with up to 6 decimals.
                let micro = Int((b * 1_000_000).rounded())
                kept = Array(repeating: L * micro / 100_000_000, count: numLayers)
            }
            return MemoryStepInput(
                promptTokens: L, visualTokensPerScreenshot: Array(repeating: visualTokensPerScreenshot, count: n),
                textTokens: textBaseTokens + textTokensPerHistoryStep * max(0, n - 1), generatedTokens: generatedTokens,
                keptTokensPerLayer: kept, scoringFLOPs: scoringFLOPsPerStep)
        }
    }
}
