#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Elementwise and reduction ops on bf16 tensors as a CUDA run of the reference computes them
// (docs/algorithms.md §12 "How a bf16 op is emulated"): the operands are bf16 values (held here
// as Float), the op runs in fp32 ("opmath", `at::opmath_type<at::BFloat16>` = float) and the
// result is rounded once to bf16 (`bf16Round`). Python-float scalars enter as fp32. Transcendental
// functions are evaluated correctly rounded to fp32 (through fp64); long sums accumulate in fp64
// in index order and are rounded to fp32, then to bf16. All values stay exact bf16 values.

/// A Python float scalar as the CUDA kernels use it next to a bf16 tensor: cast to fp32.
@inline(__always) func opmath(_ x: Double) -> Float { Float(x) }

/// `torch.tensor(x, dtype=torch.bfloat16)` / `Scalar.to<BFloat16>()`: fp64 → fp32 → bf16.
@inline(__always) func bf16(_ x: Double) -> Float { bf16Round(Float(x)) }

/// `exp` of a bf16 value, rounded to bf16 (fp32 opmath; correctly rounded fp32 exp).
@inline(__always) func bf16Exp(_ x: Float) -> Float { bf16Round(Float(exp(Double(x)))) }

/// `log` of a bf16 value, rounded to bf16.
@inline(__always) func bf16Log(_ x: Float) -> Float { bf16Round(Float(log(Double(x)))) }

/// `base ** exponent` for a bf16 tensor and a Python-float exponent as CUDA computes it
/// (aten/src/ATen/native/cuda/PowKernel.cu `pow_tensor_scalar_kernel`: the exponent is cast to
/// the tensor's dtype, `exp_scalar.to<scalar_t>()`; aten/src/ATen/native/cuda/Pow.cuh
/// `pow_(at::BFloat16, at::BFloat16)`: `std::pow` on the two values cast to float, result cast
/// to bf16). `exponent` must already be the bf16-rounded exponent.
@inline(__always) func bf16Pow(_ base: Float, _ exponent: Float) -> Float {
    bf16Round(Float(pow(Double(base), Double(exponent))))
}

/// Sum of bf16 values, fp64 accumulation in index order, rounded to fp32 then bf16
/// (`tensor.sum()` on a bf16 tensor: fp32 accumulation inside the kernel, one rounding).
func bf16Sum<C: Collection>(_ xs: C) -> Float where C.Element == Float {
    var s = 0.0
    for x in xs { s += Double(x) }
    return bf16Round(Float(s))
}

/// Means of `rows` (each length n, bf16 values) over the row axis, as CUDA's
/// `mean_kernel_impl` computes `mean(dim=0)` (aten/src/ATen/native/cuda/ReduceMomentKernel.cu:
/// fp32 sum times `factor = float(outputs) / numel` = fl(1/N), one rounding to bf16). The fp32
/// sum runs in row order.
func bf16MeanRows(_ rows: ArraySlice<[Float]>) -> [Float] {
    let n = rows.first?.count ?? 0
    var acc = [Float](repeating: 0, count: n)
    acc.withUnsafeMutableBufferPointer { out in
        for r in rows {
            r.withUnsafeBufferPointer { src in for j in 0..<n { out[j] += src[j] } }
        }
        let factor = Float(1) / Float(max(1, rows.count))
        for j in 0..<n { out[j] = bf16Round(out[j] * factor) }
    }
    return acc
}

/// `torch.softmax(x, dim=0)` of a short bf16 vector (fp32: max, `exp(x − max)`, the sum in
/// index order, one division, one rounding to bf16).
func bf16Softmax(_ x: [Float]) -> [Float] {
    guard let top = x.max() else { return [] }
    let e = x.map { Float(exp(Double($0 - top))) }
    var s: Float = 0
    for v in e { s += v }
    return e.map { bf16Round($0 / s) }
}

/// Group (KV-head) means of per-query-head bf16 rows as CUDA's `mean` computes them
/// (`bf16MeanRows` per group of H/H_kv consecutive heads).
func groupMeansBF16(_ rows: [[Float]], kvHeads: Int) -> [[Float]] {
    let g = rows.count / max(1, kvHeads)
    return (0..<kvHeads).map { bf16MeanRows(rows[($0 * g)..<(($0 + 1) * g)]) }
}
