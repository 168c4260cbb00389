import CStarKVSupport
import Testing
@testable import StarKVTrace

/// `Tensor.floats` widens stored floats in bulk (`starkv_widen_to_float`: F16C or AVX-512 for
/// binary16 where the CPU has them): every binary16 bit pattern gets the bits of
/// `Float(Float16(bitPattern:))` — zeros, subnormals, normals, infinities, NaNs with their
/// payloads — on the vector and the portable path, and bfloat16/binary32 rows read their values.
@Suite(.serialized) struct FloatWideningTests {
    static func allHalfPatterns() -> Tensor {
        let bytes = (0...Int(UInt16.max)).flatMap { bits -> [UInt8] in [UInt8(bits & 0xFF), UInt8(bits >> 8)] }
        return Tensor(dtype: .f16, shape: [65536], bytes: bytes)
    }

    @Test(arguments: [false, true])
    func everyHalfPatternWidensToTheTablesBits(portable: Bool) {
        starkv_keptrows_force_portable(portable ? 1 : 0)
        defer { starkv_keptrows_force_portable(0) }
        let t = Self.allHalfPatterns()
        let got = t.floats()
        #expect(got.count == 65536)
        var wrong = 0
        for bits in 0..<65536 where got[bits].bitPattern != Float(Float16(bitPattern: UInt16(bits))).bitPattern { wrong += 1 }
        #expect(wrong == 0)
        // A window that starts off the vector width and ends past the tensor is clipped.
        let part = t.floats(from: 65530, count: 20)
        #expect(part.map(\.bitPattern) == (65530..<65536).map { Float(Float16(bitPattern: UInt16($0))).bitPattern })
    }

    @Test func bfloat16AndBinary32RowsReadTheirValues() {
        let values: [Float] = [0, -0.0, 1.5, -2.25, .infinity, 3.0e38, 1e-40]
        for dtype in [TensorDType.bf16, .f32] {
            let t = Tensor(floats: values, shape: [values.count], dtype: dtype)
            #expect(t.floats(from: 1, count: 4).map(\.bitPattern) == Array(t.floats()[1..<5]).map(\.bitPattern))
            if dtype == .f32 { #expect(t.floats().map(\.bitPattern) == values.map(\.bitPattern)) }
            // bf16: the stored upper halves, widened by a shift.
            let stored = t.bytes
            let widened = t.floats()
            for i in values.indices {
                let w = dtype == .bf16 ? UInt32(stored[2 * i]) << 16 | UInt32(stored[2 * i + 1]) << 24
                    : UInt32(stored[4 * i]) | UInt32(stored[4 * i + 1]) << 8 | UInt32(stored[4 * i + 2]) << 16 | UInt32(stored[4 * i + 3]) << 24
                #expect(widened[i].bitPattern == w, "\(dtype) \(i)")
            }
        }
    }
}
