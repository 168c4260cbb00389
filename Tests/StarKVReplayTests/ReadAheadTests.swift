import Foundation
import StarKVPolicies
@testable import StarKVReplay
@testable import StarKVTrace
import Testing

/// The bounded read-ahead of a multi-threaded replay (StepPrefetch): it decodes at most its
/// share of the next step before that step is asked for, and the replay's results and errors do
/// not depend on the share or on the thread count.
@Suite(.serialized) struct ReadAheadTests {
    @Test func resultsAreIdenticalForAnyReadAheadShareAndThreadCount() throws {
        let trace = try ReplayFixtures.trace()
        let reference = try Replay.run(ReplayFixtures.request(trace, threads: 1))
        let saved = StepPrefetch.aheadFraction
        defer { StepPrefetch.aheadFraction = saved }
        for fraction in [0, 0.125, 0.5, 1] {
            StepPrefetch.aheadFraction = fraction
            for threads in [2, 3] {
                let r = try Replay.run(ReplayFixtures.request(trace, threads: threads))
                #expect(r == reference, "read-ahead \(fraction), \(threads) threads")
            }
        }
    }

    @Test func theBackgroundReadStaysWithinItsShareOfTheStep() throws {
        let trace = try ReplayFixtures.trace()
        let reader = try TraceReader(path: trace)
        let fields: Set<String> = [TraceField.winSum, TraceField.hidNorm, TraceField.decodeAttnSum]
        let saved = StepPrefetch.aheadFraction
        defer { StepPrefetch.aheadFraction = saved }
        for fraction in [0, 0.25, 0.5, 1] {
            StepPrefetch.aheadFraction = fraction
            for i in 0..<reader.stepCount {
                let p = StepPrefetch(reader: reader, index: i, fields: fields, threads: 2)
                let (ahead, total) = p.bytesReadAhead()
                #expect(total > 0)
                #expect(Double(ahead) <= fraction * Double(total), "step \(i) share \(fraction)")
                if fraction == 1 { #expect(ahead == total) }
                if fraction == 0 { #expect(ahead == 0) }
                #expect(try p.get() == reader.readStep(at: i, fields: fields))
            }
        }
    }

    @Test func aDamagedChunkGivesTheSameErrorOnOneAndTwoThreads() throws {
        let trace = try ReplayFixtures.trace()
        // Two damaged win_sum chunks (a field every replay reads): the first in file order is
        // reported, whichever thread decodes it.
        let items = try TraceReader(path: trace).planStep(at: 2, fields: [TraceField.winSum]).items
        #expect(items.count > 1)
        var bytes = [UInt8](FileManager.default.contents(atPath: trace)!)
        for k in [0, items.count - 1] {
            bytes[Int(items[k].payloadOffset) + Int(items[k].descriptor.storedBytes / 2)] ^= 0x08
        }
        let damaged = ReplayFixtures.tempPath("damaged")
        FileManager.default.createFile(atPath: damaged, contents: Data(bytes))
        var messages: [String] = []
        for threads in [1, 2, 4] {
            do {
                _ = try Replay.run(ReplayFixtures.request(damaged, threads: threads))
                Issue.record("a damaged chunk replayed without an error (\(threads) threads)")
            } catch {
                messages.append("\(error)")
            }
        }
        #expect(messages.count == 3)
        #expect(Set(messages).count == 1, "\(messages)")
        #expect(messages.first?.contains(TraceField.winSum) == true, "\(messages)")
    }
}
