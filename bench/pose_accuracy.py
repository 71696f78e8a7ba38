"""PCK@0.2 (torso-normalised) of a pose backend on the labelled photos in ../shared/fixtures/people.

.venv/bin/python bench/pose_accuracy.py [--backend mediapipe]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2
import numpy as np

from smartcloset.pose.accuracy import pck
from smartcloset.pose.backend import create_backend
from smartcloset.pose.types import COCO17_NAMES

log = logging.getLogger("pose_accuracy")
PEOPLE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "people"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="mediapipe")
    ap.add_argument("--alpha", type=float, default=0.2)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    truth = json.loads((PEOPLE / "tflite_pose_coco17.json").read_text())
    backend = create_backend(args.backend)
    correct = total = 0
    per_kp = np.zeros((17, 2), int)
    for img in truth["images"]:
        ann = next(a for a in truth["annotations"] if a["image_id"] == img["id"])
        gt = np.array(ann["keypoints"], np.float32).reshape(17, 3)
        rgb = cv2.cvtColor(cv2.imread(str(PEOPLE / img["file_name"])), cv2.COLOR_BGR2RGB)
        (pose,) = backend.infer([rgb], [None])
        pred = pose.primary().keypoints if pose.persons else None
        c, n = pck(pred, gt, args.alpha)
        correct, total = correct + c, total + n
        if pred is not None:
            d = np.linalg.norm(pred[:, :2] - gt[:, :2], axis=1)
            per_kp[:, 0] += d <= args.alpha * np.linalg.norm(gt[5, :2] - gt[12, :2])
        per_kp[:, 1] += gt[:, 2] > 0
        log.info("%s: PCK@%.1f %d/%d", img["file_name"], args.alpha, c, n)
    backend.close()
    log.info(
        "%s: PCK@%.1f = %.3f (%d/%d keypoints, %d images)",
        args.backend,
        args.alpha,
        correct / total,
        correct,
        total,
        len(truth["images"]),
    )
    missed = [COCO17_NAMES[i] for i in range(17) if per_kp[i, 0] < per_kp[i, 1]]
    log.info("keypoints missed at least once: %s", ", ".join(missed) or "none")


if __name__ == "__main__":
    main()
