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
BACKEND_NAMES = (
    "auto",
    "mediapipe",
    "rtmpose-t",
    "rtmpose-s",
    "rtmpose-m",
    "rtmpose-l",
    "rtmpose-m-384x288",
    "rtmpose-l-384x288",
)


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


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def create_backend(name: str = "auto", device: str = "auto", segmentation: bool = False, **options) -> PoseBackend:
    """Build the backend called ``name``.

    "auto" is RTMPose-m when PyTorch, a GPU and its weights are all here, else the embedded
    MediaPipe model. An RTMPose asked for by name whose weights are missing falls back to
    MediaPipe with a warning that names the command to fetch them.
    """
    if name == "auto":
        if _cuda_available():
            from .weights import get, is_cached

            if is_cached(get("rtmpose-m")):
                name = "rtmpose-m"
        if name == "auto":
            name = "mediapipe"
    if name in ("mediapipe", "blazepose"):
        from .mediapipe_backend import MediaPipeBackend

        return MediaPipeBackend(segmentation=segmentation, **options)
    if name.startswith("rtmpose"):
        if device == "auto":
            device = "cuda" if _cuda_available() else "cpu"
        try:
            from .rtmpose_backend import RTMPoseBackend
            from .weights import WeightsError
        except ImportError:
            log.warning(
                "%s needs PyTorch (pip install 'smartcloset[rtmpose]'); using the embedded MediaPipe model", name
            )
            return create_backend("mediapipe", segmentation=segmentation)
        try:
            return RTMPoseBackend(name, device=device, **options)
        except WeightsError as exc:
            log.warning("%s; using the embedded MediaPipe model instead", exc)
            return create_backend("mediapipe", segmentation=segmentation)
    raise ValueError(f"unknown pose backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
