"""starkv: analyse StarKV replays and sweeps from Python (docs/python-api.md).

Public API:
  load_results(path) -> Frames    -- a replay or merged sweep folder as tidy pandas DataFrames
                                     (`.steps`: one row per unit x policy x budget x step; `.runs`:
                                     one row per unit x policy x budget)
  replay(trace, ...) -> Frames    -- runs `starkv replay` (STARKV_BIN or PATH) and loads its results
  run_sweep(sweep, out, ...)      -- runs a sweep file on a Ray cluster and merges it (needs `ray`)
  TraceFile(path)                 -- lazy trace reader: a step's tensors as NumPy arrays on demand
  find_starkv()                   -- the `starkv` executable used by replay/run_sweep

The recorder lives in the sibling package `starkv_recorder`.
"""
from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from .cli import StarKVCommandError, StarKVNotFoundError, find_starkv, run_starkv

if TYPE_CHECKING:  # for type checkers; at run time the names below load on first use
    from ._replay import replay
    from .results import Frames, ResultsError, load_results
    from .sweep import SweepRun, run_sweep
    from .trace import TraceFile

# pandas (results), Ray (sweep) and the trace reader load only when asked for, so a Ray worker
# that runs `starkv.sweep._run_unit` imports neither pandas nor the protobuf module.
_LAZY = {"load_results": "results", "Frames": "results", "ResultsError": "results", "replay": "_replay",
         "run_sweep": "sweep", "SweepRun": "sweep", "TraceFile": "trace"}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'starkv' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = ["Frames", "ResultsError", "load_results", "replay", "run_sweep", "SweepRun", "TraceFile", "find_starkv",
           "run_starkv", "StarKVNotFoundError", "StarKVCommandError", "__version__"]
