"""scripts/compare_centroids.py runs on the real XO-3 AOR and prints every centroid method and the first-frame
offset; the offset itself is a known property of IRAC subarray data (plane 0 reads low)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.mark.slow
def test_compare_centroids_prints_every_method_and_the_first_frame_offset() -> None:
    if not (SHARED / "data" / "irac" / "r46466816").is_dir():
        pytest.fail(f"the real IRAC test data is missing under {SHARED}")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare_centroids.py"), "--shared", str(SHARED)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for method in ("box", "moment", "gauss"):
        rows = [line.split() for line in lines if line.split()[:1] == [method]]
        assert len(rows) == 2  # real and synthetic
        assert int(rows[0][1]) > 650 and int(rows[1][1]) > 700  # planes used
        assert 50 < float(rows[0][2]) < 65  # XO-3 at 4.5 um, mJy
    found = re.search(r"median over (\d+) cubes: ([-+0-9.]+) %", done.stdout)
    assert found and int(found.group(1)) == 11
    # Measured: -0.98 % (10 of 11 cubes between -1.3 % and -0.6 %); the known effect is 0.1-1 % low.
    assert -1.5 < float(found.group(2)) < -0.5
