"""One-Euro filter (Casiez, Roussel & Vogel, CHI 2012), vectorised over keypoints.

A low-pass filter whose cutoff rises with speed: heavy smoothing while the person stands still
(kills jitter), little while they move (keeps lag low). It runs on real timestamps, so an
irregular frame rate changes nothing.

Positions are filtered in units of the frame height, so the parameters mean the same at any
resolution. Defaults (tuned on synthetic trajectories in tests/test_timeline.py):

* ``min_cutoff = 0.5`` Hz - cutoff at rest; lower = steadier but slower to settle.
* ``beta = 16.0`` - cutoff gain per (frame heights / s) of speed; higher = less lag in motion.

On 3 px noise at ~30 FPS they cut frame-to-frame jitter ~6x, and lag a keypoint moving at half
a frame height per second by ~5 px (a grid over both, in the closing note of the change).
* ``d_cutoff = 1.0`` Hz - cutoff of the speed estimate itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroParams:
    min_cutoff: float = 0.5
    beta: float = 16.0
    d_cutoff: float = 1.0


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Filters arrays of a fixed shape (e.g. (17, 2) keypoints) sampled at times in seconds."""

    def __init__(self, params: OneEuroParams = OneEuroParams()) -> None:
        self.params = params
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self._x is None or self._t is None or x.shape != self._x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        if dt <= 0:  # same or older timestamp: nothing new to learn
            return self._x.copy()
        p = self.params
        dx = (x - self._x) / dt
        self._dx = self._dx + _alpha(p.d_cutoff, dt) * (dx - self._dx)
        # Speed per keypoint (norm over the last axis), so x and y share one cutoff.
        speed = np.linalg.norm(self._dx, axis=-1, keepdims=True) if x.ndim > 1 else np.abs(self._dx)
        a = _alpha(p.min_cutoff + p.beta * speed, dt)
        self._x = self._x + a * (x - self._x)
        self._t = t
        return self._x.copy()
