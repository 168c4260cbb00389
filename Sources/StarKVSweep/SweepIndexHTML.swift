import StarKVModel
import StarKVReplay
import StarKVReport

/// `index.html` of a merged sweep: one table row per unit × policy × budget with the unit's
/// settings, peaks, first OOM step and mean quality, linking to the unit's own report
/// (`units/<id>/report.html`, drawn by `ReportRenderer`). Self-contained, no scripts.
public enum SweepIndexHTML {
    public static func render(_ s: SweepResults) -> String {
        var h = """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><title>StarKV sweep \(s.digest.prefix(12))</title>
            <style>
            body{font-family:system-ui,sans-serif;margin:24px;color:#222}
            table{border-collapse:collapse;font-size:13px}
            th,td{border:1px solid #ccc;padding:3px 8px;text-align:right;white-space:nowrap}
            th{background:#f2f2f2}
            td.l,th.l{text-align:left}
            tr.oom td{background:#fde8e8}
            code{font-size:12px}
            </style></head><body>
            <h1>StarKV sweep</h1>
            <p>\(s.units.count) units · sweep digest <code>\(s.digest)</code> · plan <code>\(s.fingerprint)</code></p>
            <p>Tables: <a href="steps.csv">steps.csv</a> (unit × policy × budget × step), <a href="runs.csv">runs.csv</a>
            (unit × policy × budget), results: <a href="sweep.json">sweep.json</a>, digests: <a href="digests.txt">digests.txt</a>.</p>
            <table><thead><tr><th class="l">unit</th><th class="l">trace</th><th class="l">model</th><th class="l">GPU</th>
            <th class="l">attention</th><th>KV heads</th><th class="l">loop</th><th class="l">policy</th><th>budget</th>
            <th>peak allocated GB</th><th>peak reserved GB</th><th>first OOM step</th><th>mean kept</th><th>quality</th></tr></thead><tbody>

            """
        for u in s.units {
            let r = u.results
            for run in r.runs {
                let sum = run.summary
                let cls = sum.firstOOMStep == nil ? "" : " class=\"oom\""
                h += "<tr\(cls)><td class=\"l\"><a href=\"units/\(HTML.escape(u.unit.id))/report.html\">\(HTML.escape(u.unit.id))</a></td>"
                h += "<td class=\"l\">\(HTML.escape(u.unit.trace))</td><td class=\"l\">\(HTML.escape(r.settings.simulatedModel))</td>"
                h += "<td class=\"l\">\(HTML.escape(r.settings.gpu))</td><td class=\"l\">\(HTML.escape(r.settings.attention))</td>"
                h += "<td>\(r.settings.storedKVHeads)</td><td class=\"l\">\(HTML.escape(r.settings.loop))</td>"
                h += "<td class=\"l\">\(HTML.escape(run.policy))</td><td>\(HTML.escape(run.budget))</td>"
                h += "<td>\(UnitFormat.gb(sum.peakAllocatedBytes))</td><td>\(UnitFormat.gb(sum.peakReservedBytes))</td>"
                h += "<td>\(sum.firstOOMStep.map(String.init) ?? "-")</td><td>\(UnitFormat.fixed(100 * sum.meanKeptFraction, 1))%</td>"
                h += "<td>\(sum.meanDecodeMassRetained.map { UnitFormat.fixed($0, 4) } ?? "-")</td></tr>\n"
            }
        }
        h += "</tbody></table>\n</body></html>\n"
        return h
    }
}
