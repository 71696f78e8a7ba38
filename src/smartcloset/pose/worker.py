"""The pose worker: one thread per device that batches the newest frame of every client.

Each client has a newest-frame slot here (the renderer has its own): the worker never sees a
stale frame, only the latest one not yet posed. When a frame is waiting, the worker waits at
most ``deadline_ms`` for other clients' frames (or until every client has one, or the batch
is full), takes at most one frame per client - oldest-waiting first, so a fast client cannot
starve a slow one - and hands the batch to the backend. ``backend.max_inflight`` batches run
at once (one per CPU core for MediaPipe; overlapping copies and compute on a GPU).

Per batch: decode each JPEG straight to the inference size (IDCT scaling), run the backend,
scale keypoints back to full-frame pixels, publish each result to its client's timeline.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .. import metrics
from ..codec import DEFAULT_LIMITS, ImageError, ImageLimits, decode_scaled
from ..stats import RateMeter, Rolling, now_ms
from ..stream.protocol import ClientFrame
from ..stream.slot import NewestSlot
from .backend import PoseBackend
from .timeline import KeypointTimeline

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchConfig:
    max_size: int = 8
    deadline_ms: float = 4.0
    inference_size: tuple[int, int] = (640, 360)  # (w, h); frames are fitted inside it


@dataclass
class _Client:
    timeline: KeypointTimeline
    slot: NewestSlot[ClientFrame]
    inflight: int = 0
    posed: int = 0


@dataclass
class WorkerStats:
    processed: RateMeter = field(default_factory=RateMeter)
    batch_sizes: Rolling = field(default_factory=lambda: Rolling(256))
    decode_ms: Rolling = field(default_factory=Rolling)
    pose_ms: Rolling = field(default_factory=Rolling)
    batches: int = 0
    errors: int = 0


class PoseWorker:
    """Owns the backend; sessions ``register`` a timeline and ``submit`` frames."""

    def __init__(
        self, backend: PoseBackend, config: BatchConfig = BatchConfig(), limits: ImageLimits = DEFAULT_LIMITS
    ) -> None:
        self.backend = backend
        self.config = config
        self.limits = limits
        self.stats = WorkerStats()
        self._cond = threading.Condition()
        self._clients: dict[Hashable, _Client] = {}
        self._inflight = 0
        self._max_inflight = max(1, int(getattr(backend, "max_inflight", 1)))
        self._stop = False
        self._pool = ThreadPoolExecutor(self._max_inflight, thread_name_prefix="pose-batch")
        self._thread = threading.Thread(target=self._run, name=f"pose-worker-{backend.device}", daemon=True)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> PoseWorker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self._pool.shutdown(wait=True)
        self.backend.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop

    # -- clients -------------------------------------------------------------------------
    def register(self, client: Hashable, timeline: KeypointTimeline) -> None:
        with self._cond:
            self._clients[client] = _Client(timeline, NewestSlot(self._cond))

    def unregister(self, client: Hashable) -> None:
        with self._cond:
            c = self._clients.pop(client, None)
        if c is not None:
            c.slot.close()
            self.backend.release(client)

    def submit(self, client: Hashable, frame: ClientFrame) -> None:
        """Offer a frame for posing; an older frame still waiting is replaced (and counted)."""
        with self._cond:
            c = self._clients.get(client)
            if c is None:
                return
            if c.slot.put(frame) is not None:
                metrics.FRAMES_DROPPED.labels("pose").inc()

    @property
    def client_count(self) -> int:
        with self._cond:
            return len(self._clients)

    # -- batching ------------------------------------------------------------------------
    def _eligible(self) -> list[tuple[Hashable, _Client]]:
        # A client can be in as many in-flight batches as the backend has graphs for it.
        return [
            (k, c) for k, c in self._clients.items() if c.slot.peek() is not None and c.inflight < self._max_inflight
        ]

    def _collect(self) -> list[tuple[Hashable, _Client, ClientFrame]] | None:
        """Block until a batch is ready; None when stopping. Called with no lock held."""
        cfg = self.config
        with self._cond:
            while not self._stop and (self._inflight >= self._max_inflight or not self._eligible()):
                self._cond.wait(0.5)
            if self._stop:
                return None
            deadline = time.monotonic() + cfg.deadline_ms / 1000.0
            while True:
                ready = self._eligible()
                idle_clients = sum(1 for c in self._clients.values() if c.inflight < self._max_inflight)
                remaining = deadline - time.monotonic()
                if len(ready) >= min(cfg.max_size, idle_clients) or remaining <= 0 or self._stop:
                    break
                self._cond.wait(remaining)
            ready.sort(key=lambda kc: kc[1].slot.peek().received_ms)  # oldest waiting first
            batch = []
            for key, c in ready[: cfg.max_size]:
                frame = c.slot.take()
                if frame is not None:
                    c.inflight += 1
                    batch.append((key, c, frame))
            self._inflight += 1
            return batch

    def _run(self) -> None:
        log.info(
            "pose worker started: backend=%s device=%s inflight=%d",
            self.backend.name,
            self.backend.device,
            self._max_inflight,
        )
        while True:
            batch = self._collect()
            if batch is None:
                break
            self._pool.submit(self._process, batch)
        log.info("pose worker stopped")

    def _process(self, batch: list[tuple[Hashable, _Client, ClientFrame]]) -> None:
        try:
            self._process_batch(batch)
        except Exception:  # a backend failure must not kill the worker or touch other batches
            self.stats.errors += 1
            metrics.POSE_ERRORS.inc()
            log.exception("pose batch of %d failed", len(batch))
        finally:
            with self._cond:
                self._inflight -= 1
                for _, c, _ in batch:
                    c.inflight -= 1
                self._cond.notify_all()

    def _process_batch(self, batch: list[tuple[Hashable, _Client, ClientFrame]]) -> None:
        t0 = time.perf_counter()
        images, sizes, kept = [], [], []
        for key, c, frame in batch:
            try:
                img, full = decode_scaled(frame.jpeg, self.config.inference_size, "RGB", self.limits)
            except ImageError as exc:  # the session reports it to its client when it renders
                log.debug("pose skips frame %d of %s: %s", frame.frame_id, key, exc)
                continue
            images.append(img)
            sizes.append(full)
            kept.append((key, c, frame))
        if not kept:
            return
        t1 = time.perf_counter()
        results = self.backend.infer(images, [k for k, _, _ in kept])
        t2 = time.perf_counter()
        done = now_ms()
        for (_, c, frame), img, (fw, fh), pose in zip(kept, images, sizes, results):
            full_pose = pose.scaled(fw / img.shape[1], fh / img.shape[0])
            c.timeline.add(frame.capture_ms, full_pose, done, fh)
            c.posed += 1
        decode_ms, pose_ms = (t1 - t0) * 1000.0, (t2 - t1) * 1000.0
        s = self.stats
        s.batches += 1
        s.processed.tick(len(kept))
        s.batch_sizes.add(len(kept))
        s.decode_ms.add(decode_ms / len(kept))
        s.pose_ms.add(pose_ms)
        metrics.POSE_BATCH_SIZE.observe(len(kept))
        metrics.STAGE_MS.labels("pose_decode").observe(decode_ms)
        metrics.STAGE_MS.labels("pose").observe(pose_ms)

    def snapshot(self) -> dict:
        s = self.stats
        return {
            "backend": self.backend.name,
            "device": self.backend.device,
            "pose_fps": round(s.processed.rate(), 2),
            "processed": s.processed.total,
            "mean_batch_size": s.batch_sizes.mean(),
            "pose_ms_p50": s.pose_ms.median(),
            "pose_decode_ms_p50": s.decode_ms.median(),
            "batches": s.batches,
            "errors": s.errors,
            "clients": self.client_count,
        }
