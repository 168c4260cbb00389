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

    /// Raw bytes of a stored chunk; `rawBytes` was validated against the shape before.
    static func decode(_ stored: [UInt8], rawBytes: Int, elementWidth: Int, filter: ChunkFilter, codec: ChunkCodec)
        throws -> [UInt8]
    {
        var data: [UInt8]
        switch codec {
        case .none:
            guard stored.count == rawBytes else {
                throw ZstdError.message("stored \(stored.count) bytes but the descriptor says \(rawBytes) raw bytes")
            }
            data = stored
        case .zstd:
            let declared = stored.withUnsafeBytes { ZSTD_getFrameContentSize($0.baseAddress, stored.count) }
            guard declared == UInt64(rawBytes) else {
                throw ZstdError.message(
                    "zstd frame declares \(declared >= UInt64.max - 1 ? "no valid" : String(declared)) content bytes, descriptor says \(rawBytes)")
            }
            // No zero-fill: zstd writes every byte or the decode fails and the array is dropped.
            var got = 0
            data = try [UInt8](unsafeUninitializedCapacity: rawBytes) { dst, initialized in
                got = stored.withUnsafeBytes { src in ZSTD_decompress(dst.baseAddress, rawBytes, src.baseAddress, stored.count) }
                if ZSTD_isError(got) != 0 { throw ZstdError.message(String(cString: ZSTD_getErrorName(got))) }
                guard got == rawBytes else { throw ZstdError.message("zstd produced \(got) bytes, expected \(rawBytes)") }
                initialized = rawBytes
            }
        }
        if filter == .byteShuffle, elementWidth > 1, rawBytes % elementWidth == 0, rawBytes > 0 {
            data = data.withUnsafeBufferPointer { src in
                [UInt8](unsafeUninitializedCapacity: rawBytes) { dst, initialized in
                    starkv_unshuffle(src.baseAddress, dst.baseAddress, rawBytes / elementWidth, elementWidth)
                    initialized = rawBytes
                }
            }
        }
        return data
    }

    enum ZstdError: Error { case message(String) }
}
