#!/usr/bin/env python3
"""Damage sweep of `starkv validate` (README "Damaged and hostile traces").

Runs the real CLI on every strict prefix of TRACE, on --flips single-bit flips and on --edits
byte insertions/deletions/overwrites at offsets spread over the whole file (file header, HEAD,
steps, footer, trailer), and counts exit codes. Exit status 0 from validate on any damaged copy
is a failure of this script. Deterministic (seeded). Standard library only.

usage: scripts/validate_sweep.py STARKV_BIN TRACE [--flips 3000] [--edits 600] [--seed 1]
"""
import argparse
import collections
import os
import random
import subprocess
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("trace")
    ap.add_argument("--flips", type=int, default=3000)
    ap.add_argument("--edits", type=int, default=600)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    data = open(a.trace, "rb").read()
    rng = random.Random(a.seed)
    tmp = tempfile.mkdtemp(prefix="starkv-sweep-")
    path = os.path.join(tmp, "t.starkv")
    codes = collections.Counter()
    accepted = []

    def check(kind, blob):
        with open(path, "wb") as f:
            f.write(blob)
        r = subprocess.run([a.binary, "validate", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        codes[(kind, r.returncode)] += 1
        if r.returncode == 0:
            accepted.append(kind)

    whole = subprocess.run([a.binary, "validate", a.trace], stdout=subprocess.DEVNULL).returncode
    if whole != 0:
        sys.exit(f"{a.trace}: the undamaged trace does not validate (exit {whole})")
    for n in range(len(data)):
        check("prefix", data[:n])
    # Flips: every byte of the 16-byte file header and the 24-byte trailer, the rest uniform.
    offsets = list(range(16)) + list(range(len(data) - 24, len(data)))
    offsets += [rng.randrange(len(data)) for _ in range(a.flips - len(offsets))]
    for off in offsets:
        b = bytearray(data)
        b[off] ^= 1 << rng.randrange(8)
        check("flip", bytes(b))
    for k in range(a.edits):
        off = rng.randrange(len(data))
        b = bytearray(data)
        if k % 3 == 0:
            b.insert(off, rng.randrange(256))
            kind = "insert"
        elif k % 3 == 1:
            del b[off]
            kind = "delete"
        else:
            v = rng.randrange(256)
            b[off] = v if v != b[off] else v ^ 0xFF
            kind = "overwrite"
        check(kind, bytes(b))
    kinds = sorted({k for k, _ in codes})
    print(f"{a.trace}: {len(data)} bytes")
    for kind in kinds:
        per = {c: n for (k, c), n in codes.items() if k == kind}
        total = sum(per.values())
        print(f"  {kind:9s} {total:6d} runs  exit codes: " + ", ".join(f"{c}: {n}" for c, n in sorted(per.items())))
    print(f"  accepted as intact (exit 0): {len(accepted)}")
    sys.exit(1 if accepted else 0)


if __name__ == "__main__":
    main()
