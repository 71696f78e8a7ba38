"""The live pipeline, offline: dress the person in an image or a video file.

Same stages as a live session - pose at the inference size, keypoints through the timeline
(own pose + One-Euro smoothing on the video's timestamps), the same annotators - so what
``tryon`` writes is what the mirror shows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .closet.garment import draw_order
from .closet.store import Closet
from .codec import fit_size
from .pose.backend import PoseBackend, create_backend
from .pose.timeline import KeypointTimeline
from .render.annotators import GarmentAnnotator, LookAnnotator, SkeletonAnnotator, render_frame

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class TryOnError(RuntimeError):
    pass


def _pose_input(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = frame.shape[:2]
    tw, th = fit_size(w, h, size)
    small = cv2.resize(frame, (tw, th), interpolation=cv2.INTER_AREA) if (tw, th) != (w, h) else frame
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)


def dress_frame(
    frame: np.ndarray,
    t_ms: float,
    backend: PoseBackend,
    timeline: KeypointTimeline,
    annotators: list,
    stream: str | None,
    inference_size: tuple[int, int] = (640, 360),
) -> np.ndarray:
    """Pose ``frame``, add it to ``timeline`` at ``t_ms`` and draw the look on it (in place)."""
    small = _pose_input(frame, inference_size)
    (pose,) = backend.infer([small], [stream])
    h = frame.shape[0]
    timeline.add(t_ms, pose.scaled(frame.shape[1] / small.shape[1], h / small.shape[0]), t_ms, h)
    return render_frame(frame, timeline.smoothed(t_ms), annotators)


def tryon_file(
    src: str,
    dst: str,
    garments: list[str],
    backend: str = "auto",
    closet_dir: str | None = None,
    skeleton: bool = False,
    segmentation: bool = True,
) -> int:
    """Write the dressed image or mp4; returns the number of frames written."""
    closet = Closet(closet_dir)
    try:
        items = draw_order([closet.get(g) for g in garments])
    except KeyError as exc:
        raise TryOnError(f"{exc.args[0]}; see `smart-closet garments list`") from None
    annotators: list = [LookAnnotator([GarmentAnnotator(g) for g in items])]
    if skeleton:
        annotators.append(SkeletonAnnotator())
    if not Path(src).is_file():
        raise TryOnError(f"input {src} does not exist")
    # Read the input before loading the model: a bad file is refused at once, not after seconds.
    image = cap = None
    if Path(src).suffix.lower() in IMAGE_SUFFIXES:
        image = cv2.imread(src, cv2.IMREAD_COLOR)
        if image is None:
            raise TryOnError(f"cannot read image {src}")
    else:
        cap = cv2.VideoCapture(src)
        if not cap.isOpened():
            cap.release()
            raise TryOnError(f"cannot open video {src}")
    pose_backend = create_backend(backend, segmentation=segmentation)
    try:
        if image is not None:
            out = dress_frame(image, 0.0, pose_backend, KeypointTimeline(), annotators, None)
            if not cv2.imwrite(dst, out):
                raise TryOnError(f"cannot write {dst} (unknown image type?)")
            return 1
        return _tryon_video(cap, src, dst, pose_backend, annotators)
    finally:
        if cap is not None:
            cap.release()
        pose_backend.close()


def _tryon_video(cap: cv2.VideoCapture, src: str, dst: str, backend: PoseBackend, annotators: list) -> int:
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = None
    timeline = KeypointTimeline()
    n = 0
    try:
        with tqdm(total=total, unit="frame", desc="tryon", disable=None) as bar:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                t_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
                if not t_ms and n:
                    t_ms = n * 1000.0 / fps
                if writer is None:
                    h, w = frame.shape[:2]
                    writer = cv2.VideoWriter(dst, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
                    if not writer.isOpened():
                        raise TryOnError(f"cannot write video {dst}")
                writer.write(dress_frame(frame, t_ms, backend, timeline, annotators, "video"))
                n += 1
                bar.update(1)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if n == 0:
        raise TryOnError(f"no frames could be read from {src}")
    return n
