"""RTMPose speed on a CUDA GPU, in one run: crops/s and latency against batch size for t/s/m/l in
fp32 / fp16 / bf16, eager or channels_last, with BatchNorm folded and CUDA-graph replay; then the
top-down step end to end (crop + model + decode) on batches of 1280x720 frames.

Random weights (speed does not depend on them). Timed with CUDA events, median of many runs after
warm-up. Writes rtmpose-gpu.json and rtmpose-gpu.md to $OUT (or the current folder).

    PYTHONPATH=src python3 bench/rtmpose_gpu.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from smartcloset.pose.rtmpose import build_rtmpose
from smartcloset.pose.rtmpose.optimize import GraphRunner, TopDownGraph, fold_batchnorm
from smartcloset.pose.rtmpose.topdown import box_to_center_scale, crop, crop_thetas, decode

BATCHES = (1, 8, 32, 128, 256)
SIZE = (192, 256)  # (w, h)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def record(rows: list[dict], **row) -> None:
    """Keep a measurement and print it at once (a cut-off run still shows what it measured)."""
    rows.append(row)
    print(json.dumps(row), flush=True)


def timed(fn, warmup: int = 5, reps: int = 30) -> float:
    """Median milliseconds of ``fn()`` measured with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return float(np.median(times))


def variant(size: str, dtype: str, channels_last: bool, fold: bool):
    model = build_rtmpose(size, SIZE).eval().cuda()
    if fold:
        fold_batchnorm(model)
    model = model.to(DTYPES[dtype])
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def model_table(rows: list[dict]) -> None:
    configs = [
        ("fp32", False, False, False),
        ("fp16", False, False, False),
        ("fp16", True, False, False),
        ("bf16", True, False, False),
        ("fp16", True, True, True),  # the serving configuration: folded BN, channels_last, graphs
        ("bf16", True, True, True),
    ]
    for size in ("t", "s", "m", "l"):
        for dtype, cl, fold, graphs in configs:
            model = variant(size, dtype, cl, fold)
            runner = GraphRunner(model, (3, SIZE[1], SIZE[0]), DTYPES[dtype], channels_last=cl) if graphs else None
            for b in BATCHES:
                x = torch.randn(b, 3, SIZE[1], SIZE[0], device="cuda").to(DTYPES[dtype])
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.no_grad():
                    fn = (lambda r=runner, x=x: r(x)) if runner else (lambda m=model, x=x: m(x))
                    ms = timed(fn, reps=20 if b >= 128 else 40)
                record(
                    rows,
                    model=f"rtmpose-{size}",
                    dtype=dtype,
                    channels_last=cl,
                    bn_folded=fold,
                    cuda_graphs=graphs,
                    batch=b,
                    ms=round(ms, 4),
                    crops_per_s=round(b / ms * 1000),
                )
            torch.cuda.empty_cache()


def agreement() -> dict:
    """fp16 / bf16 vs fp32 on the same random input (relative error of the SimCC logits)."""
    torch.manual_seed(0)
    ref_model = build_rtmpose("m", SIZE).eval().cuda()
    x = torch.randn(16, 3, SIZE[1], SIZE[0], device="cuda")
    out = {}
    with torch.no_grad():
        ref = ref_model(x.double().float())
        for name in ("fp16", "bf16"):
            m = build_rtmpose("m", SIZE).eval().cuda()
            m.load_state_dict(ref_model.state_dict())
            fold_batchnorm(m)
            m = m.to(DTYPES[name]).to(memory_format=torch.channels_last)
            got = m(x.to(DTYPES[name]).contiguous(memory_format=torch.channels_last))
            out[name] = max(float((g.float() - r).norm() / r.norm()) for g, r in zip(got, ref))
            out[name + "_argmax_agree"] = float(
                np.mean([(g.float().argmax(-1) == r.argmax(-1)).float().mean().item() for g, r in zip(got, ref)])
            )
    return out


def end_to_end(rows: list[dict]) -> None:
    """Frames already on the GPU (as nvJPEG leaves them): crop every person, pose, decode."""
    for size in ("t", "m"):
        model = variant(size, "fp16", True, True)
        runner = GraphRunner(model, (3, SIZE[1], SIZE[0]), torch.float16)
        for frames in (1, 8, 32, 64):
            images = torch.randint(0, 256, (frames, 3, 720, 1280), dtype=torch.uint8, device="cuda")
            boxes = np.tile(np.array([[480, 60, 800, 700]], np.float32), (frames, 1))
            center, scale = box_to_center_scale(boxes, SIZE)
            owner = torch.arange(frames, device="cuda")

            def step(images=images, owner=owner, center=center, scale=scale, runner=runner):
                with torch.no_grad():
                    crops = (
                        crop(images, owner, center, scale, SIZE).half().contiguous(memory_format=torch.channels_last)
                    )
                    kp, score = decode(*runner(crops))
                    return kp.cpu(), score.cpu()  # the host needs them: include the copy back

            ms = timed(step, reps=40)
            record(
                rows,
                model=f"rtmpose-{size}",
                frames=frames,
                persons=frames,
                end_to_end_ms=round(ms, 3),
                frames_per_s=round(frames / ms * 1000),
            )


def end_to_end_graph(rows: list[dict]) -> None:
    """The same step as one CUDA graph (TopDownGraph), with and without torch.compile."""
    for size, compile_ in (("t", False), ("m", False), ("m", True)):
        model = variant(size, "fp16", True, True)
        if compile_:
            model = torch.compile(model)
        step_graph = TopDownGraph(model, SIZE, (720, 1280))
        for frames in (1, 8, 32, 64):
            images = torch.randint(0, 256, (frames, 3, 720, 1280), dtype=torch.uint8, device="cuda")
            boxes = np.tile(np.array([[480, 60, 800, 700]], np.float32), (frames, 1))
            owner_np = np.arange(frames)

            def step(images=images, boxes=boxes, owner_np=owner_np, g=step_graph):
                center, scale = box_to_center_scale(boxes, SIZE)  # host work per batch, as served
                theta = (
                    torch.from_numpy(crop_thetas(center, scale, SIZE, (720, 1280))).pin_memory().cuda(non_blocking=True)
                )
                owner = torch.from_numpy(owner_np).pin_memory().cuda(non_blocking=True)
                kp, score = g(images, theta, owner)
                return kp.cpu(), score.cpu()

            ms = timed(step, reps=40)
            record(
                rows,
                model=f"rtmpose-{size}",
                one_graph=True,
                compiled=compile_,
                frames=frames,
                persons=frames,
                end_to_end_ms=round(ms, 3),
                frames_per_s=round(frames / ms * 1000),
            )


def compiled(rows: list[dict]) -> None:
    """RTMPose-m, fp16, folded BN, channels_last, through torch.compile (default mode) + graphs."""
    t0 = time.time()
    model = torch.compile(variant("m", "fp16", True, True))
    runner = GraphRunner(model, (3, SIZE[1], SIZE[0]), torch.float16)
    for b in (1, 8, 256):
        x = torch.randn(b, 3, SIZE[1], SIZE[0], device="cuda").half().contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            ms = timed(lambda r=runner, x=x: r(x), reps=30)
        record(
            rows,
            model="rtmpose-m",
            dtype="fp16",
            channels_last=True,
            bn_folded=True,
            cuda_graphs=True,
            compiled=True,
            batch=b,
            ms=round(ms, 4),
            crops_per_s=round(b / ms * 1000),
        )
    print(f"torch.compile variant: {time.time() - t0:.0f} s including compilation", flush=True)


def markdown(device: str, model_rows: list[dict], e2e_rows: list[dict], agree: dict) -> str:
    lines = [
        f"### RTMPose on {device} (random weights; CUDA events, medians)",
        "",
        "| model | dtype | channels_last | BN folded | CUDA graphs | "
        + " | ".join(f"b={b} crops/s (ms)" for b in BATCHES)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(BATCHES),
    ]
    key = lambda r: (r["model"], r["dtype"], r["channels_last"], r["bn_folded"], r["cuda_graphs"])  # noqa: E731
    seen = {}
    for r in model_rows:
        seen.setdefault(key(r), {})[r["batch"]] = r
    for k, by_batch in seen.items():
        cells = " | ".join(
            f"{by_batch[b]['crops_per_s']:,} ({by_batch[b]['ms']:.2f})" for b in BATCHES if b in by_batch
        )
        lines.append(
            f"| {k[0]} | {k[1]} | {'yes' if k[2] else 'no'} | {'yes' if k[3] else 'no'} | {'yes' if k[4] else 'no'} | {cells} |"
        )
    lines += [
        "",
        "End to end, frames 1280x720 already on the GPU, one person each: crop (grid_sample) + model (fp16, folded BN, channels_last, graph) + decode + copy back:",
        "",
        "| model | frames | ms | frames/s |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['model']} | {r['frames']} | {r['end_to_end_ms']:.3f} | {r['frames_per_s']:,} |" for r in e2e_rows]
    lines += [
        "",
        f"fp16 vs fp32 (RTMPose-m, relative error of the logits): {agree['fp16']:.2e}, argmax agreement {agree['fp16_argmax_agree']:.3f}; "
        f"bf16: {agree['bf16']:.2e}, argmax agreement {agree['bf16_argmax_agree']:.3f}",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    device = torch.cuda.get_device_name()
    print("device:", device, "torch", torch.__version__, flush=True)
    out = Path(os.environ.get("OUT", "."))
    t0 = time.time()
    agree = agreement()
    print("agreement", agree, flush=True)
    e2e_rows: list[dict] = []
    end_to_end(e2e_rows)
    model_rows: list[dict] = []
    if os.environ.get("ONLY_E2E_AND_COMPILE"):
        end_to_end_graph(e2e_rows)
        compiled(model_rows)
        print(json.dumps(e2e_rows))
        return
    model_table(model_rows)
    md = markdown(device, model_rows, e2e_rows, agree)
    (out / "rtmpose-gpu.json").write_text(
        json.dumps(
            {
                "device": device,
                "torch": torch.__version__,
                "agreement": agree,
                "model": model_rows,
                "end_to_end": e2e_rows,
            },
            indent=1,
        )
    )
    (out / "rtmpose-gpu.md").write_text(md)
    print(md)
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
