"""Host time of binding garments to a batch of bodies: ``GarmentAnnotator.rig`` body by body
against ``rigs`` (array operations for the common case), side by side in one run. This is host
Python the batched (GPU) engine spends every batch, whatever the GPU.

    PYTHONPATH=src python3 bench/binding.py [--out binding.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from closet_figures import median_ms  # this folder's timer (run as a script)

from smartcloset.closet.store import Closet
from smartcloset.pose.simulate import standing_keypoints
from smartcloset.render.annotators import GarmentAnnotator


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    args = ap.parse_args()
    closet = Closet(user_dir="/nonexistent")
    rows = []
    for garment in ("tshirt-navy", "hoodie-grey", "trousers-denim", "dress-teal"):
        ann = GarmentAnnotator(closet.get(garment))
        for n in (1, 8, 32, 64):
            bodies = [standing_keypoints(1.0, 5.0 * i) for i in range(n)]
            one = median_ms(lambda a=ann, b=bodies: [a.rig(k) for k in b])
            batch = median_ms(lambda a=ann, b=bodies: a.rigs(b))
            row = {"garment": garment, "bodies": n, "one_by_one_ms": round(one, 3), "batched_ms": round(batch, 3)}
            row["ratio"] = round(one / batch, 1)
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
