"""The embedded default: MediaPipe BlazePose (full) from the mediapipe 0.10.14 wheel.

That wheel ships the pose detector, the full landmark model and the segmentation head inside
the package, so this backend works with no download at all. BlazePose is a single-person
tracker: each client stream gets its own graph, whose ROI tracking skips the detector while
the person stays in view. A graph is used by one thread at a time, so a stream that has two
batches in flight gets a second graph (tracking still holds at half the frame rate).
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .types import FramePose, Person

log = logging.getLogger(__name__)

# BlazePose's 33 landmarks -> COCO-17, in COCO order.
BLAZEPOSE_TO_COCO17 = np.array([0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28])


def _quiet_native_logs() -> None:
    # MediaPipe's C++ side logs through glog/absl to stderr; keep warnings out of a mirror's log.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def landmarks_to_person(landmarks: np.ndarray, width: int, height: int) -> Person:
    """(33, 3) normalised x, y, visibility -> a COCO-17 Person in pixels of a width x height image."""
    xy = landmarks[:, :2] * np.array([width, height], dtype=np.float32)
    kp = np.concatenate([xy[BLAZEPOSE_TO_COCO17], landmarks[BLAZEPOSE_TO_COCO17, 2:3]], axis=1)
    # Box around every landmark BlazePose placed, padded 10 % like a detector box would be.
    x1, y1 = xy.min(axis=0)
    x2, y2 = xy.max(axis=0)
    pad_x, pad_y = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
    box = np.array(
        [max(x1 - pad_x, 0), max(y1 - pad_y, 0), min(x2 + pad_x, width), min(y2 + pad_y, height)], dtype=np.float32
    )
    return Person(box, float(kp[:, 2].mean()), kp)


class MediaPipeBackend:
    """BlazePose full on the CPU; runs the images of a batch on ``threads`` cores at once."""

    name = "mediapipe"
    device = "cpu"

    def __init__(
        self,
        segmentation: bool = True,
        threads: int | None = None,
        max_inflight: int | None = None,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
    ) -> None:
        _quiet_native_logs()
        import mediapipe as mp  # imported here: heavy, and only this backend needs it

        # mediapipe 0.10.14 calls a protobuf API that newer protobuf marks deprecated, per frame.
        warnings.filterwarnings("ignore", message=r"SymbolDatabase\.GetPrototype\(\) is deprecated")

        self._pose_cls = mp.solutions.pose.Pose
        self.segmentation = segmentation
        self.threads = max(1, threads or os.cpu_count() or 1)
        # One graph runs on about one core, so keeping one batch in flight per core is what
        # lets a single 40 FPS client be posed at more than one graph's ~22 FPS.
        self.max_inflight = max(1, max_inflight or self.threads)
        self._options = dict(
            model_complexity=1,  # "full": the landmark model the wheel ships
            enable_segmentation=segmentation,
            smooth_landmarks=False,  # the keypoint timeline smooths, with real timestamps
            smooth_segmentation=True,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence,
        )
        self._lock = threading.Lock()
        self._idle: dict[Hashable | None, list] = {}
        self._released: set[Hashable] = set()
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="mediapipe")

    # -- graphs ------------------------------------------------------------------------
    def _take_graph(self, stream: Hashable | None):
        with self._lock:
            self._released.discard(stream)
            idle = self._idle.get(stream)
            if idle:
                return idle.pop()
        return self._pose_cls(static_image_mode=stream is None, **self._options)

    def _return_graph(self, stream: Hashable | None, graph) -> None:
        with self._lock:
            if stream is None or stream not in self._released:
                self._idle.setdefault(stream, []).append(graph)
                return
        graph.close()

    def release(self, stream: Hashable) -> None:
        with self._lock:
            graphs = self._idle.pop(stream, [])
            self._released.add(stream)
            if len(self._released) > 4096:  # only guards graphs in flight at release time
                self._released.clear()
        for g in graphs:
            g.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            graphs = [g for gs in self._idle.values() for g in gs]
            self._idle.clear()
        for g in graphs:
            g.close()

    # -- inference ---------------------------------------------------------------------
    def _infer_one(self, image: np.ndarray, stream: Hashable | None) -> FramePose:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image, got shape {image.shape} dtype {image.dtype}")
        graph = self._take_graph(stream)
        try:
            result = graph.process(image)
        finally:
            self._return_graph(stream, graph)
        h, w = image.shape[:2]
        persons: list[Person] = []
        if result.pose_landmarks is not None:
            lm = np.array([(p.x, p.y, p.visibility) for p in result.pose_landmarks.landmark], dtype=np.float32)
            persons.append(landmarks_to_person(lm, w, h))
        mask = None
        if result.segmentation_mask is not None:
            mask = np.clip(result.segmentation_mask * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return FramePose(persons, mask)

    def infer(self, images: Sequence[np.ndarray], streams: Sequence[Hashable | None]) -> list[FramePose]:
        if len(images) != len(streams):
            raise ValueError("images and streams must have the same length")
        if len(images) == 1:
            return [self._infer_one(images[0], streams[0])]
        return list(self._pool.map(self._infer_one, images, streams))
