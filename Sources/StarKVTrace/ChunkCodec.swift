import CStarKVSupport
import CZstd

/// CRC32C (Castagnoli), the checksum of every record payload and chunk (FORMAT.md "Checksums").
public enum CRC32C {
    /// CRC32C of `bytes`, continuing from `crc` (0 for a new checksum).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return crc }
        return starkv_crc32c(crc, base, bytes.count)
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

    /// Bytes read from the file per step of a chunk decode.
    static let readPiece = 1 << 20

    /// Reads, checks and decodes the chunk described by `d` whose stored bytes start at `offset`
    /// (the caller checked that `d.storedBytes` bytes lie in the file and that `d.rawBytes` is
    /// within the limits). Memory: the raw output, one read piece, and zstd's window (at most the
    /// raw size, since the frame must declare exactly `raw_bytes`). The stored bytes are streamed
    /// twice (CRC32C, then decode); byte un-shuffling happens as the bytes arrive, so no second
    /// full-size copy is made. zstd never writes past the `raw_bytes` output.
    static func decode(file: TraceFile, offset: UInt64, descriptor d: ChunkDescriptor) throws -> [UInt8] {
        let stored = d.storedBytes
        let piece = Int(min(UInt64(readPiece), max(stored, 1)))
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: piece, alignment: 16)
        defer { buffer.deallocate() }

        // Pass 1: CRC32C of the stored bytes.
        var crc: UInt32 = 0
        var done: UInt64 = 0
        while done < stored {
            let n = Int(min(UInt64(piece), stored - done))
            try file.read(into: buffer, count: n, at: offset + done)
            crc = CRC32C.checksum(UnsafeRawBufferPointer(start: buffer, count: n), continuing: crc)
            done += UInt64(n)
        }
        guard crc == d.crc32c else {
            throw DecodeError.checksum("CRC32C of the chunk's stored bytes differs from its descriptor")
        }

        let raw = Int(d.rawBytes)
        let width = d.dtype.byteWidth
        let shuffled = d.filter == .byteShuffle && width > 1 && raw % width == 0 && raw > 0
        let count = shuffled ? raw / width : 0
        return try [UInt8](unsafeUninitializedCapacity: raw) { out, initialized in
            /// Places `n` decoded bytes that start at byte `at` of the (filtered) stream.
            func place(_ src: UnsafeRawPointer, _ n: Int, at: Int) {
                guard n > 0 else { return }
                if shuffled {
                    starkv_unshuffle_range(src.assumingMemoryBound(to: UInt8.self), n, at, out.baseAddress, count, width)
                } else {
                    (out.baseAddress! + at).initialize(from: src.assumingMemoryBound(to: UInt8.self), count: n)
                }
            }
            switch d.codec {
            case .none:
                guard stored == d.rawBytes else {
                    throw DecodeError.malformed("stored \(stored) bytes but the descriptor says \(raw) raw bytes")
                }
                var at = 0
                while at < raw {
                    let n = min(piece, raw - at)
                    try file.read(into: buffer, count: n, at: offset + UInt64(at))
                    place(buffer, n, at: at)
                    at += n
                }
            case .zstd:
                try decodeZstd(file: file, offset: offset, stored: stored, raw: raw, buffer: buffer, piece: piece, place: place)
            }
            initialized = raw
        }
    }

    /// Streams one zstd frame from the file; checks that it declares exactly `raw` content bytes,
    /// produces exactly that many, and is followed by nothing.
    private static func decodeZstd(
        file: TraceFile, offset: UInt64, stored: UInt64, raw: Int, buffer: UnsafeMutableRawPointer, piece: Int,
        place: (UnsafeRawPointer, Int, Int) -> Void
    ) throws {
        // The frame header (at most 18 bytes) must declare the content size.
        let headLength = Int(min(stored, 18))
        var head = [UInt8](repeating: 0, count: max(headLength, 1))
        try head.withUnsafeMutableBytes { try file.read(into: $0.baseAddress!, count: headLength, at: offset) }
        let declared = head.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, headLength) }
        guard declared == UInt64(raw) else {
            let what = declared == ZSTD_CONTENTSIZE_UNKNOWN ? "no content size" : declared == ZSTD_CONTENTSIZE_ERROR ? "no valid frame header" : "\(declared) content bytes"
            throw DecodeError.malformed("zstd frame declares \(what), descriptor says \(raw)")
        }
        guard let dctx = ZSTD_createDCtx() else { throw DecodeError.malformed("cannot create a zstd context") }
        defer { ZSTD_freeDCtx(dctx) }
        // The window can be no larger than the content (single-segment frames) or 2^27 bytes.
        ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, 27)
        let outCapacity = ZSTD_DStreamOutSize()
        let outBuffer = UnsafeMutableRawPointer.allocate(byteCount: outCapacity, alignment: 16)
        defer { outBuffer.deallocate() }
        var produced = 0
        var consumed: UInt64 = 0
        var frameDone = false
        while consumed < stored {
            let n = Int(min(UInt64(piece), stored - consumed))
            try file.read(into: buffer, count: n, at: offset + consumed)
            consumed += UInt64(n)
            var input = ZSTD_inBuffer(src: buffer, size: n, pos: 0)
            while input.pos < input.size {
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
            }
        }
        // Flush whatever zstd still holds.
        while !frameDone {
            var input = ZSTD_inBuffer(src: buffer, size: 0, pos: 0)
            var output = ZSTD_outBuffer(dst: outBuffer, size: outCapacity, pos: 0)
            let ret = ZSTD_decompressStream(dctx, &output, &input)
            if ZSTD_isError(ret) != 0 { throw DecodeError.malformed(String(cString: ZSTD_getErrorName(ret))) }
            guard output.pos <= raw - produced else {
                throw DecodeError.malformed("zstd produced more than the \(raw) bytes the descriptor says")
            }
            place(outBuffer, output.pos, produced)
            produced += output.pos
            if ret == 0 { frameDone = true } else if output.pos == 0 {
                throw DecodeError.malformed("zstd frame is cut off")
            }
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
