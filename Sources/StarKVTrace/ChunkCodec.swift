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

    /// Byte-shuffled chunks up to this size are decoded in one shot through a scratch buffer;
    /// larger ones are streamed.
    /// (Settable so that tests can force the streamed path on small fixtures.)
    nonisolated(unsafe) static var smallChunk = 1 << 20

    /// Bytes read from the file per step of a chunk decode.
    static let readPiece = 1 << 20

    /// Reads, checks and decodes the chunk described by `d` whose stored bytes start at `offset`
    /// (the caller checked that `d.storedBytes` bytes lie in the file, that `d.rawBytes` is within
    /// the limits and that `d.storedBytes` is at most `compressBound(d.rawBytes)`). The stored
    /// bytes are read once; their CRC32C is checked before anything is returned. Memory: at most
    /// about 2 × `raw_bytes` plus a read piece — the stored bytes and the output (zstd without
    /// filter: one-shot decode into the output; byte-shuffled up to `smallChunk`: through a
    /// scratch buffer of at most that size), or the output and zstd's window (byte-shuffled zstd
    /// above `smallChunk`: streamed, un-shuffled as the bytes arrive, so no second full-size
    /// copy). zstd never
    /// writes past the `raw_bytes` output, and the frame must declare exactly that size.
    static func decode(file: TraceFile, offset: UInt64, descriptor d: ChunkDescriptor) throws -> [UInt8] {
        let stored = d.storedBytes
        let raw = Int(d.rawBytes)
        let width = d.dtype.byteWidth
        let shuffled = d.filter == .byteShuffle && width > 1 && raw % width == 0 && raw > 0
        let count = shuffled ? raw / width : 0
        let crcMismatch = DecodeError.checksum("CRC32C of the chunk's stored bytes differs from its descriptor")
        switch (d.codec, shuffled) {
        case (.none, _):
            guard stored == d.rawBytes else {
                throw DecodeError.malformed("stored \(stored) bytes but the descriptor says \(raw) raw bytes")
            }
            if !shuffled {
                let bytes = try file.read(raw, at: offset)
                guard CRC32C.checksum(bytes) == d.crc32c else { throw crcMismatch }
                return bytes
            }
            var crc: UInt32 = 0
            let out = try [UInt8](unsafeUninitializedCapacity: raw) { out, initialized in
                try streamPieces(file: file, offset: offset, stored: stored) { piece, at in
                    crc = CRC32C.checksum(piece, continuing: crc)
                    starkv_unshuffle_range(piece.baseAddress!.assumingMemoryBound(to: UInt8.self), piece.count, at, out.baseAddress, count, width)
                }
                initialized = raw
            }
            guard crc == d.crc32c else { throw crcMismatch }
            return out
        case (.zstd, true) where raw <= smallChunk:
            // Small chunk: one-shot decode into a scratch buffer of at most `smallChunk` bytes
            // (a constant, not a second copy of a large tensor), then un-shuffle into the output.
            var scratch = d
            scratch.filter = .none
            let planes = try decode(file: file, offset: offset, descriptor: scratch)
            return [UInt8](unsafeUninitializedCapacity: raw) { out, initialized in
                planes.withUnsafeBufferPointer { starkv_unshuffle_fast($0.baseAddress, out.baseAddress, count, width) }
                initialized = raw
            }
        case (.zstd, false):
            let input = try file.read(Int(stored), at: offset)
            guard CRC32C.checksum(input) == d.crc32c else { throw crcMismatch }
            try checkDeclaredSize(input.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, input.count) }, raw: raw)
            guard let dctx = ZSTD_createDCtx() else { throw DecodeError.malformed("cannot create a zstd context") }
            defer { ZSTD_freeDCtx(dctx) }
            return try [UInt8](unsafeUninitializedCapacity: max(raw, 1)) { out, initialized in
                // One frame, exactly `raw` bytes: ZSTD_decompressDCtx fails on trailing bytes
                // (another frame would need room) and never writes past `raw`.
                let got = input.withUnsafeBytes { ZSTD_decompressDCtx(dctx, out.baseAddress, raw, $0.baseAddress, input.count) }
                if ZSTD_isError(got) != 0 {
                    let name = String(cString: ZSTD_getErrorName(got))
                    throw DecodeError.malformed(name.contains("Destination buffer is too small") ? "bytes after the end of the zstd frame (\(name))" : name)
                }
                guard got == raw else { throw DecodeError.malformed("zstd produced \(got) bytes, expected \(raw)") }
                let frame = input.withUnsafeBytes { ZSTD_findFrameCompressedSize($0.baseAddress, input.count) }
                guard ZSTD_isError(frame) == 0, frame == input.count else {
                    throw DecodeError.malformed("bytes after the end of the zstd frame")
                }
                initialized = raw
            }
        case (.zstd, true):
            var crc: UInt32 = 0
            var failure: DecodeError? = nil
            let out = try [UInt8](unsafeUninitializedCapacity: raw) { out, initialized in
                do {
                    try decodeZstdStream(file: file, offset: offset, stored: stored, raw: raw, crc: &crc) { src, n, at in
                        starkv_unshuffle_range(src.assumingMemoryBound(to: UInt8.self), n, at, out.baseAddress, count, width)
                    }
                } catch let e as DecodeError {
                    failure = e
                }
                initialized = raw
            }
            if let failure {
                // Damaged bytes are reported as such: finish the CRC over all stored bytes.
                var full: UInt32 = 0
                try streamPieces(file: file, offset: offset, stored: stored) { piece, _ in full = CRC32C.checksum(piece, continuing: full) }
                throw full == d.crc32c ? failure : crcMismatch
            }
            guard crc == d.crc32c else { throw crcMismatch }
            return out
        }
    }

    /// Calls `body` with the stored bytes in pieces of at most `readPiece` bytes (and their
    /// offset in the chunk), reusing one buffer.
    private static func streamPieces(
        file: TraceFile, offset: UInt64, stored: UInt64, _ body: (UnsafeRawBufferPointer, Int) throws -> Void
    ) throws {
        let piece = Int(min(UInt64(readPiece), max(stored, 1)))
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: piece, alignment: 16)
        defer { buffer.deallocate() }
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
        file: TraceFile, offset: UInt64, stored: UInt64, raw: Int, crc: inout UInt32,
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
        try streamPieces(file: file, offset: offset, stored: stored) { piece, at in
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
        let code: Int32
        switch dtype {
        case .f16: code = 2
        case .bf16: code = 3
        case .f32: code = 4
        case .f64: code = 8
        default: return nil
        }
        let count = bytes.count / dtype.byteWidth
        let i = bytes.withUnsafeBufferPointer { starkv_first_nonfinite($0.baseAddress, count, code) }
        guard i >= 0 else { return nil }
        let t = Tensor(dtype: dtype, shape: [count], bytes: bytes)
        let v = t.floats(from: Int(i), count: 1).first ?? .nan
        return (Int(i), v.isNaN ? "NaN" : (v > 0 ? "+infinity" : "-infinity"))
    }

    enum ZstdError: Error { case message(String) }
}
