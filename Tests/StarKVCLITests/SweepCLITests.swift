import Foundation
import Testing

/// `starkv sweep plan|run` and `starkv merge` on two small traces (the sample and a 3-step
/// synthetic one) × 2 GPUs = 4 units, each 3 policies × 2 budgets.
@Suite(.serialized) struct SweepCLITests {
    /// A folder with traces/a.starkv (the sample), traces/b.starkv and sweep.toml.
    static func makeSweep() throws -> String {
        let dir = CLI.temp("sweep")
        let fm = FileManager.default
        try fm.createDirectory(atPath: dir + "/traces", withIntermediateDirectories: true)
        try fm.copyItem(atPath: CLI.sample, toPath: dir + "/traces/a.starkv")
        let r = try CLI.run([
            "record", "synth", "--out", dir + "/traces/b.starkv", "--model", "tiny-vl", "--screen", "640x360", "--steps", "3",
            "--image-slots", "2", "--fields", "standard", "--seed", "2", "--quiet",
        ])
        #expect(r.status == 0, "\(r.stderr)")
        let toml = """
            starkv_sweep = 1
            traces = ["traces/*.starkv"]
            policies = ["full", "snapkv", "starkv(temporal=off;mi=off)"]
            budgets = [10, "64tok"]
            gpus = ["h100-80gb", "a100-80gb"]
            threads = 1

            """
        try toml.write(toFile: dir + "/sweep.toml", atomically: true, encoding: .utf8)
        return dir
    }

    /// Every file under `root` by relative path.
    static func tree(_ root: String) throws -> [String: Data] {
        var out: [String: Data] = [:]
        let e = FileManager.default.enumerator(atPath: root)!
        while let rel = e.nextObject() as? String {
            var isDir: ObjCBool = false
            FileManager.default.fileExists(atPath: root + "/" + rel, isDirectory: &isDir)
            if !isDir.boolValue { out[rel] = FileManager.default.contents(atPath: root + "/" + rel) }
        }
        return out
    }

    /// Merged-sweep files of `tree` (a shard directory adds nothing else; whole-run files only).
    static func expectSame(_ got: [String: Data], _ want: [String: Data], _ what: String) {
        #expect(got.keys.sorted() == want.keys.sorted(), "\(what): file lists differ")
        for (k, v) in want where got[k] != v { Issue.record("\(what): \(k) differs") }
    }

    @Test func shardsMergedInAnyOrderEqualTheSingleProcessRunByteForByte() throws {
        let dir = try Self.makeSweep()
        let sweep = dir + "/sweep.toml"
        let plan = try CLI.run(["sweep", "plan", sweep, "--json"])
        #expect(plan.status == 0, "\(plan.stderr)")
        let planObj = try JSONSerialization.jsonObject(with: Data(plan.stdout.utf8)) as! [String: Any]
        #expect((planObj["units"] as! [Any]).count == 4)

        let single = try CLI.run(["sweep", "run", sweep, "--out", dir + "/single", "--quiet"])
        #expect(single.status == 0, "\(single.stderr)")
        let want = try Self.tree(dir + "/single")
        #expect(want.keys.contains("sweep.json") && want.keys.contains("index.html") && want.keys.contains("steps.csv"))
        #expect(want.keys.filter { $0.hasSuffix("/results.json") }.count == 4)

        for n in [1, 2, 3] {
            var shards: [String] = []
            for i in 0..<n {
                let out = dir + "/n\(n)-shard\(i)"
                let r = try CLI.run(["sweep", "run", sweep, "--shard", "\(i)/\(n)", "--out", out, "--quiet", "--threads", "\(1 + i % 2)"])
                #expect(r.status == 0, "\(r.stderr)")
                shards.append(out)
            }
            for (k, order) in [shards, shards.reversed()].enumerated() {
                let out = dir + "/merged-\(n)-\(k)"
                let m = try CLI.run(["merge"] + order + ["--out", out])
                #expect(m.status == 0, "\(m.stderr)")
                Self.expectSame(try Self.tree(out), want, "\(n) shards, order \(k)")
            }
        }
        // The tidy CSV has one row per unit × run × step and names its unit.
        let csv = String(decoding: want["steps.csv"]!, as: UTF8.self).split(separator: "\n")
        #expect(csv[0].hasPrefix("unit_id,trace_path,trace_sha256,"))
        #expect(csv[0].contains(",budget,budget_percent,budget_tokens,step,"))
        // a: 6 steps, b: 3 steps; per unit: full@100% + 2 policies × 2 budgets = 5 runs; 2 GPUs.
        #expect(csv.count - 1 == 2 * 5 * (6 + 3))
    }

    @Test func mergeRefusesAMissingOrDuplicatedUnitNamingIt() throws {
        let dir = try Self.makeSweep()
        let sweep = dir + "/sweep.toml"
        for i in 0..<2 {
            let r = try CLI.run(["sweep", "run", sweep, "--shard", "\(i)/2", "--out", dir + "/s\(i)", "--quiet"])
            #expect(r.status == 0, "\(r.stderr)")
        }
        let plan = try CLI.run(["sweep", "plan", sweep, "--json"])
        let units = (try JSONSerialization.jsonObject(with: Data(plan.stdout.utf8)) as! [String: Any])["units"] as! [[String: Any]]
        // Shard 1/2 holds the units at index 1 and 3; the message names the first missing in plan order.
        let ids = [units[1]["id"] as! String, units[3]["id"] as! String]
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir + "/s1/units").sorted() == ids.sorted())

        let missing = try CLI.run(["merge", dir + "/s0", "--out", dir + "/m1"])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("unit \(ids[0]) (index 1: trace=traces/a.starkv") && missing.stderr.contains("is missing, and 1 more"), "\(missing.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/m1/sweep.json"))

        // A unit run again into a third directory is a duplicate.
        let again = try CLI.run(["sweep", "run", sweep, "--unit", ids[1], "--out", dir + "/s2", "--quiet"])
        #expect(again.status == 0, "\(again.stderr)")
        let dup = try CLI.run(["merge", dir + "/s0", dir + "/s1", dir + "/s2", "--out", dir + "/m2"])
        #expect(dup.status != 0)
        #expect(dup.stderr.contains("unit \(ids[1])") && dup.stderr.contains("duplicated"), "\(dup.stderr)")
    }

    @Test func mergeRefusesAUnitWhoseDigestDisagreesWithItsResults() throws {
        let dir = try Self.makeSweep()
        let sweep = dir + "/sweep.toml"
        let r = try CLI.run(["sweep", "run", sweep, "--out", dir + "/all", "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        let id = try FileManager.default.contentsOfDirectory(atPath: dir + "/all/units").sorted()[2]
        let path = dir + "/all/units/\(id)/results.json"
        var text = try String(contentsOfFile: path, encoding: .utf8)
        // Change one step's allocated peak: the recorded digest no longer matches the curve.
        let range = text.range(of: "\"allocatedPeakBytes\" : ")!
        text.insert("1", at: range.upperBound)
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        let m = try CLI.run(["merge", dir + "/all", "--out", dir + "/m"])
        #expect(m.status != 0)
        #expect(m.stderr.contains("unit \(id)") && m.stderr.contains("digest"), "\(m.stderr)")
    }

    @Test func shardsOfDifferentSweepsDoNotMerge() throws {
        let dir = try Self.makeSweep()
        let r0 = try CLI.run(["sweep", "run", dir + "/sweep.toml", "--shard", "0/2", "--out", dir + "/s0", "--quiet"])
        #expect(r0.status == 0, "\(r0.stderr)")
        let other = try String(contentsOfFile: dir + "/sweep.toml", encoding: .utf8).replacingOccurrences(of: "[10, ", with: "[20, ")
        try other.write(toFile: dir + "/other.toml", atomically: true, encoding: .utf8)
        let r1 = try CLI.run(["sweep", "run", dir + "/other.toml", "--shard", "1/2", "--out", dir + "/s1", "--quiet"])
        #expect(r1.status == 0, "\(r1.stderr)")
        let m = try CLI.run(["merge", dir + "/s0", dir + "/s1", "--out", dir + "/m"])
        #expect(m.status != 0)
        #expect(m.stderr.contains("belongs to another sweep"), "\(m.stderr)")
        // Nor does a shard run into a folder of another sweep.
        let into = try CLI.run(["sweep", "run", dir + "/other.toml", "--shard", "0/2", "--out", dir + "/s0", "--quiet"])
        #expect(into.status != 0)
        #expect(into.stderr.contains("already holds a different sweep"), "\(into.stderr)")
        // Nor does a merge write into a folder of another sweep.
        let r0b = try CLI.run(["sweep", "run", dir + "/sweep.toml", "--shard", "1/2", "--out", dir + "/s0b", "--quiet"])
        #expect(r0b.status == 0, "\(r0b.stderr)")
        let over = try CLI.run(["merge", dir + "/s0", dir + "/s0b", "--out", dir + "/s1"])
        #expect(over.status != 0)
        #expect(over.stderr.contains("already holds another sweep"), "\(over.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/s1/sweep.json"))
    }

    @Test func resumeRunsOnlyTheUnitsThatAreMissingOrDamaged() throws {
        let dir = try Self.makeSweep()
        let sweep = dir + "/sweep.toml"
        let r = try CLI.run(["sweep", "run", sweep, "--out", dir + "/all", "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        let want = try Self.tree(dir + "/all")
        let ids = try FileManager.default.contentsOfDirectory(atPath: dir + "/all/units").sorted()
        // A run killed half way: one unit gone, another damaged, the merged files not written yet.
        try FileManager.default.removeItem(atPath: dir + "/all/units/\(ids[0])")
        try "{}".write(toFile: dir + "/all/units/\(ids[1])/unit.json", atomically: true, encoding: .utf8)
        for f in ["sweep.json", "steps.csv", "runs.csv", "digests.txt", "index.html"] {
            try FileManager.default.removeItem(atPath: dir + "/all/" + f)
        }
        let again = try CLI.run(["sweep", "run", sweep, "--out", dir + "/all", "--resume"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stdout.contains("2 of 4 units written") && again.stdout.contains("2 already complete, kept"), "\(again.stdout)")
        Self.expectSame(try Self.tree(dir + "/all"), want, "resumed run")
    }

    @Test func planNamesABadPolicyOrGPUWithItsUnit() throws {
        let dir = try Self.makeSweep()
        let bad = try String(contentsOfFile: dir + "/sweep.toml", encoding: .utf8).replacingOccurrences(of: "a100-80gb", with: "b200-999gb")
        try bad.write(toFile: dir + "/bad.toml", atomically: true, encoding: .utf8)
        let r = try CLI.run(["sweep", "plan", dir + "/bad.toml"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("gpu=b200-999gb") && r.stderr.contains("b200-999gb"), "\(r.stderr)")
        let r2 = try CLI.run(["sweep", "plan", dir + "/nope.toml"])
        #expect(r2.status != 0 && r2.stderr.contains("nope.toml"), "\(r2.stderr)")
    }
}
