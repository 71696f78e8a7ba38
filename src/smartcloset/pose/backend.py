"""The one interface every pose model implements, and how a backend is chosen by name.

A backend takes a *batch* of RGB images (from any number of clients) and returns, per image,
the persons found in that image's own pixel coordinates. ``streams`` names the client each
image came from, so a backend that tracks (MediaPipe's ROI tracking, RTMPose's box tracking)
keeps one state per client; ``None`` means a still image with no history.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from .types import FramePose

log = logging.getLogger(__name__)

#: Names accepted by ``--backend`` / ``--pose``. "auto" resolves to the best one available.
BACKEND_NAMES = ("auto", "mediapipe")


@runtime_checkable
class PoseBackend(Protocol):
    name: str
    device: str
    #: How many batches the worker may have in flight at once (CPU backends that run one
    #: image per core use >1 to keep every core busy; GPU backends overlap copies/compute).
    max_inflight: int

    def infer(self, images: Sequence[np.ndarray], streams: Sequence[Hashable | None]) -> list[FramePose]:
        """Poses for each RGB uint8 image, in that image's pixels, in order."""
        ...

    def release(self, stream: Hashable) -> None:
        """Forget a stream's tracking state (its client left)."""
        ...

    def close(self) -> None: ...


def create_backend(name: str = "auto", **options) -> PoseBackend:
    """Build the backend called ``name``; "auto" is the embedded MediaPipe model for now."""
    if name in ("auto", "mediapipe", "blazepose"):
        from .mediapipe_backend import MediaPipeBackend

        return MediaPipeBackend(**options)
    raise ValueError(f"unknown pose backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
