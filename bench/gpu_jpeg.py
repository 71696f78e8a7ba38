"""JPEG on the GPU for a batch of frames: torchvision's nvJPEG against nvImageCodec.

torchvision decodes a batch on the GPU's hardware JPEG engines (A100/H100/H200; one decoder per
process, behind a lock) and encodes frame by frame, 4:4:4. nvImageCodec decodes a batch on the
same engines and encodes a batch per call over a few CUDA streams, 4:2:0. Per batch size: wall time
(median; ``cpu_ms`` is the process's CPU time, which includes spinning in CUDA syncs), how far
the decoded pixels differ from torchvision's, the encoded size, its chroma subsampling (read
from the frame header) and its PSNR against the encoder's input; then nvImageCodec's thread
count.

    pip install nvidia-nvimgcodec-cu13 nvidia-nvjpeg   # (-cu12 for CUDA 12 builds of torch)
    PYTHONPATH=src python3 bench/gpu_jpeg.py --out gpu-jpeg.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from smartcloset.bench import load_frames
from smartcloset.codec_gpu import decode_batch, encode_batch

VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "video" / "pose_squats.mp4"


def timed(fn, reps: int) -> dict:
    out, wall, cpu = None, [], []
    for _ in range(reps):
        torch.cuda.synchronize()
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        wall.append((time.perf_counter() - t0) * 1000)
        cpu.append((time.process_time() - c0) * 1000)
    return {"ms": round(float(np.median(wall)), 3), "cpu_ms": round(float(np.median(cpu)), 3), "out": out}


def subsampling(jpeg: bytes) -> str:
    """The frame header's chroma subsampling: "4:4:4", "4:2:0", ... (baseline/progressive SOF)."""
    i = 2
    while i + 4 <= len(jpeg):
        marker, length = jpeg[i + 1], int.from_bytes(jpeg[i + 2 : i + 4], "big")
        if marker in (0xC0, 0xC1, 0xC2):
            comps = jpeg[i + 9]
            h, v = jpeg[i + 11] >> 4, jpeg[i + 11] & 15  # the luma component's sampling factors
            return {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0"}.get((h, v), f"{h}x{v}") if comps == 3 else "gray"
        i += 2 + length
    return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--sizes", default="1,8,32,64")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", default="1,4,8,15", help="nvImageCodec threads (and CUDA streams) to try")
    args = ap.parse_args()
    from smartcloset import codec_nvimgcodec as nvi

    jpegs = load_frames(str(VIDEO), (1280, 720), 80, 64)
    dev = torch.device("cuda")
    rows = []
    codecs = {"hw": nvi.NvImageCodec(dev)}
    for b in [int(x) for x in args.sizes.split(",")]:
        batch = [jpegs[i % len(jpegs)] for i in range(b)]
        ref = timed(lambda: decode_batch(batch, dev, gpu_jpeg="torchvision"), args.reps)  # noqa: B023
        row = {"batch": b, "torchvision_decode": {k: v for k, v in ref.items() if k != "out"}}
        ref_imgs = torch.stack(ref["out"]).float()
        for kind, c in codecs.items():
            try:
                r = timed(lambda: c.decode(batch), args.reps)  # noqa: B023
                imgs = torch.stack(r["out"]).float()
                diff = (imgs - ref_imgs).abs()
                row[f"nvimgcodec_decode_{kind}"] = {
                    "ms": r["ms"],
                    "cpu_ms": r["cpu_ms"],
                    "mean_abs_diff": round(float(diff.mean()), 3),
                    "max_abs_diff": int(diff.max()),
                }
            except Exception as exc:  # noqa: BLE001
                row[f"nvimgcodec_decode_{kind}"] = {"error": repr(exc)}
        images = list(ref["out"])
        q = [80] * b
        enc = timed(lambda: encode_batch(images, q, "torchvision"), args.reps)  # noqa: B023
        row["torchvision_encode"] = {
            "ms": enc["ms"],
            "cpu_ms": enc["cpu_ms"],
            "kb": round(sum(map(len, enc["out"])) / b / 1024, 1),
            "subsampling": subsampling(enc["out"][0]),  # torchvision's CUDA encoder fixes 4:4:4
        }
        try:
            c = codecs["hw"]
            r = timed(lambda: c.encode(images, 80), args.reps)  # noqa: B023
            back = torch.stack(decode_batch(r["out"], dev, gpu_jpeg="torchvision")).float()
            row["nvimgcodec_encode"] = {
                "ms": r["ms"],
                "cpu_ms": r["cpu_ms"],
                "kb": round(sum(map(len, r["out"])) / b / 1024, 1),
                "subsampling": subsampling(r["out"][0]),
                "psnr_vs_input": round(float(10 * torch.log10(255**2 / ((back - ref_imgs) ** 2).mean())), 2),
            }
        except Exception as exc:  # noqa: BLE001
            row["nvimgcodec_encode"] = {"error": repr(exc)}
        tv_back = torch.stack(decode_batch(enc["out"], dev, gpu_jpeg="torchvision")).float()
        row["torchvision_encode"]["psnr_vs_input"] = round(
            float(10 * torch.log10(255**2 / ((tv_back - ref_imgs) ** 2).mean())), 2
        )
        for threads in [int(t) for t in args.threads.split(",")]:
            # nvImageCodec spreads a batch over its threads and CUDA streams
            try:
                tc = nvi.NvImageCodec(dev, threads=threads)
                d = timed(lambda: tc.decode(batch), args.reps)  # noqa: B023
                e = timed(lambda: tc.encode(images, 80), args.reps)  # noqa: B023
                row[f"nvimgcodec_threads_{threads}"] = {"decode_hw_ms": d["ms"], "encode_ms": e["ms"]}
            except Exception as exc:  # noqa: BLE001
                row[f"nvimgcodec_threads_{threads}"] = {"error": repr(exc)}
        print(json.dumps(row), flush=True)
        rows.append(row)
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
