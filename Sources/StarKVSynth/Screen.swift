/// The kind of a synthetic UI element (docs/synthetic-agent.md "Screens").
public enum ElementKind: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// A toolbar, menu bar, sidebar or dialog panel.
    case bar = 0
    /// A line of text.
    case text = 1
    /// A push button or link.
    case button = 2
    /// A small icon.
    case icon = 3
    /// A text input field.
    case field = 4
    /// A picture, chart or video area.
    case image = 5

    public var description: String {
        switch self {
        case .bar: return "bar"
        case .text: return "text"
        case .button: return "button"
        case .icon: return "icon"
        case .field: return "field"
        case .image: return "image"
        }
    }

    /// The region role a KV-head group can specialise on (0 text, 1 controls, 2 chrome/icons,
    /// 3 pictures). Four roles, one per KV group of a Qwen2.5-VL-7B layer.
    public var role: Int {
        switch self {
        case .text: return 0
        case .button, .field: return 1
        case .icon, .bar: return 2
        case .image: return 3
        }
    }

    /// Number of distinct `role` values.
    public static let roleCount = 4

    /// Whether an agent can act on it (click or type).
    public var isInteractive: Bool { self == .button || self == .icon || self == .field }
}

/// One rectangle of a synthetic screen, in merged-grid cells (28×28 px each).
public struct UIElement: Sendable, Hashable {
    /// Unique within a trajectory; kept while the element persists across screenshots.
    public var id: Int
    public var kind: ElementKind
    /// Top-left cell and size in cells.
    public var row: Int
    public var col: Int
    public var rows: Int
    public var cols: Int
    /// Bumped when the element's content changes (typed text, toggled state...).
    public var version: Int
    /// How much attention the element draws independent of the task, in [0, 1].
    public var interest: Double

    public init(id: Int, kind: ElementKind, row: Int, col: Int, rows: Int, cols: Int, version: Int = 0, interest: Double) {
        self.id = id
        self.kind = kind
        self.row = row
        self.col = col
        self.rows = rows
        self.cols = cols
        self.version = version
        self.interest = interest
    }

    /// Whether the element covers cell (r, c).
    public func contains(row r: Int, col c: Int) -> Bool {
        r >= row && r < row + rows && c >= col && c < col + cols
    }
}

/// A screenshot's content on the merged token grid: elements painted in order over a
/// background (later elements cover earlier ones).
///
/// Implements the "screens made of UI elements" part of issue 3 (docs/synthetic-agent.md).
public struct ScreenState: Sendable, Hashable {
    /// Merged-grid rows and columns (smart_resize output / 28).
    public var rows: Int
    public var cols: Int
    /// Elements in paint order.
    public var elements: [UIElement]
    /// Background theme; a new page of another app changes it.
    public var theme: Int
    /// First row of the scrollable content area (below the top bar).
    public var contentTop: Int
    /// First column of the content area (right of the sidebar, 0 without one).
    public var contentLeft: Int

    public init(rows: Int, cols: Int, elements: [UIElement], theme: Int, contentTop: Int, contentLeft: Int) {
        self.rows = rows
        self.cols = cols
        self.elements = elements
        self.theme = theme
        self.contentTop = contentTop
        self.contentLeft = contentLeft
    }

    /// For every cell in raster order, the index into `elements` of the element painted on
    /// top, or -1 for background.
    public func cellElementIndices() -> [Int32] {
        var cells = [Int32](repeating: -1, count: rows * cols)
        for (index, e) in elements.enumerated() {
            let r0 = max(0, e.row), r1 = min(rows, e.row + e.rows)
            let c0 = max(0, e.col), c1 = min(cols, e.col + e.cols)
            if r0 >= r1 || c0 >= c1 { continue }
            for r in r0..<r1 {
                for c in c0..<c1 { cells[r * cols + c] = Int32(index) }
            }
        }
        return cells
    }

    /// A 64-bit identity of what cell `cell` shows: equal in two screenshots exactly when the
    /// same element (same version, same offset inside it) or the same background is there.
    public func contentIDs(cellElements: [Int32]) -> [UInt64] {
        var out = [UInt64](repeating: 0, count: rows * cols)
        for cell in 0..<(rows * cols) {
            let r = cell / cols, c = cell % cols
            let idx = Int(cellElements[cell])
            if idx < 0 {
                out[cell] = SplitMix64.mix(0xB6 &+ UInt64(theme) << 40 &+ UInt64(cell))
            } else {
                let e = elements[idx]
                let local = UInt64((r - e.row) * 4096 + (c - e.col))
                out[cell] = SplitMix64.mix(
                    UInt64(e.id) << 32 ^ UInt64(e.version) << 20 ^ local ^ 0x5E1E_C7ED_0000_0000)
            }
        }
        return out
    }

    /// The element with `id`, if on screen.
    public func element(id: Int) -> UIElement? { elements.first { $0.id == id } }
}

/// What the agent did at one step (acting on that step's screenshot).
public enum AgentAction: String, Sendable, CaseIterable {
    case click, type, scroll, navigate, openDialog = "open_dialog", closeDialog = "close_dialog"
}

/// Builds screens and evolves them under actions. All randomness comes from the caller's
/// generator, so a trajectory is a pure function of the seed.
struct ScreenFactory {
    var rows: Int
    var cols: Int
    var nextID: Int = 0

    init(rows: Int, cols: Int) {
        self.rows = rows
        self.cols = cols
    }

    private mutating func make(
        _ kind: ElementKind, _ row: Int, _ col: Int, _ h: Int, _ w: Int, _ rng: inout SplitMix64
    ) -> UIElement {
        defer { nextID += 1 }
        let interest: Double
        switch kind {
        case .bar: interest = rng.uniform(0.0, 0.3)
        case .text: interest = rng.uniform(0.1, 0.8)
        case .image: interest = rng.uniform(0.2, 0.7)
        default: interest = rng.uniform(0.3, 1.0)
        }
        return UIElement(id: nextID, kind: kind, row: row, col: col, rows: h, cols: w, interest: interest)
    }

    /// A fresh application window: top bar with icons, an optional sidebar with navigation
    /// buttons, and a content area.
    mutating func newScreen(_ rng: inout SplitMix64) -> ScreenState {
        var elements = [UIElement]()
        let barRows = max(1, rows / 16)
        elements.append(make(.bar, 0, 0, barRows, cols, &rng))
        var c = 1
        let iconCount = rng.int(in: 2...5)
        for _ in 0..<iconCount where c + 1 < cols {
            elements.append(make(.icon, 0, c, min(barRows, 1), 1, &rng))
            c += rng.int(in: 2...3)
        }
        if cols > 24 {
            let searchW = min(cols / 4, 20)
            elements.append(make(.field, 0, cols / 2 - searchW / 2, min(barRows, 1), max(4, searchW), &rng))
        }
        var left = 0
        if cols >= 20 && rng.chance(0.65) {
            let sideW = max(3, cols / 7)
            elements.append(make(.bar, barRows, 0, rows - barRows, sideW, &rng))
            var r = barRows + 1
            while r + 1 < rows {
                elements.append(make(.button, r, 1, 1, max(1, sideW - 2), &rng))
                r += rng.int(in: 2...3)
            }
            left = sideW
        }
        var screen = ScreenState(
            rows: rows, cols: cols, elements: elements, theme: rng.int(in: 0...7),
            contentTop: barRows, contentLeft: left)
        fillContent(&screen, from: barRows + 1, &rng)
        return screen
    }

    /// Lays out content blocks (paragraphs, button rows, images, fields, icon rows) from
    /// `startRow` down to the bottom of the screen.
    mutating func fillContent(_ screen: inout ScreenState, from startRow: Int, _ rng: inout SplitMix64) {
        let left = screen.contentLeft + 1
        let width = max(1, cols - left - 1)
        var r = startRow
        while r < rows - 1 {
            let pick = rng.unit()
            var used = 1
            if pick < 0.40 {
                let lines = rng.int(in: 1...4)
                for i in 0..<lines where r + i < rows {
                    let w = max(2, Int(Double(width) * rng.uniform(0.35, 0.95)))
                    screen.elements.append(make(.text, r + i, left, 1, w, &rng))
                }
                used = lines
            } else if pick < 0.58 {
                let h = rng.int(in: 1...2)
                var c = left
                for _ in 0..<rng.int(in: 1...3) {
                    let w = rng.int(in: 3...8)
                    if c + w > left + width { break }
                    screen.elements.append(make(.button, r, c, min(h, rows - r), w, &rng))
                    c += w + rng.int(in: 1...3)
                }
                used = h
            } else if pick < 0.74 {
                let h = min(rng.int(in: 3...8), rows - r)
                let w = min(rng.int(in: 6...16), width)
                screen.elements.append(make(.image, r, left, h, w, &rng))
                if width - w > 6 {
                    for i in 0..<min(h, 3) {
                        screen.elements.append(make(.text, r + i, left + w + 1, 1, max(2, (width - w - 2) * 2 / 3), &rng))
                    }
                }
                used = h
            } else if pick < 0.88 {
                let labelW = min(rng.int(in: 4...8), width)
                screen.elements.append(make(.text, r, left, 1, labelW, &rng))
                let fw = min(rng.int(in: 10...25), max(1, width - labelW - 1))
                if left + labelW + 1 + fw <= left + width {
                    screen.elements.append(make(.field, r, left + labelW + 1, 1, fw, &rng))
                }
                used = 1
            } else {
                var c = left
                for _ in 0..<rng.int(in: 3...6) {
                    if c + 1 > left + width { break }
                    screen.elements.append(make(.icon, r, c, 1, 1, &rng))
                    c += rng.int(in: 2...4)
                }
                used = 1
            }
            r += used + rng.int(in: 1...2)
        }
    }

    /// Picks the element the agent acts on at this step: interactive elements (and sometimes
    /// text) weighted by interest. Returns the index into `screen.elements`.
    func chooseTarget(_ screen: ScreenState, _ rng: inout SplitMix64) -> Int {
        var candidates = [Int]()
        var weights = [Double]()
        for (i, e) in screen.elements.enumerated() where e.kind.isInteractive || e.kind == .text {
            candidates.append(i)
            weights.append((e.kind.isInteractive ? 1.0 : 0.25) * (0.2 + e.interest))
        }
        guard !candidates.isEmpty else { return 0 }
        let total = weights.reduce(0, +)
        var x = rng.unit() * total
        for (k, w) in weights.enumerated() {
            x -= w
            if x < 0 { return candidates[k] }
        }
        return candidates[candidates.count - 1]
    }

    /// The action implied by acting on `target`, and the next screen.
    mutating func apply(
        to screen: ScreenState, target: Int, dialogOpen: Bool, _ rng: inout SplitMix64
    ) -> (action: AgentAction, next: ScreenState, dialogOpen: Bool) {
        var next = screen
        let t = screen.elements[target]
        if dialogOpen {
            // Any action inside a dialog closes it (the dialog is the last painted group).
            next.elements.removeAll { $0.id >= dialogFirstID }
            return (.closeDialog, next, false)
        }
        switch t.kind {
        case .field:
            next.elements[target].version += 1
            return (.type, next, false)
        case .text:
            // Scroll the content area up by a few rows.
            let k = rng.int(in: 2...max(2, rows / 4))
            next.elements = next.elements.compactMap { e in
                guard e.row > screen.contentTop && e.col >= screen.contentLeft && e.kind != .bar else { return e }
                var m = e
                m.row -= k
                return m.row > screen.contentTop ? m : nil
            }
            let bottom = next.elements.filter { $0.row > screen.contentTop && $0.col >= screen.contentLeft }
                .map { $0.row + $0.rows }.max() ?? (screen.contentTop + 1)
            fillContent(&next, from: bottom + 1, &rng)
            return (.scroll, next, false)
        default:
            let p = rng.unit()
            if p < 0.3 || (t.col < screen.contentLeft && t.row > screen.contentTop) {
                // Navigation: keep the chrome, replace the content.
                next.elements = screen.elements.filter { $0.row <= screen.contentTop || $0.col < screen.contentLeft }
                if rng.chance(0.2) { next.theme = (screen.theme + 1) % 8 }
                fillContent(&next, from: screen.contentTop + 1, &rng)
                return (.navigate, next, false)
            } else if p < 0.45 && rows >= 8 && cols >= 16 {
                // A dialog opens over the centre.
                let h = max(4, rows / 3), w = max(8, cols / 3)
                let r0 = (rows - h) / 2, c0 = (cols - w) / 2
                dialogFirstID = nextID
                next.elements.append(make(.bar, r0, c0, h, w, &rng))
                next.elements.append(make(.text, r0 + 1, c0 + 1, 1, w - 2, &rng))
                next.elements.append(make(.button, r0 + h - 2, c0 + 1, 1, max(2, w / 3), &rng))
                next.elements.append(make(.button, r0 + h - 2, c0 + w - 1 - max(2, w / 3), 1, max(2, w / 3), &rng))
                return (.openDialog, next, true)
            } else {
                // A small change: the clicked element toggles, and one or two others update.
                next.elements[target].version += 1
                for _ in 0..<rng.int(in: 1...2) {
                    let j = rng.int(in: 0...(next.elements.count - 1))
                    if next.elements[j].kind != .bar { next.elements[j].version += 1 }
                }
                return (.click, next, false)
            }
        }
    }

    /// First element id of the open dialog.
    var dialogFirstID: Int = .max
}
