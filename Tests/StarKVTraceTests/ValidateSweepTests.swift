import Foundation
import Testing
@testable import StarKVTrace

/// `validate` certifies a file as intact only when every byte is as written: over a small trace,
/// every strict prefix, 3,000 single-bit flips and 600 byte insertions, deletions and overwrites
/// spread over all regions (file header, HEAD, steps, footer, trailer) are all refused or
/// reported incomplete — never intact (issue: must show).
@Suite struct ValidateSweepTests {
    /// Deterministic generator (SplitMix64) so failures reproduce.
    struct Mix {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
    }

    /// Intact means: opens, integrity intact, validate() passes.
    static func certifiedIntact(_ bytes: [UInt8], at path: String) -> Bool {
        TraceFixtures.store(bytes, path)
        guard let r = try? TraceReader(path: path), r.integrity == .intact, (try? r.validate()) != nil else { return false }
        return true
    }

    static func smallTrace() throws -> [UInt8] {
        // Two steps, core fields, uncompressed chunks mixed with compressed ones is not possible
        // per writer; use the compressed default (the common case).
        let h = TraceFixtures.header(fidelity: .core)
        let path = TraceFixtures.temporaryPath("sweep-src")
        let w = try TraceWriter(path: path, header: h, options: TraceWriteOptions(fsyncOnClose: false))
        for i in 0..<2 { try w.append(TraceFixtures.step(i, header: h)) }
        try w.close()
        return TraceFixtures.bytes(path)
    }

    @Test func everyStrictPrefixIsRefusedOrIncomplete() throws {
        let bytes = try Self.smallTrace()
        let path = TraceFixtures.temporaryPath("sweep-prefix")
        #expect(Self.certifiedIntact(bytes, at: path))
        var intact: [Int] = []
        for n in 0..<bytes.count where Self.certifiedIntact(Array(bytes[0..<n]), at: path) { intact.append(n) }
        #expect(intact.isEmpty, "prefixes certified intact: \(intact.prefix(10))")
        print("validate sweep: \(bytes.count) strict prefixes of a \(bytes.count)-byte trace, none certified intact")
    }

    @Test func bitFlipsAndByteEditsAnywhereAreNeverCertified() throws {
        let bytes = try Self.smallTrace()
        let path = TraceFixtures.temporaryPath("sweep-edit")
        var rng = Mix(state: 11)
        var missed: [String] = []
        // Every region gets flips: choose offsets uniformly, plus every byte of the file header
        // and trailer.
        var offsets = Array(0..<16) + Array((bytes.count - 24)..<bytes.count)
        while offsets.count < 3000 { offsets.append(rng.below(bytes.count)) }
        for offset in offsets {
            var b = bytes
            b[offset] ^= UInt8(1 << rng.below(8))
            if Self.certifiedIntact(b, at: path) { missed.append("flip@\(offset)") }
        }
        for k in 0..<600 {
            let offset = rng.below(bytes.count)
            var b = bytes
            switch k % 3 {
            case 0: b.insert(UInt8(rng.below(256)), at: offset)
            case 1: b.remove(at: offset)
            default:
                var v = UInt8(rng.below(256))
                if v == b[offset] { v ^= 0xFF }
                b[offset] = v
            }
            if Self.certifiedIntact(b, at: path) { missed.append("edit\(k % 3)@\(offset)") }
        }
        #expect(missed.isEmpty, "certified intact after: \(missed.prefix(10))")
        print("validate sweep: \(offsets.count) bit flips and 600 byte edits over a \(bytes.count)-byte trace, \(missed.count) certified intact")
    }
}
