import CStarKVSupport

/// SHA-256 (FIPS 180-4), used for the replay digest of kept sets and memory curves.
/// Incremental: feed bytes with `update`, read the hex digest with `finalize`. Whole blocks are
/// compressed with the x86 SHA extensions (SHA-NI) where the CPU has them, else by the portable
/// Swift compression below; both give the same digest (tested).
public struct SHA256: Sendable {
    /// Whether this CPU has SHA-NI (checked once with CPUID).
    static let hardwareAvailable = starkv_sha256_hw_available() != 0
    /// Whether this instance uses SHA-NI; tests turn it off to compare with the portable path.
    let useHardware: Bool

    private var state: [UInt32] = [
        0x6a09_e667, 0xbb67_ae85, 0x3c6e_f372, 0xa54f_f53a, 0x510e_527f, 0x9b05_688c, 0x1f83_d9ab, 0x5be0_cd19,
    ]
    /// The pending partial block (`bufferCount` bytes used).
    private var buffer = [UInt8](repeating: 0, count: 64)
    private var bufferCount = 0
    private var length: UInt64 = 0

    private static let k: [UInt32] = [
        0x428a_2f98, 0x7137_4491, 0xb5c0_fbcf, 0xe9b5_dba5, 0x3956_c25b, 0x59f1_11f1, 0x923f_82a4, 0xab1c_5ed5,
        0xd807_aa98, 0x1283_5b01, 0x2431_85be, 0x550c_7dc3, 0x72be_5d74, 0x80de_b1fe, 0x9bdc_06a7, 0xc19b_f174,
        0xe49b_69c1, 0xefbe_4786, 0x0fc1_9dc6, 0x240c_a1cc, 0x2de9_2c6f, 0x4a74_84aa, 0x5cb0_a9dc, 0x76f9_88da,
        0x983e_5152, 0xa831_c66d, 0xb003_27c8, 0xbf59_7fc7, 0xc6e0_0bf3, 0xd5a7_9147, 0x06ca_6351, 0x1429_2967,
        0x27b7_0a85, 0x2e1b_2138, 0x4d2c_6dfc, 0x5338_0d13, 0x650a_7354, 0x766a_0abb, 0x81c2_c92e, 0x9272_2c85,
        0xa2bf_e8a1, 0xa81a_664b, 0xc24b_8b70, 0xc76c_51a3, 0xd192_e819, 0xd699_0624, 0xf40e_3585, 0x106a_a070,
        0x19a4_c116, 0x1e37_6c08, 0x2748_774c, 0x34b0_bcb5, 0x391c_0cb3, 0x4ed8_aa4a, 0x5b9c_ca4f, 0x682e_6ff3,
        0x748f_82ee, 0x78a5_636f, 0x84c8_7814, 0x8cc7_0208, 0x90be_fffa, 0xa450_6ceb, 0xbef9_a3f7, 0xc671_78f2,
    ]

    public init() { useHardware = SHA256.hardwareAvailable }

    /// An instance that uses SHA-NI only when `hardware` is true and the CPU has it.
    init(hardware: Bool) { useHardware = hardware && SHA256.hardwareAvailable }

    /// Appends bytes.
    public mutating func update<S: Sequence>(_ bytes: S) where S.Element == UInt8 {
        if let done = bytes.withContiguousStorageIfAvailable({ update(raw: UnsafeRawBufferPointer($0)) }) { return done }
        update(raw: Array(bytes))
    }

    private mutating func update(raw bytes: [UInt8]) {
        bytes.withUnsafeBytes { update(raw: $0) }
    }

    /// Appends raw bytes: fills the pending block, then compresses whole blocks in place.
    public mutating func update(raw bytes: UnsafeRawBufferPointer) {
        var offset = 0
        let n = bytes.count
        length &+= UInt64(n)
        if bufferCount > 0 {
            let take = min(64 - bufferCount, n)
            for i in 0..<take { buffer[bufferCount + i] = bytes[i] }
            bufferCount += take
            offset = take
            if bufferCount == 64 {
                buffer.withUnsafeBytes { compress($0.baseAddress!, blocks: 1) }
                bufferCount = 0
            }
        }
        let wholeBlocks = (n - offset) / 64
        if wholeBlocks > 0 {
            compress(bytes.baseAddress! + offset, blocks: wholeBlocks)
            offset += 64 * wholeBlocks
        }
        for i in offset..<n { buffer[bufferCount] = bytes[i]; bufferCount += 1 }
    }

    /// Appends a string's UTF-8 bytes.
    public mutating func update(_ text: String) { update(Array(text.utf8)) }

    /// Appends a little-endian integer.
    public mutating func update<T: FixedWidthInteger>(integer v: T) {
        var le = v.littleEndian
        withUnsafeBytes(of: &le) { update(raw: $0) }
    }

    /// Appends every element of `values` as a little-endian 32-bit integer (the same bytes as
    /// `update(integer:)` per element, in one pass).
    public mutating func update(littleEndian values: [Int32]) {
        #if _endian(little)
        values.withUnsafeBytes { update(raw: $0) }
        #else
        for v in values { update(integer: v) }
        #endif
    }

    /// The lowercase hex digest of everything fed so far.
    public func finalize() -> String {
        var copy = self
        let bitLength = length &* 8
        var tail = Array(buffer[0..<bufferCount])
        tail.append(0x80)
        while tail.count % 64 != 56 { tail.append(0) }
        for i in (0..<8).reversed() { tail.append(UInt8(truncatingIfNeeded: bitLength >> (UInt64(i) * 8))) }
        tail.withUnsafeBytes { raw in copy.compress(raw.baseAddress!, blocks: raw.count / 64) }
        let hex = Array("0123456789abcdef")
        var out = ""
        for word in copy.state {
            for shift in stride(from: 28, through: 0, by: -4) { out.append(hex[Int((word >> UInt32(shift)) & 0xF)]) }
        }
        return out
    }

    /// `blocks` consecutive 64-byte blocks at `start`.
    private mutating func compress(_ start: UnsafeRawPointer, blocks: Int) {
        if useHardware {
            state.withUnsafeMutableBufferPointer { s in
                starkv_sha256_hw_compress(s.baseAddress!, start.assumingMemoryBound(to: UInt8.self), blocks)
            }
            return
        }
        for i in 0..<blocks { compressPortable(start + 64 * i) }
    }

    /// One 64-byte block at `block`, in portable Swift.
    private mutating func compressPortable(_ block: UnsafeRawPointer) {
        @inline(__always) func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }
        var (a, b, c, d, e, f, g, h) = (state[0], state[1], state[2], state[3], state[4], state[5], state[6], state[7])
        withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 64) { w in
            for i in 0..<16 {
                w[i] = UInt32(bigEndian: block.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
            }
            for i in 16..<64 {
                let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
                let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
                w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
            }
            SHA256.k.withUnsafeBufferPointer { k in
                for i in 0..<64 {
                    let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
                    let ch = (e & f) ^ (~e & g)
                    let t1 = h &+ s1 &+ ch &+ k[i] &+ w[i]
                    let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
                    let maj = (a & b) ^ (a & c) ^ (b & c)
                    let t2 = s0 &+ maj
                    (h, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
                }
            }
        }
        state[0] &+= a; state[1] &+= b; state[2] &+= c; state[3] &+= d
        state[4] &+= e; state[5] &+= f; state[6] &+= g; state[7] &+= h
    }
}
