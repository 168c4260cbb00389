"""Results folders (one replay or a merged sweep) as tidy pandas DataFrames (docs/python-api.md).

A replay folder holds `results.json` (schema `ReplayResults`, docs/replay.md); a merged sweep
folder holds `sweep.json` (docs/sweeps.md), which embeds every unit's results. Both load into the
same two tables:

* `steps`: one row per unit x policy x budget x step,
* `runs`:  one row per unit x policy x budget,

with provenance columns (trace path and SHA-256, model, GPU, attention, stored KV heads, loop,
policy and options), the budget as numbers (`budget_percent` or `budget_tokens`), peaks in bytes
and GB, OOM flag and phase, kept tokens, quality proxies and FLOPs.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterable

import pandas as pd

#: Results schema versions this loader reads (docs/replay.md).
RESULTS_SCHEMA_VERSIONS = (1, 2)
SWEEP_FORMAT = "starkv-sweep-results"
GB = 1e9


class ResultsError(ValueError):
    """A folder or file that is not StarKV results, or results of an unknown version."""


@dataclasses.dataclass(frozen=True)
class Frames:
    """The tables of a results folder: `steps` (per step) and `runs` (per policy x budget)."""
    steps: pd.DataFrame
    runs: pd.DataFrame
    #: Sweep digest (merged sweep) or replay digest (single replay).
    digest: str
    source: str


PROVENANCE_COLUMNS = [
    "unit_id", "trace_path", "trace_sha256", "trace_file", "recorded_model", "model", "gpu", "gpu_capacity_gb",
    "attention", "vision_attention", "kv_heads", "loop", "logits", "allocator", "retain_previous", "policy",
    "policy_name", "policy_options", "budget", "budget_percent", "budget_tokens",
]


def _budget_tokens(budget: str) -> int | None:
    if budget.endswith("tok"):
        try:
            return int(budget[:-3])
        except ValueError:
            return None
    return None


def _options_text(policies: list[dict[str, Any]], label: str) -> str:
    for p in policies:
        opts = p.get("options") or {}
        lab = p["name"] if not opts else p["name"] + "(" + ",".join(f"{k}={opts[k]}" for k in sorted(opts)) + ")"
        if lab == label:
            return ";".join(f"{k}={opts[k]}" for k in sorted(opts))
    return ""


def _provenance(r: dict[str, Any], run: dict[str, Any], unit_id: str | None) -> dict[str, Any]:
    s = r["settings"]
    prov = r.get("provenance") or {}
    return {
        "unit_id": unit_id if unit_id is not None else prov.get("sweepUnit", ""),
        "trace_path": prov.get("tracePath", r["trace"]["file"]),
        "trace_sha256": prov.get("traceSHA256", ""),
        "trace_file": r["trace"]["file"],
        "recorded_model": r["trace"]["recordedModel"],
        "model": s["simulatedModel"],
        "gpu": s["gpu"],
        "gpu_capacity_gb": s["gpuCapacityBytes"] / GB,
        "attention": s["attention"],
        "vision_attention": s["visionAttention"],
        "kv_heads": s["storedKVHeads"],
        "loop": s["loop"],
        "logits": s["logits"],
        "allocator": s["allocator"],
        "retain_previous": bool(s["retainPreviousCache"]),
        "policy": run["policy"],
        "policy_name": run["policyName"],
        "policy_options": _options_text(s["policies"], run["policy"]),
        "budget": run["budget"],
        "budget_percent": run.get("budgetPercent"),
        "budget_tokens": _budget_tokens(run["budget"]),
    }


def _rows(results: Iterable[tuple[str | None, dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    steps: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    for unit_id, r in results:
        version = r.get("schemaVersion")
        if version not in RESULTS_SCHEMA_VERSIONS:
            raise ResultsError(f"results schema {version!r}; this loader reads {RESULTS_SCHEMA_VERSIONS}")
        for run in r["runs"]:
            prov = _provenance(r, run, unit_id)
            sm = run["summary"]
            runs.append({
                **prov,
                "peak_allocated_bytes": sm["peakAllocatedBytes"],
                "peak_reserved_bytes": sm["peakReservedBytes"],
                "peak_allocated_gb": sm["peakAllocatedBytes"] / GB,
                "peak_reserved_gb": sm["peakReservedBytes"] / GB,
                "oom": sm.get("firstOOMStep") is not None,
                "first_oom_step": sm.get("firstOOMStep"),
                "mean_kept_fraction": sm["meanKeptFraction"],
                "mean_decode_mass_retained": sm.get("meanDecodeMassRetained"),
                "mean_cached_window_mass": sm.get("meanCachedWindowMass"),
                "total_scoring_flops": sm["totalScoringFLOPs"],
                "total_flops": sm["totalFLOPs"],
                "scoring_overhead": sm["scoringOverhead"],
                "steps": len(run["steps"]),
                "kept_digest": run["keptDigest"],
                # Encoding of kept_digest (docs/replay.md "Digest"); files before it used v1.
                "kept_digest_version": r["settings"].get("keptDigestVersion", 1),
                "replay_digest": r["digest"],
            })
            for st in run["steps"]:
                t = st["terms"]
                f = st["flops"]
                steps.append({
                    **prov,
                    "step": st["step"],
                    "episode": st["episode"],
                    "prompt_length": st["promptLength"],
                    "images": st["images"],
                    "kept_tokens_mean": st["keptTokensMean"],
                    "kept_fraction": st["keptFraction"],
                    "kv_bytes": st["kvBytes"],
                    "weights_bytes": t["weights"],
                    "kv_now_bytes": t["kvNow"],
                    "kv_previous_bytes": t["kvPrevious"],
                    "logits_bytes": t["logits"],
                    "inputs_bytes": t["inputs"],
                    "transient_bytes": t["transients"],
                    "allocator_slack_bytes": t["allocatorSlack"],
                    "allocated_peak_bytes": st["allocatedPeakBytes"],
                    "reserved_peak_bytes": st["reservedPeakBytes"],
                    "allocated_peak_gb": st["allocatedPeakBytes"] / GB,
                    "reserved_peak_gb": st["reservedPeakBytes"] / GB,
                    "inactive_split_bytes": st["inactiveSplitBytes"],
                    "oom": bool(st["oom"]),
                    "oom_phase": st.get("oomPhase"),
                    "vision_flops": f["vision"],
                    "prefill_flops_nominal": f["prefillNominal"],
                    "prefill_flops_causal": f["prefillCausal"],
                    "decode_flops": f["decode"],
                    "scoring_flops": f["scoring"],
                    "roofline_seconds": st["rooflineSeconds"],
                    "decode_mass_retained": st.get("decodeMassRetained"),
                    "cached_window_mass": st.get("cachedWindowMass"),
                    "replay_digest": r["digest"],
                })
    return steps, runs


_INT_COLUMNS = ("kv_heads", "step", "prompt_length", "images", "steps")
_NULLABLE_INT_COLUMNS = ("budget_tokens", "first_oom_step")
_FLOAT_COLUMNS = ("budget_percent", "decode_mass_retained", "cached_window_mass", "mean_decode_mass_retained",
                  "mean_cached_window_mass")


def _frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(rows, columns=columns)
    for c in _INT_COLUMNS:
        if c in df:
            df[c] = df[c].astype("int64")
    for c in _NULLABLE_INT_COLUMNS:
        if c in df:
            df[c] = df[c].astype("Int64")
    for c in _FLOAT_COLUMNS:
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="raise").astype("float64")
    for c in ("oom", "retain_previous"):
        if c in df:
            df[c] = df[c].astype(bool)
    return df


def _columns(rows: list[dict[str, Any]], fallback: list[str]) -> list[str]:
    return list(rows[0].keys()) if rows else fallback


def load_results(path: str | os.PathLike[str]) -> Frames:
    """Loads a results folder (or its `results.json` / `sweep.json`) as tidy DataFrames.

    >>> f = load_results("out/sweep")                                          # doctest: +SKIP
    >>> f.runs.pivot_table(index="policy", columns="budget_percent", values="peak_allocated_gb")
    """
    p = os.fspath(path)
    if os.path.isdir(p):
        for name in ("sweep.json", "results.json"):
            if os.path.isfile(os.path.join(p, name)):
                p = os.path.join(p, name)
                break
        else:
            if os.path.isfile(os.path.join(p, "plan.json")) and os.path.isdir(os.path.join(p, "units")):
                return _load_shard(p)
            raise ResultsError(f"{path}: no sweep.json or results.json (is this a StarKV replay or merged sweep folder?)")
    try:
        with open(p, "rb") as fh:
            doc = json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        raise ResultsError(f"{p}: cannot read StarKV results: {e}") from None
    if not isinstance(doc, dict):
        raise ResultsError(f"{p}: not a StarKV results file")
    try:
        if doc.get("format") == SWEEP_FORMAT:
            if doc.get("version") != 1:
                raise ResultsError(f"{p}: sweep results version {doc.get('version')!r}; this loader reads 1")
            units = [(u["unit"]["id"], u["results"]) for u in doc["units"]]
            digest = doc["digest"]
        elif "runs" in doc and "settings" in doc:
            units = [(None, doc)]
            digest = doc["digest"]
        else:
            raise ResultsError(f"{p}: neither a replay results.json nor a merged sweep.json")
        step_rows, run_rows = _rows(units)
    except KeyError as e:
        raise ResultsError(f"{p}: missing field {e}") from None
    except ResultsError as e:
        raise ResultsError(f"{p}: {e}") from None
    steps = _frame(step_rows, _columns(step_rows, PROVENANCE_COLUMNS))
    runs = _frame(run_rows, _columns(run_rows, PROVENANCE_COLUMNS))
    return Frames(steps=steps, runs=runs, digest=digest, source=p)


def _load_shard(folder: str) -> Frames:
    """A shard folder (`starkv sweep run --shard`, not merged): the units it holds, in plan order."""
    try:
        with open(os.path.join(folder, "plan.json"), "rb") as fh:
            plan = json.load(fh)
        units = []
        for u in plan["units"]:
            path = os.path.join(folder, "units", u["id"], "results.json")
            if os.path.isfile(path):
                with open(path, "rb") as fh:
                    units.append((u["id"], json.load(fh)))
        step_rows, run_rows = _rows(units)
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise ResultsError(f"{folder}: not a readable sweep shard folder: {e}") from None
    steps = _frame(step_rows, _columns(step_rows, PROVENANCE_COLUMNS))
    runs = _frame(run_rows, _columns(run_rows, PROVENANCE_COLUMNS))
    return Frames(steps=steps, runs=runs, digest="", source=folder)
