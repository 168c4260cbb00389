"""Generated protobuf code for schemas/trace.proto (regenerate with scripts/gen-python-proto.sh)."""
from . import trace_pb2

__all__ = ["trace_pb2"]
