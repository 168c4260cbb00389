import CStarKVSupport
import Testing

/// The vectorised reading kernels (Sources/CStarKVSupport/reading_simd.c, issue 15) give exactly
/// what the portable ones give: the 3-stream CRC32C equals the one-stream CRC32C, and the SSE2
/// un-shuffle equals the scalar loop, for lengths around every block and vector boundary.
@Suite struct ReadingKernelsTests {
    static func bytes(_ n: Int, seed: UInt64) -> [UInt8] {
        var s = seed
        return (0..<n).map { _ in
            s = s &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: s >> 33)
        }
    }

    @Test func crc32cCheckValueAndThreeStreamsEqualOne() {
        #expect(starkv_crc32c(0, Array("123456789".utf8), 9) == 0xE306_9283)  // RFC 3720 check value
        #expect(starkv_crc32c_3way(0, Array("123456789".utf8), 9) == 0xE306_9283)
        let data = Self.bytes(200_003, seed: 7)
        for n in [0, 1, 8191, 8192, 8193, 24_576, 24_583, 65_541, 200_003] {
            for initial: UInt32 in [0, 0xDEAD_BEEF] {
                let one = data.withUnsafeBytes { starkv_crc32c(initial, $0.baseAddress, n) }
                let three = data.withUnsafeBytes { starkv_crc32c_3way(initial, $0.baseAddress, n) }
                #expect(one == three, "length \(n)")
            }
        }
        // Combination: crc(A || B) from the parts.
        let a = data.withUnsafeBytes { starkv_crc32c(0, $0.baseAddress, 1000) }
        let b = data.withUnsafeBytes { starkv_crc32c(0, $0.baseAddress! + 1000, 777) }
        let ab = data.withUnsafeBytes { starkv_crc32c(0, $0.baseAddress, 1777) }
        #expect(starkv_crc32c_combine(a, b, 777) == ab)
    }

    @Test func fastUnshuffleEqualsTheScalarLoopAndInvertsShuffle() {
        let data = Self.bytes(8 * 1037, seed: 3)
        for width in [1, 2, 3, 4, 8] {
            for count in [0, 1, 15, 16, 17, 31, 64, 1037] {
                var slow = [UInt8](repeating: 0, count: count * width)
                var fast = [UInt8](repeating: 0xAA, count: count * width)
                starkv_unshuffle(data, &slow, count, width)
                starkv_unshuffle_fast(data, &fast, count, width)
                #expect(slow == fast, "width \(width) count \(count)")
                var back = [UInt8](repeating: 0, count: count * width)
                starkv_shuffle(fast, &back, count, width)
                #expect(back == Array(data[0..<(count * width)]), "width \(width) count \(count)")
            }
        }
    }

    /// Little-endian element bytes of a value of `kind` (2 binary16, 3 bfloat16, 4 binary32,
    /// 8 binary64) from its bit pattern.
    static func put(_ bits: UInt64, kind: Int, at i: Int, in bytes: inout [UInt8]) {
        let w = kind == 3 ? 2 : kind
        for b in 0..<w { bytes[i * w + b] = UInt8(truncatingIfNeeded: bits >> (8 * UInt64(b))) }
    }

    /// Finite bit patterns of each kind (including the largest finite values, whose exponents
    /// are one below all ones) and non-finite ones (infinities and NaNs of both signs).
    static let finite: [Int: [UInt64]] = [
        2: [0x3C00, 0x7BFF, 0xFBFF, 0x0001, 0x8000, 0x7B00], 3: [0x3F80, 0x7F7F, 0xFF7F, 0x0080, 0x7F00],
        4: [0x3F80_0000, 0x7F7F_FFFF, 0xFF7F_FFFF, 0x007F_FFFF], 8: [0x3FF0_0000_0000_0000, 0x7FEF_FFFF_FFFF_FFFF],
    ]
    static let nonFinite: [Int: [UInt64]] = [
        2: [0x7C00, 0xFC00, 0x7E00, 0x7C01], 3: [0x7F80, 0xFF80, 0x7FC0], 4: [0x7F80_0000, 0xFF80_0000, 0x7FC0_0000],
        8: [0x7FF0_0000_0000_0000, 0xFFF8_0000_0000_0000],
    ]

    /// A tensor of `count` finite elements of `kind` (patterns cycled).
    static func finiteTensor(count: Int, kind: Int) -> [UInt8] {
        let w = kind == 3 ? 2 : kind
        var bytes = [UInt8](repeating: 0, count: count * w)
        let pool = finite[kind]!
        for i in 0..<count { put(pool[(i * 7) % pool.count], kind: kind, at: i, in: &bytes) }
        return bytes
    }

    @Test func fusedUnshuffleAndFiniteCheckEqualTheScalarLoopsAtEveryAlignmentAndPosition() {
        for kind in [2, 3, 4] {
            let w = kind == 3 ? 2 : kind
            for count in [0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 257] {
                // Positions of one planted non-finite value: none, the first, vector bodies,
                // around 16/32-element boundaries and the tail.
                for at in [-1, 0, 1, 14, 15, 16, 31, 32, 40, count - 2, count - 1] where at < count && (at >= 0 || at == -1) {
                    for bits in at < 0 ? [0] : Self.nonFinite[kind]! {
                        var plain = Self.finiteTensor(count: count, kind: kind)
                        if at >= 0 { Self.put(bits, kind: kind, at: at, in: &plain) }
                        var shuffled = [UInt8](repeating: 0, count: plain.count)
                        starkv_shuffle(plain, &shuffled, count, w)
                        // Output at every offset 0..<32 from a 64-byte aligned base (the AVX2 path
                        // needs 32-byte alignment after its scalar head; others fall back).
                        let base = UnsafeMutableRawPointer.allocate(byteCount: plain.count + 64, alignment: 64)
                        defer { base.deallocate() }
                        for offset in [0, 1, 2, 4, 8, 16, 24, 30] {
                            let out = (base + offset).assumingMemoryBound(to: UInt8.self)
                            out.initialize(repeating: 0xAA, count: plain.count)
                            let flag = starkv_unshuffle_check(shuffled, out, count, w, Int32(kind))
                            let got = Array(UnsafeBufferPointer(start: out, count: plain.count))
                            #expect(got == plain, "kind \(kind) count \(count) offset \(offset)")
                            #expect(flag == (at >= 0 ? 1 : 0), "kind \(kind) count \(count) at \(at) bits \(bits) offset \(offset)")
                            #expect(starkv_unshuffle_check(shuffled, out, count, w, 0) == 0)  // no check asked
                        }
                        let fast = starkv_first_nonfinite_fast(plain, count, Int32(kind))
                        #expect(fast == starkv_first_nonfinite(plain, count, Int32(kind)))
                        #expect(fast == at, "kind \(kind) count \(count)")
                    }
                }
            }
        }
        // binary64: the scan alone (no fused un-shuffle for width 8).
        for count in [1, 2, 3, 9, 40] {
            for at in Set([0, count / 2, count - 1]) {
                var plain = Self.finiteTensor(count: count, kind: 8)
                #expect(starkv_first_nonfinite_fast(plain, count, 8) == -1)
                Self.put(Self.nonFinite[8]![at % 2], kind: 8, at: at, in: &plain)
                #expect(starkv_first_nonfinite_fast(plain, count, 8) == at)
            }
        }
    }

    @Test func streamedUnshuffleRangeEqualsTheWholeUnshuffleForAnyPieceSizes() {
        let data = Self.bytes(4 * 1000 + 8, seed: 11)
        for width in [1, 2, 3, 4, 8] {
            for count in [1, 15, 16, 17, 33, 500, 1001] where count * width <= data.count {
                let total = count * width
                var whole = [UInt8](repeating: 0, count: total)
                starkv_unshuffle(data, &whole, count, width)
                for pieceSeed in [1, 7, 16, 64, 333] {
                    var out = [UInt8](repeating: 0x55, count: total)
                    var pos = 0
                    var step = pieceSeed
                    while pos < total {
                        let n = min(step, total - pos)
                        data.withUnsafeBufferPointer { starkv_unshuffle_range_fast($0.baseAddress! + pos, n, pos, &out, count, width) }
                        pos += n
                        step = step * 5 % 97 + 1  // uneven pieces that cross plane boundaries
                    }
                    #expect(out == whole, "width \(width) count \(count) pieces \(pieceSeed)")
                }
            }
        }
    }
}
