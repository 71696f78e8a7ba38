"""Shared fixtures: the shared test material, a real app and a real server on loopback."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from smartcloset import codec
from smartcloset.bench import letterbox, letterbox_keypoints

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"

# The renderer's Triton kernels (render/kernels.py) run through Triton's interpreter where
# there is no GPU; it is chosen when they are defined, so before any test imports them.
try:
    import torch

    _cuda = torch.cuda.is_available()
except ImportError:
    _cuda = False
if not _cuda:
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not (FIXTURES / "video" / "pose_squats.mp4").is_file():
        pytest.skip(f"shared test material not found at {FIXTURES} (a clone outside the workplace)")
    return FIXTURES


@pytest.fixture(scope="session")
def video_frames(fixtures_dir) -> list[np.ndarray]:
    """The person video as 1280x720 BGR frames (letterboxed, like a landscape webcam)."""
    cap = cv2.VideoCapture(str(fixtures_dir / "video" / "pose_squats.mp4"))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(letterbox(frame, (1280, 720)))
    cap.release()
    assert len(frames) > 30
    return frames


@pytest.fixture(scope="session")
def video_jpegs(video_frames) -> list[bytes]:
    return [codec.encode(f, 85) for f in video_frames]


@pytest.fixture(scope="session")
def people_truth(fixtures_dir) -> list[tuple[Path, np.ndarray]]:
    data = json.loads((fixtures_dir / "people" / "tflite_pose_coco17.json").read_text())
    out = []
    for img in data["images"]:
        ann = next(a for a in data["annotations"] if a["image_id"] == img["id"])
        out.append((fixtures_dir / "people" / img["file_name"], np.array(ann["keypoints"], np.float32).reshape(17, 3)))
    return out


@pytest.fixture(scope="session")
def closet_dir(tmp_path_factory) -> Path:
    """The test app's user closet: a scratch folder, never the real user's."""
    return tmp_path_factory.mktemp("closet")


@pytest.fixture(scope="session")
def app(closet_dir):
    """One real app (MediaPipe backend on the CPU) for the whole test session."""
    from smartcloset.server import create_app

    application = create_app(
        {"TESTING": True, "max_clients": 6, "stats_interval_s": 0.5, "max_errors": 12, "closet_dir": str(closet_dir)}
    )
    yield application
    application.extensions["smartcloset"].stop()


@pytest.fixture()
def client(app):
    return app.test_client()


class LiveServer:
    def __init__(self, app) -> None:
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="session")
def live_server(app):
    """The app on a real socket (Werkzeug's threaded server; `serve` itself is tested in test_cli)."""
    server = LiveServer(app)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def video_truth(fixtures_dir, video_frames) -> list[np.ndarray]:
    """Per-frame COCO-17 keypoints (model reference), in the 1280x720 letterboxed frames' pixels."""
    data = json.loads((fixtures_dir / "video" / "pose_squats_coco17_per_frame.json").read_text())
    src = (data["width"], data["height"])
    return [letterbox_keypoints(np.array(f["keypoints"]).reshape(17, 3), src, (1280, 720)) for f in data["frames"]]


def torso_box(kp: np.ndarray, shrink: float = 0.25) -> tuple[int, int, int, int]:
    """The box between shoulders and hips, shrunk by ``shrink`` on each side: surely torso."""
    pts = kp[[5, 6, 11, 12], :2]
    x1, y1 = pts.min(axis=0)
    x2, y2 = pts.max(axis=0)
    dx, dy = (x2 - x1) * shrink, (y2 - y1) * shrink
    return int(x1 + dx), int(y1 + dy), int(x2 - dx), int(y2 - dy)
