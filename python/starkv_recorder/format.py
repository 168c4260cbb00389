"""Trace format v1 (schemas/FORMAT.md): a writer and a reader.

The writer produces files byte-compatible with the Swift reader (`starkv validate/inspect`):
16-byte file header, framed records (24-byte frame header with CRC32C of the payload and of
the frame header itself), HEAD / STEP + CHNK* / FOOT records, and the 24-byte trailer. Tensor
chunks are raw little-endian arrays, optionally byte-shuffled (FILTER_BYTE_SHUFFLE) and
compressed as one zstd frame with content size and frame checksum (CODEC_ZSTD).

The reader checks every checksum, the declared shapes against the header geometry and the step's
prompt length, and the payload limits, and raises `TraceFormatError` / `TraceChecksumError`
naming the file, offset, step and field.
"""
from __future__ import annotations

import dataclasses
import os
import struct
from typing import BinaryIO, Iterable, Mapping, Sequence

import numpy as np
import zstandard

from ._proto import trace_pb2 as pb
from .checksum import crc32c
from .errors import TraceChecksumError, TraceFormatError, TraceWriteError

FILE_MAGIC = b"STARKVTR"
TRAILER_MAGIC = b"STKV_END"
VERSION_MAJOR = 1
VERSION_MINOR = 0
FILE_HEADER_BYTES = 16
FRAME_HEADER_BYTES = 24
TRAILER_BYTES = 24
FLAG_SKIPPABLE = 1

KIND_HEAD = b"HEAD"
KIND_STEP = b"STEP"
KIND_CHNK = b"CHNK"
KIND_FOOT = b"FOOT"

#: Default payload limits of a reader (FORMAT.md "Record frame").
MESSAGE_LIMIT_BYTES = 64 * 1024 * 1024
CHUNK_LIMIT_BYTES = 4 * 1024 * 1024 * 1024

#: Field names of the catalog (FORMAT.md "Field catalog").
WIN_SUM = "win_sum"
HID_NORM = "hid_norm"
GUIKV_RESID = "guikv_resid"
COLSUM_ALL = "colsum_all"
COLSUM_POSTVIS = "colsum_postvis"
COUNT_GT_001 = "count_gt_001"
N_VALID = "n_valid"
DECODE_ATTN_SUM = "decode_attn_sum"
WIN_ROWS = "win_rows"
GOLDEN_KEPT_PREFIX = "golden_kept."

CORE_FIELDS = (WIN_SUM, HID_NORM, GUIKV_RESID)
STANDARD_FIELDS = CORE_FIELDS + (COLSUM_ALL, COLSUM_POSTVIS, COUNT_GT_001, N_VALID, DECODE_ATTN_SUM)
FULL_FIELDS = STANDARD_FIELDS + (WIN_ROWS,)
FIELDS_BY_FIDELITY = {"core": CORE_FIELDS, "standard": STANDARD_FIELDS, "full": FULL_FIELDS}
FIDELITY_ENUM = {"core": pb.FIDELITY_CORE, "standard": pb.FIDELITY_STANDARD, "full": pb.FIDELITY_FULL}

_NP_TO_DTYPE = {
    np.dtype("<f2"): pb.DTYPE_F16,
    np.dtype("<f4"): pb.DTYPE_F32,
    np.dtype("<f8"): pb.DTYPE_F64,
    np.dtype("<i4"): pb.DTYPE_I32,
    np.dtype("<i8"): pb.DTYPE_I64,
    np.dtype("u1"): pb.DTYPE_U8,
}
#: numpy dtype used to hold each stored dtype (bf16 is read as its raw uint16 bits, then widened).
DTYPE_TO_NP = {
    pb.DTYPE_F16: np.dtype("<f2"),
    pb.DTYPE_BF16: np.dtype("<u2"),
    pb.DTYPE_F32: np.dtype("<f4"),
    pb.DTYPE_F64: np.dtype("<f8"),
    pb.DTYPE_I32: np.dtype("<i4"),
    pb.DTYPE_I64: np.dtype("<i8"),
    pb.DTYPE_U8: np.dtype("u1"),
}
DTYPE_NAMES = {
    pb.DTYPE_F16: "f16", pb.DTYPE_BF16: "bf16", pb.DTYPE_F32: "f32", pb.DTYPE_F64: "f64",
    pb.DTYPE_I32: "i32", pb.DTYPE_I64: "i64", pb.DTYPE_U8: "u8",
}

_FRAME = struct.Struct("<4sIQI")  # kind, flags, length, payload crc (20 bytes) + header crc
_TRAILER = struct.Struct("<QI")


def byte_shuffle(raw: bytes, element_size: int) -> bytes:
    """FILTER_BYTE_SHUFFLE: output byte (p*n + i) is byte p of element i."""
    if element_size <= 1 or len(raw) == 0:
        return bytes(raw)
    if len(raw) % element_size:
        raise ValueError(f"byte_shuffle: {len(raw)} bytes is not a multiple of element size {element_size}")
    a = np.frombuffer(raw, dtype=np.uint8).reshape(-1, element_size)
    return np.ascontiguousarray(a.T).tobytes()


def byte_unshuffle(data: bytes, element_size: int) -> bytes:
    """Inverse of `byte_shuffle`."""
    if element_size <= 1 or len(data) == 0:
        return bytes(data)
    if len(data) % element_size:
        raise ValueError(f"byte_unshuffle: {len(data)} bytes is not a multiple of element size {element_size}")
    a = np.frombuffer(data, dtype=np.uint8).reshape(element_size, -1)
    return np.ascontiguousarray(a.T).tobytes()


def frame_header(kind: bytes, flags: int, payload: bytes) -> bytes:
    """The 24-byte frame header of a record carrying `payload`."""
    first = _FRAME.pack(kind, flags, len(payload), crc32c(payload))
    return first + struct.pack("<I", crc32c(first))


def expected_shape(header: pb.TraceHeader, field: str, prompt_length: int,
                   visual_tokens: int, previous_visual_tokens: int) -> tuple[tuple[int, ...] | None, set[int]]:
    """The shape and allowed dtypes a field must have (FORMAT.md "Field catalog").
    Returns (None, dtypes) for golden kept sets, whose second axis is free."""
    m = header.model
    H, Hkv, L = m.num_query_heads, m.num_kv_heads, prompt_length
    if field == WIN_SUM:
        return (len(header.window_sizes), H, L), {pb.DTYPE_F16, pb.DTYPE_F32}
    if field == HID_NORM:
        return (visual_tokens,), {pb.DTYPE_F32}
    if field == GUIKV_RESID:
        return (Hkv, previous_visual_tokens), {pb.DTYPE_F16, pb.DTYPE_F32}
    if field in (COLSUM_ALL, COLSUM_POSTVIS, DECODE_ATTN_SUM):
        return (H, L), {pb.DTYPE_F32}
    if field == COUNT_GT_001:
        return (H,), {pb.DTYPE_I64}
    if field == N_VALID:
        return (1,), {pb.DTYPE_I64}
    if field == WIN_ROWS:
        return (H, header.win_rows_max, L), {pb.DTYPE_F16}
    if field.startswith(GOLDEN_KEPT_PREFIX):
        return None, {pb.DTYPE_I32}
    raise KeyError(field)


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One tensor of a step: catalog `field` at decoder `layer` (-1 = step-level)."""
    field: str
    layer: int
    array: np.ndarray


@dataclasses.dataclass
class Step:
    """One agent step (one prefill) as the writer takes it (trace.proto StepRecord)."""
    episode_id: str
    step_index: int
    prompt_length: int
    token_types: np.ndarray          # uint8 [L]
    token_ids: np.ndarray            # int32 [L]
    images: list                     # list[pb.ImageEntry]
    chunks: list                     # list[Chunk]
    generated_tokens: int = 0
    reset: bool = False
    step_in_episode: int = 0
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)


def make_header(*, model_id: str, num_layers: int, num_query_heads: int, num_kv_heads: int,
                head_dim: int, hidden_size: int, vocab_size: int, intermediate_size: int = 0,
                dtype: int = pb.DTYPE_BF16, fidelity: str = "standard",
                fields: Sequence[str] | None = None, window_sizes: Sequence[int] = (8, 16, 32, 64),
                win_rows_max: int = 0, recorder_name: str = "starkv-record (python)",
                recorder_version: str = "", command_line: str = "",
                agent: pb.AgentLoop | None = None, metadata: Mapping[str, str] | None = None) -> pb.TraceHeader:
    """Builds a TraceHeader; `fields` defaults to every field of `fidelity`."""
    if fidelity not in FIDELITY_ENUM:
        raise TraceWriteError(f"unknown fidelity {fidelity!r}; use core, standard or full")
    h = pb.TraceHeader()
    g = h.model
    g.model_id = model_id
    g.num_layers, g.num_query_heads, g.num_kv_heads = num_layers, num_query_heads, num_kv_heads
    g.head_dim, g.hidden_size, g.vocab_size = head_dim, hidden_size, vocab_size
    g.intermediate_size, g.dtype = intermediate_size, dtype
    if not recorder_version:
        from . import __version__ as recorder_version  # noqa: PLC0415
    h.recorder.name, h.recorder.version, h.recorder.command_line = recorder_name, recorder_version, command_line
    h.fidelity = FIDELITY_ENUM[fidelity]
    h.fields.extend(list(fields) if fields is not None else list(FIELDS_BY_FIDELITY[fidelity]))
    h.window_sizes.extend(int(w) for w in window_sizes)
    if WIN_ROWS in h.fields and win_rows_max <= 0:
        raise TraceWriteError("header lists win_rows but win_rows_max is 0")
    h.win_rows_max = win_rows_max if WIN_ROWS in h.fields else 0
    if agent is not None:
        h.agent.CopyFrom(agent)
    for k, v in (metadata or {}).items():
        h.metadata[k] = v
    return h


class TraceWriter:
    """Writes a trace file step by step (append-only: every completed step is readable even if
    the process dies before `close()`, which writes the footer and trailer).

    Use as a context manager. `compress` selects CODEC_ZSTD (level `zstd_level`) and
    `shuffle` FILTER_BYTE_SHUFFLE for multi-byte dtypes."""

    _counter = 0

    def __init__(self, path: str | os.PathLike, header: pb.TraceHeader, *, compress: bool = True,
                 shuffle: bool = True, zstd_level: int = 3, overwrite: bool = True):
        self.path = os.fspath(path)
        self.header = header
        self._validate_header(header)
        self._compress = compress
        self._shuffle = shuffle
        self._cctx = zstandard.ZstdCompressor(level=zstd_level, write_checksum=True, write_content_size=True)
        if os.path.exists(self.path) and not overwrite:
            raise TraceWriteError(f"{self.path}: already exists; pass overwrite=True to replace it")
        # Written under a temporary name beside the final one and renamed by close(): a reader never
        # sees a partial trace at `path`, and a recorder killed mid-run leaves `temporary_path`, which
        # `starkv recover` turns into a complete trace (same naming as the Swift writer: NAME.tmp-PID-N).
        TraceWriter._counter += 1
        self.temporary_path = f"{self.path}.tmp-{os.getpid()}-{TraceWriter._counter}"
        self._overwrite = overwrite
        self._fh: BinaryIO | None = open(self.temporary_path, "xb")
        self._offset = 0
        self._index: list[pb.StepIndexEntry] = []
        self._total_raw = 0
        self._total_stored = 0
        self._last_step_index: int | None = None
        self._write(FILE_MAGIC + struct.pack("<HHI", VERSION_MAJOR, VERSION_MINOR, 0))
        self._record(KIND_HEAD, header.SerializeToString(deterministic=True))
        self._fh.flush()

    @staticmethod
    def _validate_header(h: pb.TraceHeader) -> None:
        m = h.model
        if m.num_layers == 0 or m.num_query_heads == 0 or m.num_kv_heads == 0:
            raise TraceWriteError("trace header: model geometry needs num_layers, num_query_heads, num_kv_heads > 0")
        if m.num_query_heads % m.num_kv_heads:
            raise TraceWriteError(f"trace header: {m.num_query_heads} query heads is not a multiple of "
                                  f"{m.num_kv_heads} KV heads")
        ws = list(h.window_sizes)
        if WIN_SUM in h.fields and (not ws or any(w <= 0 for w in ws) or ws != sorted(set(ws))):
            raise TraceWriteError(f"trace header: window_sizes {ws} must be positive and strictly ascending")
        for f in h.fields:
            try:
                expected_shape(h, f, 1, 0, 0)
            except KeyError:
                raise TraceWriteError(f"trace header: unknown field {f!r} (FORMAT.md field catalog)") from None

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()  # an error mid-recording: keep the partial trace recoverable, never at `path`
        else:
            self.close()

    def _write(self, b: bytes) -> None:
        assert self._fh is not None
        self._fh.write(b)
        self._offset += len(b)

    def _record(self, kind: bytes, payload: bytes, flags: int = 0) -> None:
        self._write(frame_header(kind, flags, payload))
        self._write(payload)

    def encode_chunk(self, field: str, layer: int, array: np.ndarray) -> tuple[pb.ChunkDescriptor, bytes]:
        """Descriptor and stored bytes of one tensor (filter, then codec)."""
        a = np.asarray(array)
        dt = _NP_TO_DTYPE.get(a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype)
        if dt is None:
            raise TraceWriteError(f"field {field!r} layer {layer}: numpy dtype {a.dtype} has no trace dtype "
                                  f"(use float16, float32, float64, int32, int64 or uint8)")
        raw = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()
        size = a.dtype.itemsize
        filt = pb.FILTER_BYTE_SHUFFLE if (self._shuffle and size > 1) else pb.FILTER_NONE
        data = byte_shuffle(raw, size) if filt == pb.FILTER_BYTE_SHUFFLE else raw
        codec = pb.CODEC_ZSTD if self._compress else pb.CODEC_NONE
        if codec == pb.CODEC_ZSTD:
            data = self._cctx.compress(data)
        d = pb.ChunkDescriptor(field=field, layer=layer, dtype=dt, shape=[int(s) for s in a.shape],
                               filter=filt, codec=codec, raw_bytes=len(raw), stored_bytes=len(data),
                               crc32c=crc32c(data))
        return d, data

    def write_step(self, step: Step) -> None:
        """Appends one step (its STEP record and all its CHNK records) and flushes."""
        if self._fh is None:
            raise TraceWriteError(f"{self.path}: writer is closed")
        where = f"{self.path}: step {step.step_index}"
        if self._last_step_index is not None and step.step_index <= self._last_step_index:
            raise TraceWriteError(f"{where}: step_index must increase (previous {self._last_step_index})")
        L = int(step.prompt_length)
        tt = np.asarray(step.token_types, dtype=np.uint8)
        ids = np.asarray(step.token_ids)
        if tt.shape != (L,):
            raise TraceWriteError(f"{where}: token_types has shape {tt.shape}, expected ({L},)")
        if ids.size and ids.shape != (L,):
            raise TraceWriteError(f"{where}: token_ids has shape {ids.shape}, expected ({L},) or empty")
        if tt.size and int(tt.max()) > pb.TOKEN_GENERATION_PROMPT:
            raise TraceWriteError(f"{where}: token_types holds value {int(tt.max())} > 6")
        prev_end = 0
        for i, im in enumerate(step.images):
            if not (prev_end <= im.span_start < im.span_end <= L):
                raise TraceWriteError(f"{where}: image {i} span [{im.span_start}, {im.span_end}) is empty, "
                                      f"overlaps the previous one or exceeds L={L}")
            if im.grid_t * im.grid_h * im.grid_w != im.span_end - im.span_start:
                raise TraceWriteError(f"{where}: image {i} grid {im.grid_t}x{im.grid_h}x{im.grid_w} does not "
                                      f"match its span length {im.span_end - im.span_start}")
            prev_end = im.span_end
        V = sum(im.span_end - im.span_start for im in step.images)
        Vprev = V - (step.images[-1].span_end - step.images[-1].span_start if step.images else 0)
        descs, payloads, seen = [], [], set()
        for c in step.chunks:
            loc = f"{where} field {c.field!r} layer {c.layer}"
            if c.field not in self.header.fields:
                raise TraceWriteError(f"{loc}: the header does not list this field")
            if (c.field, c.layer) in seen:
                raise TraceWriteError(f"{loc}: written twice")
            seen.add((c.field, c.layer))
            if not (-1 <= c.layer < self.header.model.num_layers):
                raise TraceWriteError(f"{loc}: layer out of range [0, {self.header.model.num_layers})")
            shape, dtypes = expected_shape(self.header, c.field, L, V, Vprev)
            d, data = self.encode_chunk(c.field, c.layer, c.array)
            if d.dtype not in dtypes:
                raise TraceWriteError(f"{loc}: dtype {DTYPE_NAMES[d.dtype]} not allowed "
                                      f"({sorted(DTYPE_NAMES[x] for x in dtypes)})")
            if shape is not None and tuple(d.shape) != shape:
                raise TraceWriteError(f"{loc}: shape {tuple(d.shape)}, expected {shape}")
            descs.append(d)
            payloads.append(data)
        rec = pb.StepRecord(episode_id=step.episode_id, step_index=step.step_index, reset=step.reset,
                            prompt_length=L, generated_tokens=int(step.generated_tokens),
                            token_types=tt.tobytes(), token_ids=[int(x) for x in ids.reshape(-1)],
                            images=list(step.images), chunks=descs, step_in_episode=step.step_in_episode)
        for k, v in step.metadata.items():
            rec.metadata[k] = v
        start = self._offset
        self._record(KIND_STEP, rec.SerializeToString(deterministic=True))
        for d, data in zip(descs, payloads):
            self._record(KIND_CHNK, data)
            self._total_raw += d.raw_bytes
            self._total_stored += d.stored_bytes
        self._fh.flush()
        self._index.append(pb.StepIndexEntry(offset=start, step_index=step.step_index,
                                             episode_id=step.episode_id, prompt_length=L,
                                             length=self._offset - start))
        self._last_step_index = step.step_index

    def close(self) -> None:
        """Writes the footer and trailer and closes the file (idempotent)."""
        if self._fh is None:
            return
        foot = pb.TraceFooter(steps=self._index, total_raw_bytes=self._total_raw,
                              total_stored_bytes=self._total_stored)
        foot_offset = self._offset
        self._record(KIND_FOOT, foot.SerializeToString(deterministic=True))
        first = _TRAILER.pack(foot_offset, 0)
        self._write(first + struct.pack("<I", crc32c(first)) + TRAILER_MAGIC)
        fh, self._fh = self._fh, None
        try:
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fh.close()
        if not self._overwrite and os.path.exists(self.path):
            os.unlink(self.temporary_path)
            raise TraceWriteError(f"{self.path}: appeared while writing; not overwritten (trace removed)")
        os.replace(self.temporary_path, self.path)

    def abort(self) -> None:
        """Closes the file without footer (as if the process had died): the completed steps stay
        readable in `temporary_path`, which `starkv recover` turns into a complete trace."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclasses.dataclass
class StepEntry:
    """A step located in a trace: its STEP record and where its chunks' payloads lie."""
    offset: int
    record: pb.StepRecord
    chunk_offsets: list  # payload offset of each chunk, in descriptor order


class TraceReader:
    """Reads and checks a trace file (whole-file scan; footer used only to cross-check).

    `steps` lists every complete step; `footer_missing` is True when the trailer/footer are
    absent (recorder killed). `tensor(step_pos, field, layer)` decodes one chunk."""

    def __init__(self, path: str | os.PathLike, *, message_limit: int = MESSAGE_LIMIT_BYTES,
                 chunk_limit: int = CHUNK_LIMIT_BYTES):
        self.path = os.fspath(path)
        with open(self.path, "rb") as f:
            self._data = f.read()
        self._message_limit = message_limit
        self._chunk_limit = chunk_limit
        self.steps: list[StepEntry] = []
        self.footer: pb.TraceFooter | None = None
        self.footer_missing = True
        self._parse()

    def _err(self, offset: int, msg: str) -> TraceFormatError:
        return TraceFormatError(f"{self.path} @ {offset}: {msg}")

    def _frame(self, off: int) -> tuple[bytes, int, int, int]:
        d = self._data
        if off + FRAME_HEADER_BYTES > len(d):
            raise self._err(off, "truncated record header")
        kind, flags, length, pcrc = _FRAME.unpack_from(d, off)
        (hcrc,) = struct.unpack_from("<I", d, off + 20)
        if crc32c(d[off:off + 20]) != hcrc:
            raise TraceChecksumError(f"{self.path} @ {off}: frame header CRC32C mismatch")
        limit = self._chunk_limit if kind == KIND_CHNK else self._message_limit
        if length > limit:
            raise self._err(off, f"{kind!r} payload of {length} bytes exceeds the limit {limit}")
        start = off + FRAME_HEADER_BYTES
        if start + length > len(d):
            raise self._err(off, f"truncated {kind!r} payload ({length} bytes declared)")
        if crc32c(d[start:start + length]) != pcrc:
            raise TraceChecksumError(f"{self.path} @ {off}: {kind!r} payload CRC32C mismatch")
        return kind, flags, start, length

    def _parse(self) -> None:
        d = self._data
        if len(d) < FILE_HEADER_BYTES or d[:8] != FILE_MAGIC:
            raise self._err(0, "not a StarKV trace (bad magic)")
        major, minor, _ = struct.unpack_from("<HHI", d, 8)
        if major != VERSION_MAJOR:
            raise self._err(8, f"trace major version {major}, this reader reads {VERSION_MAJOR}")
        off = FILE_HEADER_BYTES
        kind, _, start, length = self._frame(off)
        if kind != KIND_HEAD:
            raise self._err(off, f"first record is {kind!r}, expected HEAD")
        self.header = pb.TraceHeader.FromString(d[start:start + length])
        off = start + length
        while off < len(d):
            if self._has_trailer_at(off):
                break
            try:
                kind, flags, start, length = self._frame(off)
            except TraceFormatError:
                if self._trailer_valid():
                    raise
                break  # torn tail of a killed recorder
            if kind == KIND_STEP:
                rec = pb.StepRecord.FromString(d[start:start + length])
                step_off = off
                off = start + length
                offsets = []
                ok = True
                for i, desc in enumerate(rec.chunks):
                    try:
                        ck, _, cstart, clen = self._frame(off)
                    except TraceFormatError:
                        if self._trailer_valid():
                            raise
                        ok = False
                        break
                    if ck != KIND_CHNK:
                        raise self._err(off, f"step {rec.step_index}: expected CHNK {i} ({desc.field!r}), got {ck!r}")
                    if clen != desc.stored_bytes or crc32c(d[cstart:cstart + clen]) != desc.crc32c:
                        raise TraceChecksumError(f"{self.path} @ {off}: step {rec.step_index} chunk "
                                                 f"{desc.field!r} layer {desc.layer}: stored size/CRC differ "
                                                 f"from its descriptor")
                    offsets.append(cstart)
                    off = cstart + clen
                if not ok:
                    break
                self.steps.append(StepEntry(step_off, rec, offsets))
            elif kind == KIND_FOOT:
                self.footer = pb.TraceFooter.FromString(d[start:start + length])
                off = start + length
            elif flags & FLAG_SKIPPABLE:
                off = start + length
            else:
                raise self._err(off, f"unknown mandatory record kind {kind!r}")
        self.footer_missing = not (self._trailer_valid() and self.footer is not None)
        if self.footer is not None and len(self.footer.steps) != len(self.steps):
            raise self._err(len(d), f"footer lists {len(self.footer.steps)} steps, file holds {len(self.steps)}")

    def _has_trailer_at(self, off: int) -> bool:
        return off == len(self._data) - TRAILER_BYTES and self._trailer_valid()

    def _trailer_valid(self) -> bool:
        d = self._data
        if len(d) < FILE_HEADER_BYTES + TRAILER_BYTES or d[-8:] != TRAILER_MAGIC:
            return False
        t = d[-TRAILER_BYTES:]
        (crc,) = struct.unpack_from("<I", t, 12)
        return crc32c(t[:12]) == crc

    def step_index_of(self, step_index: int) -> int:
        """Position in `steps` of the step whose `step_index` is given."""
        for i, s in enumerate(self.steps):
            if s.record.step_index == step_index:
                return i
        raise KeyError(f"{self.path}: no step with step_index {step_index}")

    def fields(self, pos: int) -> list[tuple[str, int]]:
        """(field, layer) of every chunk of the step at position `pos`."""
        return [(c.field, c.layer) for c in self.steps[pos].record.chunks]

    def tensor(self, pos: int, field: str, layer: int = -1) -> np.ndarray:
        """Decodes one chunk of the step at position `pos`; bf16 is widened to float32."""
        entry = self.steps[pos]
        rec = entry.record
        for desc, coff in zip(rec.chunks, entry.chunk_offsets):
            if desc.field == field and desc.layer == layer:
                return self._decode(rec, desc, coff)
        raise KeyError(f"{self.path}: step {rec.step_index} has no chunk {field!r} layer {layer}")

    def _decode(self, rec: pb.StepRecord, desc: pb.ChunkDescriptor, coff: int) -> np.ndarray:
        loc, npdt = check_chunk_descriptor(self.path, self.header, rec, desc)
        data = self._data[coff:coff + desc.stored_bytes]
        return decode_chunk_payload(loc, desc, npdt, data)


def iter_chunks(arrays: Mapping[tuple[str, int], np.ndarray]) -> Iterable[Chunk]:
    """Chunks from a {(field, layer): array} mapping, in a stable order (layer, then catalog order)."""
    order = {f: i for i, f in enumerate(FULL_FIELDS)}
    for (field, layer) in sorted(arrays, key=lambda k: (k[1], order.get(k[0], len(order)), k[0])):
        yield Chunk(field, layer, arrays[(field, layer)])


def check_chunk_descriptor(path: str, header, rec, desc) -> tuple[str, np.dtype]:
    """Checks a chunk descriptor against its dtype, its raw size and the field catalog's shape for
    this step (schemas/FORMAT.md "Field catalog"); returns the location text used in errors and
    the NumPy dtype of the stored values."""
    loc = f"{path}: step {rec.step_index} field {desc.field!r} layer {desc.layer}"
    npdt = DTYPE_TO_NP.get(desc.dtype)
    if npdt is None:
        raise TraceFormatError(f"{loc}: unknown dtype {desc.dtype}")
    n = 1
    for s in desc.shape:
        n *= int(s)
    if n * npdt.itemsize != desc.raw_bytes:
        raise TraceFormatError(f"{loc}: raw_bytes {desc.raw_bytes} != product(shape) * dtype size")
    ims = list(rec.images)
    V = sum(i.span_end - i.span_start for i in ims)
    Vprev = V - (ims[-1].span_end - ims[-1].span_start if ims else 0)
    try:
        shape, dtypes = expected_shape(header, desc.field, rec.prompt_length, V, Vprev)
    except KeyError:
        shape, dtypes = None, set(DTYPE_TO_NP)
    if shape is not None and tuple(desc.shape) != shape:
        raise TraceFormatError(f"{loc}: shape {tuple(desc.shape)} does not match the catalog {shape}")
    if desc.dtype not in dtypes:
        raise TraceFormatError(f"{loc}: dtype {DTYPE_NAMES.get(desc.dtype)} not allowed for this field")
    return loc, npdt


def decode_chunk_payload(loc: str, desc, npdt: np.dtype, data: bytes) -> np.ndarray:
    """Decodes a chunk's stored bytes (already CRC-checked) as its descriptor says: zstd frame of
    exactly `raw_bytes`, byte un-shuffle, reshape; bf16 is widened to float32 (schemas/FORMAT.md
    "Tensor chunks"). `loc` names the step, field and layer in errors."""
    if desc.codec == pb.CODEC_ZSTD:
        size = zstandard.frame_content_size(data)
        if size != desc.raw_bytes:
            raise TraceFormatError(f"{loc}: zstd content size {size} != raw_bytes {desc.raw_bytes}")
        try:
            data = zstandard.ZstdDecompressor().decompress(data, max_output_size=desc.raw_bytes)
        except zstandard.ZstdError as e:
            raise TraceChecksumError(f"{loc}: zstd frame is corrupt ({e})") from None
    elif desc.codec != pb.CODEC_NONE:
        raise TraceFormatError(f"{loc}: unknown codec {desc.codec}")
    if len(data) != desc.raw_bytes:
        raise TraceFormatError(f"{loc}: decoded {len(data)} bytes, expected {desc.raw_bytes}")
    if desc.filter == pb.FILTER_BYTE_SHUFFLE:
        data = byte_unshuffle(data, npdt.itemsize)
    elif desc.filter != pb.FILTER_NONE:
        raise TraceFormatError(f"{loc}: unknown filter {desc.filter}")
    a = np.frombuffer(data, dtype=npdt).reshape([int(s) for s in desc.shape])
    if desc.dtype == pb.DTYPE_BF16:
        a = (a.astype(np.uint32) << 16).view(np.float32)
    return a.copy()
