"""`replay(...)`: runs `starkv replay` and returns its results as DataFrames."""
from __future__ import annotations

import os
import tempfile
from typing import Iterable

from .cli import run_starkv
from .results import Frames, load_results


def _budget_text(b: object) -> str:
    if isinstance(b, bool):
        raise TypeError(f"budget {b!r} is not a number or a string like '512tok'")
    if isinstance(b, (int, float)):
        return repr(b) if isinstance(b, float) else str(b)
    if isinstance(b, str):
        return b
    raise TypeError(f"budget {b!r} is not a number or a string like '512tok'")


def replay(trace: str | os.PathLike[str], *, policies: str | Iterable[str] = "all",
           budgets: Iterable[object] = (10, 20, 40, 100), out: str | os.PathLike[str] | None = None,
           loop: str = "reprefill", model: str | None = None, gpu: str = "h100-80gb", attn: str | None = None,
           kv_heads: int | None = None, threads: int | None = None, extra_args: Iterable[str] = (),
           binary: str | None = None, timeout: float | None = None) -> Frames:
    """Replays `trace` with the `starkv` CLI (STARKV_BIN or PATH) and loads the results.

    `policies` is "all" or names (with options, e.g. "starkv(temporal=off;mi=off)"); `budgets` are
    percentages (numbers) or "512tok" strings. Without `out` the report goes to a temporary folder
    that is removed after loading. Raises StarKVNotFoundError without an executable and
    StarKVCommandError (with starkv's message) when the replay fails.
    """
    pol = policies if isinstance(policies, str) else ",".join(policies)
    bud = ",".join(_budget_text(b) for b in budgets)
    args = ["replay", os.fspath(trace), "--policies", pol, "--budgets", bud, "--loop", loop, "--gpu", gpu, "--quiet"]
    if model is not None:
        args += ["--model", model]
    if attn is not None:
        args += ["--attn", attn]
    if kv_heads is not None:
        args += ["--kv-heads", str(kv_heads)]
    if threads is not None:
        args += ["--threads", str(threads)]
    args += list(extra_args)
    if out is not None:
        run_starkv(args + ["--out", os.fspath(out)], binary=binary, timeout=timeout)
        return load_results(out)
    with tempfile.TemporaryDirectory(prefix="starkv-replay-") as tmp:
        run_starkv(args + ["--out", tmp], binary=binary, timeout=timeout)
        return load_results(tmp)
