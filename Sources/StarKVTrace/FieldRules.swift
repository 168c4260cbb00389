/// The expected shape and dtypes of each catalog field (FORMAT.md "Field catalog"), checked by
/// the writer before writing and by the reader before allocating or decompressing.
enum FieldRules {
    /// Whether the field is per layer (true) or step-level (false); nil for unknown fields.
    static func isPerLayer(_ field: String) -> Bool? {
        TraceField.fidelity(of: field) == nil ? nil : true
    }

    static func allowedDTypes(_ field: String) -> Set<TensorDType>? {
        switch field {
        case TraceField.winSum, TraceField.winRows: return [.f16, .bf16, .f32]
        case TraceField.hidNorm, TraceField.guikvResid, TraceField.colsumAll, TraceField.colsumPostvis,
            TraceField.decodeAttnSum:
            return [.f16, .bf16, .f32, .f64]
        case TraceField.countGt001, TraceField.nValid: return [.i32, .i64]
        default: return field.hasPrefix(TraceField.goldenKeptPrefix) ? [.i32] : nil
        }
    }

    /// Checks a descriptor against the header and step; returns a reason when it does not fit.
    static func check(field: String, layer: Int?, dtype: TensorDType, shape: [Int], header: TraceHeader, step: StepRecord)
        -> String?
    {
        let m = header.model
        let L = step.promptLength
        if let perLayer = isPerLayer(field) {
            if perLayer {
                guard let layer else { return "per-layer field stored without a layer" }
                guard layer >= 0, layer < m.numLayers else { return "layer \(layer) outside 0..<\(m.numLayers)" }
            }
        } else if let layer, layer < 0 || layer >= m.numLayers {
            return "layer \(layer) outside 0..<\(m.numLayers)"
        }
        if let allowed = allowedDTypes(field), !allowed.contains(dtype) {
            return "dtype \(dtype) not allowed (expected one of \(allowed.map(\.description).sorted().joined(separator: ", ")))"
        }
        let V = step.visualTokenCount
        let vPrev = step.images.dropLast().reduce(0) { $0 + $1.length }
        let expected: [Int]?
        switch field {
        case TraceField.winSum: expected = [header.windowSizes.count, m.numQueryHeads, L]
        case TraceField.hidNorm: expected = [V]
        case TraceField.guikvResid: expected = [m.numKVHeads, vPrev]
        case TraceField.colsumAll, TraceField.colsumPostvis, TraceField.decodeAttnSum: expected = [m.numQueryHeads, L]
        case TraceField.countGt001: expected = [m.numQueryHeads]
        case TraceField.nValid: expected = [1]
        case TraceField.winRows: expected = [m.numQueryHeads, header.winRowsMax, L]
        default:
            if field.hasPrefix(TraceField.goldenKeptPrefix) {
                guard shape.count == 2, [1, m.numKVHeads, m.numQueryHeads].contains(shape[0]), shape[1] <= L else {
                    return "golden kept set must be [1|Hkv|H, C<=L], got \(shape)"
                }
            }
            expected = nil
        }
        if let expected, expected != shape { return "expected shape \(expected), got \(shape)" }
        return nil
    }

    /// product(shape) · width, or nil on overflow.
    static func byteCount(shape: [Int], dtype: TensorDType) -> UInt64? {
        var n: UInt64 = UInt64(dtype.byteWidth)
        for d in shape {
            guard d >= 0 else { return nil }
            let (p, o) = n.multipliedReportingOverflow(by: UInt64(d))
            if o { return nil }
            n = p
        }
        return n
    }
}
