"""Finding and running the `starkv` executable."""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Sequence


class StarKVNotFoundError(RuntimeError):
    """No `starkv` executable: STARKV_BIN is unset or wrong and `starkv` is not on PATH."""


class StarKVCommandError(RuntimeError):
    """`starkv` exited with a non-zero status; the message holds its command line and stderr."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str):
        self.args_list = list(args)
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{' '.join(args)} exited with status {returncode}: {stderr.strip()}")


BUILD_HINT = "build it with `swift build -c release --product starkv` (or `make build`) in the StarKV repository"


def find_starkv(explicit: str | os.PathLike[str] | None = None) -> str:
    """The `starkv` executable: `explicit`, else $STARKV_BIN, else `starkv` on PATH."""
    if explicit is not None:
        path = os.fspath(explicit)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise StarKVNotFoundError(f"starkv executable {path!r} does not exist or is not executable; {BUILD_HINT}")
        return path
    env = os.environ.get("STARKV_BIN")
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise StarKVNotFoundError(f"STARKV_BIN={env!r} is not an executable file; {BUILD_HINT}, "
                                      f"then point STARKV_BIN at .build/release/starkv")
        return env
    found = shutil.which("starkv")
    if found is None:
        raise StarKVNotFoundError(f"no starkv executable: STARKV_BIN is not set and `starkv` is not on PATH; {BUILD_HINT}, "
                                  f"then set STARKV_BIN=/path/to/.build/release/starkv")
    return found


def run_starkv(args: Sequence[str], *, binary: str | None = None, timeout: float | None = None,
               cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs `starkv ARGS`; raises StarKVCommandError on a non-zero exit."""
    exe = find_starkv(binary)
    cmd = [exe, *[os.fspath(a) for a in args]]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if p.returncode != 0:
        raise StarKVCommandError(cmd, p.returncode, p.stderr)
    return p
