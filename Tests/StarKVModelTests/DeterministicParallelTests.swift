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
}
