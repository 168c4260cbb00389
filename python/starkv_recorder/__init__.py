"""starkv_recorder: record per-step attention traces (StarKV trace format v1, schemas/FORMAT.md)
from Hugging Face Qwen2.5-VL / Qwen2 GUI agents, and read them back.

Public API:
  Recorder                  -- `with Recorder(path, model, processor, fields=...) as rec:` (needs torch)
  compute_layer_fields      -- the per-layer fields from plain q/k/hidden tensors (needs torch)
  guikv_residuals, DecodeAttentionSum
  TraceWriter, TraceReader, Step, Chunk, make_header -- trace format v1
  crc32c                    -- CRC32C (Castagnoli)
"""
__version__ = "0.1.0"

from .checksum import crc32c, crc32c_reference
from .errors import (FieldComputationError, RecorderError, StarKVError, TraceChecksumError, TraceFormatError,
                     TraceWriteError)
from .format import Chunk, Step, TraceReader, TraceWriter, make_header
from ._proto import trace_pb2


def __getattr__(name):  # torch-dependent parts load lazily
    if name in ("Recorder",):
        from .recorder import Recorder
        return Recorder
    if name in ("compute_layer_fields", "guikv_residuals", "DecodeAttentionSum", "resolve_fields"):
        from . import fields
        return getattr(fields, name)
    raise AttributeError(name)


__all__ = ["Recorder", "compute_layer_fields", "guikv_residuals", "DecodeAttentionSum", "TraceWriter",
           "TraceReader", "Step", "Chunk", "make_header", "crc32c", "crc32c_reference", "trace_pb2",
           "StarKVError", "TraceFormatError", "TraceChecksumError", "TraceWriteError", "FieldComputationError",
           "RecorderError", "__version__"]
