import Foundation
import Testing

@testable import StarKVSweep

/// A temporary folder with empty files standing in for traces (planning never opens them).
private func folder(_ files: [String]) throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("starkv-sweep-tests-\(UUID().uuidString)").path
    for f in files {
        let path = (dir as NSString).appendingPathComponent(f)
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: path, contents: Data())
    }
    return dir
}

private func spec(_ body: String) throws -> SweepSpec { try SweepSpec.parse("starkv_sweep = 1\n" + body) }

@Suite struct SweepSpecTests {
    @Test func defaultsAreTheTracesOwnSettingsOnAnH100WithTheReprefillLoop() throws {
        let s = try spec("traces = [\"a.starkv\"]\npolicies = [\"snapkv\"]\nbudgets = [20]\n")
        #expect(s.gpus == ["h100-80gb"])
        #expect(s.models == [nil] && s.attention == [nil] && s.kvHeads == [nil])
        #expect(s.loops == ["reprefill"])
        #expect(s.logits == "full" && s.allocator == "torch" && s.retainPrevious)
        #expect(s.threads == nil)
    }

    @Test func budgetsAreNormalisedSoTwentyAndTwentyPercentAreOneBudget() throws {
        let s = try spec("traces = [\"a\"]\npolicies = [\"full\"]\nbudgets = [10, \"12.5%\", \"512tok\"]\n")
        #expect(s.budgets == ["10%", "12.5%", "512tok"])
        #expect(throws: TOMLError(line: 4, message: "'budgets': budget '20%': given twice (20%)")) {
            _ = try spec("traces = [\"a\"]\npolicies = [\"full\"]\nbudgets = [20, \"20%\"]\n")
        }
    }

    @Test(arguments: [
        ("traces = [\"a\"]\npolicies = [\"full\"]\nbudgets = [0]\n", 4, "must be in (0, 100]"),
        ("traces = [\"a\"]\npolicies = [\"full\"]\nbudgets = [150]\n", 4, "must be in (0, 100]"),
        ("traces = [\"a\"]\npolicies = [\"full\"]\nbudgets = [\"-3tok\"]\n", 4, "negative budgets"),
        ("traces = [\"a\"]\npolicies = [\"full\"]\nbudgets = []\n", 4, "is empty"),
        ("traces = [\"a\"]\npolicies = [\"all\", \"snapkv\"]\nbudgets = [20]\n", 3, "list it alone"),
        ("traces = [\"a\"]\npolicies = [\"full\"]\nbudgets = [20]\ngpu = \"a100-80gb\"\n", 5, "unknown key 'gpu'"),
        ("traces = [\"a\", \"a\"]\npolicies = [\"full\"]\nbudgets = [20]\n", 2, "lists 'a' twice"),
        ("traces = [\"a\"]\npolicies = [\"full\"]\nbudgets = [20]\nkv_heads = [0]\n", 5, "1...4096"),
        ("traces = [\"a\"]\npolicies = [\"full\"]\nbudgets = [20]\nthreads = \"2\"\n", 5, "'threads'"),
        ("traces = [1]\npolicies = [\"full\"]\nbudgets = [20]\n", 2, "must hold strings"),
        ("policies = [\"full\"]\nbudgets = [20]\n", 1, "missing key 'traces'"),
    ])
    func refusesABadSweepFileNamingTheLine(body: String, line: Int, words: String) {
        do {
            _ = try spec(body)
            Issue.record("accepted: \(body)")
        } catch let e as TOMLError {
            #expect(e.line == line, "\(e)")
            #expect(e.message.contains(words), "\(e)")
        } catch { Issue.record("\(error)") }
    }

    @Test func refusesAMissingOrOtherFormatVersion() {
        #expect(throws: TOMLError.self) { _ = try SweepSpec.parse("traces = [\"a\"]\npolicies = [\"full\"]\nbudgets = [20]\n") }
        do {
            _ = try SweepSpec.parse("starkv_sweep = 2\ntraces = [\"a\"]\npolicies = [\"full\"]\nbudgets = [20]\n")
            Issue.record("accepted version 2")
        } catch let e as TOMLError {
            #expect(e.line == 1 && e.message.contains("format 1 only"))
        } catch { Issue.record("\(error)") }
    }
}

@Suite struct SweepPlanTests {
    static let body = """
        traces = ["traces/*.starkv", "extra/z.starkv"]
        policies = ["full", "snapkv"]
        budgets = [10, 20]
        gpus = ["h100-80gb", "a100-80gb"]
        kv_heads = [4, 28]

        """

    @Test func unitsComeTraceMajorInFileOrderWithGlobMatchesSorted() throws {
        let dir = try folder(["traces/b.starkv", "traces/a.starkv", "traces/notes.txt", "extra/z.starkv"])
        let plan = try spec(Self.body).plan(baseDirectory: dir)
        #expect(plan.units.count == 3 * 2 * 2)
        #expect(plan.units.map(\.index) == Array(0..<12))
        #expect(plan.units.map(\.trace) == Array(repeating: "traces/a.starkv", count: 4) + Array(repeating: "traces/b.starkv", count: 4)
            + Array(repeating: "extra/z.starkv", count: 4))
        #expect(plan.units.prefix(4).map(\.gpu) == ["h100-80gb", "h100-80gb", "a100-80gb", "a100-80gb"])
        #expect(plan.units.prefix(4).map(\.kvHeads) == [4, 28, 4, 28])
        #expect(Set(plan.units.map(\.id)).count == 12)
        #expect(plan.units.allSatisfy { $0.id.count == 13 && $0.id.hasPrefix("u") })
    }

    @Test func aUnitKeepsItsIDWhenOtherUnitsAreAddedAndThePlanFingerprintChanges() throws {
        let dir = try folder(["traces/a.starkv", "traces/b.starkv", "extra/z.starkv"])
        let small = try spec(Self.body).plan(baseDirectory: dir)
        let bigger = try spec(Self.body + "loops = [\"reprefill\", \"persistent\"]\n").plan(baseDirectory: dir)
        #expect(bigger.units.count == 24)
        let ids = Set(bigger.units.map(\.id))
        #expect(small.units.allSatisfy { ids.contains($0.id) })
        #expect(small.fingerprint != bigger.fingerprint)
        // Same file again: same plan, byte for byte.
        #expect(try SweepJSON.encode(small) == SweepJSON.encode(try spec(Self.body).plan(baseDirectory: dir)))
        // Budgets are part of the fingerprint, not of the unit IDs.
        let otherBudgets = try spec(Self.body.replacingOccurrences(of: "[10, 20]", with: "[10, 40]")).plan(baseDirectory: dir)
        #expect(otherBudgets.units.map(\.id) == small.units.map(\.id))
        #expect(otherBudgets.fingerprint != small.fingerprint)
        #expect(small.fingerprint == small.computeFingerprint())
    }

    @Test func shardsPartitionThePlanForAnyCount() throws {
        let dir = try folder(["traces/a.starkv", "traces/b.starkv", "extra/z.starkv"])
        let plan = try spec(Self.body).plan(baseDirectory: dir)
        for n in 1...13 {
            var seen: [String] = []
            for i in 0..<n { seen += try plan.units(shard: i, of: n).map(\.id) }
            #expect(seen.sorted() == plan.units.map(\.id).sorted(), "N = \(n)")
            #expect(Set(seen).count == seen.count, "N = \(n): a unit in two shards")
        }
        #expect(try plan.units(shard: 1, of: 3).map(\.index) == [1, 4, 7, 10])
    }

    @Test func shardSyntaxIsZeroBasedIOverN() throws {
        #expect(try SweepPlan.parseShard("0/4") == (0, 4))
        #expect(try SweepPlan.parseShard("3/4") == (3, 4))
        for bad in ["4/4", "-1/4", "1/0", "1", "a/b", "1/2/3"] {
            #expect(throws: SweepError.self, "\(bad)") { _ = try SweepPlan.parseShard(bad) }
        }
    }

    @Test func aMissingTraceOrAnEmptyGlobIsNamed() throws {
        let dir = try folder(["traces/a.starkv"])
        let missing = try spec("traces = [\"traces/nope.starkv\"]\npolicies = [\"full\"]\nbudgets = [20]\n")
        #expect(throws: SweepError.plan("trace 'traces/nope.starkv' does not exist (paths are relative to the sweep file's directory, \(dir))")) {
            _ = try missing.plan(baseDirectory: dir)
        }
        let empty = try spec("traces = [\"none/*.starkv\"]\npolicies = [\"full\"]\nbudgets = [20]\n")
        #expect(throws: SweepError.plan("trace pattern 'none/*.starkv' matches no file")) { _ = try empty.plan(baseDirectory: dir) }
    }

    @Test func aTraceNamedTwiceByGlobsIsOneTrace() throws {
        let dir = try folder(["traces/a.starkv", "traces/b.starkv"])
        let s = try spec("traces = [\"traces/a.starkv\", \"traces/*.starkv\"]\npolicies = [\"full\"]\nbudgets = [20]\n")
        #expect(try s.plan(baseDirectory: dir).units.map(\.trace) == ["traces/a.starkv", "traces/b.starkv"])
    }
}
