"""Runs a StarKV sweep file on a Ray cluster (docs/sweeps.md "Ray").

Each work unit of the plan (`starkv sweep plan SWEEP --json`) becomes one Ray task that runs
`starkv sweep run SWEEP --unit ID` on its worker and returns the unit's files; a task whose worker
dies is retried by Ray (`max_retries`), a unit that fails with an error is not (the same input
fails the same way). The driver writes each finished unit as a one-unit shard, then
`starkv merge` checks that every unit is there exactly once with consistent digests and writes the
merged sweep: byte-identical to `starkv sweep run SWEEP --out DIR` on one machine.

Workers need the `starkv` executable (STARKV_BIN or PATH on the worker) and the sweep file and
traces at the same paths as the driver (a shared file system).

    python -m starkv.sweep SWEEP --out DIR --ray               # local Ray, every core
    python -m starkv.sweep SWEEP --out DIR --ray 10.0.0.1:6379 # an existing cluster
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

from .cli import StarKVCommandError, find_starkv, run_starkv


@dataclasses.dataclass(frozen=True)
class SweepRun:
    """What a sweep run did: the merged folder, its digest, and how long it took."""
    out: str
    digest: str
    units: int
    seconds: float

    @property
    def units_per_second(self) -> float:
        return self.units / self.seconds if self.seconds > 0 else float("inf")


def plan(sweep: str | os.PathLike[str], *, binary: str | None = None) -> dict[str, Any]:
    """The sweep's plan (`starkv sweep plan SWEEP --json`): units with stable IDs, in order."""
    p = run_starkv(["sweep", "plan", os.fspath(sweep), "--json"], binary=binary)
    return json.loads(p.stdout)


def _die_with_parent() -> None:
    """In the child: receive SIGKILL when the worker that started it dies (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _run_unit(binary: str | None, sweep: str, unit_id: str, threads: int, fault_dir: str | None) -> dict[str, bytes]:
    """Body of one Ray task: runs one unit into a private temporary folder, returns its files."""
    exe = find_starkv(binary)
    tmp = tempfile.mkdtemp(prefix=f"starkv-unit-{unit_id}-")
    try:
        cmd = [exe, "sweep", "run", sweep, "--unit", unit_id, "--out", tmp, "--threads", str(threads), "--quiet"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=_die_with_parent)
        if fault_dir is not None:
            # Fault-injection handshake for tests: announce this attempt, then hold until released
            # (or killed by the test) so that a kill lands while the unit is running.
            marker = os.path.join(fault_dir, f"started-{unit_id}-{os.getpid()}")
            open(marker, "w").close()
            release = marker.replace("started-", "release-")
            deadline = time.monotonic() + 60
            while not os.path.exists(release) and time.monotonic() < deadline:
                time.sleep(0.02)
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise StarKVCommandError(cmd, proc.returncode, err)
        files: dict[str, bytes] = {}
        for root, _dirs, names in os.walk(tmp):
            for n in names:
                full = os.path.join(root, n)
                with open(full, "rb") as fh:
                    files[os.path.relpath(full, tmp)] = fh.read()
        return files
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_shard(root: str, unit_id: str, files: dict[str, bytes]) -> str:
    shard = os.path.join(root, unit_id)
    for rel, data in files.items():
        if os.path.isabs(rel) or ".." in rel.split(os.sep):
            raise ValueError(f"unit {unit_id}: refusing file path {rel!r} from a worker")
        path = os.path.join(shard, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = path + ".part"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    return shard


def run_sweep(sweep: str | os.PathLike[str], out: str | os.PathLike[str], *, address: str | None = None,
              num_cpus: int | None = None, threads_per_unit: int = 1, max_retries: int = 3,
              binary: str | None = None, progress: bool | Callable[[int, int, str], None] = True,
              fault_dir: str | None = None, keep_shards: bool = False,
              timeout_s: float | None = None) -> SweepRun:
    """Runs every unit of `sweep` as a Ray task and merges them into `out`.

    Connects to `address` when given (an existing cluster, "auto" for the local one), else starts
    a local Ray with `num_cpus` CPUs on 127.0.0.1 and stops it at the end. `fault_dir` is the test
    hook described in `_run_unit`. `timeout_s` bounds the whole run (TimeoutError). Raises StarKVCommandError when a unit or the merge fails (the
    one-unit shards are then kept next to `out` for inspection).
    """
    import ray

    sweep = os.path.abspath(os.fspath(sweep))
    out = os.path.abspath(os.fspath(out))
    exe = find_starkv(binary)
    the_plan = plan(sweep, binary=exe)
    units = [u["id"] for u in the_plan["units"]]
    started_here = False
    if not ray.is_initialized():
        if address is not None:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        else:
            # A local cluster on 127.0.0.1; units return kilobytes to megabytes, so a small object store.
            # address="local": always a new cluster, never one that `ray start` left running.
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
                     _node_ip_address="127.0.0.1", object_store_memory=512 * 2**20)
        started_here = True
    report: Callable[[int, int, str], None] | None
    if callable(progress):
        report = progress
    elif progress:
        report = lambda done, total, uid: print(f"[{done}/{total}] {uid}", file=sys.stderr, flush=True)
    else:
        report = None
    parent = os.path.dirname(out) or "."
    os.makedirs(parent, exist_ok=True)
    shards = tempfile.mkdtemp(prefix=".starkv-shards-", dir=parent)
    t0 = time.perf_counter()
    failures: dict[str, str] = {}
    try:
        task = ray.remote(num_cpus=threads_per_unit, max_retries=max_retries, retry_exceptions=False)(_run_unit)
        pending = {task.remote(exe, sweep, uid, threads_per_unit, fault_dir): uid for uid in units}
        done_count = 0
        while pending:
            left = None if timeout_s is None else timeout_s - (time.perf_counter() - t0)
            if left is not None and left <= 0:
                for ref in pending:
                    ray.cancel(ref, force=True)
                raise TimeoutError(f"sweep {sweep}: {len(pending)} of {len(units)} units unfinished after {timeout_s} s")
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=left)
            if not ready:
                continue
            ref = ready[0]
            uid = pending.pop(ref)
            try:
                files = ray.get(ref)
            except Exception as e:  # a unit that failed for good: report it after the others
                failures[uid] = str(e)
                continue
            _write_shard(shards, uid, files)
            done_count += 1
            if report:
                report(done_count, len(units), uid)
        if failures:
            first = next(iter(failures))
            raise StarKVCommandError(["starkv", "sweep", "run", sweep, "--unit", first], 1,
                                     f"{len(failures)} unit(s) failed; first {first}: {failures[first]} "
                                     f"(finished units kept in {shards})")
        inputs = [os.path.join(shards, u) for u in sorted(os.listdir(shards))]
        p = run_starkv(["merge", *inputs, "--out", out], binary=exe)
        digest = ""
        for line in p.stdout.splitlines():
            if line.startswith("sweep digest: "):
                digest = line.split(": ", 1)[1].strip()
        seconds = time.perf_counter() - t0
        if not keep_shards:
            shutil.rmtree(shards, ignore_errors=True)
        return SweepRun(out=out, digest=digest, units=len(units), seconds=seconds)
    finally:
        if started_here:
            ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="starkv-sweep", description="Run a StarKV sweep file on Ray and merge it.")
    ap.add_argument("sweep", help="sweep file (docs/sweeps.md)")
    ap.add_argument("--out", required=True, help="merged output folder")
    ap.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                    help="run on Ray: a local cluster (no ADDRESS) or the cluster at ADDRESS; without --ray the "
                         "sweep runs in this process through `starkv sweep run`")
    ap.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster (default: all)")
    ap.add_argument("--threads-per-unit", type=int, default=1, help="threads (and Ray CPUs) per unit")
    ap.add_argument("--max-retries", type=int, default=3, help="retries of a unit whose worker died")
    ap.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    try:
        if a.ray is None:
            args = ["sweep", "run", a.sweep, "--out", a.out]
            t0 = time.perf_counter()
            p = run_starkv(args)
            print(p.stdout, end="")
            print(f"{time.perf_counter() - t0:.2f} s")
            return 0
        r = run_sweep(a.sweep, a.out, address=None if a.ray == "local" else a.ray, num_cpus=a.num_cpus,
                      threads_per_unit=a.threads_per_unit, max_retries=a.max_retries, progress=not a.quiet)
    except (StarKVCommandError, OSError) as e:
        print(f"starkv-sweep: {e}", file=sys.stderr)
        return 1
    print(f"{r.units} units merged into {r.out} in {r.seconds:.2f} s ({r.units_per_second:.2f} units/s)")
    print(f"sweep digest: {r.digest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
