"""The data every pose backend returns, in COCO-17 order and image pixels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COCO17_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
KP = {name: i for i, name in enumerate(COCO17_NAMES)}
NUM_KEYPOINTS = len(COCO17_NAMES)


@dataclass
class Person:
    """One person: box ``[x1, y1, x2, y2]``, a score, and ``keypoints`` (17, 3) = x, y, score."""

    bbox: np.ndarray
    score: float
    keypoints: np.ndarray

    def __post_init__(self) -> None:
        self.bbox = np.asarray(self.bbox, dtype=np.float32).reshape(4)
        self.keypoints = np.asarray(self.keypoints, dtype=np.float32).reshape(NUM_KEYPOINTS, 3)

    def scaled(self, sx: float, sy: float) -> Person:
        """The same person in an image scaled by (sx, sy): inference size -> full size."""
        kp = self.keypoints.copy()
        kp[:, 0] *= sx
        kp[:, 1] *= sy
        box = self.bbox * np.array([sx, sy, sx, sy], dtype=np.float32)
        return Person(box, self.score, kp)

    @property
    def area(self) -> float:
        w, h = self.bbox[2] - self.bbox[0], self.bbox[3] - self.bbox[1]
        return float(max(w, 0.0) * max(h, 0.0))

    def to_json(self) -> dict:
        return {
            "bbox": [round(float(v), 2) for v in self.bbox],
            "score": round(float(self.score), 4),
            "keypoints": [[round(float(x), 2), round(float(y), 2), round(float(s), 4)] for x, y, s in self.keypoints],
        }


@dataclass
class FramePose:
    """All persons found in one image, plus the person mask where the backend makes one.

    ``mask`` is float32 in [0, 1] at the resolution the backend ran at; the renderer resizes it.
    """

    persons: list[Person] = field(default_factory=list)
    mask: np.ndarray | None = None

    def scaled(self, sx: float, sy: float) -> FramePose:
        return FramePose([p.scaled(sx, sy) for p in self.persons], self.mask)

    def primary(self) -> Person | None:
        """The person the mirror dresses: the largest confident one (the one nearest the mirror)."""
        if not self.persons:
            return None
        return max(self.persons, key=lambda p: p.area * max(p.score, 1e-3))
