"""Alpha compositing of premultiplied BGRA patches onto a BGR frame, in place (saturating SIMD)."""

from __future__ import annotations

import cv2
import numpy as np


def premultiply(bgra: np.ndarray) -> np.ndarray:
    """BGRA -> premultiplied BGRA (uint8), so bilinear warping does not darken the edges."""
    a = bgra[..., 3:4].astype(np.uint16)
    rgb = (bgra[..., :3].astype(np.uint16) * a + 127) // 255
    return np.concatenate([rgb.astype(np.uint8), bgra[..., 3:4]], axis=2)


def composite(frame: np.ndarray, patch: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
    """``frame[roi] = patch.rgb + frame[roi] * (1 - patch.alpha)``; returns ``frame``."""
    x0, y0 = origin
    h, w = patch.shape[:2]
    roi = frame[y0 : y0 + h, x0 : x0 + w]
    inv = cv2.bitwise_not(np.ascontiguousarray(patch[..., 3]))
    background = cv2.multiply(roi, cv2.merge((inv, inv, inv)), scale=1.0 / 255.0)
    roi[:] = cv2.add(cv2.cvtColor(patch, cv2.COLOR_BGRA2BGR), background)  # saturates at 255
    return frame
