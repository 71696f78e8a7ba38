"""The batched renderer's host part alone: ``BatchRenderer.plan`` (binding, arms, triangles - the
NumPy the host does before the device draws) per batch size, on the fixture video's keypoints
(the model reference in its JSON), a T-shirt on everyone, or trousers under a hoodie. No GPU:
the plan is the host's part whatever the device, and at 64 clients it was a quarter of what
held an engine's GIL (docs/performance.md, "Stop 17").

    PYTHONPATH=src python3 bench/render_plan.py [--sizes 1,8,32] [--reps 200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from smartcloset.bench import letterbox_keypoints
from smartcloset.closet.garment import load_garment
from smartcloset.closet.store import STARTER_DIR
from smartcloset.pose.timeline import TimedKeypoints
from smartcloset.render.annotators import GarmentAnnotator
from smartcloset.render.batched import BatchRenderer

TRUTH = (
    Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "video" / "pose_squats_coco17_per_frame.json"
)
LOOKS = {"tshirt": ("tshirt-navy",), "hoodie": ("trousers-denim", "hoodie-grey")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1,8,32")
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--truth", default=str(TRUTH), help="per-frame COCO-17 keypoints (the fixture's JSON)")
    args = ap.parse_args()
    data = json.loads(Path(args.truth).read_text())
    src = (data["width"], data["height"])
    kps = [letterbox_keypoints(np.array(f["keypoints"]).reshape(17, 3), src, (1280, 720)) for f in data["frames"]]
    renderer = BatchRenderer("cpu")
    out = {}
    for name, ids in LOOKS.items():
        look = [GarmentAnnotator(load_garment(STARTER_DIR / f"{i}.json")) for i in ids]
        for b in (int(x) for x in args.sizes.split(",")):

            def batch(i: int, b: int = b, look: list = look):
                return [TimedKeypoints(kps[(i * 7 + j * 3) % len(kps)], "own") for j in range(b)], [look] * b

            for i in range(10):  # warm: meshes built, NumPy's first calls
                renderer.plan((b, 3, 720, 1280), *batch(i))
            times = []
            for i in range(args.reps):
                poses, looks = batch(i)
                t = time.perf_counter()
                renderer.plan((b, 3, 720, 1280), poses, looks)
                times.append(time.perf_counter() - t)
            out[f"{name}/b{b}"] = round(float(np.median(times)) * 1e3, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
