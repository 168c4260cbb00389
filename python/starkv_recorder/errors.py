"""Typed errors of the recorder package. Every message names the file/step/layer/field involved."""
from __future__ import annotations


class StarKVError(Exception):
    """Base class of every error this package raises on bad input or a bad trace."""


class TraceFormatError(StarKVError):
    """A trace file is malformed: wrong magic or version, a truncated or oversized record,
    an unknown mandatory record kind, or a chunk whose descriptor does not match the header."""


class TraceChecksumError(TraceFormatError):
    """A CRC32C (frame header, payload, trailer) or zstd frame checksum does not match."""


class TraceWriteError(StarKVError):
    """A step handed to the writer does not describe a valid v1 trace step (shape, dtype,
    unknown field, non-monotone step index, writer already closed)."""


class FieldComputationError(StarKVError, ValueError):
    """The tensors handed to the field computation are inconsistent (shapes, spans, windows)."""


class RecorderError(StarKVError):
    """The live-model recorder cannot record this model or this generate() call."""
