import Dispatch
import Foundation
import StarKVModel

/// A step being read in parts: its STEP record and chunk frames are checked up front
/// (`TraceReader.planStep`), then its chunks are decoded in any order, in portions, on any
/// number of threads (`decode`), and `finish` assembles the `StepRecord` — or throws the error
/// that reading the step chunk by chunk in file order would have thrown first, whatever the
/// order and threads of decoding. This is how a replay reads the next step ahead within a
/// memory bound and finishes it on every core (docs/replay.md; FORMAT.md "Tensor chunks").
///
/// Methods may be called from any thread, but not concurrently with each other on one plan.
public final class StepReading: @unchecked Sendable {
    /// One selected chunk: where its stored bytes are and what the step's size limit says.
    struct Item {
        var descriptor: ChunkDescriptor
        var payloadOffset: UInt64
        var location: TraceLocation
        /// Set on the chunk whose raw bytes take the step past `maxStepRawBytes` (the last item).
        var limitError: TraceError?
    }

    /// Position of the step in the reader's index.
    public let index: Int
    private let reader: TraceReader
    private var record: StepRecord
    let items: [Item]
    /// What reading in order throws after the last item (a chunk frame, or the step's end).
    private let trailingError: (any Error)?
    private var slots: [Result<[UInt8], any Error>?]
    /// Items decoded so far, from the front (`decode(upTo:)`).
    private var front = 0

    init(reader: TraceReader, index: Int, record: StepRecord, items: [Item], trailingError: (any Error)?) {
        self.reader = reader
        self.index = index
        self.record = record
        self.items = items
        self.trailingError = trailingError
        self.slots = Array(repeating: nil, count: items.count)
    }

    /// Raw bytes of the selected chunks (as declared by their descriptors, which decoding
    /// enforces).
    public var rawBytes: UInt64 { items.reduce(0) { $0 + $1.descriptor.rawBytes } }

    /// Raw bytes decoded so far.
    public var decodedBytes: UInt64 {
        zip(items, slots).reduce(0) { $0 + ($1.1 == nil ? 0 : $1.0.descriptor.rawBytes) }
    }

    /// Decodes chunks in file order, on this thread, while the raw bytes decoded so far plus the
    /// next chunk's stay within `budgetBytes`; stops at the first chunk that fails.
    public func decode(upTo budgetBytes: UInt64) {
        var used = decodedBytes
        let scratch = ChunkScratch(verifyZstdChecksum: false)
        while front < items.count {
            if slots[front] != nil {
                front += 1
                continue
            }
            let raw = items[front].descriptor.rawBytes
            guard raw <= budgetBytes, used <= budgetBytes - raw else { return }
            let r = Result { try reader.decodeChunk(items[front], scratch: scratch) }
            slots[front] = r
            used += raw
            front += 1
            if case .failure = r { return }
        }
    }

    /// Decodes every chunk not decoded yet, on up to `threads` threads (this one included), then
    /// returns the step, or throws the first error in file order.
    public func finish(threads: Int) throws -> StepRecord {
        let pending = slots.indices.filter { slots[$0] == nil }
        // An error already found ends the read in order before the chunks after it.
        let firstFailure = slots.firstIndex { if case .failure = $0 { return true } else { return false } }
        let todo = pending.filter { firstFailure == nil || $0 < firstFailure! }
        let workers = min(max(1, threads), todo.count)
        if workers <= 1 {
            let scratch = ChunkScratch(verifyZstdChecksum: false)
            for k in todo {
                let r = Result { try reader.decodeChunk(items[k], scratch: scratch) }
                slots[k] = r
                if case .failure = r { break }
            }
        } else {
            // Workers read only the constants `reader` and `items`; each has its own buffers.
            let decoded = DeterministicParallel.mapDynamically(
                count: todo.count, workers: workers, makeState: { ChunkScratch(verifyZstdChecksum: false) }
            ) { scratch, j in
                Result { try self.reader.decodeChunk(self.items[todo[j]], scratch: scratch) }
            }
            for (j, k) in todo.enumerated() { slots[k] = decoded[j] }
        }
        var chunks: [TensorChunk] = []
        chunks.reserveCapacity(items.count)
        for (k, item) in items.enumerated() {
            guard let slot = slots[k] else { break }  // after a failure: not decoded, not reached
            let bytes = try slot.get()
            if let limit = item.limitError { throw limit }
            let d = item.descriptor
            chunks.append(TensorChunk(field: d.field, layer: d.layer, tensor: Tensor(dtype: d.dtype, shape: d.shape, bytes: bytes)))
            slots[k] = nil
        }
        if let trailingError { throw trailingError }
        var r = record
        r.chunks = chunks
        return r
    }
}

extension TraceReader {
    /// Reads step `i`'s STEP record and every chunk frame (no payload) and returns a plan to
    /// decode the chunks of `fields` / `layers` (nil = all). Throws what reading the step in
    /// order would throw before its first selected chunk is decoded; later problems (a chunk's
    /// payload, a later chunk frame, the step's size limit or end) are thrown by `finish`.
    public func planStep(at i: Int, fields: Set<String>? = nil, layers: Set<Int?>? = nil) throws -> StepReading {
        let (meta, metaEnd) = try readStepMeta(at: i)
        let record = meta.record
        var pos = metaEnd
        var items: [StepReading.Item] = []
        var total: UInt64 = 0
        var trailing: (any Error)? = nil
        for d in meta.descriptors {
            let loc = TraceLocation(path: path, offset: pos, step: record.stepIndex, layer: d.layer, field: d.field)
            let payloadOffset: UInt64
            do { payloadOffset = try readChunkFrame(at: pos, descriptor: d, location: loc) } catch {
                if items.isEmpty { throw error }
                trailing = error
                break
            }
            pos = payloadOffset + d.storedBytes  // inside the file: checked by readChunkFrame
            if let fields, !fields.contains(d.field) { continue }
            if let layers, !layers.contains(d.layer) { continue }
            var item = StepReading.Item(descriptor: d, payloadOffset: payloadOffset, location: loc)
            total = Checked.add(total, d.rawBytes) ?? .max
            if total > limits.maxStepRawBytes {
                item.limitError = TraceError.limitExceeded(
                    loc, "the step's selected chunks exceed \(limits.maxStepRawBytes) raw bytes (raise --max-chunk-mib)")
                items.append(item)
                break
            }
            items.append(item)
        }
        if trailing == nil, items.last?.limitError == nil {
            let entry = index[i]
            if Checked.add(entry.offset, entry.length) != pos {
                let end = TraceError.malformed(
                    TraceLocation(path: path, offset: entry.offset, step: record.stepIndex),
                    "step ends at offset \(pos) but the index says \(entry.offset) + \(entry.length)")
                if items.isEmpty { throw end }
                trailing = end
            }
        }
        return StepReading(reader: self, index: i, record: record, items: items, trailingError: trailing)
    }

    /// Reads step `i` with its chunks decoded on up to `threads` threads; the same step, or the
    /// same error, as `readStep(at:fields:layers:)`.
    public func readStep(at i: Int, fields: Set<String>? = nil, layers: Set<Int?>? = nil, threads: Int) throws -> StepRecord {
        try planStep(at: i, fields: fields, layers: layers).finish(threads: threads)
    }

    /// Decodes one planned chunk: CRC32C, zstd, un-shuffle, and the finite-value check.
    func decodeChunk(_ item: StepReading.Item, scratch: ChunkScratch) throws -> [UInt8] {
        let d = item.descriptor
        let loc = item.location
        let decoded: ChunkCoder.Decoded
        do {
            decoded = try ChunkCoder.decode(file: file, offset: item.payloadOffset, descriptor: d, scratch: scratch)
        } catch let ChunkCoder.DecodeError.checksum(m) {
            throw TraceError.checksumMismatch(loc, m)
        } catch let ChunkCoder.DecodeError.malformed(m) {
            throw TraceError.checksumMismatch(loc, "decompression failed: \(m)")
        }
        if requireFiniteValues, d.dtype.isFloatingPoint, decoded.mayBeNonFinite,
            let bad = ChunkCoder.firstNonFinite(decoded.bytes, dtype: d.dtype)
        {
            throw TraceError.nonFiniteValue(loc, "element \(bad.index) of shape \(d.shape) is \(bad.value)")
        }
        return decoded.bytes
    }
}
