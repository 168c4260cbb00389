#!/usr/bin/env bash
# Regenerates python/starkv_recorder/_proto/trace_pb2.py(.pyi) from schemas/trace.proto.
# Uses grpcio-tools from PyPI (pinned: its protoc writes protobuf-Python 7.35.1 gencode, which
# the runtime pin in python/pyproject.toml accepts). Installs it into .venv when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
GRPCIO_TOOLS_VERSION=1.85.1
PY=${PY:-.venv/bin/python}
if [ ! -x "$PY" ]; then python3 -m venv .venv; PY=.venv/bin/python; fi
if ! "$PY" -c "import grpc_tools, importlib.metadata as m; assert m.version('grpcio-tools') == '$GRPCIO_TOOLS_VERSION'" 2>/dev/null; then
  "$PY" -m pip install -q "grpcio-tools==$GRPCIO_TOOLS_VERSION"
fi
out=python/starkv_recorder/_proto
"$PY" -m grpc_tools.protoc -Ischemas --python_out="$out" --pyi_out="$out" schemas/trace.proto
echo "gen-python-proto: wrote $out/trace_pb2.py and trace_pb2.pyi"
