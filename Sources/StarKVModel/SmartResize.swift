import Foundation

/// Qwen2.5-VL's `smart_resize` and the visual-token count it implies.
///
/// Implements docs/memory-model.md §2.1 (and docs/algorithms.md §1.1): round each side
/// to a multiple of `factor` (banker's rounding, as Python's `round`), then rescale into
/// [minPixels, maxPixels] keeping the aspect ratio.
public struct ImageResizer: Sendable, Hashable, Codable {
    /// Pixel edge of one LLM token (patch 14 × merge 2 = 28).
    public var factor: Int
    /// Lower bound on the resized area.
    public var minPixels: Int
    /// Upper bound on the resized area.
    public var maxPixels: Int

    /// UI-TARS-1.5 / STaR-KV / GUI-KV driver bounds: [100·28², 16384·28²].
    public static let uiTars15 = ImageResizer(factor: 28, minPixels: 78_400, maxPixels: 12_845_056)

    public init(factor: Int = 28, minPixels: Int, maxPixels: Int) {
        self.factor = factor
        self.minPixels = minPixels
        self.maxPixels = maxPixels
    }

    /// Errors of an impossible resize request.
    public enum ResizeError: Error, Equatable, CustomStringConvertible {
        case nonPositiveSize(width: Int, height: Int)
        case aspectRatioTooLarge(width: Int, height: Int)

        public var description: String {
            switch self {
            case .nonPositiveSize(let w, let h):
                return "screenshot size \(w)x\(h) must be positive"
            case .aspectRatioTooLarge(let w, let h):
                return "screenshot \(w)x\(h) has an aspect ratio above 200, which smart_resize rejects"
            }
        }
    }

    /// The resized (width, height), both multiples of `factor`.
    public func resize(width: Int, height: Int) throws -> (width: Int, height: Int) {
        guard width > 0, height > 0 else { throw ResizeError.nonPositiveSize(width: width, height: height) }
        guard max(width, height) <= 200 * min(width, height) else {
            throw ResizeError.aspectRatioTooLarge(width: width, height: height)
        }
        let f = Double(factor)
        let h = Double(height), w = Double(width)
        var hBar = max(f, (h / f).rounded(.toNearestOrEven) * f)
        var wBar = max(f, (w / f).rounded(.toNearestOrEven) * f)
        if hBar * wBar > Double(maxPixels) {
            let beta = (h * w / Double(maxPixels)).squareRoot()
            hBar = max(f, (h / beta / f).rounded(.down) * f)
            wBar = max(f, (w / beta / f).rounded(.down) * f)
        } else if hBar * wBar < Double(minPixels) {
            let beta = (Double(minPixels) / (h * w)).squareRoot()
            hBar = (h * beta / f).rounded(.up) * f
            wBar = (w * beta / f).rounded(.up) * f
        }
        return (Int(wBar), Int(hBar))
    }

    /// The merged token grid (rows, cols) and visual-token count of one screenshot.
    public func tokenGrid(width: Int, height: Int) throws -> ScreenshotTokens {
        let resized = try resize(width: width, height: height)
        return ScreenshotTokens(
            originalWidth: width, originalHeight: height,
            resizedWidth: resized.width, resizedHeight: resized.height,
            gridRows: resized.height / factor, gridCols: resized.width / factor)
    }
}

/// The token geometry of one screenshot after `smart_resize`.
public struct ScreenshotTokens: Sendable, Hashable, Codable {
    public var originalWidth: Int
    public var originalHeight: Int
    public var resizedWidth: Int
    public var resizedHeight: Int
    /// Merged-grid rows (resized height / 28).
    public var gridRows: Int
    /// Merged-grid columns (resized width / 28).
    public var gridCols: Int

    public init(
        originalWidth: Int, originalHeight: Int, resizedWidth: Int, resizedHeight: Int,
        gridRows: Int, gridCols: Int
    ) {
        self.originalWidth = originalWidth
        self.originalHeight = originalHeight
        self.resizedWidth = resizedWidth
        self.resizedHeight = resizedHeight
        self.gridRows = gridRows
        self.gridCols = gridCols
    }

    /// LLM visual tokens (rows × cols).
    public var visualTokens: Int { gridRows * gridCols }
    /// ViT patches (4 per visual token for a 2×2 merge).
    public var patches: Int { 4 * visualTokens }
}

/// A screen size written `WIDTHxHEIGHT` on the command line.
public struct ScreenSize: Sendable, Hashable, Codable, CustomStringConvertible {
    public var width: Int
    public var height: Int

    public init(width: Int, height: Int) {
        self.width = width
        self.height = height
    }

    /// Parses `1920x1080` (also `1920X1080`); nil when malformed or not positive.
    public init?(parsing text: String) {
        let parts = text.lowercased().split(separator: "x")
        guard parts.count == 2, let w = Int(parts[0]), let h = Int(parts[1]), w > 0, h > 0,
            w <= 100_000, h <= 100_000
        else { return nil }
        self.init(width: w, height: h)
    }

    public var description: String { "\(width)x\(height)" }
}
