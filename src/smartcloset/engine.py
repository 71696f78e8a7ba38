"""The batched frame path: one thread per device decodes, poses, renders and encodes the newest
frame of every client together - on the GPU, the whole way.

    session receives -> FrameEngine slot (newest wins) -> batch of clients' frames ->
    decode (nvJPEG) -> pose (RTMPose on the decoded tensors) -> keypoint timeline (own pose,
    One-Euro) -> render (BatchRenderer) -> encode (nvJPEG) -> session's reply slot -> sender

The batching - per-client newest-frame slots, a deadline, at most one frame per client,
oldest-waiting first so a fast client cannot starve a slow one, ``max_inflight`` batches at once
- is the pose worker's; this class replaces only what a batch does. Each in-flight batch runs on
its own CUDA stream, so one batch's copies and kernels overlap the next one's host work.

Without CUDA the same path runs on the CPU through torch (the tests use it); the server picks
the per-session CPU path there by default, which is faster on a CPU (``--render``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics
from .codec import DEFAULT_LIMITS, ImageError, ImageLimits, fit_size
from .codec_gpu import decode_batch, encode_batch, gpu_codec, resolve_gpu_jpeg
from .pose.backend import PoseBackend
from .pose.timeline import KeypointTimeline, TimedKeypoints
from .pose.types import FramePose
from .pose.worker import BatchConfig, PoseWorker
from .render.annotators import GarmentAnnotator
from .render.batched import BatchRenderer
from .stats import Rolling, now_ms
from .stream.protocol import ClientFrame

log = logging.getLogger(__name__)

STAGES = ("decode", "pose", "render", "encode")


@dataclass
class Rendered:
    """One frame's way back: the encoded picture and what the reply header tells about it."""

    frame: ClientFrame
    jpeg: bytes
    pose: TimedKeypoints


class FrameSink(Protocol):
    """What the engine needs from a session."""

    jpeg_quality: int

    def render_look(self) -> list[GarmentAnnotator]: ...

    def deliver(self, rendered: Rendered) -> None: ...

    def frame_error(self, frame: ClientFrame, error: ImageError) -> None: ...


def _check_compiler(device: torch.device) -> None:
    """torch.compile makes GPU kernels with Triton: without it the first render would fail, so
    say so at start."""
    if device.type != "cuda":
        return
    try:
        import triton  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "--render-compile on CUDA needs Triton (pip install triton), which is not installed"
        ) from None


class FrameEngine(PoseWorker):
    """The pose worker's batching, with the whole frame path per batch on ``device``."""

    batched = True  # sessions hand it their frames and get rendered replies back

    def __init__(
        self,
        backend: PoseBackend,
        config: BatchConfig = BatchConfig(),
        limits: ImageLimits = DEFAULT_LIMITS,
        device: str = "cuda",
        renderer: BatchRenderer | None = None,
        gpu_jpeg: str = "auto",
        render_compile: bool = False,
        render_graphs: bool = False,
        render_kernels: str = "auto",
        **worker_options,
    ) -> None:
        super().__init__(backend, config, limits, **worker_options)
        self.device = torch.device(device)
        if render_compile:
            _check_compiler(self.device)
        graphs = render_graphs and self.device.type == "cuda" and not render_compile
        if render_graphs and not graphs:  # asked for, and not what runs: say so once, at start
            log.warning(
                "--render-graphs ignored: CUDA graphs need a CUDA device and the eager renderer (%s)",
                "the renderer is compiled" if render_compile and self.device.type == "cuda" else f"on {self.device}",
            )
        self.renderer = renderer or BatchRenderer(
            self.device, compile=render_compile, graphs=graphs, kernels=render_kernels
        )
        # Which library does JPEG on CUDA, decided here: a missing one asked for by name stops
        # the engine at start, not every batch later.
        self.gpu_jpeg = resolve_gpu_jpeg(self.device, gpu_jpeg)
        self._sinks: dict[Hashable, FrameSink] = {}
        self.stage_ms = {k: Rolling(256) for k in STAGES}
        self._tensor_pose = callable(getattr(backend, "infer_tensors", None)) and backend.device == str(device)
        self._local = threading.local()
        log.info(
            "frame engine on %s: JPEG %s, pose %s (%s), render on %s%s%s",
            self.device,
            f"on the GPU ({self.gpu_jpeg})" if self.device.type == "cuda" else "simplejpeg",
            backend.name,
            "device tensors" if self._tensor_pose else f"host images at {config.inference_size}",
            self.device,
            ", compiled" if self.renderer.compiled else f", {self.renderer.kernels} kernels",
            ", CUDA graphs" if self.renderer.replay is not None else "",
        )

    def register(self, client: Hashable, timeline: KeypointTimeline, sink: FrameSink | None = None) -> None:
        super().register(client, timeline)
        if sink is not None:
            with self._cond:
                self._sinks[client] = sink

    def warm_up(self, shape: tuple[int, int] = (720, 1280), timeout_s: float = 300.0) -> FrameEngine:
        """Before the first client comes (else the first seconds of a busy server go to it):
        compile the renderer where asked (18-22 s on an H200), capture the pose graphs of every
        batch-size bucket on every in-flight thread (~7 s), and make each thread's nvImageCodec
        where it does the JPEG. One task per pool thread, held together by a barrier so each
        thread takes one."""
        if self.device.type != "cuda":
            return self
        if self.renderer.compiled:  # compiled once per process, before any thread renders
            t0 = time.perf_counter()
            self.renderer.warm_up(shape, batches=sorted({1, 2, 3, 4, max(1, self.config.max_size)}))
            log.info("engine warm: renderer compiled in %.1f s", time.perf_counter() - t0)
        elif self.renderer.kernels == "triton":
            from .render import kernels

            t0 = time.perf_counter()
            kernels.warm_up(self.device)
            torch.cuda.synchronize(self.device)
            log.info("engine warm: Triton kernels ready in %.1f s", time.perf_counter() - t0)
        if not self._tensor_pose:
            return self
        threads = self._max_inflight
        barrier = threading.Barrier(threads)
        finished = threading.Semaphore(0)
        sizes = [1 << k for k in range(max(1, self.config.max_size - 1).bit_length() + 1)]
        backend = self.backend

        def task(_) -> None:
            try:
                barrier.wait(60)
                with torch.cuda.stream(self._stream()):
                    gpu_codec(self.device, self.gpu_jpeg)  # this thread's nvImageCodec, if it does JPEG
                    frame = torch.zeros((3, *shape), dtype=torch.uint8, device=self.device)
                    for n in sizes:
                        backend.infer_tensors([frame] * n, [None] * n)  # type: ignore[attr-defined]
                torch.cuda.synchronize(self.device)
            except Exception:  # warm-up is an optimisation: the first batches capture instead
                log.exception("engine warm-up failed")
            finally:
                finished.release()

        t0 = time.perf_counter()
        for _ in range(threads):
            self._gen.pool.submit(task, None)
        for _ in range(threads):
            finished.acquire(timeout=timeout_s)
        log.info(
            "engine warm: pose graphs for batches %s on %d threads in %.1f s", sizes, threads, time.perf_counter() - t0
        )
        return self

    def dropped(self, client: Hashable) -> int:
        """Frames of this client replaced in the engine's slot before a batch took them."""
        with self._cond:
            c = self._clients.get(client)
            return c.slot.dropped if c is not None else 0

    def unregister(self, client: Hashable) -> None:
        with self._cond:
            self._sinks.pop(client, None)
        super().unregister(client)

    def _stream(self):
        if self.device.type != "cuda":
            return None
        s = getattr(self._local, "stream", None)
        if s is None:
            s = self._local.stream = torch.cuda.Stream(self.device)
        return s

    # -- one batch -------------------------------------------------------------------------------
    def _process_batch(self, call) -> int | None:
        """The worker's per-batch step (its supervisor counts failures and restarts the backend)."""
        stream = self._stream()
        if stream is None:
            return self._run_batch(call)
        with torch.cuda.stream(stream):
            return self._run_batch(call)

    def _run_batch(self, call) -> int | None:
        batch = call.batch
        backend = call.gen.backend
        t0 = time.perf_counter()
        with self._cond:
            sinks = [self._sinks.get(key) for key, _, _ in batch]
        decoded = decode_batch([frame.jpeg for _, _, frame in batch], self.device, self.limits, self.gpu_jpeg)
        kept, images = [], []
        for item, sink, img in zip(batch, sinks, decoded):
            if isinstance(img, ImageError):
                if sink is not None:
                    sink.frame_error(item[2], img)
                continue
            kept.append((item, sink))
            images.append(img)
        if not kept:
            return None
        t1 = time.perf_counter()
        failure: Exception | None = None
        try:
            poses: list[FramePose] | None = self._pose(backend, images, [item[0] for item, _ in kept])
        except Exception as exc:  # the frames still go out, drawn from the timeline; then re-raised
            failure, poses = exc, None
        done = now_ms()
        with self._cond:
            abandoned = call.abandoned  # the supervisor gave up on this call: its poses are too late
        timed: list[TimedKeypoints] = []
        for i, ((_, c, frame), _) in enumerate(kept):
            if poses is not None and not abandoned:
                c.timeline.add(frame.capture_ms, poses[i], done, images[i].shape[1])
                c.posed += 1
            timed.append(c.timeline.smoothed(frame.capture_ms))
        t2 = time.perf_counter()
        looks = [sink.render_look() if sink is not None else [] for _, sink in kept]
        out: list[torch.Tensor | None] = [None] * len(images)
        for shape in {tuple(img.shape) for img in images}:  # one render call per frame size
            idx = [i for i, img in enumerate(images) if tuple(img.shape) == shape]
            rendered = self.renderer.render(
                torch.stack([images[i] for i in idx]), [timed[i] for i in idx], [looks[i] for i in idx]
            )
            for k, i in enumerate(idx):
                out[i] = rendered[k]
        t3 = time.perf_counter()
        qualities = [sink.jpeg_quality if sink is not None else 80 for _, sink in kept]
        jpegs = encode_batch(out, qualities, self.gpu_jpeg)  # type: ignore[arg-type]
        t4 = time.perf_counter()
        for ((_, _, frame), sink), jpeg, pose in zip(kept, jpegs, timed):
            if sink is not None:
                sink.deliver(Rendered(frame, jpeg, pose))
        n = len(kept)
        s = self.stats
        s.batches += 1
        s.processed.tick(n)
        s.batch_sizes.add(n)
        s.pose_ms.add((t2 - t1) * 1000.0)
        s.decode_ms.add((t1 - t0) * 1000.0 / n)
        metrics.POSE_BATCH_SIZE.observe(n)
        for key, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            self.stage_ms[key].add(dt * 1000.0)
            metrics.STAGE_MS.labels(key).observe(dt * 1000.0)
        if failure is not None:
            raise failure
        return None if abandoned else n

    def _pose(self, backend: PoseBackend, images: Sequence[torch.Tensor], keys: list) -> list[FramePose]:
        """On the device tensors where the backend takes them; else downscaled to the inference
        size on the device, brought to the host and scaled back (MediaPipe)."""
        if self._tensor_pose:
            return backend.infer_tensors(images, keys)  # type: ignore[attr-defined]
        small, sizes = [], []
        for img in images:
            h, w = img.shape[1:]
            tw, th = fit_size(w, h, tuple(self.config.inference_size))
            x = img[None].float()
            if (tw, th) != (w, h):
                x = F.interpolate(x, size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
            small.append(np.ascontiguousarray(x[0].round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()))
            sizes.append((w, h))
        results = self._infer(backend, small, keys)  # the worker's: halves the batch on out-of-memory
        return [r.scaled(w / s.shape[1], h / s.shape[0]) for r, s, (w, h) in zip(results, small, sizes)]

    def snapshot(self) -> dict:
        snap = super().snapshot()
        jpeg = f", JPEG by {self.gpu_jpeg}" if self.device.type == "cuda" else ""
        snap["frame_path"] = f"batched on {self.device}{jpeg}"
        snap["stage_ms_p50"] = {k: v.median() for k, v in self.stage_ms.items()}
        replay = self.renderer.replay
        if replay is not None:
            snap["render_graphs"] = {
                "captures": replay.captures,
                "replays": replay.replays,
                "failures": replay.failures,
            }
        return snap
