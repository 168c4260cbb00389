/// Seeded pseudo-random numbers for the synthetic agent.
///
/// Everything the synthetic agent writes derives from one 64-bit seed through these
/// generators, so the same seed and flags give bit-identical traces on every platform with
/// the same libm (docs/synthetic-agent.md "Determinism"). Two kinds are provided:
/// a sequential stream (`SplitMix64`, Steele et al. 2014) for structural choices, and a
/// counter-based hash (`NoiseHash`) for per-token noise that must not depend on the order
/// in which values are computed.
public struct SplitMix64: Sendable, Hashable {
    /// The generator's state; advances by the golden-ratio increment per draw.
    public private(set) var state: UInt64

    public init(seed: UInt64) { self.state = seed }

    /// The next 64 random bits.
    @inline(__always)
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return SplitMix64.mix(state)
    }

    /// SplitMix64's finaliser: a bijective avalanche of `value`.
    @inline(__always)
    public static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    @inline(__always)
    public mutating func unit() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// Uniform in [lo, hi).
    public mutating func uniform(_ lo: Double, _ hi: Double) -> Double { lo + (hi - lo) * unit() }

    /// Uniform integer in `range` (unbiased by rejection).
    public mutating func int(in range: ClosedRange<Int>) -> Int {
        let span = UInt64(range.upperBound - range.lowerBound) &+ 1
        if span == 0 { return Int(truncatingIfNeeded: next()) }
        let limit = UInt64.max - UInt64.max % span
        var x = next()
        while x >= limit { x = next() }
        return range.lowerBound + Int(x % span)
    }

    /// True with probability `p`.
    public mutating func chance(_ p: Double) -> Bool { unit() < p }

    /// Standard normal (Box–Muller, one value per call; deterministic).
    public mutating func normal() -> Double {
        let u1 = max(unit(), 0x1.0p-53)
        let u2 = unit()
        return (-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2)
    }

    /// A child generator for a named sub-stream, independent of how much this one was used.
    public func fork(_ label: UInt64) -> SplitMix64 {
        SplitMix64(seed: SplitMix64.mix(state ^ SplitMix64.mix(label &+ 0x632B_E59B_D9B4_E019)))
    }
}

/// Counter-based noise: a pure function of (key, index), so values do not depend on the
/// order they are computed in.
public struct NoiseHash: Sendable, Hashable {
    /// The stream key (seed mixed with the purpose, step, layer, head...).
    public var key: UInt64

    public init(key: UInt64) { self.key = key }

    /// A key derived from a seed and a list of integers naming the stream.
    public init(seed: UInt64, _ parts: Int...) {
        var k = SplitMix64.mix(seed ^ 0xD1B5_4A32_D192_ED03)
        for p in parts { k = SplitMix64.mix(k ^ (UInt64(bitPattern: Int64(p)) &+ 0x9E37_79B9_7F4A_7C15)) }
        self.key = k
    }

    /// 64 random bits for `index`.
    @inline(__always)
    public func bits(_ index: Int) -> UInt64 {
        SplitMix64.mix(key &+ UInt64(bitPattern: Int64(index)) &* 0x9E37_79B9_7F4A_7C15)
    }

    /// Uniform in (0, 1) for `index` (never exactly 0 or 1).
    @inline(__always)
    public func unit(_ index: Int) -> Double { (Double(bits(index) >> 11) + 0.5) * 0x1.0p-53 }

    /// Approximately standard normal for `index`: the sum of four 32-bit uniforms, rescaled
    /// (Irwin–Hall; light tails, cheap, no transcendental functions).
    @inline(__always)
    public func gaussian(_ index: Int) -> Double {
        let b = bits(index)
        let b2 = SplitMix64.mix(b ^ key)
        let s = Double(b & 0xFFFF_FFFF) + Double(b >> 32) + Double(b2 & 0xFFFF_FFFF) + Double(b2 >> 32)
        // Mean 2·2^32, variance 4·(2^64/12).
        return (s - 2 * 4_294_967_296.0) / (4_294_967_296.0 * (4.0 / 12.0).squareRoot())
    }
}

#if canImport(Glibc)
import Glibc
@inline(__always) func _log(_ x: Double) -> Double { Glibc.log(x) }
@inline(__always) func _cos(_ x: Double) -> Double { Glibc.cos(x) }
@inline(__always) func _exp(_ x: Double) -> Double { Glibc.exp(x) }
#elseif canImport(Darwin)
import Darwin
@inline(__always) func _log(_ x: Double) -> Double { Darwin.log(x) }
@inline(__always) func _cos(_ x: Double) -> Double { Darwin.cos(x) }
@inline(__always) func _exp(_ x: Double) -> Double { Darwin.exp(x) }
#else
import Foundation
@inline(__always) func _log(_ x: Double) -> Double { Foundation.log(x) }
@inline(__always) func _cos(_ x: Double) -> Double { Foundation.cos(x) }
@inline(__always) func _exp(_ x: Double) -> Double { Foundation.exp(x) }
#endif
