"""The 60-second soak (bench/soak.py): 4 clients at 15 FPS against a real ``smart-closet serve``.

Marked ``soak``: ``pytest -m "not soak"`` leaves it out locally; CI (``make test``) runs it.
The 10-minute run and its figures are in bench/results/soak-10min.json and docs/reliability.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[1] / "bench" / "soak.py"

# RSS bound for 60 s. Memory climbs in ~105 MiB steps while the server warms up (MediaPipe
# builds each client's graphs lazily - up to two per client when batches overlap - and threads
# get their allocator arenas); in the 10-minute runs the last step came at 15 s and at 45 s (on
# a machine at load 8-11), then RSS stayed within 0.5 % for 9 minutes. So the baseline starts
# at 30 s, growth is the median of 45-60 s over that of 30-45 s, and the bound is 12 %: one
# late warm-up step (~9 %) passes; more than that in 15 s (~150 kB per frame of 4 x 15 FPS:
# a leaked JPEG or decoded frame per frame) fails. The 10-minute run checks the 5 % goal.
MAX_GROWTH_PCT = 12.0


@pytest.mark.soak
def test_soak_60_seconds(tmp_path, fixtures_dir):
    out = tmp_path / "soak.json"
    video = fixtures_dir / "video" / "pose_squats.mp4"
    args = ["--seconds", "60", "--warmup-s", "30", "--sample-s", "2", "--window-s", "5"]
    proc = subprocess.run(
        [sys.executable, str(SOAK), "--video", str(video), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["errors_total"] == 0, r["errors"]
    assert r["rss"]["growth_pct"] is not None and r["rss"]["growth_pct"] < MAX_GROWTH_PCT, r["rss"]
    assert len(r["fps"]["per_client"]) == 4
    for client in r["fps"]["per_client"]:
        assert len(client["windows"]) >= 10 and client["zero_windows"] == 0, client
        assert client["received"] > 0
