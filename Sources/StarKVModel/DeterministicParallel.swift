import Dispatch
import Foundation

/// Parallel loops whose results never depend on scheduling: every index is computed by exactly
/// one worker into its own slot, and results come back in index order. Used wherever StarKV
/// spreads independent work (chunks, policy × budget pairs) over threads.
public enum DeterministicParallel {
    /// `body(i)` for `i` in `0..<count` on up to `workers` threads; results in index order.
    public static func map<T>(count: Int, workers: Int, _ body: (Int) -> T) -> [T] {
        var slots = [T?](repeating: nil, count: count)
        slots.withUnsafeMutableBufferPointer { buf in
            guard let base = buf.baseAddress else { return }
            let out = Slots(base: base)
            let n = min(max(1, workers), max(1, count))
            withoutActuallyEscaping(body) { body in
                let call = UncheckedBox(body)
                DispatchQueue.concurrentPerform(iterations: n) { w in
                    var i = w
                    while i < count {
                        out.base[i] = call.value(i)
                        i += n
                    }
                }
            }
        }
        return slots.map { $0! }
    }

    /// `body(&items[i])` for every element on up to `workers` threads (each element by one worker).
    public static func update<T>(_ items: inout [T], workers: Int, _ body: (inout T) -> Void) {
        let count = items.count
        items.withUnsafeMutableBufferPointer { buf in
            guard let base = buf.baseAddress else { return }
            let out = Slots(base: base)
            let n = min(max(1, workers), max(1, count))
            withoutActuallyEscaping(body) { body in
                let call = UncheckedBox(body)
                DispatchQueue.concurrentPerform(iterations: n) { w in
                    var i = w
                    while i < count {
                        call.value(&out.base[i])
                        i += n
                    }
                }
            }
        }
    }

    /// `body(&state, i)` for `i` in `0..<count` on up to `workers` threads, indices handed out in
    /// order as workers free up (work of unequal cost balances), each worker with its own
    /// `makeState()` (e.g. reusable buffers); results in index order, so they do not depend on
    /// the scheduling as long as `body`'s result does not depend on the state's history.
    public static func mapDynamically<S, T>(
        count: Int, workers: Int, makeState: () -> S, _ body: (inout S, Int) -> T
    ) -> [T] {
        var slots = [T?](repeating: nil, count: count)
        let n = min(max(1, workers), max(1, count))
        if n == 1 {
            var state = makeState()
            for i in 0..<count { slots[i] = body(&state, i) }
            return slots.map { $0! }
        }
        let counter = IndexCounter()
        slots.withUnsafeMutableBufferPointer { buf in
            guard let base = buf.baseAddress else { return }
            let out = Slots(base: base)
            withoutActuallyEscaping(makeState) { makeState in
                withoutActuallyEscaping(body) { body in
                    let make = UncheckedBox(makeState)
                    let call = UncheckedBox(body)
                    DispatchQueue.concurrentPerform(iterations: n) { _ in
                        var state = make.value()
                        while true {
                            let i = counter.take()
                            if i >= count { break }
                            out.base[i] = call.value(&state, i)
                        }
                    }
                }
            }
        }
        return slots.map { $0! }
    }

    /// `body(&items[i])` for every element on up to `workers` threads, elements handed out in
    /// index order as workers free up; each element is updated by exactly one worker in its own
    /// slot, so the results do not depend on the scheduling.
    public static func updateDynamically<T>(_ items: inout [T], workers: Int, _ body: (inout T) -> Void) {
        updateDynamically(&items, workers: workers, order: nil, body)
    }

    /// `updateDynamically` with the elements handed out in `order` (a permutation of the indices;
    /// e.g. the costliest first, so that no long element starts last). The order changes only
    /// which worker runs an element and when, never a result.
    public static func updateDynamically<T>(_ items: inout [T], workers: Int, order: [Int]?, _ body: (inout T) -> Void) {
        let count = items.count
        let sequence = order.flatMap { $0.count == count && Set($0) == Set(0..<count) ? $0 : nil } ?? Array(0..<count)
        let n = min(max(1, workers), max(1, count))
        if n == 1 {
            for i in sequence { body(&items[i]) }
            return
        }
        let counter = IndexCounter()
        items.withUnsafeMutableBufferPointer { buf in
            guard let base = buf.baseAddress else { return }
            let out = Slots(base: base)
            withoutActuallyEscaping(body) { body in
                let call = UncheckedBox(body)
                DispatchQueue.concurrentPerform(iterations: n) { _ in
                    while true {
                        let i = counter.take()
                        if i >= count { break }
                        call.value(&out.base[sequence[i]])
                    }
                }
            }
        }
    }

    /// Hands out 0, 1, 2, … to whichever worker asks next.
    private final class IndexCounter: @unchecked Sendable {
        private let lock = NSLock()
        private var next = 0
        func take() -> Int {
            lock.lock()
            defer { lock.unlock() }
            next += 1
            return next - 1
        }
    }

    /// A pointer whose disjoint elements are written by different workers.
    private struct Slots<T>: @unchecked Sendable {
        let base: UnsafeMutablePointer<T>
    }

    /// A closure handed to workers; callers pass closures that only read shared state.
    private struct UncheckedBox<F>: @unchecked Sendable {
        let value: F
        init(_ value: F) { self.value = value }
    }
}
