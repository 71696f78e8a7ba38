"""The RTMPose backend on the CPU with random weights (no download): batching, tracking, the
live loop, and the fallback when weights are missing."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is the optional 'rtmpose' extra")

from smartcloset.pose.backend import PoseBackend, create_backend  # noqa: E402
from smartcloset.pose.rtmpose_backend import RTMPoseBackend, keypoint_box  # noqa: E402


@pytest.fixture(scope="module")
def backend():
    torch.manual_seed(0)
    return RTMPoseBackend("rtmpose-t", device="cpu", weights=False)


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(n)]


def test_is_a_backend_and_returns_coco17_in_image_pixels(backend):
    from smartcloset.pose.rtmpose.topdown import box_to_center_scale

    assert isinstance(backend, PoseBackend) and backend.max_inflight == 1
    (pose,) = backend.infer(frames(1), [None])
    (person,) = pose.persons
    assert person.keypoints.shape == (17, 3)
    # Keypoints land inside the crop window: the full-frame box, padded 1.25x, aspect fixed.
    center, scale = box_to_center_scale(np.array([[0, 0, 640, 360]]), (192, 256))
    lo, hi = center[0] - scale[0] / 2, center[0] + scale[0] / 2
    kp = person.keypoints[:, :2]
    assert (kp >= lo - 1).all() and (kp <= hi + 1).all() and np.ptp(kp, axis=0).max() > 0


def test_a_batch_equals_single_calls(backend):
    imgs = frames(4, seed=1) + [np.zeros((200, 300, 3), np.uint8)]  # mixed sizes in one batch
    batch = backend.infer(imgs, [None] * len(imgs))
    for img, got in zip(imgs, batch):
        (single,) = backend.infer([img], [None])
        assert np.allclose(got.persons[0].keypoints, single.persons[0].keypoints, atol=1e-3)


def test_boxes_follow_the_previous_keypoints():
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0], kp[:, 1], kp[:, 2] = np.linspace(100, 200, 17), np.linspace(50, 350, 17), 0.9
    box = keypoint_box(kp, (360, 640))
    assert np.allclose(box, [90, 20, 210, 360])  # grown 10 % per side, clipped to the frame
    kp[:, 2] = 0.1
    assert keypoint_box(kp, (360, 640)) is None  # lost: the detector runs next frame

    b = RTMPoseBackend("rtmpose-t", device="cpu", weights=False, redetect_every=3)
    calls = []
    b.detector.detect = lambda img, d=b.detector.detect: calls.append(1) or d(img)
    b._update("s", [], (360, 640))  # unknown stream: nothing to update
    img = frames(1)[0]
    b._boxes(img, "s")
    b._tracks["s"].boxes = np.array([[10, 10, 100, 200]], np.float32)  # as if tracking held
    assert np.allclose(b._boxes(img, "s"), [[10, 10, 100, 200]])  # frame 2: tracked
    b._boxes(img, "s")  # frame 3: tracked
    assert len(calls) == 1
    b._boxes(img, "s")  # frame 4: every 3 frames the detector looks again
    assert len(calls) == 2
    b.release("s")
    assert "s" not in b._tracks


def test_runs_inside_the_live_loop(video_jpegs):
    import simple_websocket

    from conftest import LiveServer
    from smartcloset.server import create_app
    from smartcloset.stream.protocol import pack_frame, parse_reply

    app = create_app(
        {"TESTING": True, "POSE_BACKEND_INSTANCE": RTMPoseBackend("rtmpose-t", device="cpu", weights=False)}
    )
    server = LiveServer(app)
    ws = simple_websocket.Client.connect(server.ws_url, receive_bytes=65536)
    try:
        sources = []
        for i in range(15):
            ws.send(pack_frame(i, time.time() * 1000, video_jpegs[i]))
            msg = ws.receive(timeout=30)
            while isinstance(msg, str):
                msg = ws.receive(timeout=30)
            head, _ = parse_reply(msg)
            sources.append(head.pose_source)
            time.sleep(0.05)
        assert app.extensions["smartcloset"].worker.stats.processed.total >= 5
        assert any(s != "none" for s in sources)
    finally:
        ws.close()
        server.stop()
        app.extensions["smartcloset"].stop()


def test_missing_weights_fall_back_to_the_embedded_model(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with caplog.at_level(logging.WARNING):
        b = create_backend("rtmpose-m", device="cpu")
    assert b.name == "mediapipe"
    assert "models fetch rtmpose-m" in caplog.text
    b.close()


def test_the_detector_is_rtmdet_when_its_weights_are_cached(tmp_path, monkeypatch):
    from smartcloset.pose import weights as W
    from smartcloset.pose.rtmdet import RTMDetDetector, build_rtmdet_nano

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    b = RTMPoseBackend("rtmpose-t", device="cpu", weights=False)
    assert b.detector.name == "full-frame"  # nothing cached: the whole frame, with a warning

    ckpt = tmp_path / "rtmdet.pth"
    torch.save({"meta": {}, "state_dict": build_rtmdet_nano().state_dict()}, ckpt, _use_new_zipfile_serialization=False)
    real = W.get("rtmdet-nano-person")
    declared = W.Weights(
        real.name, real.url.replace(real.sha256_prefix, W.sha256(ckpt)[:8]), real.arch, real.input_size, real.meta
    )
    monkeypatch.setitem(W.WEIGHTS, "rtmdet-nano-person", declared)
    W.add("rtmdet-nano-person", ckpt)
    b = RTMPoseBackend("rtmpose-t", device="cpu", weights=False)
    assert isinstance(b.detector, RTMDetDetector)
    poses = b.infer(frames(2), ["a", "b"])  # random detector weights: any number of people, no error
    assert len(poses) == 2
