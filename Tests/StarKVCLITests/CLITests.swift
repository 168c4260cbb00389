import Foundation
import Testing

/// Runs the `starkv` executable (STARKV_BIN, else .build/debug/starkv) on the shipped sample
/// trace and temporary copies of it.
enum CLI {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let sample = root.appendingPathComponent("traces/sample-1280x720.starkv").path

    static var binary: String {
        if let env = ProcessInfo.processInfo.environment["STARKV_BIN"], FileManager.default.isExecutableFile(atPath: env) {
            return env
        }
        return root.appendingPathComponent(".build/debug/starkv").path
    }

    struct Output {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static func run(_ args: [String]) throws -> Output {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw CLIError.missingBinary(binary)
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = args
        p.currentDirectoryURL = root
        let out = Pipe()
        let err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Output(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    static func temp(_ name: String) -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("starkv-cli-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.appendingPathComponent("\(UUID().uuidString)-\(name)").path
    }

    enum CLIError: Error, CustomStringConvertible {
        case missingBinary(String)
        var description: String {
            switch self {
            case .missingBinary(let p): return "no starkv executable at \(p): run `swift build` (or set STARKV_BIN)"
            }
        }
    }
}

@Suite(.serialized) struct TraceCLITests {
    @Test func inspectShowsTheModelAndOneRowPerStep() throws {
        let r = try CLI.run(["inspect", CLI.sample])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("model       tiny-vl"))
        let rows = r.stdout.split(separator: "\n").filter { $0.contains("synth-0") }
        #expect(rows.count == 6)
        let json = try CLI.run(["inspect", "--json", CLI.sample])
        let obj = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any]
        #expect((obj["steps"] as! [Any]).count == 6)
        #expect(obj["footerPresent"] as? Bool == true)
        #expect(obj["schemaVersion"] as? Int == 1)
    }

    @Test func validateSaysOKAndExitsZeroOnTheSample() throws {
        let r = try CLI.run(["validate", CLI.sample])
        #expect(r.status == 0)
        #expect(r.stdout.hasPrefix("OK: "))
    }

    @Test func validateFailsWithExitOneOnACorruptedCopy() throws {
        var bytes = [UInt8](FileManager.default.contents(atPath: CLI.sample)!)
        bytes[bytes.count / 2] ^= 0x10
        let path = CLI.temp("corrupt.starkv")
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        let r = try CLI.run(["validate", path])
        #expect(r.status == 1)
        #expect(r.stdout.hasPrefix("FAIL: ") && r.stdout.contains(path))
    }

    @Test func recoverTurnsATruncatedCopyIntoAValidTrace() throws {
        let bytes = [UInt8](FileManager.default.contents(atPath: CLI.sample)!)
        let cut = CLI.temp("cut.starkv")
        FileManager.default.createFile(atPath: cut, contents: Data(bytes[0..<(bytes.count - 100_000)]))
        let before = try CLI.run(["validate", cut])
        #expect(before.status == 2 && before.stdout.contains("no footer"))
        let out = CLI.temp("recovered.starkv")
        let r = try CLI.run(["recover", cut, "--output", out])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("recovered 5 complete steps"))
        let after = try CLI.run(["validate", out])
        #expect(after.status == 0 && after.stdout.contains("5 steps"))
    }

    @Test func dumpPrintsATensorWithItsShape() throws {
        let r = try CLI.run(["dump", CLI.sample, "--step", "1", "--field", "hid_norm", "--layer", "2"])
        #expect(r.status == 0, "\(r.stderr)")
        let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        let shape = obj["shape"] as! [Int]
        #expect(obj["schemaVersion"] as? Int == 1)
        #expect(shape == [2 * 1196])
        #expect((obj["values"] as! [Double]).count == shape[0])
        let missing = try CLI.run(["dump", CLI.sample, "--step", "9", "--field", "hid_norm", "--layer", "2"])
        #expect(missing.status != 0 && missing.stderr.contains("step 9"))
    }

    @Test func aMissingTraceIsAClearErrorNotACrash() throws {
        let r = try CLI.run(["inspect", "/nonexistent.starkv"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("/nonexistent.starkv") && r.stderr.contains("cannot open"))
    }
}

@Suite(.serialized) struct ReplayCLITests {
    @Test func replayWritesTheReportAndExpectDigestGuardsIt() throws {
        let out = CLI.temp("report")
        let args = ["replay", CLI.sample, "--policies", "snapkv,starkv", "--budgets", "20", "--out", out, "--quiet", "--threads", "2"]
        let r = try CLI.run(args)
        #expect(r.status == 0, "\(r.stderr)")
        for f in ["report.html", "results.json", "steps.csv", "runs.csv", "trace.json"] {
            #expect(FileManager.default.fileExists(atPath: out + "/" + f), "\(f) missing")
        }
        let digestLine = try #require(r.stdout.split(separator: "\n").first { $0.hasPrefix("digest: ") })
        let digest = String(digestLine.dropFirst("digest: ".count))
        let again = try CLI.run(args + ["--expect-digest", digest, "--threads", "1", "--force"])
        #expect(again.status == 0, "\(again.stderr)")
        let wrong = try CLI.run(args + ["--expect-digest", String(repeating: "0", count: 64), "--force"])
        #expect(wrong.status != 0 && wrong.stderr.contains("does not match"))
    }

    /// The demo's digest before issue 15 (README) is still what `--kept-digest v1` gives, so the
    /// faster replay keeps exactly the same kept sets and memory curves; the default v2 digest is
    /// a different encoding of the same sets and is named in results.json.
    @Test func keptDigestV1ReproducesTheDemoDigestOfEarlierVersions() throws {
        let demo = ["replay", CLI.sample, "--policies", "all", "--budgets", "10,20,40,100", "--quiet", "--force"]
        let v1 = try CLI.run(demo + ["--out", CLI.temp("digest-v1"), "--kept-digest", "v1"])
        #expect(v1.status == 0, "\(v1.stderr)")
        #expect(v1.stdout.contains("digest: b1dc57a2152c7075b7701f06d376af78d2c4c394c92624d1ea04249c6c3728a5"))
        let out = CLI.temp("digest-v2")
        let v2 = try CLI.run(demo + ["--out", out])
        #expect(v2.status == 0, "\(v2.stderr)")
        #expect(!v2.stdout.contains("b1dc57a2"))
        let results = try String(contentsOfFile: out + "/results.json", encoding: .utf8)
        #expect(results.contains("\"keptDigestVersion\" : 2"))
        let bad = try CLI.run(demo + ["--out", CLI.temp("digest-v3"), "--kept-digest", "v3"])
        #expect(bad.status == 64 && bad.stderr.contains("--kept-digest must be v1 or v2"))
    }

    @Test func unknownPolicyAndBadBudgetAreRefused() throws {
        let a = try CLI.run(["replay", CLI.sample, "--policies", "magic", "--quiet", "--out", CLI.temp("x")])
        #expect(a.status != 0 && a.stderr.contains("unknown policy 'magic'"))
        let b = try CLI.run(["replay", CLI.sample, "--budgets", "abc", "--quiet", "--out", CLI.temp("y")])
        #expect(b.status != 0 && b.stderr.contains("budget 'abc'"))
    }

    @Test func reportReRendersFromResultsJSON() throws {
        let out = CLI.temp("rerender")
        #expect(try CLI.run(["replay", CLI.sample, "--policies", "snapkv", "--budgets", "20", "--out", out, "--quiet"]).status == 0)
        let html = try String(contentsOfFile: out + "/report.html", encoding: .utf8)
        try FileManager.default.removeItem(atPath: out + "/report.html")
        let r = try CLI.run(["report", out + "/results.json", "--force"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(try String(contentsOfFile: out + "/report.html", encoding: .utf8) == html)
    }

    @Test func memoryCommandPrintsAStepTable() throws {
        let r = try CLI.run(["memory", "--screen", "1920x1080", "--screenshots", "1..2", "--attn", "flash"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("2691 visual tokens"))
    }
}
