"""The Python TraceWriter writes under a temporary name (NAME.tmp-PID-N) and renames on close:
a partial trace never appears under the final name, a killed recording stays recoverable under
its temporary name, and `starkv recover` turns that file into a complete trace."""
import os

import pytest

from conftest import starkv, starkv_bin
from starkv_recorder import TraceWriteError, TraceWriter
from test_format import one_step, small_header


def test_the_final_name_appears_only_on_close(tmp_path):
    path = tmp_path / "t.starkv"
    w = TraceWriter(path, small_header(win_rows_max=3))
    w.write_step(one_step(0))
    assert not path.exists()
    assert w.temporary_path.startswith(str(path) + ".tmp-") and os.path.exists(w.temporary_path)
    w.close()
    assert path.exists() and not os.path.exists(w.temporary_path)


def test_an_existing_trace_is_kept_without_overwrite(tmp_path):
    path = tmp_path / "t.starkv"
    path.write_bytes(b"keep")
    with pytest.raises(TraceWriteError, match="already exists"):
        TraceWriter(path, small_header(win_rows_max=3), overwrite=False)
    assert path.read_bytes() == b"keep"


def test_an_error_inside_the_with_block_leaves_nothing_under_the_final_name(tmp_path):
    path = tmp_path / "t.starkv"
    with pytest.raises(RuntimeError):
        with TraceWriter(path, small_header(win_rows_max=3)) as w:
            w.write_step(one_step(0))
            raise RuntimeError("recorder failed")
    assert not path.exists() and os.path.exists(w.temporary_path)


@pytest.mark.skipif(starkv_bin() is None, reason="STARKV_BIN is unset (make test-python builds starkv and sets it)")
def test_starkv_recovers_a_killed_python_recording_from_its_temporary_name(tmp_path):
    path = tmp_path / "run.starkv"
    w = TraceWriter(path, small_header(win_rows_max=3))
    for i in range(3):
        w.write_step(one_step(i))
    w.abort()
    r = starkv("validate", w.temporary_path, check=False)
    assert r.returncode == 2 and "INCOMPLETE" in r.stdout
    starkv("recover", w.temporary_path)
    out = tmp_path / "run.recovered.starkv"
    assert "3 steps" in starkv("validate", str(out)).stdout
