import Dispatch

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
