"""Renders `starkv replay`'s report.html in headless Chromium (Debian's chromium package) and checks
that the page is not blank and that its SVG charts are in the rendered DOM (issue: reports).

This lives with the Python tests because it drives the Swift CLI and needs Pillow to read the
screenshot; `make deps` installs chromium."""

import os
import re
import shutil
import subprocess

import pytest
from PIL import Image

from conftest import starkv_bin

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SAMPLE = os.path.join(ROOT, "traces", "sample-1280x720.starkv")


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def run_chromium(*args):
    return subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    if starkv_bin() is None:
        pytest.skip("STARKV_BIN is unset (make test-python builds starkv and sets it)")
    out = tmp_path_factory.mktemp("report")
    r = subprocess.run([starkv_bin(), "replay", SAMPLE, "--policies", "snapkv,starkv,guikv", "--budgets", "10,20,40",
                        "--out", str(out), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return out / "report.html"


def test_report_renders_non_blank_with_its_charts(report, tmp_path):
    if chromium() is None:
        pytest.fail("chromium is not installed; run `make deps` (it installs Debian's chromium package)")
    html = report.read_text()
    svgs_in_source = html.count("<svg")
    # One memory chart per budget, one stacked chart per policy at 20 %, peak and quality vs budget.
    assert svgs_in_source == 3 + 3 + 2

    dom = run_chromium("--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr
    assert len(re.findall(r"<svg\b", dom.stdout)) == svgs_in_source
    assert "<polyline" in dom.stdout and "<polygon" in dom.stdout

    shot = tmp_path / "report.png"
    r = run_chromium(f"--screenshot={shot}", "--window-size=1400,2000", report.as_uri())
    assert shot.exists(), r.stderr
    img = Image.open(shot).convert("RGB")
    assert img.size == (1400, 2000)
    pixels = img.getdata()
    non_white = sum(1 for p in pixels if min(p) < 240)
    colourful = sum(1 for p in pixels if max(p) - min(p) > 60)
    # Text, tables and charts cover a good part of the page; chart lines bring colour.
    assert non_white / len(pixels) > 0.03
    assert colourful > 2000
