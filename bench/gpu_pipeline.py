"""Many clients on one GPU: the per-session CPU frame path and the batched GPU path side by side.

For each client count, ``smart-closet bench`` starts a server and streams the fixture video at
30 FPS, 1280x720 JPEG, from every client (spread over client processes), measuring output FPS per
client, latency, drops, GPU utilisation (NVML) and server CPU. Both paths use RTMPose-m on the
GPU with random weights (its checkpoints cannot be fetched on the device machine) and the
stand-in person (``--pose-stand-in``) so that the garment is really drawn. Then the transport's
own ceiling: ``--transport-only`` echoes every JPEG with no decode, pose or render.

    PYTHONPATH=src python3 bench/gpu_pipeline.py --out results.json [--counts 1,8,32,64,128]
    # two serve settings side by side, alternated A B B A:
    PYTHONPATH=src python3 bench/gpu_pipeline.py --out ab.json --counts 64 --rows gpu-engine-x4e2 \
        --variants '--render-compile;' --repeat 2
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
import time
from pathlib import Path

from smartcloset.bench import BenchConfig, load_frames, run_bench

VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "video" / "pose_squats.mp4"
POSE = ["--random-weights", "--pose-stand-in", "--device", "cuda"]


def run(
    label: str,
    clients: int,
    serve: list[str],
    seconds: float,
    fps: float = 30.0,
    profile_dir: str | None = None,
    video: Path = VIDEO,
) -> dict:
    cfg = BenchConfig(
        video=str(video),
        profile_dir=profile_dir,
        clients=clients,
        seconds=seconds,
        fps=fps,
        backend="rtmpose-m",
        warmup=5.0,
        serve_args=serve,
        client_processes=max(1, min(8, math.ceil(clients / 12))),
    )
    t0 = time.monotonic()
    try:
        result = run_bench(cfg)
    except Exception as exc:  # one failed configuration must not lose the others
        result = {"clients": clients, "error": repr(exc)}
    result["label"] = label
    result["serve_args"] = serve
    result["wall_s"] = round(time.monotonic() - t0, 1)
    lat = result.get("latency_ms", {})
    print(
        json.dumps(
            {
                k: result.get(k)
                for k in (
                    "label",
                    "clients",
                    "output_fps",
                    "output_fps_p5",
                    "own_pose_fps",
                    "dropped_frames",
                    "error_codes",
                    "error",
                )
            }
            | {
                "lat": lat,
                "gpu": result.get("gpu"),
                "cpu%": result.get("server_cpu_percent"),
                "cpu%_by_role": result.get("server_cpu_by_role"),
                "cpu_ms/frame": result.get("server_cpu_ms_per_frame"),
                "clients_cpu%": result.get("client_cpu_percent"),
                "engines/s": result.get("engines_processed_fps"),
                "engines_clients": result.get("engines_clients"),
            }
        ),
        flush=True,
    )
    return result


def _row_dir(root: str, index: int, clients: int, label: str) -> str:
    """One folder a row, named in plain letters (the device tool brings back only such names)."""
    safe = "".join(ch if ch.isalnum() else "_" for ch in label).strip("_")
    return str(Path(root) / f"r{index:02d}_{clients}c_{safe}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--counts", default="1,8,32,64,128")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument(
        "--rows",
        default="gpu-batched,gpu-engine-x4e8i1,cpu-render",
        help="gpu-batched (one process), gpu-engine-xN[eK[iM]] (N socket processes, K engine processes - default 1 - "
        "with M batches in flight each - default the backend's), cpu-render",
    )
    ap.add_argument("--processes", type=int, default=4, help="socket processes for the transport rows")
    ap.add_argument("--skip-cpu-above", type=int, default=64, help="no CPU-path row past this many clients")
    ap.add_argument("--transport", action="store_true", help="also measure the transport ceiling")
    ap.add_argument("--batch-max", type=int, default=32, help="the engine's largest batch")
    ap.add_argument("--serve-extra", default="", help="more serve arguments for every row, e.g. '--gil-switch-ms 0'")
    ap.add_argument(
        "--variants",
        default="",
        help="';'-separated sets of serve arguments compared side by side: every row runs once per set, "
        "A B then B A on the next --repeat (a lent machine drifts), e.g. '--render-compile;'",
    )
    ap.add_argument("--repeat", type=int, default=1, help="with --variants: rounds of the alternation")
    ap.add_argument("--video", default=str(VIDEO), help="the clients' video (default: the shared fixture)")
    ap.add_argument("--profile-dir", help="py-spy GIL profiles of every row's server processes, a folder a row")
    args = ap.parse_args()
    video = Path(args.video)
    POSE.extend(["--batch-max", str(args.batch_max), *shlex.split(args.serve_extra)])
    logging.basicConfig(level=logging.WARNING)
    rows = []
    counts = [int(c) for c in args.counts.split(",")]
    for n in counts:
        for label in args.rows.split(","):
            if label == "gpu-batched":
                serve = [*POSE, "--render", "batched"]
            elif label.startswith("gpu-engine-x"):  # gpu-engine-xN[eK[iM]]: K engine processes, M batches in flight
                procs, _, rest = label.rsplit("x", 1)[1].partition("e")
                engines, _, inflight = rest.partition("i")
                serve = [*POSE, "--render", "batched", "--processes", procs, "--engines", engines or "1"]
                serve += ["--inflight", inflight] if inflight else []
            elif label == "cpu-render":
                if n > args.skip_cpu_above:
                    continue
                serve = [*POSE, "--render", "session"]
            else:
                raise SystemExit(f"unknown row {label}")
            variants = args.variants.split(";") if args.variants else [""]
            for round_ in range(args.repeat if args.variants else 1):
                for variant in variants if round_ % 2 == 0 else variants[::-1]:
                    name = f"{label} [{variant}]" if args.variants else label
                    row = run(
                        name,
                        n,
                        [*serve, *shlex.split(variant)],
                        args.seconds,
                        profile_dir=args.profile_dir and _row_dir(args.profile_dir, len(rows), n, name),
                        video=video,
                    )
                    rows.append(row | {"variant": variant, "round": round_} if args.variants else row)
                    Path(args.out).write_text(json.dumps(rows, indent=1))
    if args.transport:
        frame_kb = sum(map(len, load_frames(str(video), (1280, 720), 80, 90))) / 90 / 1024
        for procs in (1, args.processes):
            n = 64
            serve = [*POSE, "--transport-only", "--processes", str(procs)]  # the model loads, unused
            r = run(f"transport-x{procs}", n, serve, args.seconds, fps=60.0, video=video)
            if "output_fps" in r:
                msgs = r["output_fps"] * n  # echoed messages per second (as many came in)
                r["messages_per_s"] = round(msgs, 1)
                r["frame_kb"] = round(frame_kb, 1)
                r["mb_per_s_each_way"] = round(msgs * frame_kb / 1024, 1)
            rows.append(r)
            Path(args.out).write_text(json.dumps(rows, indent=1))
    Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
