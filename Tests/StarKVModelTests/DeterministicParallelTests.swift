import Testing
@testable import StarKVModel

@Suite struct DeterministicParallelTests {
    @Test(arguments: [1, 2, 7, 64])
    func mapReturnsResultsInIndexOrderForAnyWorkerCount(workers: Int) {
        let out = DeterministicParallel.map(count: 1000, workers: workers) { i in i * i }
        #expect(out == (0..<1000).map { $0 * $0 })
    }

    @Test func updateVisitsEveryElementExactlyOnce() {
        var items = [Int](repeating: 0, count: 513)
        DeterministicParallel.update(&items, workers: 5) { $0 += 1 }
        #expect(items.allSatisfy { $0 == 1 })
        var empty: [Int] = []
        DeterministicParallel.update(&empty, workers: 3) { $0 += 1 }
        #expect(DeterministicParallel.map(count: 0, workers: 4) { $0 }.isEmpty)
    }

    @Test(arguments: [1, 2, 3, 16])
    func dynamicMapGivesIndexOrderAndEachWorkerItsOwnState(workers: Int) {
        // Each worker's state counts the indices it took; the results depend only on the index.
        final class Taken { var count = 0 }
        let out = DeterministicParallel.mapDynamically(count: 300, workers: workers, makeState: { Taken() }) { taken, i in
            taken.count += 1
            return (i * 7, taken.count >= 1)
        }
        let firsts = out.map { $0.0 }
        let tookSome = out.allSatisfy { $0.1 }
        let none = DeterministicParallel.mapDynamically(count: 0, workers: workers, makeState: { 0 }) { _, i in i }
        #expect(firsts == (0..<300).map { $0 * 7 })
        #expect(tookSome)
        #expect(none.isEmpty)
    }

    @Test func dynamicUpdateVisitsEveryElementExactlyOnce() {
        for workers in [1, 2, 5] {
            var items = [Int](repeating: 0, count: 257)
            DeterministicParallel.updateDynamically(&items, workers: workers) { $0 += 1 }
            let once = items.allSatisfy { $0 == 1 }
            #expect(once)
        }
        var empty: [Int] = []
        DeterministicParallel.updateDynamically(&empty, workers: 2) { $0 += 1 }
        #expect(empty.isEmpty)
    }

    @Test func anOrderHandsElementsOutInThatOrderAndABadOrderFallsBackToIndexOrder() {
        // One worker runs the elements in the given order: each records when it ran.
        var items = [Int](repeating: -1, count: 5)
        var clock = 0
        DeterministicParallel.updateDynamically(&items, workers: 1, order: [3, 1, 4, 0, 2]) { $0 = clock; clock += 1 }
        #expect(items == [3, 1, 4, 0, 2])
        // Not a permutation (a repeat, a missing index, the wrong length): index order.
        for bad in [[0, 0, 1, 2, 3], [1, 2, 3, 4], [0, 1, 2, 3, 5]] {
            var again = [Int](repeating: -1, count: 5)
            var tick = 0
            DeterministicParallel.updateDynamically(&again, workers: 1, order: bad) { $0 = tick; tick += 1 }
            #expect(again == [0, 1, 2, 3, 4], "\(bad)")
        }
        // Several workers: every element exactly once, whatever the order.
        for workers in [2, 5] {
            var counts = [Int](repeating: 0, count: 100)
            DeterministicParallel.updateDynamically(&counts, workers: workers, order: (0..<100).reversed()) { $0 += 1 }
            let once = counts.allSatisfy { $0 == 1 }
            #expect(once)
        }
    }
}
