"""Carrying the person's light and folds onto the garment, so it sits in the scene.

The fine luminance detail of the camera frame under the garment - a small blur over a slightly
larger one, at quarter resolution, so only folds and creases pass, not the outlines of the
clothes underneath - multiplies the garment's colour: where the real shirt folds, the virtual
one darkens too; the garment keeps its own colour on average.
"""

from __future__ import annotations

import cv2
import numpy as np

STRENGTH = 0.6  # 0: no shading; 1: the full local contrast of the frame
LIMITS = (0.75, 1.2)


class Shading:
    """The frame's shading factor, computed once per frame at quarter resolution; ``patch``
    crops and scales it to any garment patch."""

    def __init__(self, original: np.ndarray, strength: float = STRENGTH) -> None:
        h, w = original.shape[:2]
        self.size = (w, h)
        small = cv2.resize(original, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA)
        lum = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32) + 8.0
        detail = cv2.GaussianBlur(lum, (0, 0), 1.0) / cv2.GaussianBlur(lum, (0, 0), 4.0)
        self.small = np.clip(1.0 + strength * (detail - 1.0), *LIMITS)

    def patch(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        sx, sy = self.small.shape[1] / self.size[0], self.small.shape[0] / self.size[1]
        ax, ay = int(x0 * sx), int(y0 * sy)
        bx, by = max(int(np.ceil((x0 + w) * sx)), ax + 1), max(int(np.ceil((y0 + h) * sy)), ay + 1)
        return cv2.resize(self.small[ay:by, ax:bx], (w, h), interpolation=cv2.INTER_LINEAR)


def shading_map(original_roi: np.ndarray, strength: float = STRENGTH) -> np.ndarray:
    """Per-pixel factor (float32, HxW) from the camera pixels under a garment patch."""
    h, w = original_roi.shape[:2]
    return Shading(original_roi, strength).patch(0, 0, w, h)


def shade(patch: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Premultiplied BGRA patch with its colour scaled by ``factor`` (alpha unchanged)."""
    rgb = cv2.multiply(patch[..., :3], cv2.merge((factor, factor, factor)), dtype=cv2.CV_8U)
    return np.dstack([np.minimum(rgb, patch[..., 3:4]), patch[..., 3]])
