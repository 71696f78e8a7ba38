"""The RTMPose backend's CUDA path, end to end from host frames: a smoke check and timings.

Random weights, seeded so the CPU (fp32) and CUDA (fp16, folded BN, graphs) backends hold the
same model; their keypoints must agree. Then frames-per-second for batches of 720p frames from
the host (pinned upload included), from one thread and from two (two batches in flight, each with
its own stream and graphs, as the pose worker runs them).

    PYTHONPATH=src python3 bench/rtmpose_backend_gpu.py
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from smartcloset.pose.rtmpose_backend import RTMPoseBackend


def build(device: str) -> RTMPoseBackend:
    torch.manual_seed(0)
    return RTMPoseBackend("rtmpose-m", device=device, weights=False)


def main() -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(64)]
    cpu, gpu = build("cpu"), build("cuda")
    a = cpu.infer(frames[:4], [None] * 4)
    b = gpu.infer(frames[:4], [None] * 4)
    err = max(float(np.abs(x.persons[0].keypoints[:, :2] - y.persons[0].keypoints[:, :2]).max()) for x, y in zip(a, b))
    agree = float(
        np.mean(
            [(np.abs(x.persons[0].keypoints[:, :2] - y.persons[0].keypoints[:, :2]) < 4).mean() for x, y in zip(a, b)]
        )
    )
    print(json.dumps({"cpu_vs_cuda_max_px": err, "share_within_4px": agree}), flush=True)
    for n in (1, 8, 32):
        batch = frames[:n]
        for _ in range(5):
            gpu.infer(batch, [None] * n)
        ts = []
        for _ in range(30):
            t = time.perf_counter()
            gpu.infer(batch, [None] * n)
            ts.append(time.perf_counter() - t)
        ms = float(np.median(ts) * 1000)
        print(
            json.dumps({"frames": n, "threads": 1, "ms": round(ms, 3), "frames_per_s": round(n / ms * 1000)}),
            flush=True,
        )
    with ThreadPoolExecutor(2) as pool:
        n, rounds = 8, 40
        list(pool.map(lambda i: gpu.infer(frames[:n], [None] * n), range(8)))
        t = time.perf_counter()
        list(pool.map(lambda i: gpu.infer(frames[i % 8 * 8 : i % 8 * 8 + n], [None] * n), range(rounds)))
        dt = time.perf_counter() - t
        print(json.dumps({"frames": n, "threads": 2, "frames_per_s": round(n * rounds / dt)}), flush=True)


if __name__ == "__main__":
    main()
