import Foundation
import StarKVModel

/// A one-line progress bar on stderr, drawn only on a terminal.
final class ProgressBar {
    let enabled: Bool
    let start = Date()

    init(enabled: Bool) { self.enabled = enabled }

    func update(done: Int, total: Int, label: String) {
        guard enabled, total > 0 else { return }
        let width = 30
        let filled = width * done / total
        let elapsed = Date().timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let line = "\r[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            + "] \(done)/\(total) steps  \(UnitFormat.fixed(rate, 2)) steps/s  ETA \(Int(eta))s  \(label)   "
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\n".utf8))
    }
}
