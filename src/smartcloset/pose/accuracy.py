"""PCK (percentage of correct keypoints) against COCO-format ground truth."""

from __future__ import annotations

import numpy as np

from .types import KP


def torso_size(gt: np.ndarray) -> float:
    """Torso diameter: left shoulder to right hip (the usual PCK normaliser for full bodies)."""
    return float(np.linalg.norm(gt[KP["left_shoulder"], :2] - gt[KP["right_hip"], :2]))


def pck(pred: np.ndarray, gt: np.ndarray, alpha: float = 0.2) -> tuple[int, int]:
    """(correct, labelled): a keypoint is correct within ``alpha`` x torso size of the truth.

    ``gt`` is (17, 3) with COCO visibility in column 2 (0 = unlabelled, not counted).
    ``pred`` is (17, 2+) in the same pixels; a missing prediction counts as wrong.
    """
    labelled = gt[:, 2] > 0
    threshold = alpha * torso_size(gt)
    if pred is None:
        return 0, int(labelled.sum())
    dist = np.linalg.norm(pred[:, :2] - gt[:, :2], axis=1)
    return int(((dist <= threshold) & labelled).sum()), int(labelled.sum())
