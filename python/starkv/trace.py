"""A lazy reader of StarKV traces (schemas/FORMAT.md): opening reads the file header, the HEAD
record and the footer's step index (or, for a footer-less file, only the frame headers and STEP
records); `tensor(step, field, layer)` then reads and checks one chunk. Memory is bounded by one
chunk, whatever the file size. `starkv_recorder.TraceReader` is the whole-file checker.
"""
from __future__ import annotations

import os
import struct
from typing import BinaryIO, Iterator

import numpy as np

from starkv_recorder._proto import trace_pb2 as pb
from starkv_recorder.checksum import crc32c
from starkv_recorder.errors import TraceChecksumError, TraceFormatError
from starkv_recorder.format import (CHUNK_LIMIT_BYTES, FILE_HEADER_BYTES, FILE_MAGIC,
                                    FLAG_SKIPPABLE, FRAME_HEADER_BYTES, KIND_CHNK, KIND_FOOT, KIND_HEAD, KIND_STEP,
                                    MESSAGE_LIMIT_BYTES, TRAILER_BYTES, TRAILER_MAGIC, VERSION_MAJOR, check_chunk_descriptor,
                                    decode_chunk_payload)

_FRAME = struct.Struct("<4sIQI")


class TraceFile:
    """Lazy, checked access to a trace's steps and tensors.

    >>> with TraceFile("traces/sample-1280x720.starkv") as t:                 # doctest: +SKIP
    ...     rec = t.step(0)                      # StepRecord protobuf (prompt length, images, chunks)
    ...     a = t.tensor(0, "colsum_all", layer=3)   # numpy array (H, L), read on demand
    """

    def __init__(self, path: str | os.PathLike[str], *, message_limit: int = MESSAGE_LIMIT_BYTES,
                 chunk_limit: int = CHUNK_LIMIT_BYTES):
        self.path = os.fspath(path)
        self._message_limit = message_limit
        self._chunk_limit = chunk_limit
        self._f: BinaryIO = open(self.path, "rb")
        #: Bytes read from the file so far (a check that access stays lazy).
        self.bytes_read = 0
        try:
            self._size = os.fstat(self._f.fileno()).st_size
            self._open()
        except BaseException:
            self._f.close()
            raise

    # -- plumbing ---------------------------------------------------------------------------
    def _read(self, offset: int, n: int) -> bytes:
        if offset < 0 or n < 0 or offset + n > self._size:
            raise TraceFormatError(f"{self.path} @ {offset}: {n} bytes needed, file has {self._size}")
        self._f.seek(offset)
        b = self._f.read(n)
        self.bytes_read += len(b)
        if len(b) != n:
            raise TraceFormatError(f"{self.path} @ {offset}: short read ({len(b)} of {n} bytes)")
        return b

    def _frame_header(self, off: int) -> tuple[bytes, int, int, int, int]:
        """Checks a frame header; returns (kind, flags, payload offset, payload length, payload CRC32C)."""
        h = self._read(off, FRAME_HEADER_BYTES)
        kind, flags, length, pcrc = _FRAME.unpack_from(h, 0)
        (hcrc,) = struct.unpack_from("<I", h, 20)
        if crc32c(h[:20]) != hcrc:
            raise TraceChecksumError(f"{self.path} @ {off}: frame header CRC32C mismatch")
        limit = self._chunk_limit if kind == KIND_CHNK else self._message_limit
        if length > limit:
            raise TraceFormatError(f"{self.path} @ {off}: {kind!r} payload of {length} bytes exceeds the limit {limit}")
        start = off + FRAME_HEADER_BYTES
        if start + length > self._size:
            raise TraceFormatError(f"{self.path} @ {off}: truncated {kind!r} payload ({length} bytes declared)")
        return kind, flags, start, length, pcrc

    def _payload(self, off: int, expect: bytes) -> tuple[bytes, int]:
        kind, _, start, length, pcrc = self._frame_header(off)
        if kind != expect:
            raise TraceFormatError(f"{self.path} @ {off}: found {kind!r}, expected {expect!r}")
        data = self._read(start, length)
        if crc32c(data) != pcrc:
            raise TraceChecksumError(f"{self.path} @ {off}: {kind!r} payload CRC32C mismatch")
        return data, start + length

    def _open(self) -> None:
        head = self._read(0, FILE_HEADER_BYTES) if self._size >= FILE_HEADER_BYTES else b""
        if head[:8] != FILE_MAGIC:
            raise TraceFormatError(f"{self.path} @ 0: not a StarKV trace (bad magic)")
        major, _minor, _ = struct.unpack_from("<HHI", head, 8)
        if major != VERSION_MAJOR:
            raise TraceFormatError(f"{self.path} @ 8: trace major version {major}, this reader reads {VERSION_MAJOR}")
        data, self._after_head = self._payload(FILE_HEADER_BYTES, KIND_HEAD)
        self.header: pb.TraceHeader = pb.TraceHeader.FromString(data)
        self.footer: pb.TraceFooter | None = None
        self._offsets: list[int] = []
        self._records: dict[int, pb.StepRecord] = {}
        foot_off = self._trailer_footer_offset()
        if foot_off is not None:
            data, _ = self._payload(foot_off, KIND_FOOT)
            self.footer = pb.TraceFooter.FromString(data)
            self._offsets = [int(e.offset) for e in self.footer.steps]
            for k, off in enumerate(self._offsets):
                if not (self._after_head <= off < foot_off):
                    raise TraceFormatError(f"{self.path}: footer entry {k} points at {off}, outside the steps")
        else:
            self._scan()

    def _trailer_footer_offset(self) -> int | None:
        if self._size < FILE_HEADER_BYTES + TRAILER_BYTES:
            return None
        t = self._read(self._size - TRAILER_BYTES, TRAILER_BYTES)
        if t[-8:] != TRAILER_MAGIC:
            return None
        (crc,) = struct.unpack_from("<I", t, 12)
        if crc32c(t[:12]) != crc:
            return None
        (off,) = struct.unpack_from("<Q", t, 0)
        if not (self._after_head <= off < self._size - TRAILER_BYTES):
            raise TraceFormatError(f"{self.path}: trailer points at footer offset {off}, outside the file")
        return int(off)

    def _scan(self) -> None:
        """Footer-less file (recorder killed): walk frame headers, reading STEP records only."""
        off = self._after_head
        while off + FRAME_HEADER_BYTES <= self._size:
            try:
                kind, flags, start, length, _ = self._frame_header(off)
            except TraceFormatError:
                break  # torn tail
            if kind == KIND_STEP:
                try:
                    data, end = self._payload(off, KIND_STEP)
                except TraceFormatError:
                    break
                rec = pb.StepRecord.FromString(data)
                need = end + sum(FRAME_HEADER_BYTES + int(c.stored_bytes) for c in rec.chunks)
                if need > self._size:
                    break  # last step incomplete
                self._records[len(self._offsets)] = rec
                self._offsets.append(off)
                off = need
            elif kind == KIND_FOOT or flags & FLAG_SKIPPABLE:
                off = start + length
            else:
                raise TraceFormatError(f"{self.path} @ {off}: unexpected record {kind!r} between steps")

    # -- public API -------------------------------------------------------------------------
    @property
    def footer_missing(self) -> bool:
        return self.footer is None

    def __len__(self) -> int:
        return len(self._offsets)

    def __enter__(self) -> "TraceFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    def _pos(self, step: int) -> int:
        if not isinstance(step, (int, np.integer)) or not (0 <= step < len(self._offsets)):
            raise IndexError(f"{self.path}: step position {step!r} out of range (trace has {len(self._offsets)} steps)")
        return int(step)

    def step(self, step: int) -> pb.StepRecord:
        """The STEP record at position `step` (0-based), read and checked on first use."""
        pos = self._pos(step)
        rec = self._records.get(pos)
        if rec is None:
            data, _ = self._payload(self._offsets[pos], KIND_STEP)
            rec = pb.StepRecord.FromString(data)
            if self.footer is not None and rec.step_index != self.footer.steps[pos].step_index:
                raise TraceFormatError(f"{self.path}: footer entry {pos} says step {self.footer.steps[pos].step_index}, "
                                       f"the record says {rec.step_index}")
            self._records[pos] = rec
        return rec

    def fields(self, step: int) -> list[tuple[str, int]]:
        """(field, layer) of every chunk of the step."""
        return [(c.field, c.layer) for c in self.step(step).chunks]

    def tensor(self, step: int, field: str, layer: int = -1) -> np.ndarray:
        """Reads, checks and decodes one chunk (bf16 is widened to float32)."""
        pos = self._pos(step)
        rec = self.step(pos)
        _, _, start, length, _ = self._frame_header(self._offsets[pos])
        off = start + length
        for desc in rec.chunks:
            if desc.field == field and desc.layer == layer:
                return self._decode(rec, desc, off)
            off += FRAME_HEADER_BYTES + int(desc.stored_bytes)
        raise KeyError(f"{self.path}: step {rec.step_index} has no chunk {field!r} layer {layer}")

    def layers(self, step: int, field: str) -> Iterator[tuple[int, np.ndarray]]:
        """(layer, array) for every layer of `field` in the step, one chunk in memory at a time."""
        for f, layer in self.fields(step):
            if f == field:
                yield layer, self.tensor(step, field, layer)

    def _decode(self, rec: pb.StepRecord, desc: pb.ChunkDescriptor, off: int) -> np.ndarray:
        loc, npdt = check_chunk_descriptor(self.path, self.header, rec, desc)
        kind, _, start, length, pcrc = self._frame_header(off)
        if kind != KIND_CHNK or length != desc.stored_bytes:
            raise TraceFormatError(f"{loc}: expected a CHNK of {desc.stored_bytes} bytes at {off}, found {kind!r} of {length}")
        data = self._read(start, length)
        crc = crc32c(data)
        if crc != pcrc or crc != desc.crc32c:
            raise TraceChecksumError(f"{loc}: chunk CRC32C mismatch")
        return decode_chunk_payload(loc, desc, npdt, data)
