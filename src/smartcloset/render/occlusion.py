"""Which pixels are the person's arms, so they can be drawn in front of the torso's cloth.

Capsules along each confidently seen forearm (elbow -> wrist, plus the hand beyond the wrist) -
what crosses in front of the body; the upper arm stays under the sleeve that covers it -
sized from the shoulder width, cut to the person mask where the backend gave one
(BlazePose's segmentation, ``--segmentation``) so the edges follow the real arm.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..pose.types import KP

ARM_SCORE = 0.5  # an arm segment is restored only when both its ends are seen this well
FOREARM_WIDTH = 0.24
HAND_LENGTH = 0.45  # x forearm length, beyond the wrist


def arm_segments(keypoints: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """The capsules (start, end, width in px) of the confidently seen forearms and hands; the
    geometry both the CPU mask and the batched renderer draw."""
    kp = keypoints
    ls, rs = KP["left_shoulder"], KP["right_shoulder"]
    if min(kp[ls, 2], kp[rs, 2]) < ARM_SCORE:
        return []
    shoulder_w = float(np.linalg.norm(kp[ls, :2] - kp[rs, :2]))
    segments = []
    for side in ("left", "right"):
        e, w = (kp[KP[f"{side}_{j}"]] for j in ("elbow", "wrist"))
        if e[2] >= ARM_SCORE and w[2] >= ARM_SCORE:
            hand = w[:2] + (w[:2] - e[:2]) * HAND_LENGTH
            segments += [(e[:2], w[:2], FOREARM_WIDTH * shoulder_w), (w[:2], hand, FOREARM_WIDTH * 1.1 * shoulder_w)]
    return segments


def arm_mask(
    keypoints: np.ndarray, shape: tuple[int, int], person_mask: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[int, int]] | None:
    """The arms' mask over their bounding box only: ``(mask, (x0, y0))``, 255 = arm; None if no
    forearm is seen. ``shape`` is the frame's (h, w); ``person_mask`` is at any resolution."""
    segments = arm_segments(keypoints)
    if not segments:
        return None
    h, w_ = shape
    pad = max(width for _, _, width in segments) / 2 + 2
    pts = np.array([p for a, b, _ in segments for p in (a, b)])
    x0, y0 = np.floor(np.maximum(pts.min(axis=0) - pad, 0)).astype(int)
    x1, y1 = np.ceil(np.minimum(pts.max(axis=0) + pad, (w_, h))).astype(int)
    if x1 <= x0 or y1 <= y0:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for a, b, width in segments:
        cv2.line(mask, _pt(a - (x0, y0)), _pt(b - (x0, y0)), 255, max(2, int(width)), cv2.LINE_AA)
    if person_mask is not None:
        sy, sx = person_mask.shape[0] / h, person_mask.shape[1] / w_
        crop = person_mask[
            int(y0 * sy) : max(int(y1 * sy), int(y0 * sy) + 1), int(x0 * sx) : max(int(x1 * sx), int(x0 * sx) + 1)
        ]
        mask = cv2.min(mask, cv2.resize(crop, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR))
    return mask, (int(x0), int(y0))


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def restore(frame: np.ndarray, original: np.ndarray, arms: tuple[np.ndarray, tuple[int, int]]) -> np.ndarray:
    """Blend ``original`` (the camera pixels of the arms' box) back where the mask says, in place."""
    mask, (x0, y0) = arms
    h, w = mask.shape
    m = cv2.merge([mask] * 3)
    roi = frame[y0 : y0 + h, x0 : x0 + w]
    keep = cv2.multiply(roi, cv2.bitwise_not(m), scale=1 / 255)
    roi[:] = cv2.add(keep, cv2.multiply(original, m, scale=1 / 255))
    return frame
