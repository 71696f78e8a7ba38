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


def arm_mask(keypoints: np.ndarray, shape: tuple[int, int], person_mask: np.ndarray | None = None) -> np.ndarray | None:
    """uint8 mask (255 = arm) at frame size ``shape`` (h, w), or None when no arm is seen."""
    kp = keypoints
    ls, rs = KP["left_shoulder"], KP["right_shoulder"]
    if min(kp[ls, 2], kp[rs, 2]) < ARM_SCORE:
        return None
    shoulder_w = float(np.linalg.norm(kp[ls, :2] - kp[rs, :2]))
    mask = np.zeros(shape, np.uint8)
    drawn = False
    for side in ("left", "right"):
        e, w = (kp[KP[f"{side}_{j}"]] for j in ("elbow", "wrist"))
        if e[2] >= ARM_SCORE and w[2] >= ARM_SCORE:
            cv2.line(mask, _pt(e), _pt(w), 255, max(2, int(FOREARM_WIDTH * shoulder_w)), cv2.LINE_AA)
            hand = w[:2] + (w[:2] - e[:2]) * HAND_LENGTH
            cv2.line(mask, _pt(w), _pt(hand), 255, max(2, int(FOREARM_WIDTH * 1.1 * shoulder_w)), cv2.LINE_AA)
            drawn = True
    if not drawn:
        return None
    if person_mask is not None:
        person = cv2.resize(person_mask, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
        mask = cv2.min(mask, person)
    return mask


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def restore(frame: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend the original pixels back where ``mask`` says (soft edges), in place."""
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return frame
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    m = cv2.merge([mask[y0:y1, x0:x1]] * 3)
    roi = frame[y0:y1, x0:x1]
    keep = cv2.multiply(roi, cv2.bitwise_not(m), scale=1 / 255)
    roi[:] = cv2.add(keep, cv2.multiply(original[y0:y1, x0:x1], m, scale=1 / 255))
    return frame
