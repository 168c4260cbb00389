import StarKVModel

/// Human-readable views of a trace for `starkv inspect` (header facts and a per-step table of
/// sizes and compression ratios). Returns text; the CLI prints it.
public enum TraceInspection {
    public static func render(header h: TraceHeader, footer: FooterStatus, minorVersion: Int, steps: [StepSummary], fileBytes: UInt64)
        -> String
    {
        var lines: [String] = []
        let m = h.model
        lines.append("format      1.\(minorVersion)  (\(footer == .present ? "footer present" : "no footer — steps found by scanning"))")
        if case .missing(let note) = footer { lines.append("            \(note)") }
        lines.append("model       \(m.id): \(m.numLayers) layers, \(m.numQueryHeads) query heads, \(m.numKVHeads) KV heads, head dim \(m.headDim), hidden \(m.hiddenSize), vocab \(m.vocabSize), \(m.dtype)")
        lines.append("recorder    \(h.recorder.name) \(h.recorder.version)\(h.recorder.seed != 0 ? ", seed \(h.recorder.seed)" : "")")
        lines.append("fidelity    \(h.fidelity): \(h.fields.joined(separator: ", "))")
        lines.append("windows     \(h.windowSizes.map(String.init).joined(separator: ", "))\(h.winRowsMax > 0 ? "; raw rows: \(h.winRowsMax)" : "")")
        let a = h.agent
        lines.append("agent loop  screen \(a.screenWidth)x\(a.screenHeight), \(a.imageSlots) image slots, attention \(a.attnImplementation) / ViT \(a.visionAttnImplementation), \(a.storedKVHeads) stored KV heads, pixels [\(a.minPixels), \(a.maxPixels)]\(a.benchmark.isEmpty ? "" : ", \(a.benchmark)")")
        for k in h.metadata.keys.sorted() { lines.append("meta        \(k) = \(h.metadata[k]!)") }
        lines.append("")
        var t = TextTable([
            ("step", .right), ("episode", .left), ("reset", .left), ("L", .right), ("gen", .right), ("images", .right),
            ("visual", .right), ("chunks", .right), ("raw", .right), ("stored", .right), ("ratio", .right),
        ])
        var raw: UInt64 = 0
        var stored: UInt64 = 0
        for s in steps {
            raw += s.rawBytes
            stored += s.storedBytes
            t.append([
                "\(s.stepIndex)", s.episodeID, s.reset ? "yes" : "", "\(s.promptLength)", "\(s.generatedTokens)", "\(s.images)",
                "\(s.visualTokens)", "\(s.chunks)", UnitFormat.decimalBytes(s.rawBytes), UnitFormat.decimalBytes(s.storedBytes),
                ratio(s.rawBytes, s.storedBytes),
            ])
        }
        lines.append(t.render())
        lines.append("")
        lines.append(
            "total       \(steps.count) steps, tensors \(UnitFormat.decimalBytes(raw)) raw → \(UnitFormat.decimalBytes(stored)) stored (\(ratio(raw, stored))), file \(UnitFormat.decimalBytes(fileBytes))"
        )
        return lines.joined(separator: "\n")
    }

    static func ratio(_ raw: UInt64, _ stored: UInt64) -> String {
        stored == 0 ? "-" : UnitFormat.fixed(Double(raw) / Double(stored), 2) + "x"
    }
}
