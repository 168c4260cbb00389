import CStarKVSupport
import StarKVPolicies

/// Which byte encoding of the kept sets the per-pair `keptDigest` hashes (docs/replay.md
/// "Digest"). Both are SHA-256 over the same logical content — every kept set of the pair, in
/// step, layer, head order — so two replays agree under one version exactly when they agree
/// under the other.
public enum KeptDigestVersion: Int, Sendable, Codable, CaseIterable, CustomStringConvertible {
    /// Until StarKV 0.15: every kept position as a little-endian Int32 (4 bytes per kept token).
    case v1 = 1
    /// Each head row as a bitmap over the step's prompt positions (⌈L/8⌉ bytes per row, whatever
    /// the budget), 8–32× fewer bytes to hash in a sweep; the default.
    case v2 = 2

    /// `v1` / `v2`.
    public var description: String { "v\(rawValue)" }

    /// Parses `v1`, `v2`, `1` or `2`.
    public init?(name: String) {
        let t = name.lowercased()
        guard let n = Int(t.hasPrefix("v") ? String(t.dropFirst()) : t) else { return nil }
        self.init(rawValue: n)
    }
}

/// The running kept-set digest of one (policy, budget) pair (docs/replay.md "Digest").
///
/// v1 feeds, per step, the step index, then per layer its index and row count, then per row its
/// length and its positions as little-endian Int32. v2 starts with the tag `starkv-kept-v2` and
/// feeds, per step, the step index and prompt length L, then per layer its index and row count,
/// then per row its length and either the byte `0` and the row as a bitmap of ⌈L/8⌉ bytes (bit
/// j % 8 of byte j / 8 set when position j is kept) — for rows strictly ascending inside
/// [0, L), as every policy returns them — or the byte `1` and the positions as in v1.
struct KeptSetDigest {
    let version: KeptDigestVersion
    private var sha = SHA256()
    /// Reused bitmap words (v2).
    private var words: [UInt64] = []

    init(version: KeptDigestVersion) {
        self.version = version
        if version == .v2 { sha.update("starkv-kept-v2") }
    }

    /// Adds one step's selections.
    mutating func add(step stepIndex: Int, promptLength: Int, selections: [LayerSelection]) {
        sha.update(integer: UInt32(truncatingIfNeeded: stepIndex))
        if version == .v2 { sha.update(integer: UInt32(truncatingIfNeeded: promptLength)) }
        for sel in selections {
            sha.update(integer: UInt32(truncatingIfNeeded: sel.layer))
            sha.update(integer: UInt32(truncatingIfNeeded: sel.keptRowCount))
            if version == .v2, Self.littleEndianWords, let bitmaps = sel.keptBitmaps, bitmaps.length == promptLength {
                // Rows the policy built as bitmaps over this prompt: the same bytes as
                // `fillBitmap` gives for their positions (bits past L are zero).
                for r in 0..<bitmaps.rowCount {
                    sha.update(integer: UInt32(truncatingIfNeeded: bitmaps.counts[r]))
                    bitmaps.withRow(r) { updateBitmapRow($0, promptLength: promptLength) }
                }
                continue
            }
            for row in sel.keptIndices {
                sha.update(integer: UInt32(truncatingIfNeeded: row.count))
                switch version {
                case .v1:
                    sha.update(littleEndian: row)
                case .v2:
                    if fillBitmap(row, length: promptLength) {
                        let filled = words
                        filled.withUnsafeBufferPointer { updateBitmapRow($0, promptLength: promptLength) }
                    } else {
                        sha.update(integer: UInt8(1))
                        sha.update(littleEndian: row)
                    }
                }
            }
        }
    }

    /// Feeds a v2 bitmap row: the byte 0, then the first ⌈L/8⌉ bytes of its words.
    private mutating func updateBitmapRow(_ rowWords: UnsafeBufferPointer<UInt64>, promptLength: Int) {
        sha.update(integer: UInt8(0))
        sha.update(raw: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(rowWords)[0..<((promptLength + 7) / 8)]))
    }

    /// Whether a bitmap's words sit in memory in position order (little-endian hosts).
    private static let littleEndianWords = UInt64(1).littleEndian == 1

    /// The hex digest of everything added.
    func finalize() -> String { sha.finalize() }

    /// Sets `words` to the bitmap of `row` over [0, length) (little-endian words, so the bytes
    /// run in position order); false when the row is not strictly ascending inside [0, length).
    private mutating func fillBitmap(_ row: [Int32], length: Int) -> Bool {
        guard length >= 0 else { return false }
        let wordCount = (length + 63) / 64
        if words.count < wordCount { words = [UInt64](repeating: 0, count: wordCount) }
        let ok = words.withUnsafeMutableBufferPointer { w -> Bool in
            row.withUnsafeBufferPointer { r in
                starkv_bitmap_from_sorted(r.baseAddress, Int64(r.count), Int64(length), w.baseAddress) != 0
            }
        }
        #if _endian(big)
        if ok { for i in 0..<wordCount { words[i] = words[i].littleEndian } }
        #endif
        return ok
    }
}
