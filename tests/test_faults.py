"""Faults behind a live session: the pose backend raises, then hangs; frames keep flowing.

A real app on a real socket with a backend double whose behaviour the test switches (the
worker-level details - backoff doubling, the abandoned-thread bound, OOM - are in
test_worker.py). The client streams real frames throughout and must: keep getting every
rendered frame, be told with a ``status`` message when pose goes down and when it is back, see
the garment go (pose_source "none") while pose is down, and see it come back by itself.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streaming import Streamer
from test_worker import FaultyBackend, wait_until

from conftest import LiveServer
from smartcloset.pose.worker import FaultPolicy

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FIGURES: list[dict] = []


@pytest.fixture()
def faulty_server(tmp_path):
    from smartcloset.server import create_app

    backend = FaultyBackend()
    app = create_app({"TESTING": True, "POSE_BACKEND_INSTANCE": backend, "closet_dir": str(tmp_path)})
    pipeline = app.extensions["smartcloset"]
    pipeline.worker.faults = FaultPolicy(infer_timeout_s=0.5, warmup_timeout_s=0.5, backoff_s=0.2, backoff_max_s=1.0)
    server = LiveServer(app)
    yield backend, pipeline, server
    backend.release_hang.set()
    server.stop()
    pipeline.stop()


def test_frames_keep_flowing_while_pose_fails_or_hangs_and_it_recovers(faulty_server, video_jpegs):
    backend, pipeline, server = faulty_server
    rec = Streamer(server.ws_url, video_jpegs[::3])
    try:
        assert wait_until(lambda: "own" in rec.since(0) or "extrapolated" in rec.since(0), 10)

        for fault, words in (("raise", "failed 3 times in a row"), ("hang", "did not answer")):
            backend.mode = fault
            assert wait_until(lambda: rec.status and rec.status[-1]["pose"] == "restarting", 10)
            assert words in rec.status[-1]["message"]
            down = time.monotonic()
            # Pose is down: frames keep coming back, and once the last pose is too old to
            # extrapolate from (0.6 s), without the garment.
            assert wait_until(lambda d=down: rec.since(d).count("none") >= 10, 10)
            assert len(rec.since(down)) >= 10
            backend.mode = "ok"
            assert wait_until(lambda: rec.status[-1]["pose"] == "ok", 10)  # told it is back ...
            back = time.monotonic()
            during = [src for at, src in list(rec.replies) if down <= at < back]
            FIGURES.append(
                {"fault": fault, "outage_s": round(back - down, 2), "fps_during": round(len(during) / (back - down), 1)}
            )
            assert wait_until(lambda b=back: {"own", "extrapolated"} & set(rec.since(b)), 10)  # ... and dressed
            assert pipeline.worker.snapshot()["pose_state"] == "ok"
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "faults.json").write_text(json.dumps(FIGURES, indent=2) + "\n")
        snap = pipeline.worker.snapshot()
        assert snap["restarts"] >= 2 and snap["hangs"] >= 1  # more while it kept failing: backoff
    finally:
        rec.stop()


def test_the_watchdog_deadline_is_a_setting(tmp_path):
    """``serve --pose-watchdog S`` reaches the worker's fault policy."""
    from smartcloset.server import create_app

    app = create_app(
        {"TESTING": True, "POSE_BACKEND_INSTANCE": FaultyBackend(), "closet_dir": str(tmp_path), "pose_watchdog_s": 3.5}
    )
    pipeline = app.extensions["smartcloset"]
    try:
        assert pipeline.worker.faults.infer_timeout_s == 3.5
    finally:
        pipeline.stop()
