import Foundation
import StarKVReplay
import StarKVReport
import StarKVTrace

/// The manifest written next to each unit's report (`units/<id>/unit.json`).
public struct SweepUnitManifest: Sendable, Codable, Equatable {
    public static let formatName = "starkv-sweep-unit"
    public var format: String = SweepUnitManifest.formatName
    public var version: Int = 1
    public var unit: SweepUnit
    public var fingerprint: String
    public var traceSHA256: String
    /// The replay digest of the unit (same as its results.json `digest`).
    public var digest: String
}

/// The merged results of a whole sweep (`sweep.json`, docs/sweeps.md "Outputs").
public struct SweepResults: Sendable, Codable, Equatable {
    public static let formatName = "starkv-sweep-results"
    public static let currentVersion = 1

    public struct Unit: Sendable, Codable, Equatable {
        public var unit: SweepUnit
        public var traceSHA256: String
        public var digest: String
        public var results: ReplayResults
    }

    public var format: String = SweepResults.formatName
    public var version: Int = SweepResults.currentVersion
    public var fingerprint: String
    /// SHA-256 over the plan fingerprint and every unit's ID and replay digest, in plan order.
    public var digest: String
    public var units: [Unit]

    public static func digest(fingerprint: String, units: [(id: String, digest: String)]) -> String {
        var h = SHA256()
        h.update("starkv-sweep-digest-v1\n\(fingerprint)\n")
        for u in units { h.update("\(u.id) \(u.digest)\n") }
        return h.finalize()
    }
}

/// Writes shard directories and merges them (docs/sweeps.md "Shards and merge").
///
/// A shard directory holds `plan.json` and `units/<id>/` (the unit's report files from
/// `ReportRenderer` plus `unit.json`). A merged directory adds `sweep.json`, `steps.csv`,
/// `runs.csv`, `digests.txt` and `index.html`. Every file is a pure function of the plan and the
/// units' results, so a merge of any shards in any order equals a single-process run byte for byte.
public enum SweepOutput {
    /// The files of a merged sweep that do not depend on how it was sharded.
    public static let mergedFiles = ["plan.json", "sweep.json", "steps.csv", "runs.csv", "digests.txt", "index.html"]

    // MARK: running

    /// Runs `units` of `plan` with `replay` and writes each into `directory/units/<id>`
    /// (atomically: a unit killed half way leaves only a hidden temporary directory). Trace
    /// paths resolve against `baseDirectory`. When the units are the whole plan, the merged files
    /// are written too. With `resume`, a unit whose folder is already complete and consistent
    /// (the checks of `merge`) is kept, not run again. `progress` is called after each unit with
    /// (done, total, unit). Returns how many units ran and how many were kept.
    @discardableResult
    public static func run(
        plan: SweepPlan, units: [SweepUnit], baseDirectory: String, directory: String,
        resume: Bool = false, replay: (SweepUnit, String) throws -> ReplayResults,
        progress: ((Int, Int, SweepUnit) -> Void)? = nil
    ) throws -> (ran: Int, kept: Int) {
        try prepare(plan: plan, directory: directory)
        var hashes: [String: PendingFileHash] = [:]
        var kept = 0
        for (k, unit) in units.enumerated() {
            let unitDir = ((directory as NSString).appendingPathComponent("units") as NSString).appendingPathComponent(unit.id)
            if resume, FileManager.default.fileExists(atPath: unitDir),
                (try? loadUnit(unit, from: unitDir, plan: plan)) != nil
            {
                kept += 1
                progress?(k + 1, units.count, unit)
                continue
            }
            let path = resolve(unit.trace, baseDirectory: baseDirectory)
            // Each trace is hashed once, on a background thread while its first unit replays.
            let pending = hashes[path] ?? PendingFileHash(path: path)
            hashes[path] = pending
            var results = try replay(unit, path)
            let sha: String
            do { sha = try pending.wait() } catch { throw SweepError.io("unit \(unit.id): \(error)") }
            results.provenance = Provenance(tracePath: unit.trace, traceSHA256: sha, sweepUnit: unit.id, sweepFingerprint: plan.fingerprint)
            let manifest = SweepUnitManifest(unit: unit, fingerprint: plan.fingerprint, traceSHA256: sha, digest: results.digest)
            try writeUnit(results, manifest: manifest, unitsDirectory: (directory as NSString).appendingPathComponent("units"))
            progress?(k + 1, units.count, unit)
        }
        if Set(units.map(\.id)) == Set(plan.units.map(\.id)) {
            try merge(inputs: [directory], into: directory, writeUnits: false)
        }
        return (units.count - kept, kept)
    }

    static func resolve(_ trace: String, baseDirectory: String) -> String {
        trace.hasPrefix("/") || baseDirectory.isEmpty || baseDirectory == "." ? trace : (baseDirectory as NSString).appendingPathComponent(trace)
    }

    /// Creates `directory` with its `plan.json`, or checks that an existing one is the same sweep.
    static func prepare(plan: SweepPlan, directory: String) throws {
        let planPath = (directory as NSString).appendingPathComponent("plan.json")
        if FileManager.default.fileExists(atPath: planPath) {
            let existing = try SweepJSON.decode(SweepPlan.self, path: planPath, what: "sweep plan")
            guard existing.fingerprint == plan.fingerprint else {
                throw SweepError.shard(
                    "\(directory) already holds a different sweep (plan fingerprint \(existing.fingerprint.prefix(12)), this sweep \(plan.fingerprint.prefix(12))); use another --out")
            }
        }
        do {
            try FileManager.default.createDirectory(
                atPath: (directory as NSString).appendingPathComponent("units"), withIntermediateDirectories: true)
        } catch { throw SweepError.io("cannot create \(directory)/units: \(error)") }
        try AtomicFile.write(try SweepJSON.encode(plan), to: planPath)
    }

    /// Writes one unit's report files and manifest into a temporary directory, then renames it
    /// to `unitsDirectory/<id>` (replacing an earlier copy of the same unit).
    static func writeUnit(_ results: ReplayResults, manifest: SweepUnitManifest, unitsDirectory: String) throws {
        let fm = FileManager.default
        let final = (unitsDirectory as NSString).appendingPathComponent(manifest.unit.id)
        let temp = (unitsDirectory as NSString).appendingPathComponent(".\(manifest.unit.id).tmp-\(getpid())-\(UUID().uuidString.prefix(8))")
        do {
            try ReportRenderer.write(results, to: temp)
            try AtomicFile.write(try SweepJSON.encode(manifest), to: (temp as NSString).appendingPathComponent("unit.json"))
            if fm.fileExists(atPath: final) { try fm.removeItem(atPath: final) }
            try fm.moveItem(atPath: temp, toPath: final)
        } catch {
            try? fm.removeItem(atPath: temp)
            throw SweepError.io("cannot write unit \(manifest.unit.id) into \(unitsDirectory): \(error)")
        }
    }

    // MARK: merging

    /// Checks that `inputs` hold every unit of one sweep exactly once with consistent digests,
    /// and writes the merged sweep into `directory` (units re-rendered from their results unless
    /// `writeUnits` is false, for a directory that already holds them). Returns the sweep results.
    @discardableResult
    public static func merge(inputs: [String], into directory: String, writeUnits: Bool = true) throws -> SweepResults {
        guard !inputs.isEmpty else { throw SweepError.merge("merge needs at least one shard directory") }
        // One plan for all inputs.
        var plan: SweepPlan? = nil
        var planSource = ""
        for dir in inputs {
            let path = (dir as NSString).appendingPathComponent("plan.json")
            guard FileManager.default.fileExists(atPath: path) else {
                throw SweepError.merge("\(dir) is not a sweep shard directory (no plan.json)")
            }
            let p = try SweepJSON.decode(SweepPlan.self, path: path, what: "sweep plan")
            guard p.format == SweepPlan.formatName, p.version <= SweepPlan.formatVersion else {
                throw SweepError.merge("\(path): plan format \(p.format) version \(p.version); this StarKV reads \(SweepPlan.formatName) version \(SweepPlan.formatVersion)")
            }
            guard p.fingerprint == p.computeFingerprint() else {
                throw SweepError.merge("\(path): the plan's fingerprint does not match its content (edited or damaged)")
            }
            if let first = plan {
                guard first.fingerprint == p.fingerprint else {
                    throw SweepError.merge(
                        "\(dir) belongs to another sweep than \(planSource) (plan fingerprints \(p.fingerprint.prefix(12)) and \(first.fingerprint.prefix(12)))")
                }
            } else {
                plan = p
                planSource = dir
            }
        }
        let thePlan = plan!
        let byID = Dictionary(uniqueKeysWithValues: thePlan.units.map { ($0.id, $0) })

        // Every unit exactly once.
        var owner: [String: String] = [:]
        for dir in inputs {
            let unitsDir = (dir as NSString).appendingPathComponent("units")
            let names = ((try? FileManager.default.contentsOfDirectory(atPath: unitsDir)) ?? []).filter { !$0.hasPrefix(".") }.sorted()
            for name in names {
                guard let unit = byID[name] else {
                    throw SweepError.merge("\(unitsDir)/\(name) is not a unit of this sweep (plan \(thePlan.fingerprint.prefix(12)))")
                }
                if let other = owner[name] {
                    throw SweepError.merge(
                        "unit \(name) (index \(unit.index): \(unit.key)) is duplicated: both \(other) and \(dir) hold it; merge each unit once")
                }
                owner[name] = dir
            }
        }
        let missing = thePlan.units.filter { owner[$0.id] == nil }
        if let first = missing.first {
            throw SweepError.merge(
                "unit \(first.id) (index \(first.index): \(first.key)) is missing\(missing.count > 1 ? ", and \(missing.count - 1) more" : ""): no input directory holds it; run its shard (or `starkv sweep run SWEEP --unit \(first.id)`) and merge again")
        }

        // Consistent digests.
        var merged: [SweepResults.Unit] = []
        for unit in thePlan.units {
            let dir = ((owner[unit.id]! as NSString).appendingPathComponent("units") as NSString).appendingPathComponent(unit.id)
            merged.append(try loadUnit(unit, from: dir, plan: thePlan))
        }
        let sweep = SweepResults(
            fingerprint: thePlan.fingerprint,
            digest: SweepResults.digest(fingerprint: thePlan.fingerprint, units: merged.map { ($0.unit.id, $0.digest) }),
            units: merged)

        // Write (into a new folder, or one that holds only this sweep).
        let fm = FileManager.default
        if writeUnits {
            let existingPlan = (directory as NSString).appendingPathComponent("plan.json")
            if fm.fileExists(atPath: existingPlan),
                (try? SweepJSON.decode(SweepPlan.self, path: existingPlan, what: "sweep plan"))?.fingerprint != thePlan.fingerprint
            {
                throw SweepError.merge("\(directory) already holds another sweep (its plan.json differs); merge into a new folder")
            }
            let names = (try? fm.contentsOfDirectory(atPath: (directory as NSString).appendingPathComponent("units"))) ?? []
            if let stray = names.filter({ !$0.hasPrefix(".") && byID[$0] == nil }).sorted().first {
                throw SweepError.merge("\(directory)/units/\(stray) is not a unit of this sweep; merge into a new folder")
            }
        }
        do { try fm.createDirectory(atPath: (directory as NSString).appendingPathComponent("units"), withIntermediateDirectories: true) } catch {
            throw SweepError.io("cannot create \(directory)/units: \(error)")
        }
        if writeUnits {
            for u in merged {
                try writeUnit(
                    u.results, manifest: SweepUnitManifest(unit: u.unit, fingerprint: thePlan.fingerprint, traceSHA256: u.traceSHA256, digest: u.digest),
                    unitsDirectory: (directory as NSString).appendingPathComponent("units"))
            }
        }
        let all = merged.map(\.results)
        let files: [(String, String)] = [
            ("plan.json", try SweepJSON.encode(thePlan)),
            ("sweep.json", try SweepJSON.encode(sweep)),
            ("steps.csv", TidyCSV.steps(all)),
            ("runs.csv", TidyCSV.runs(all)),
            ("digests.txt", digestsText(sweep)),
            ("index.html", SweepIndexHTML.render(sweep)),
        ]
        for (name, text) in files { try AtomicFile.write(text, to: (directory as NSString).appendingPathComponent(name)) }
        return sweep
    }

    /// Loads one unit's folder and checks it: its manifest names this unit and plan, its
    /// results.json digest equals the digest recomputed from its kept sets and memory curves and
    /// the manifest's, and its provenance names the unit and trace.
    static func loadUnit(_ unit: SweepUnit, from dir: String, plan: SweepPlan) throws -> SweepResults.Unit {
        let manifest = try SweepJSON.decode(
            SweepUnitManifest.self, path: (dir as NSString).appendingPathComponent("unit.json"), what: "sweep unit manifest")
        let resultsPath = (dir as NSString).appendingPathComponent("results.json")
        let results: ReplayResults
        do { results = try ReportRenderer.load(resultsPath) } catch { throw SweepError.merge("unit \(unit.id): \(error)") }
        guard manifest.unit == unit, manifest.fingerprint == plan.fingerprint else {
            throw SweepError.merge("unit \(unit.id): \(dir)/unit.json describes another unit or sweep than plan.json")
        }
        let recomputed = Replay.digest(of: results)
        guard results.digest == recomputed else {
            throw SweepError.merge(
                "unit \(unit.id): \(resultsPath) says digest \(results.digest) but its kept sets and memory curves give \(recomputed)")
        }
        guard manifest.digest == results.digest else {
            throw SweepError.merge("unit \(unit.id): unit.json digest \(manifest.digest) differs from results.json digest \(results.digest)")
        }
        guard results.provenance?.sweepUnit == unit.id, results.provenance?.traceSHA256 == manifest.traceSHA256 else {
            throw SweepError.merge("unit \(unit.id): results.json provenance does not name this unit and trace")
        }
        return SweepResults.Unit(unit: unit, traceSHA256: manifest.traceSHA256, digest: results.digest, results: results)
    }

    /// `digests.txt`: the sweep digest, then one line per unit: ID, replay digest, trace SHA-256, settings.
    static func digestsText(_ s: SweepResults) -> String {
        var t = "sweep \(s.digest)\nplan \(s.fingerprint)\n"
        for u in s.units { t += "\(u.unit.id) \(u.digest) \(u.traceSHA256) \(u.unit.key)\n" }
        return t
    }
}

/// Writes a sweep output through `OutputFile` (temporary name + rename).
enum AtomicFile {
    static func write(_ text: String, to path: String) throws {
        do { try OutputFile.write(Data(text.utf8), to: path) } catch { throw SweepError.io("\(error)") }
    }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
