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
    geometry both the CPU mask and the batched renderer draw (``arm_capsules``)."""
    caps, count = arm_capsules(np.asarray(keypoints)[None])
    return [(c[0:2], c[2:4], float(c[4])) for c in caps[0, : count[0]]]


def arm_capsules(keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``arm_segments`` for a batch of bodies ((B, K, 3) keypoints) in array operations: (B, 4, 5)
    float64 rows (start x, y, end x, y, width), each body's seen ones first (left forearm and
    hand, then the right's; zeros after), and how many each body has. Why arrays: the batched
    renderer needs every frame's arms each batch, and building them body by body was a tenth of
    its host time (64 clients, H200)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    caps = np.zeros((len(kp), 4, 5))
    seen = np.zeros((len(kp), 4), bool)
    if len(kp):
        ls, rs = KP["left_shoulder"], KP["right_shoulder"]
        shoulder_w = np.sqrt(((kp[:, ls, :2] - kp[:, rs, :2]) ** 2).sum(axis=1))
        body = np.minimum(kp[:, ls, 2], kp[:, rs, 2]) >= ARM_SCORE
        for i, side in enumerate(("left", "right")):
            e, w = kp[:, KP[f"{side}_elbow"]], kp[:, KP[f"{side}_wrist"]]
            hand = w[:, :2] + (w[:, :2] - e[:, :2]) * HAND_LENGTH
            caps[:, 2 * i] = np.column_stack([e[:, :2], w[:, :2], FOREARM_WIDTH * shoulder_w])
            caps[:, 2 * i + 1] = np.column_stack([w[:, :2], hand, FOREARM_WIDTH * 1.1 * shoulder_w])
            seen[:, 2 * i : 2 * i + 2] = (body & (e[:, 2] >= ARM_SCORE) & (w[:, 2] >= ARM_SCORE))[:, None]
    # The seen capsules first, in order (a body whose left arm is not seen: the right's).
    order = np.argsort(~seen, axis=1, kind="stable")
    caps = np.take_along_axis(caps * seen[:, :, None], order[:, :, None], axis=1)
    return caps, seen.sum(axis=1)


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
