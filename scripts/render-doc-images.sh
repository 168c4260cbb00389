#!/bin/sh
# Regenerates the report images in docs/images from real renders: the render test builds the demo
# report, the 4K 7B out-of-memory report and `starkv memory --html` of the paper scenario, and
# screenshots them in headless Chromium at 900 and 1400 px (python/tests/test_report_render.py).
# Usage: scripts/render-doc-images.sh [path/to/starkv]   (after `make build` and the venv exist)
set -eu
cd "$(dirname "$0")/.."
BIN=${1:-.build/release/starkv}
PY=${PY:-.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
STARKV_DOC_IMAGES="$tmp" PYTHONPATH="$PWD/python" STARKV_BIN="$PWD/$BIN" "$PY" -m pytest -q python/tests/test_report_render.py
cp "$tmp/report-demo-1400.png" docs/images/demo-report.png
cp "$tmp/report-demo-900.png" docs/images/demo-report-900.png
cp "$tmp/report-oom-1400.png" docs/images/oom-report.png
cp "$tmp/report-memory-1400.png" docs/images/memory-report.png
echo "updated docs/images: demo-report.png demo-report-900.png oom-report.png memory-report.png"
