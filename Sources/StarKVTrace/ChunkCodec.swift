import CStarKVSupport
import CZstd

/// CRC32C (Castagnoli), the checksum of every record payload and chunk (FORMAT.md "Checksums").
public enum CRC32C {
    /// CRC32C of `bytes`, continuing from `crc` (0 for a new checksum).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return starkv_crc32c_3way(crc, base, bytes.count)  // = starkv_crc32c; 3 streams on long buffers
    }

    /// CRC32C of `bytes`.
    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0) }
    }
}

/// Compression settings of a chunk (FORMAT.md "Tensor chunks").
public enum ChunkFilter: UInt8, Sendable { case none = 0, byteShuffle = 1 }
/// Codec of a chunk's filtered bytes.
public enum ChunkCodec: UInt8, Sendable { case none = 0, zstd = 1 }

/// Encodes and decodes tensor chunk payloads: byte shuffle, then zstd (with content size and
/// frame checksum). Pure functions of their inputs.
enum ChunkCoder {
    /// Filtered and compressed bytes of `raw`.
    static func encode(_ raw: [UInt8], elementWidth: Int, filter: ChunkFilter, codec: ChunkCodec, level: Int32)
        throws -> [UInt8]
    {
        var data = raw
        if filter == .byteShuffle, elementWidth > 1, raw.count % elementWidth == 0, !raw.isEmpty {
            var out = [UInt8](repeating: 0, count: raw.count)
            raw.withUnsafeBufferPointer { src in
                out.withUnsafeMutableBufferPointer { dst in
                    starkv_shuffle(src.baseAddress, dst.baseAddress, raw.count / elementWidth, elementWidth)
                }
            }
            data = out
        }
        guard codec == .zstd else { return data }
        guard let cctx = ZSTD_createCCtx() else { throw ZstdError.message("cannot create a zstd context") }
        defer { ZSTD_freeCCtx(cctx) }
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1)
        let bound = ZSTD_compressBound(data.count)
        var out = [UInt8](repeating: 0, count: bound)
        let written = data.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                ZSTD_compress2(cctx, dst.baseAddress, bound, src.baseAddress, data.count)
            }
        }
        if ZSTD_isError(written) != 0 { throw ZstdError.message(String(cString: ZSTD_getErrorName(written))) }
        out.removeSubrange(written...)
        return out
    }

    /// ZSTD_compressBound for a 64-bit size (saturating).
    static func compressBound(_ raw: UInt64) -> UInt64 {
        // zstd's formula: raw + raw/256 + a margin below 128 KiB inputs.
        let margin: UInt64 = raw < (128 << 10) ? ((128 << 10) - raw) >> 11 : 0
        return Checked.add(raw, raw >> 8, margin) ?? .max
    }

    enum DecodeError: Error {
        /// The stored bytes do not match their CRC32C.
        case checksum(String)
        /// The stored bytes are not a valid encoding of exactly `raw_bytes` bytes.
        case malformed(String)
    }

    /// Byte-shuffled zstd chunks up to this size are decoded in one shot through the scratch's
    /// planes buffer; larger ones are streamed. (Settable so that tests can force the streamed
    /// path on small fixtures.)
    nonisolated(unsafe) static var smallChunk = 32 << 20

    /// Bytes read from the file per step of a streamed chunk decode.
    static let readPiece = 1 << 20

    /// A decoded chunk: its raw bytes, and whether it may hold a NaN or infinity (false only when
    /// the decode itself checked every element of a floating-point chunk and found none).
    struct Decoded {
        var bytes: [UInt8]
        var mayBeNonFinite: Bool
    }

    /// Reads, checks and decodes the chunk described by `d` whose stored bytes start at `offset`
    /// (the caller checked that `d.storedBytes` bytes lie in the file, that `d.rawBytes` is within
    /// the limits and that `d.storedBytes` is at most `compressBound(d.rawBytes)`). The stored
    /// bytes are read once; their CRC32C is checked before anything is decoded. Memory: the
    /// output plus, up to `smallChunk` raw bytes, the stored bytes and the shuffled planes in
    /// `scratch`'s reused buffers (so at most about 3 × `smallChunk` besides the output); above
    /// `smallChunk`, zstd without filter reads the stored bytes and decodes into the output in
    /// one shot (about 2 × `raw_bytes`), byte-shuffled zstd is streamed and un-shuffled as the
    /// bytes arrive (the output, zstd's window and a read piece). zstd never writes past its
    /// output, and the frame must declare exactly `raw_bytes`.
    static func decode(file: TraceFile, offset: UInt64, descriptor d: ChunkDescriptor, scratch: ChunkScratch) throws -> Decoded {
        let stored = d.storedBytes
        let raw = Int(d.rawBytes)
        let width = d.dtype.byteWidth
        let shuffled = d.filter == .byteShuffle && width > 1 && raw % width == 0 && raw > 0
        let count = shuffled ? raw / width : 0
        let kind = d.dtype.floatKernelCode
        let crcMismatch = DecodeError.checksum("CRC32C of the chunk's stored bytes differs from its descriptor")
        switch (d.codec, shuffled) {
        case (.none, _):
            guard stored == d.rawBytes else {
                throw DecodeError.malformed("stored \(stored) bytes but the descriptor says \(raw) raw bytes")
            }
            if !shuffled {
                let bytes = try file.read(raw, at: offset)
                guard CRC32C.checksum(bytes) == d.crc32c else { throw crcMismatch }
                return Decoded(bytes: bytes, mayBeNonFinite: true)
            }
            var crc: UInt32 = 0
            let out = try [UInt8](unsafeUninitializedCapacity: raw) { out, initialized in
                try streamPieces(file: file, offset: offset, stored: stored, scratch: scratch) { piece, at in
                    crc = CRC32C.checksum(piece, continuing: crc)
                    starkv_unshuffle_range_fast(piece.baseAddress!.assumingMemoryBound(to: UInt8.self), piece.count, at, out.baseAddress, count, width)
                }
                initialized = raw
            }
            guard crc == d.crc32c else { throw crcMismatch }
            return Decoded(bytes: out, mayBeNonFinite: true)
        case (.zstd, true) where raw <= smallChunk:
            // One-shot decode of the planes into the scratch (at most `smallChunk` bytes, reused
            // across chunks), then un-shuffled into the output with the non-finite check fused.
            let input = try scratch.readStored(file: file, offset: offset, count: Int(stored))
            guard CRC32C.checksum(UnsafeRawBufferPointer(input)) == d.crc32c else { throw crcMismatch }
            let planes = scratch.planes(raw)
            try decompressFrame(input, into: planes, raw: raw, dctx: try scratch.context())
            var nonFinite = false
            let out = [UInt8](unsafeUninitializedCapacity: raw) { out, initialized in
                nonFinite = starkv_unshuffle_check(planes.baseAddress, out.baseAddress, count, width, kind) != 0
                initialized = raw
            }
            return Decoded(bytes: out, mayBeNonFinite: nonFinite)
        case (.zstd, false):
            let input = try scratch.readStored(file: file, offset: offset, count: Int(stored))
            guard CRC32C.checksum(UnsafeRawBufferPointer(input)) == d.crc32c else { throw crcMismatch }
            let dctx = try scratch.context()
            let out = try [UInt8](unsafeUninitializedCapacity: max(raw, 1)) { out, initialized in
                try decompressFrame(input, into: UnsafeMutableBufferPointer(rebasing: out[0..<raw]), raw: raw, dctx: dctx)
                initialized = raw
            }
            scratch.releaseLarge()
            return Decoded(bytes: out, mayBeNonFinite: true)
        case (.zstd, true):
            var crc: UInt32 = 0
            var failure: DecodeError? = nil
            let out = try [UInt8](unsafeUninitializedCapacity: raw) { out, initialized in
                do {
                    try decodeZstdStream(file: file, offset: offset, stored: stored, raw: raw, crc: &crc, scratch: scratch) { src, n, at in
                        starkv_unshuffle_range_fast(src.assumingMemoryBound(to: UInt8.self), n, at, out.baseAddress, count, width)
                    }
                } catch let e as DecodeError {
                    failure = e
                }
                initialized = raw
            }
            if let failure {
                // Damaged bytes are reported as such: finish the CRC over all stored bytes.
                var full: UInt32 = 0
                try streamPieces(file: file, offset: offset, stored: stored, scratch: scratch) { piece, _ in full = CRC32C.checksum(piece, continuing: full) }
                throw full == d.crc32c ? failure : crcMismatch
            }
            guard crc == d.crc32c else { throw crcMismatch }
            return Decoded(bytes: out, mayBeNonFinite: true)
        }
    }

    /// Decodes the one zstd frame `input` into `out` (exactly `raw` bytes): the frame must
    /// declare `raw` content bytes, produce exactly that many, and be followed by nothing.
    private static func decompressFrame(_ input: UnsafeBufferPointer<UInt8>, into out: UnsafeMutableBufferPointer<UInt8>, raw: Int, dctx: OpaquePointer) throws {
        try checkDeclaredSize(ZSTD_getFrameContentSize(input.baseAddress, input.count), raw: raw)
        // One frame, exactly `raw` bytes: ZSTD_decompressDCtx fails on trailing bytes (another
        // frame would need room) and never writes past `raw`.
        let got = ZSTD_decompressDCtx(dctx, out.baseAddress, raw, input.baseAddress, input.count)
        if ZSTD_isError(got) != 0 {
            let name = String(cString: ZSTD_getErrorName(got))
            throw DecodeError.malformed(name.contains("Destination buffer is too small") ? "bytes after the end of the zstd frame (\(name))" : name)
        }
        guard got == raw else { throw DecodeError.malformed("zstd produced \(got) bytes, expected \(raw)") }
        let frame = ZSTD_findFrameCompressedSize(input.baseAddress, input.count)
        guard ZSTD_isError(frame) == 0, frame == input.count else {
            throw DecodeError.malformed("bytes after the end of the zstd frame")
        }
    }

    /// Calls `body` with the stored bytes in pieces of at most `readPiece` bytes (and their
    /// offset in the chunk), reusing one buffer.
    private static func streamPieces(
        file: TraceFile, offset: UInt64, stored: UInt64, scratch: ChunkScratch, _ body: (UnsafeRawBufferPointer, Int) throws -> Void
    ) throws {
        let piece = Int(min(UInt64(readPiece), max(stored, 1)))
        let buffer = UnsafeMutableRawPointer(scratch.piece().baseAddress!)
        var done: UInt64 = 0
        while done < stored {
            let n = Int(min(UInt64(piece), stored - done))
            try file.read(into: buffer, count: n, at: offset + done)
            try body(UnsafeRawBufferPointer(start: buffer, count: n), Int(done))
            done += UInt64(n)
        }
    }

    private static func checkDeclaredSize(_ declared: UInt64, raw: Int) throws {
        guard declared == UInt64(raw) else {
            let what = declared == ZSTD_CONTENTSIZE_UNKNOWN ? "no content size" : declared == ZSTD_CONTENTSIZE_ERROR ? "no valid frame header" : "\(declared) content bytes"
            throw DecodeError.malformed("zstd frame declares \(what), descriptor says \(raw)")
        }
    }

    /// Streams one zstd frame from the file (CRC32C accumulated into `crc` as the pieces are
    /// read); checks that it declares exactly `raw` content bytes, produces exactly that many,
    /// and is followed by nothing. `place(src, n, at)` receives decoded bytes at stream offset `at`.
    private static func decodeZstdStream(
        file: TraceFile, offset: UInt64, stored: UInt64, raw: Int, crc: inout UInt32, scratch: ChunkScratch,
        place: (UnsafeRawPointer, Int, Int) -> Void
    ) throws {
        guard let dctx = ZSTD_createDCtx() else { throw DecodeError.malformed("cannot create a zstd context") }
        defer { ZSTD_freeDCtx(dctx) }
        // The window can be no larger than the content (single-segment frames) or 2^27 bytes.
        ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, 27)
        let outCapacity = 1 << 20
        let outBuffer = UnsafeMutableRawPointer.allocate(byteCount: outCapacity, alignment: 16)
        defer { outBuffer.deallocate() }
        var produced = 0
        var frameDone = false
        var checkedHeader = false
        var runningCRC = crc
        func drain(_ input: inout ZSTD_inBuffer) throws {
            repeat {
                guard !frameDone else { throw DecodeError.malformed("bytes after the end of the zstd frame") }
                var output = ZSTD_outBuffer(dst: outBuffer, size: outCapacity, pos: 0)
                let ret = ZSTD_decompressStream(dctx, &output, &input)
                if ZSTD_isError(ret) != 0 { throw DecodeError.malformed(String(cString: ZSTD_getErrorName(ret))) }
                guard output.pos <= raw - produced else {
                    throw DecodeError.malformed("zstd produced more than the \(raw) bytes the descriptor says")
                }
                place(outBuffer, output.pos, produced)
                produced += output.pos
                if ret == 0 { frameDone = true }
                if input.pos == input.size && (frameDone || output.pos < outCapacity) { break }
            } while true
        }
        try streamPieces(file: file, offset: offset, stored: stored, scratch: scratch) { piece, at in
            runningCRC = CRC32C.checksum(piece, continuing: runningCRC)
            if !checkedHeader {
                // The frame header (at most 18 bytes) must declare the content size; the first
                // piece holds it unless the chunk is shorter (then zstd reports the frame cut).
                try checkDeclaredSize(ZSTD_getFrameContentSize(piece.baseAddress, min(piece.count, 18)), raw: raw)
                checkedHeader = true
            }
            var input = ZSTD_inBuffer(src: piece.baseAddress, size: piece.count, pos: 0)
            try drain(&input)
        }
        crc = runningCRC
        if !frameDone {
            // Flush whatever zstd still holds; no input is left.
            var input = ZSTD_inBuffer(src: outBuffer, size: 0, pos: 0)
            try drain(&input)
            guard frameDone else { throw DecodeError.malformed("zstd frame is cut off") }
        }
        guard produced == raw else { throw DecodeError.malformed("zstd produced \(produced) bytes, expected \(raw)") }
    }

    /// The first NaN or infinite element of a floating-point tensor, with its value as text.
    static func firstNonFinite(_ bytes: [UInt8], dtype: TensorDType) -> (index: Int, value: String)? {
        let code = dtype.floatKernelCode
        guard code != 0 else { return nil }
        let count = bytes.count / dtype.byteWidth
        let i = bytes.withUnsafeBufferPointer { starkv_first_nonfinite_fast($0.baseAddress, count, code) }
        guard i >= 0 else { return nil }
        let t = Tensor(dtype: dtype, shape: [count], bytes: bytes)
        let v = t.floats(from: Int(i), count: 1).first ?? .nan
        return (Int(i), v.isNaN ? "NaN" : (v > 0 ? "+infinity" : "-infinity"))
    }

    enum ZstdError: Error { case message(String) }
}

/// Buffers and a zstd decompression context reused across the chunks of one read (one thread
/// at a time): the stored bytes of a chunk, the shuffled planes of a one-shot decode and the
/// piece buffer of a streamed one. Reuse keeps the reader from allocating (and the kernel from
/// faulting in) fresh buffers per chunk. Buffers above `keepBytes` are released after use.
final class ChunkScratch {
    private var stored: UnsafeMutableBufferPointer<UInt8>? = nil
    private var planeBuffer: UnsafeMutableBufferPointer<UInt8>? = nil
    private var pieceBuffer: UnsafeMutableBufferPointer<UInt8>? = nil
    private var dctx: OpaquePointer? = nil
    /// Largest buffer kept between chunks.
    let keepBytes: Int
    /// Whether one-shot decodes verify zstd's own frame checksum (XXH64 of the decoded bytes).
    let verifyZstdChecksum: Bool

    /// `verifyZstdChecksum: false` skips zstd's checksum of the decoded bytes: the CRC32C of the
    /// stored frame, checked before decoding, already covers every byte zstd reads, and
    /// decoding is deterministic, so the second hash (about a sixth of zstd's time on the 7B
    /// trace) re-checks nothing for a reader. `validate` keeps it (FORMAT.md "Tensor chunks").
    init(verifyZstdChecksum: Bool = true, keepBytes: Int = ChunkCoder.smallChunk + (ChunkCoder.smallChunk >> 7) + (1 << 17)) {
        self.verifyZstdChecksum = verifyZstdChecksum
        self.keepBytes = keepBytes
    }

    deinit {
        stored?.deallocate()
        planeBuffer?.deallocate()
        pieceBuffer?.deallocate()
        if let dctx { ZSTD_freeDCtx(dctx) }
    }

    private static func ensure(_ buffer: inout UnsafeMutableBufferPointer<UInt8>?, _ n: Int) -> UnsafeMutableBufferPointer<UInt8> {
        if let b = buffer, b.count >= n { return b }
        buffer?.deallocate()
        let b = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: max(n, 1))
        buffer = b
        return b
    }

    /// Reads `count` stored bytes at `offset` into the reused stored-bytes buffer.
    func readStored(file: TraceFile, offset: UInt64, count: Int) throws -> UnsafeBufferPointer<UInt8> {
        let b = Self.ensure(&stored, count)
        try file.read(into: UnsafeMutableRawPointer(b.baseAddress!), count: count, at: offset)
        return UnsafeBufferPointer(rebasing: b[0..<count])
    }

    /// A buffer of at least `n` bytes for the shuffled planes.
    func planes(_ n: Int) -> UnsafeMutableBufferPointer<UInt8> {
        UnsafeMutableBufferPointer(rebasing: Self.ensure(&planeBuffer, n)[0..<n])
    }

    /// The read-piece buffer of a streamed decode (`ChunkCoder.readPiece` bytes).
    func piece() -> UnsafeMutableBufferPointer<UInt8> { Self.ensure(&pieceBuffer, ChunkCoder.readPiece) }

    /// The reused one-shot decompression context.
    func context() throws -> OpaquePointer {
        if let dctx { return dctx }
        guard let c = ZSTD_createDCtx() else { throw ChunkCoder.DecodeError.malformed("cannot create a zstd context") }
        if !verifyZstdChecksum {
            // ZSTD_d_forceIgnoreChecksum (zstd >= 1.4.7; an older library refuses the parameter
            // and keeps verifying).
            _ = ZSTD_DCtx_setParameter(c, ZSTD_d_experimentalParam3, 1)
        }
        dctx = c
        return c
    }

    /// Frees the stored-bytes buffer if it grew past `keepBytes` (a large unshuffled chunk).
    func releaseLarge() {
        if let b = stored, b.count > keepBytes {
            b.deallocate()
            stored = nil
        }
    }
}
