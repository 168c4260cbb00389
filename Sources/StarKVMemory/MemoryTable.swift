/// Renders a trajectory report as a fixed-width text table (GB and GiB both explicit). Pure:
/// returns the text, prints nothing.
///
/// Implements docs/memory-model.md §8 (unit-explicit, diffable output; "fits" verdict and first OOM).
public enum MemoryTable {
    public static func render(_ report: MemoryTrajectoryReport) -> String {
        let c = report.config
        var lines: [String] = []
        lines.append("model \(c.model.id) · GPU \(c.accelerator.displayName) (allocator capacity \(ByteUnits.describe(c.accelerator.allocatorCapacityBytes)))")
        lines.append("attention LLM=\(c.llmAttention.rawValue) ViT=\(c.visionAttention.rawValue) · KV heads stored \(c.storedKVHeads) · logits \(c.logits.rawValue) · loop \(c.loop.rawValue)\(c.retainPreviousCache && c.loop == .rePrefill ? " (previous cache retained)" : "") · allocator \(c.allocator.rawValue)\(c.cachingOptions.expandableSegments ? " (expandable segments)" : "") · weights \(c.weightDtype.rawValue) \(ByteUnits.describe(c.weightBytes))")
        lines.append("GB = 10^9 B, GiB = 2^30 B. Term columns in GB at the step's live-set peak; 'alloc'/'resv' are max_memory_allocated/reserved in GiB (what the STaR-KV scripts print as \"GB\").")
        let header = ["step", "shots", "L", "kept", "KV", "KVprev", "logits", "MLP", "attn", "ViT", "peak GB", "peak GiB", "alloc GiB", "resv GiB", "inact GiB", "TFLOP nom", "TFLOP cau", "time s", "OOM", "peak at"]
        var rows: [[String]] = [header]
        for s in report.steps {
            let t = s.peakTerms
            let gb = { (b: Int) in ByteUnits.fixed(ByteUnits.gigabytes(b), 2) }
            let gib = { (b: Int) in ByteUnits.fixed(ByteUnits.gibibytes(b), 2) }
            rows.append([
                String(s.step), String(s.screenshots), String(s.promptTokens), ByteUnits.fixed(s.keptTokensMean, 0),
                gb(t.kvNowBytes), gb(t.kvPreviousBytes), gb(t.logitsBytes),
                gb(t.mlpTransientBytes + t.activationBytes), gb(t.attentionTransientBytes + t.attentionMaskBytes),
                gb(t.vitTransientBytes), gb(s.requestedPeakBytes), gib(s.requestedPeakBytes),
                gib(s.allocatedPeakBytes), gib(s.reservedPeakBytes), gib(s.inactiveSplitPeakBytes),
                ByteUnits.fixed(Double(s.flops.nominalTotalFLOPs) / 1e12, 1), ByteUnits.fixed(Double(s.flops.causalTotalFLOPs) / 1e12, 1),
                ByteUnits.fixed(s.roofline.totalSeconds, 3), s.outOfMemory ? "OOM" : "-", s.peakLocation,
            ])
        }
        var widths = [Int](repeating: 0, count: header.count)
        for r in rows { for (i, cell) in r.enumerated() { widths[i] = max(widths[i], cell.count) } }
        for (ri, r) in rows.enumerated() {
            let cells = r.enumerated().map { i, cell in
                i == r.count - 1 ? cell : String(repeating: " ", count: widths[i] - cell.count) + cell
            }
            lines.append(cells.joined(separator: "  "))
            if ri == 0 { lines.append(String(repeating: "-", count: widths.reduce(0, +) + 2 * (widths.count - 1))) }
        }
        for s in report.steps {
            if let p = s.paged {
                lines.append("step \(s.step) paged pool: \(p.blocksUsed)/\(p.totalBlocks) blocks of \(p.blockBytes) B (no eviction \(p.blocksWithoutEviction), evict-empty-only \(p.blocksEvictEmptyOnly), compacted \(p.blocksCompacted)); occupancy \(ByteUnits.fixed(100 * p.occupancyFraction, 1)) %")
            }
        }
        lines.append("weights loaded: \(ByteUnits.describe(report.loadedBytes)); trajectory peak requested \(ByteUnits.describe(report.peakRequestedBytes)), allocated \(ByteUnits.describe(report.peakAllocatedBytes)), reserved \(ByteUnits.describe(report.peakReservedBytes))")
        if let oom = report.firstOOM {
            var text = "first OOM: step \(oom.step) at \(oom.location)"
            if let a = oom.allocator {
                text += " (tried to allocate \(ByteUnits.describe(a.roundedBytes)); \(ByteUnits.describe(a.allocatedBytes)) allocated, \(ByteUnits.describe(a.reservedButUnallocatedBytes)) reserved but unallocated)"
            }
            lines.append(text)
        } else {
            lines.append("fits: no step exceeds \(ByteUnits.describe(c.accelerator.allocatorCapacityBytes)) on \(c.accelerator.displayName)")
        }
        lines.append("FLOPs: \(ByteUnits.fixed(Double(report.totalNominalFLOPs) / 1e12, 1)) TFLOP nominal, \(ByteUnits.fixed(Double(report.totalCausalFLOPs) / 1e12, 1)) TFLOP causal; roofline lower bound \(ByteUnits.fixed(report.totalRooflineSeconds, 3)) s")
        return lines.joined(separator: "\n") + "\n"
    }
}
