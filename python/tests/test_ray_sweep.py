"""The Ray sweep runner end to end on a local Ray cluster (127.0.0.1, 2 CPUs) that the test starts
and stops: 2 traces x 2 GPUs (4 units) x 3 policies x 2 budgets, one worker killed mid-unit
(fault injection), and the retried sweep's merged output equal byte for byte to a single-process
`starkv sweep run`."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import starkv_bin
from sweep_fixtures import make_sweep, tree

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.skipif(starkv_bin() is None, reason="STARKV_BIN not set (make test-python builds it)")


class Killer(threading.Thread):
    """Watches the runner's fault-injection markers: SIGKILLs the worker of the first attempt it
    sees (while that attempt's `starkv` is running) and lets every other attempt finish."""

    def __init__(self, fault_dir: str, kill_first: bool = True):
        super().__init__(daemon=True)
        self.fault_dir = fault_dir
        self.kill_first = kill_first
        self.stop = threading.Event()
        self.killed: tuple[str, int] | None = None
        self.seen: set[str] = set()

    def run(self) -> None:
        while not self.stop.is_set():
            for name in sorted(os.listdir(self.fault_dir)):
                if not name.startswith("started-") or name in self.seen:
                    continue
                self.seen.add(name)
                unit, pid = name[len("started-"):].rsplit("-", 1)
                if self.killed is None and self.kill_first:
                    os.kill(int(pid), signal.SIGKILL)
                    self.killed = (unit, int(pid))
                else:
                    open(os.path.join(self.fault_dir, name.replace("started-", "release-")), "w").close()
            time.sleep(0.02)


def test_ray_sweep_survives_a_killed_worker_and_matches_the_single_process_run(tmp_path):
    from starkv.sweep import run_sweep

    binary = starkv_bin()
    sweep = make_sweep(str(tmp_path), binary)
    single = tmp_path / "single"
    subprocess.run([binary, "sweep", "run", sweep, "--out", str(single), "--threads", "1", "--quiet"], check=True,
                   capture_output=True, timeout=300)

    fault_dir = tmp_path / "faults"
    fault_dir.mkdir()
    killer = Killer(str(fault_dir))
    killer.start()
    try:
        result = run_sweep(sweep, tmp_path / "ray", num_cpus=2, max_retries=2, binary=binary, progress=False,
                           fault_dir=str(fault_dir), timeout_s=240)
    finally:
        killer.stop.set()
        killer.join(5)
    assert not ray.is_initialized(), "the runner stops the Ray cluster it started"

    # One worker was killed mid-unit, and that unit ran again in another worker.
    assert killer.killed is not None
    unit, pid = killer.killed
    attempts = [n for n in os.listdir(fault_dir) if n.startswith(f"started-{unit}-")]
    assert len(attempts) >= 2, attempts
    assert f"started-{unit}-{pid}" in attempts

    # Merged output: byte for byte the single-process run.
    got, want = tree(str(tmp_path / "ray")), tree(str(single))
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], name
    assert result.units == 4
    assert result.digest and result.digest in want["digests.txt"].decode()
    # No shard folders left behind next to the output.
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".starkv-shards-")]


def test_ray_sweep_reports_a_unit_that_fails_on_bad_input_without_retrying_it(tmp_path):
    from starkv import StarKVCommandError
    from starkv.sweep import run_sweep
    from starkv_recorder import TraceReader

    binary = starkv_bin()
    sweep = make_sweep(str(tmp_path), binary)
    # Flip one byte inside a chunk of trace b: the header and index still read (the plan is
    # valid), the replay of b's units fails on the chunk's checksum.
    path = tmp_path / "traces" / "b.starkv"
    entry = TraceReader(str(path)).steps[1]
    data = bytearray(path.read_bytes())
    data[entry.chunk_offsets[0] + 3] ^= 0x01
    path.write_bytes(bytes(data))
    fault_dir = tmp_path / "attempts"
    fault_dir.mkdir()
    watcher = Killer(str(fault_dir), kill_first=False)  # only counts and releases attempts
    watcher.start()
    try:
        with pytest.raises(StarKVCommandError) as e:
            run_sweep(sweep, tmp_path / "ray", num_cpus=2, max_retries=2, binary=binary, progress=False,
                      fault_dir=str(fault_dir), timeout_s=240)
    finally:
        watcher.stop.set()
        watcher.join(5)
    msg = str(e.value)
    # Every unit ran exactly once: the failing ones were not retried.
    started = sorted(n.rsplit("-", 1)[0] for n in os.listdir(fault_dir) if n.startswith("started-"))
    assert len(started) == 4 and len(set(started)) == 4, started
    assert "2 unit(s) failed" in msg and "b.starkv" in msg and "CRC32C" in msg, msg
    assert not (tmp_path / "ray").exists()
    assert not ray.is_initialized()
