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

from .cli import StarKVCommandError, StarKVNotFoundError, find_starkv, run_starkv
from .results import Frames, ResultsError, load_results
from .replay import replay
from .trace import TraceFile


def __getattr__(name: str):  # Ray is optional; import it only when the runner is asked for
    if name in ("run_sweep", "SweepRun"):
        from . import sweep
        return getattr(sweep, name)
    raise AttributeError(name)


__all__ = ["Frames", "ResultsError", "load_results", "replay", "run_sweep", "SweepRun", "TraceFile", "find_starkv",
           "run_starkv", "StarKVNotFoundError", "StarKVCommandError", "__version__"]
