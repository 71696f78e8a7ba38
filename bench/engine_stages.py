"""Where a batch's time goes on the GPU: decode (nvJPEG), pose (RTMPose-m, random weights, one
graph), render (BatchRenderer, T-shirt on a stand-in person) and encode (nvJPEG), per batch size,
without the network - the engine's stages called directly, as ``FrameEngine`` calls them.

    PYTHONPATH=src python3 bench/engine_stages.py --out stages.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from smartcloset.bench import load_frames
from smartcloset.closet.store import Closet
from smartcloset.codec_gpu import decode_batch, encode_batch
from smartcloset.pose.rtmpose_backend import FullFrameDetector, RTMPoseBackend
from smartcloset.pose.simulate import StandInPose
from smartcloset.pose.timeline import TimedKeypoints
from smartcloset.render.annotators import GarmentAnnotator
from smartcloset.render.batched import BatchRenderer

VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "video" / "pose_squats.mp4"


def timed(fn, reps: int) -> tuple[float, object]:
    out = None
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times)), out


def psnr(decoded: list, reference: torch.Tensor) -> float:
    err = (torch.stack(decoded).float() - reference.float()).pow(2).mean()
    return round(float(10 * torch.log10(255**2 / err)), 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--sizes", default="1,8,32,64")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--gpu-jpeg", default="auto", choices=["auto", "nvimgcodec", "torchvision"])
    ap.add_argument("--render-compile", action="store_true", help="the renderer through torch.compile")
    ap.add_argument("--host-profile", help="append each stage's operations by host time (torch.profiler) to this file")
    ap.add_argument("--video", default=str(VIDEO), help="the frames' video (default: the shared fixture)")
    args = ap.parse_args()
    jpegs = load_frames(args.video, (1280, 720), 80, 64)
    dev = torch.device("cuda")
    torch.manual_seed(0)
    backend = StandInPose(RTMPoseBackend("rtmpose-m", "cuda", weights=False, detector=FullFrameDetector()))
    look = [GarmentAnnotator(Closet(user_dir="/nonexistent").get("tshirt-navy"))]
    renderer = BatchRenderer(dev, compile=args.render_compile, graphs=not args.render_compile)  # CUDA graphs
    eager = BatchRenderer(dev, graphs=False)  # op by op (Triton kernels where they run), side by side
    steps = BatchRenderer(dev, graphs=False, kernels="torch")  # op by op, the PyTorch steps
    compile_s = None
    if args.render_compile:
        t0 = time.perf_counter()
        renderer.warm_up()
        compile_s = round(time.perf_counter() - t0, 1)
    rows = []
    for b in [int(x) for x in args.sizes.split(",")]:
        batch = [jpegs[i % len(jpegs)] for i in range(b)]
        keys = list(range(b))
        dec_ms, images = timed(lambda: decode_batch(batch, dev, gpu_jpeg=args.gpu_jpeg), args.reps)  # noqa: B023
        pose_ms, poses = timed(lambda: backend.infer_tensors(images, keys), args.reps)  # noqa: B023
        timed_kp = [TimedKeypoints(p.persons[0].keypoints, "own") for p in poses]
        frames = torch.stack(images)
        ren_ms, out = timed(lambda: renderer.render(frames, timed_kp, [look] * b), args.reps)  # noqa: B023
        eager_ms, _ = timed(lambda: eager.render(frames, timed_kp, [look] * b), args.reps)  # noqa: B023
        steps_ms, _ = timed(lambda: steps.render(frames, timed_kp, [look] * b), args.reps)  # noqa: B023
        enc_ms, encoded = timed(lambda: encode_batch(list(out), [80] * b, args.gpu_jpeg), args.reps)  # noqa: B023
        total = dec_ms + pose_ms + ren_ms + enc_ms
        # Each stage's GPU time (kernels and copies, nvJPEG's included) and host time, once.
        gpu = {}
        for name, fn in (
            ("decode", lambda: decode_batch(batch, dev, gpu_jpeg=args.gpu_jpeg)),  # noqa: B023
            ("pose", lambda: backend.infer_tensors(images, keys)),  # noqa: B023
            ("render", lambda: renderer.render(frames, timed_kp, [look] * b)),  # noqa: B023
            ("render_eager", lambda: eager.render(frames, timed_kp, [look] * b)),  # noqa: B023
            ("render_steps", lambda: steps.render(frames, timed_kp, [look] * b)),  # noqa: B023
            ("encode", lambda: encode_batch(list(out), [80] * b, args.gpu_jpeg)),  # noqa: B023
        ):
            torch.cuda.synchronize()
            activities = [torch.profiler.ProfilerActivity.CUDA]
            if args.host_profile:
                activities.append(torch.profiler.ProfilerActivity.CPU)
            with torch.profiler.profile(activities=activities) as prof:
                t0 = time.perf_counter()
                fn()
                host_ms = (time.perf_counter() - t0) * 1000
                torch.cuda.synchronize()
            events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
            gpu[name] = (events, host_ms)
            if args.host_profile:  # where the host's time goes: the operations by their own CPU time
                table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=48)
                with open(args.host_profile, "a") as f:
                    f.write(f"\n## {name}, batch {b}\n{table}\n")
        kernels = gpu["render"][0]
        if args.host_profile:  # and the render's Python, function by function
            import cProfile
            import io
            import pstats

            pr = cProfile.Profile()
            pr.enable()
            for _ in range(5):
                renderer.render(frames, timed_kp, [look] * b)
            torch.cuda.synchronize()
            pr.disable()
            text = io.StringIO()
            pstats.Stats(pr, stream=text).sort_stats("tottime").print_stats(25)
            with open(args.host_profile, "a") as f:
                f.write(f"\n## render (cProfile, 5 renders), batch {b}\n{text.getvalue()}\n")
        # Compiled or graphed against eager, same batch: the largest difference in levels.
        diff = (out.int() - eager.render(frames, timed_kp, [look] * b).int()).abs()
        differ = {"max_diff_vs_eager": int(diff.max()), "share_differing": round(float((diff > 0).float().mean()), 6)}
        diff = (
            eager.render(frames, timed_kp, [look] * b).int() - steps.render(frames, timed_kp, [look] * b).int()
        ).abs()
        differ |= {
            "kernels_max_diff_vs_steps": int(diff.max()),
            "kernels_share_differing": float((diff > 0).float().mean()),
        }
        row = {
            "gpu_jpeg": args.gpu_jpeg,
            "render_compiled": args.render_compile,
            "compile_s": compile_s,
            "batch": b,
            "decode_ms": round(dec_ms, 2),
            "pose_ms": round(pose_ms, 2),
            "render_ms": round(ren_ms, 2),
            "render_graphs": renderer.replay is not None and renderer.replay.replays > 0,
            "render_eager_ms": round(eager_ms, 2),
            "render_kernels_used": eager.kernels,  # "triton" or "torch", op by op
            "render_steps_ms": round(steps_ms, 2),  # the PyTorch steps, op by op
            "render_kernels": len(kernels),  # GPU kernels and copies of one render
            "render_gpu_ms": round(sum(e.device_time for e in kernels) / 1000, 2),
            "render_eager_launches": len(gpu["render_eager"][0]),
            "render_steps_launches": len(gpu["render_steps"][0]),
            "encode_ms": round(enc_ms, 2),
            # GPU busy time per stage (kernels summed; streams may overlap them) and the time to
            # return to the host - under a profiler, so compare within these columns.
            "gpu_ms": {k: round(sum(e.device_time for e in ev) / 1000, 2) for k, (ev, _) in gpu.items()},
            "host_return_ms": {k: round(h, 2) for k, (_, h) in gpu.items()},
            "total_ms": round(total, 2),
            "frames_per_s": round(b / total * 1000, 1),
            "jpeg_kb_in": round(sum(map(len, batch)) / b / 1024, 1),
            "jpeg_kb_out": round(sum(map(len, encoded)) / b / 1024, 1),
            "psnr_out_db": psnr(decode_batch(encoded, dev, gpu_jpeg="torchvision"), out),  # what the client sees
        } | differ
        print(json.dumps(row), flush=True)
        rows.append(row)
    Path(args.out).write_text(json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
