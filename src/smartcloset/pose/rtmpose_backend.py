"""RTMPose as a pose backend: batched top-down inference with box tracking.

Per client stream, boxes come from the previous frame's keypoints while tracking holds; the
person detector runs when tracking is lost and every ``redetect_every`` frames. Every person of
every frame of the worker's batch is cropped in one ``grid_sample`` and posed in one model call.
On CUDA the model runs in fp16 with BatchNorm folded, channels_last, through CUDA graphs per
batch-size bucket, and each in-flight batch has its own stream (and graphs), so consecutive
batches overlap their copies and compute.

Detector: RTMDet-nano person (``pose/rtmdet.py``) when its weights are cached
(``smart-closet models fetch rtmdet-nano-person``), else ``FullFrameDetector`` - the frame is the
person's box, right for one person in front of a mirror, wrong for a crowd. The log says which.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from .types import FramePose, Person

log = logging.getLogger(__name__)

TRACK_MIN_SCORE = 0.3  # mean keypoint score under which tracking is lost
BOX_MARGIN = 0.1  # keypoint box grown by this much per side before the 1.25 padding


class FullFrameDetector:
    """The whole frame as one person box: the mirror's case, and the fallback with no detector."""

    name = "full-frame"

    def detect(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        return np.array([[0, 0, w, h]], np.float32)


def default_detector(device: str):
    """RTMDet-nano when its weights are here, else the whole frame (with a warning)."""
    from .rtmdet import RTMDetDetector
    from .weights import WeightsError

    try:
        return RTMDetDetector("rtmdet-nano-person", device=device)
    except WeightsError as exc:
        log.warning("person detector: %s; boxes fall back to the whole frame (one person at a mirror)", exc)
        return FullFrameDetector()


def keypoint_box(kp: np.ndarray, shape: tuple[int, int], min_score: float = TRACK_MIN_SCORE) -> np.ndarray | None:
    """Box around the confident keypoints, grown by ``BOX_MARGIN``; None if too few are seen."""
    seen = kp[kp[:, 2] >= min_score, :2]
    if len(seen) < 4:
        return None
    (x1, y1), (x2, y2) = seen.min(axis=0), seen.max(axis=0)
    mx, my = (x2 - x1) * BOX_MARGIN, (y2 - y1) * BOX_MARGIN
    h, w = shape
    return np.array([max(x1 - mx, 0), max(y1 - my, 0), min(x2 + mx, w), min(y2 + my, h)], np.float32)


@dataclass
class _Track:
    boxes: np.ndarray  # (P, 4)
    frames: int = 0


class RTMPoseBackend:
    """``--pose rtmpose-m``: any declared RTMPose weights, on ``cpu`` or ``cuda``."""

    def __init__(
        self,
        model: str = "rtmpose-m",
        device: str = "cuda",
        weights: bool = True,
        detector=None,
        redetect_every: int = 30,
        graphs: bool | None = None,
        compile: bool = False,
        inflight: int | None = None,
    ) -> None:
        import torch

        from .rtmpose import load_rtmpose
        from .rtmpose.optimize import fold_batchnorm
        from .weights import get

        declared = get(model)
        self.name = model
        self.device = device
        self.torch = torch
        net = load_rtmpose(declared.arch, declared.name if weights else None, declared.input_size)
        self.input_size = declared.input_size
        self.cuda = device.startswith("cuda")
        if self.cuda:
            fold_batchnorm(net)
            net = net.half().to(device).to(memory_format=torch.channels_last)
        self.model = net.eval()
        if compile and self.cuda:  # ~45 s at start; 1.64 -> 1.18 ms for 8 frames on an H200
            self.model = torch.compile(self.model)
        self.dtype = torch.float16 if self.cuda else torch.float32
        self.use_graphs = self.cuda if graphs is None else graphs
        # Batches in flight at once, each on its own thread and CUDA stream: one batch's host work
        # overlaps another's kernels and syncs. The CPU path runs one (torch uses every core).
        self.max_inflight = (inflight or 2) if self.cuda else 1
        self.detector = detector or default_detector(device)
        self.redetect_every = redetect_every
        self._tracks: dict[Hashable, _Track] = {}
        self._lock = threading.Lock()
        self._local = threading.local()  # per in-flight thread: its CUDA stream and graphs
        log.info("RTMPose backend: %s on %s, detector %s", model, device, self.detector.name)

    # -- per-thread CUDA state ---------------------------------------------------------------
    def _runner(self):
        if not self.use_graphs:
            return self.model
        runner = getattr(self._local, "runner", None)
        if runner is None:
            from .rtmpose.optimize import GraphRunner

            w, h = self.input_size
            runner = self._local.runner = GraphRunner(self.model, (3, h, w), self.dtype)
        return runner

    def _stream(self):
        if not self.cuda:
            return None
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = self.torch.cuda.Stream(device=self.device)
        return stream

    # -- boxes -------------------------------------------------------------------------------
    def _boxes(self, image, stream: Hashable | None) -> np.ndarray:
        """``image``: the RGB frame, or a callable giving it (a GPU frame comes to the host only
        when the detector needs its pixels)."""
        with self._lock:
            track = self._tracks.get(stream) if stream is not None else None
            if track is not None and len(track.boxes) and track.frames % self.redetect_every:
                track.frames += 1
                return track.boxes
        boxes = self.detector.detect(image() if callable(image) else image)
        if stream is not None:
            with self._lock:
                self._tracks[stream] = _Track(boxes, 1)
        return boxes

    def _update(self, stream: Hashable | None, persons: list[Person], shape: tuple[int, int]) -> None:
        if stream is None:
            return
        boxes = [
            b for p in persons if p.score >= TRACK_MIN_SCORE and (b := keypoint_box(p.keypoints, shape)) is not None
        ]
        with self._lock:
            track = self._tracks.get(stream)
            if track is None:
                return
            track.boxes = np.array(boxes, np.float32).reshape(-1, 4)  # empty: detect again next frame

    def release(self, stream: Hashable) -> None:
        with self._lock:
            self._tracks.pop(stream, None)

    def close(self) -> None:
        with self._lock:
            self._tracks.clear()

    # -- inference ---------------------------------------------------------------------------
    def infer(self, images: Sequence[np.ndarray], streams: Sequence[Hashable | None]) -> list[FramePose]:
        stream = self._stream()
        ctx = self.torch.cuda.stream(stream) if stream is not None else _null()
        with ctx:
            return self._topdown(list(images), [img.shape[:2] for img in images], list(images), streams)

    def infer_tensors(self, frames: Sequence, streams: Sequence[Hashable | None]) -> list[FramePose]:
        """Like ``infer``, for (3, H, W) uint8 RGB tensors already on this backend's device (the
        batched frame path decodes with nvJPEG straight to the GPU). Runs on the current stream."""
        if isinstance(self.detector, FullFrameDetector):  # needs the size only: no copy to the host
            host = [(lambda f=f: np.empty((*f.shape[1:], 0), np.uint8)) for f in frames]
        else:
            host = [(lambda f=f: f.permute(1, 2, 0).cpu().numpy()) for f in frames]
        return self._topdown(list(frames), [tuple(f.shape[1:]) for f in frames], host, streams)

    def _topdown(self, frames: list, shapes: list, host: list, streams: Sequence[Hashable | None]) -> list[FramePose]:
        """Boxes (tracked, else detected on ``host()`` pixels) -> one crop + model + decode for
        every person of every frame -> persons in image pixels; tracks updated."""
        from .rtmpose.topdown import box_to_center_scale, to_image

        boxes = [self._boxes(h, s) for h, s in zip(host, streams)]
        owners = np.concatenate([np.full(len(b), i) for i, b in enumerate(boxes)]).astype(np.int64)
        results: list[FramePose] = [FramePose() for _ in frames]
        if len(owners):
            all_boxes = np.concatenate(boxes)
            center, scale = box_to_center_scale(all_boxes, self.input_size)
            with self.torch.no_grad():
                if self.use_graphs and len(set(shapes)) == 1:
                    if isinstance(frames[0], np.ndarray):
                        kp, score = self._one_graph(frames, owners, center, scale)
                    else:
                        kp, score = self._graph_replay(self.torch.stack(frames), owners, center, scale)
                else:
                    kp, score = self._stepwise(frames, owners, center, scale)
            kp_img = to_image(kp, center, scale, self.input_size)
            for n, owner in enumerate(owners):
                k = np.concatenate([kp_img[n], score[n][:, None]], axis=1)
                results[owner].persons.append(Person(all_boxes[n], float(np.clip(score[n], 0, None).mean()), k))
        for shape, s, r in zip(shapes, streams, results):
            self._update(s, r.persons, shape)
        return results

    def _one_graph(self, images, owners, center, scale) -> tuple[np.ndarray, np.ndarray]:
        """CUDA, host frames of one size: upload, then crop + model + decode in one graph replay."""
        torch = self.torch
        # One memcpy per frame into a reused pinned buffer, one DMA, the NHWC->NCHW turn on the GPU.
        f = len(images)
        pinned = getattr(self._local, "pinned", None)
        if pinned is None or pinned.shape[0] < f or pinned.shape[1:] != images[0].shape:
            pinned = self._local.pinned = torch.empty((max(f, 8), *images[0].shape), dtype=torch.uint8).pin_memory()
        host = pinned.numpy()
        for i, img in enumerate(images):
            host[i] = img
        frames = pinned[:f].to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        return self._graph_replay(frames, owners, center, scale)

    def _graph_replay(self, frames, owners, center, scale) -> tuple[np.ndarray, np.ndarray]:
        """Frames (F, 3, H, W) uint8 on the GPU: crop + model + decode as one CUDA graph."""
        from .rtmpose.optimize import TopDownGraph
        from .rtmpose.topdown import crop_thetas

        torch = self.torch
        shape = tuple(frames.shape[2:])
        graphs = getattr(self._local, "topdown", None)
        if graphs is None:
            graphs = self._local.topdown = {}
        graph = graphs.get(shape)
        if graph is None:
            graph = graphs[shape] = TopDownGraph(self.model, self.input_size, shape, self.dtype)
        theta = torch.from_numpy(crop_thetas(center, scale, self.input_size, shape)).to(self.device, non_blocking=True)
        owner = torch.from_numpy(owners).to(self.device, non_blocking=True)
        kp, score = graph(frames, theta, owner)
        return kp.float().cpu().numpy(), score.float().cpu().numpy()  # syncs: the buffer is free again

    def _stepwise(self, images, owners, center, scale) -> tuple[np.ndarray, np.ndarray]:
        """Any device, frames of any sizes: crop per size, one model call, decode."""
        from .rtmpose.topdown import crop, decode

        torch = self.torch
        crops = []
        # Frames of one size are cropped together; a batch mixing sizes crops per size.
        for shape in {tuple(img.shape) for img in images}:
            idx = [i for i, img in enumerate(images) if tuple(img.shape) == shape]
            sel = np.nonzero(np.isin(owners, idx))[0]
            if not len(sel):
                continue
            if isinstance(images[idx[0]], torch.Tensor):  # (3, H, W) already on the device
                frames = torch.stack([images[i] for i in idx])
            else:
                frames = torch.from_numpy(np.stack([images[i] for i in idx])).permute(0, 3, 1, 2)
                if self.cuda:
                    frames = frames.pin_memory().to(self.device, non_blocking=True)
            local = torch.as_tensor(np.searchsorted(idx, owners[sel]), device=frames.device)
            crops.append((sel, crop(frames, local, center[sel], scale[sel], self.input_size)))
        order = np.concatenate([s for s, _ in crops])
        x = torch.cat([c for _, c in crops]).to(self.dtype)
        if self.cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        kp, score = decode(*self._runner()(x))
        kp, score = kp.float().cpu().numpy(), score.float().cpu().numpy()
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        return kp[inv], score[inv]


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
