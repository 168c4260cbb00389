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
}
