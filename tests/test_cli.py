"""The command line as a user runs it, in fresh processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import simple_websocket

from conftest import torso_box
from smartcloset import codec
from smartcloset.bench import free_port, wait_healthy
from smartcloset.stream.protocol import pack_frame, parse_reply

CLI = [sys.executable, "-m", "smartcloset"]


def run(*args, timeout=300, check=True):
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def test_garments_list(tmp_path):
    out = json.loads(run("garments", "list", "--json", "--closet", str(tmp_path)).stdout)
    assert {"tshirt-navy", "tshirt-white", "tshirt-red"} <= {g["id"] for g in out}
    assert "tshirt-navy" in run("garments", "list").stdout


def test_pose_json(fixtures_dir, people_truth):
    paths = [str(p) for p, _ in people_truth]
    out = json.loads(run("pose", *paths, "--json").stdout)
    assert [o["image"] for o in out] == paths
    for item, (_, gt) in zip(out, people_truth):
        (person,) = item["persons"]
        assert len(person["keypoints"]) == 17 and len(person["bbox"]) == 4
        kp = np.array(person["keypoints"])
        # keypoints in image pixels: the nose within 10 % of the image height of the truth
        assert np.linalg.norm(kp[0, :2] - gt[0, :2]) < 64


def test_pose_bad_file(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"not an image")
    proc = run("pose", str(bad), "--json", check=False)
    assert proc.returncode == 2 and "cannot read image" in proc.stderr


def test_tryon_image(tmp_path, fixtures_dir, people_truth):
    path, gt = people_truth[0]
    out = tmp_path / "dressed.png"
    run("tryon", str(path), "-o", str(out), "--garment", "tshirt-red")
    src, dst = cv2.imread(str(path)), cv2.imread(str(out))
    x1, y1, x2, y2 = torso_box(gt)
    assert np.abs(dst[y1:y2, x1:x2].astype(int) - src[y1:y2, x1:x2]).mean() > 40
    assert np.abs(dst[y1:y2, x1:x2].astype(int) - (40, 40, 196)).mean(axis=(0, 1)).max() < 70  # red


def test_tryon_video(tmp_path, fixtures_dir, video_truth):
    out = tmp_path / "dressed.mp4"
    run("tryon", str(fixtures_dir / "video" / "pose_squats.mp4"), "-o", str(out), "--garment", "tshirt-white")
    cap = cv2.VideoCapture(str(out))
    src = cv2.VideoCapture(str(fixtures_dir / "video" / "pose_squats.mp4"))
    n = changed = 0
    data = json.loads((fixtures_dir / "video" / "pose_squats_coco17_per_frame.json").read_text())
    while True:
        ok, frame = cap.read()
        ok2, orig = src.read()
        if not ok or not ok2:
            break
        gt = np.array(data["frames"][n]["keypoints"], np.float32).reshape(17, 3)
        x1, y1, x2, y2 = torso_box(gt)
        changed += np.abs(frame[y1:y2, x1:x2].astype(int) - orig[y1:y2, x1:x2]).mean() > 40
        n += 1
    assert n == 65 and changed >= 60


def test_tryon_unknown_garment(tmp_path, people_truth):
    proc = run("tryon", str(people_truth[0][0]), "-o", str(tmp_path / "x.png"), "--garment", "ballgown", check=False)
    assert proc.returncode == 2 and "ballgown" in proc.stderr


def test_serve_refuses_fewer_than_one_engine():
    from smartcloset.config import ServerConfig

    proc = run("serve", "--engines", "0", check=False, timeout=60)
    assert proc.returncode == 2 and "--engines: must be at least 1, got 0" in proc.stderr
    with pytest.raises(ValueError, match="engines must be at least 1"):
        ServerConfig.from_mapping({"engines": 0})


def test_serve_refuses_fewer_than_one_batch_in_flight(monkeypatch):
    from smartcloset.config import ServerConfig
    from smartcloset.server import pipeline

    proc = run("serve", "--inflight", "0", check=False, timeout=60)
    assert proc.returncode == 2 and "--inflight: must be at least 1, got 0" in proc.stderr
    with pytest.raises(ValueError, match="batch_inflight must be 0"):
        ServerConfig.from_mapping({"batch_inflight": -1})
    made = {}
    monkeypatch.setattr(pipeline, "create_backend", lambda name, **options: made.update(options, name=name))
    pipeline.backend_factory(ServerConfig(pose_backend="rtmpose-m", batch_inflight=3))()
    assert made["name"] == "rtmpose-m" and made["inflight"] == 3  # reaches RTMPose's CUDA batches


def test_serve_runs_the_production_server(video_jpegs, video_truth):
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "serve", "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=60)
        ws = simple_websocket.Client.connect(f"ws://127.0.0.1:{port}/ws", receive_bytes=65536)
        try:
            box = torso_box(video_truth[0])
            before = codec.decode(video_jpegs[0])
            for i in range(60):
                ws.send(pack_frame(i, time.time() * 1000, video_jpegs[0]))
                msg = ws.receive(timeout=10)
                while isinstance(msg, str):
                    msg = ws.receive(timeout=10)
                head, jpeg = parse_reply(msg)
                x1, y1, x2, y2 = box
                if np.abs(codec.decode(jpeg)[y1:y2, x1:x2].astype(int) - before[y1:y2, x1:x2]).mean() > 40:
                    break
                time.sleep(0.03)
            else:
                raise AssertionError("no dressed frame from the served app")
        finally:
            ws.close()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "gthread" in out.lower() or "Using worker: gthread" in out


def test_bench_writes_the_figures(tmp_path, fixtures_dir):
    out = tmp_path / "bench.json"
    run(
        "bench",
        "--video",
        str(fixtures_dir / "video" / "pose_squats.mp4"),
        "--clients",
        "2",
        "--seconds",
        "3",
        "--fps",
        "10",
        "--size",
        "640x360",
        "--json",
        str(out),
    )
    r = json.loads(out.read_text())
    for key in (
        "clients",
        "input_fps",
        "output_fps",
        "processed_fps",
        "latency_ms",
        "rtt_ms",
        "dropped_frames",
        "mean_batch_size",
        "stage_ms",
        "backend",
        "device",
    ):
        assert key in r
    assert r["clients"] == 2 and r["backend"] == "mediapipe"
    flowed = {k: r[k] for k in ("output_fps", "processed_fps")}  # frames came back and were posed
    assert all(v > 0 for v in flowed.values()), flowed
    percentiles, stages = set(r["latency_ms"]), set(r["stage_ms"])
    assert percentiles == {"p50", "p95", "p99"} and stages >= {"decode", "pose", "render", "encode"}
    # CPU: the server's per frame sent back, and the load generator's own (both spent something)
    assert r["server_cpu_ms_per_frame"] > 0 and r["client_cpu_percent"] > 0, r
    per_frame = 10.0 * r["server_cpu_percent"] / (r["output_fps"] * r["clients"])
    assert abs(r["server_cpu_ms_per_frame"] - per_frame) <= 0.25 * per_frame + 0.01, r
    assert r["engines_processed_fps"] is None  # one engine: nothing per engine to tell


def test_the_bench_tells_each_engine_processes_rate():
    """With ``--engines K`` the bench reports what each engine took over the window, from the
    stats before and after: a stalled engine shows as 0 beside a busy one; and how many clients
    each holds."""
    from smartcloset.bench import engine_clients, engine_rates

    before = {"processed": 150, "engines": [{"processed": 100}, {"processed": 50}]}
    after = {"processed": 750, "engines": [{"processed": 700, "clients": 3}, {"processed": 50, "clients": 1}]}
    assert engine_rates(before, after, 2.0) == [300.0, 0.0]
    assert engine_rates({"processed": 1}, {"processed": 9}, 2.0) is None
    assert engine_clients(after) == [3, 1] and engine_clients({"processed": 9}) is None


def test_serve_gpu_jpeg_choice_is_checked():
    from smartcloset.config import ServerConfig

    proc = run("serve", "--gpu-jpeg", "turbo", check=False, timeout=60)
    assert proc.returncode == 2 and "--gpu-jpeg: invalid choice: 'turbo'" in proc.stderr
    with pytest.raises(ValueError, match="gpu_jpeg must be auto, nvimgcodec or torchvision"):
        ServerConfig.from_mapping({"gpu_jpeg": "turbo"})
    assert ServerConfig.from_mapping({"gpu_jpeg": "nvimgcodec"}).gpu_jpeg == "nvimgcodec"


def test_auto_gpu_jpeg_is_torchvision_where_engine_processes_serve_socket_processes():
    from smartcloset.config import ServerConfig
    from smartcloset.server.pipeline import engine_gpu_jpeg

    assert engine_gpu_jpeg(ServerConfig(render="batched")) == "auto"  # nvImageCodec where installed
    assert engine_gpu_jpeg(ServerConfig(render="batched", processes=4)) == "torchvision"
    assert engine_gpu_jpeg(ServerConfig(render="batched", processes=4, engines=2)) == "torchvision"
    assert engine_gpu_jpeg(ServerConfig(render="batched", engines=2, gpu_jpeg="nvimgcodec")) == "nvimgcodec"
    assert engine_gpu_jpeg(ServerConfig(render="batched", processes=4, gpu_jpeg="torchvision")) == "torchvision"
