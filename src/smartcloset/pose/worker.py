"""The pose worker: one thread per device that batches the newest frame of every client.

Each client has a newest-frame slot here (the renderer has its own): the worker never sees a
stale frame, only the latest one not yet posed. When a frame is waiting, the worker waits at
most ``deadline_ms`` for other clients' frames (or until every client has one, or the batch
is full), takes at most one frame per client - oldest-waiting first, so a fast client cannot
starve a slow one - and hands the batch to the backend. ``backend.max_inflight`` batches run
at once (one per CPU core for MediaPipe; overlapping copies and compute on a GPU).

Per batch: decode each JPEG straight to the inference size (IDCT scaling), run the backend,
scale keypoints back to full-frame pixels, publish each result to its client's timeline.

Faults (``FaultPolicy``): a batch whose backend call raises gives its clients no pose for those
frames - their renderers keep sending frames, extrapolating and then undressed. Several failures
in a row, or one call that outlives the watchdog deadline (a hang), restart the backend: pose
pauses for a backoff (0.5 s doubling to 10 s), the backend is rebuilt by ``factory`` (or reused
when there is none) on fresh threads, and the first good batch puts the state back to "ok".
A hung call cannot be killed: its thread is abandoned (a daemon thread, still holding its old
backend) and its result discarded; at most ``max_abandoned`` of them are left running before
restarts wait for one to come back, so a backend that hangs forever leaks a bounded amount.
Out of memory (``torch.cuda.OutOfMemoryError``, or any ``MemoryError``) halves the batch cap and
retries the batch in halves; the cap grows back by one after every ``grow_after`` good batches.
A lost GPU context (a device-side assert, an illegal address: ``gpu_context_lost``) is another
matter - no call in this process can use the GPU again, so no restart is tried: the worker
stops batching, says "down" (``alive`` turns False, so ``/healthz`` answers 503) and calls
``on_device_lost``, which in an engine process ends the process so that its server processes
move its clients to the other engines.
"""

from __future__ import annotations

import logging
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from .. import metrics
from ..codec import DEFAULT_LIMITS, ImageError, ImageLimits, decode_scaled
from ..stats import RateMeter, Rolling, now_ms
from ..stream.protocol import ClientFrame
from ..stream.slot import NewestSlot
from .backend import PoseBackend
from .timeline import KeypointTimeline
from .types import FramePose

log = logging.getLogger(__name__)


# What CUDA reports once its context is unusable (the error is "sticky": every later call in the
# process fails the same way), in torch's words and by number as torchvision and nvJPEG give it:
# cudaErrorIllegalAddress (700), cudaErrorAssert (710), cudaErrorLaunchFailure (719).
_LOST_CONTEXT = re.compile(
    r"device-side assert triggered|an illegal memory access|unspecified launch failure"
    r"|CUDA (?:error|ERROR|stream)\b[^0-9\n]{0,20}\b(?:700|710|719)\b"
)


def gpu_context_lost(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it) says this process's CUDA context is lost."""
    for _ in range(8):
        if error is None:
            return False
        if _LOST_CONTEXT.search(str(error)):
            return True
        error = error.__cause__ or error.__context__
    return False


@dataclass(frozen=True)
class BatchConfig:
    max_size: int = 8
    deadline_ms: float = 4.0
    inference_size: tuple[int, int] = (640, 360)  # (w, h); frames are fitted inside it


@dataclass(frozen=True)
class FaultPolicy:
    """How the worker survives a backend that raises, hangs or runs out of memory."""

    # Watchdog deadline for one batch (decode + infer). MediaPipe's batches of 4 take ~300 ms
    # (p50) on 2 cores, but one took 5.2 s while other jobs starved this shared 2-core machine
    # (the first 10-minute soak: a false "hang" at a 5 s deadline). 15 s is ~3x that worst case;
    # a slow hang costs little, as frames keep flowing, undressed after 0.6 s either way.
    infer_timeout_s: float = 15.0
    # The first batch of each size after a (re)start may compile or capture graphs (RTMPose
    # with --compile: ~45 s), so it gets a longer deadline.
    warmup_timeout_s: float = 120.0
    failures_to_restart: int = 3  # failed batches in a row before the backend is rebuilt
    backoff_s: float = 0.5  # pause before the first restart, doubled per restart in a row
    backoff_max_s: float = 10.0
    max_abandoned: int = 4  # hung calls left running (each holds a thread + a backend)
    grow_after: int = 20  # good batches at a reduced batch cap before it grows by one


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OOM (without importing torch) or any MemoryError (tests inject one on the CPU)."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    return isinstance(oom, type) and isinstance(exc, oom)


def _free_cuda_cache() -> None:
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # best effort: never let cleanup fail the retry
        log.debug("empty_cache failed", exc_info=True)


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
    restarts: int = 0
    hangs: int = 0
    ooms: int = 0


class _InferPool:
    """Daemon threads running batches: a hung one is abandoned, never joined at exit.

    (``ThreadPoolExecutor`` joins its threads at interpreter exit, so one hung backend call
    would keep the server process from ever exiting.)
    """

    def __init__(self, threads: int, name: str) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(max(1, threads))
        ]
        for t in self._threads:
            t.start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, arg = item
            fn(arg)

    def submit(self, fn: Callable, arg) -> None:
        self._queue.put((fn, arg))

    def shutdown(self, timeout: float | None = None) -> None:
        for _ in self._threads:
            self._queue.put(None)
        if timeout is not None:
            end = time.monotonic() + timeout
            for t in self._threads:
                t.join(max(0.0, end - time.monotonic()))


@dataclass(eq=False)
class _Generation:
    """A backend and the threads that run it; replaced as a whole on a restart."""

    number: int
    backend: PoseBackend
    pool: _InferPool
    active: int = 0  # calls running on it (abandoned ones included, until they return)
    retired: bool = False
    warm_sizes: set[int] = field(default_factory=set)


@dataclass(eq=False)
class _Call:
    batch: list[tuple[Hashable, _Client, ClientFrame]]
    gen: _Generation
    deadline: float
    abandoned: bool = False


class PoseWorker:
    """Owns the backend; sessions ``register`` a timeline and ``submit`` frames."""

    def __init__(
        self,
        backend: PoseBackend,
        config: BatchConfig = BatchConfig(),
        limits: ImageLimits = DEFAULT_LIMITS,
        faults: FaultPolicy = FaultPolicy(),
        factory: Callable[[], PoseBackend] | None = None,
    ) -> None:
        self.config = config
        self.limits = limits
        self.faults = faults
        self.factory = factory  # builds a fresh backend on a restart; None: reuse the same one
        # Called once (on a thread of its own) when the GPU context is lost; see the module doc.
        self.on_device_lost: Callable[[str], None] | None = None
        self._device_lost = False
        self.stats = WorkerStats()
        self._cond = threading.Condition()
        self._clients: dict[Hashable, _Client] = {}
        self._inflight = 0
        self._max_inflight = max(1, int(getattr(backend, "max_inflight", 1)))
        self._stop = False
        self._gen = _Generation(0, backend, _InferPool(self._max_inflight, "pose-batch-g0"))
        self._running: set[_Call] = set()
        self._abandoned_running = 0
        # fault state: "ok", or "restarting" from a failure until the first good batch after it
        self._state = "ok"
        self._message = ""
        self._reason = ""  # why the current restart began
        self._paused_until: float | None = None  # no batches until the backend is rebuilt
        self._failures = 0  # failed batches in a row
        self._backoff_level = 0
        self._last_backoff_s = 0.0
        self._batch_cap = config.max_size
        self._cap_successes = 0
        self._thread = threading.Thread(target=self._run, name=f"pose-worker-{backend.device}", daemon=True)
        self._supervisor = threading.Thread(target=self._supervise, name="pose-supervisor", daemon=True)

    @property
    def backend(self) -> PoseBackend:
        return self._gen.backend

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> PoseWorker:
        self._thread.start()
        self._supervisor.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)
        self._supervisor.join(timeout)
        gen = self._gen
        gen.pool.shutdown(timeout)  # waits for batches in flight, not for a hung one
        with self._cond:
            gen.retired = True
            hung = gen.active
        if hung:
            log.warning("pose backend left open: %d call(s) still running in it", hung)
        else:
            gen.backend.close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stop and not self._device_lost

    def health(self) -> tuple[str, str]:
        """(state, message): "ok", or "restarting" with why; sessions relay changes to clients."""
        return self._state, self._message

    # -- clients -------------------------------------------------------------------------
    def register(self, client: Hashable, timeline: KeypointTimeline) -> None:
        with self._cond:
            self._clients[client] = _Client(timeline, NewestSlot(self._cond))

    def unregister(self, client: Hashable) -> None:
        with self._cond:
            c = self._clients.pop(client, None)
            backend = self._gen.backend
        if c is not None:
            c.slot.close()
            backend.release(client)

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
            while not self._stop and (
                self._paused_until is not None or self._inflight >= self._max_inflight or not self._eligible()
            ):
                self._cond.wait(0.5)
            if self._stop:
                return None
            deadline = time.monotonic() + cfg.deadline_ms / 1000.0
            cap = self._batch_cap
            while True:
                ready = self._eligible()
                idle_clients = sum(1 for c in self._clients.values() if c.inflight < self._max_inflight)
                remaining = deadline - time.monotonic()
                if len(ready) >= min(cap, idle_clients) or remaining <= 0 or self._stop:
                    break
                self._cond.wait(remaining)
            # Longest-waiting client first: since its slot filled, not since its newest frame came
            # (that one is replaced under load, and the clients whose frames land just before each
            # batch would always look youngest - and starve).
            ready.sort(key=lambda kc: kc[1].slot.since)
            batch = []
            for key, c in ready[:cap]:
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
            with self._cond:
                gen = self._gen
                f = self.faults
                timeout = f.infer_timeout_s if len(batch) in gen.warm_sizes else f.warmup_timeout_s
                call = _Call(batch, gen, time.monotonic() + timeout)
                gen.active += 1
                self._running.add(call)
                self._cond.notify_all()  # the supervisor's next deadline may be sooner now
            gen.pool.submit(self._process, call)
        log.info("pose worker stopped")

    def _process(self, call: _Call) -> None:
        error: Exception | None = None
        published = None
        try:
            published = self._process_batch(call)
        except Exception as exc:  # a backend failure must not kill the worker or touch other batches
            error = exc
        with self._cond:
            call.gen.active -= 1
            close = call.gen.retired and call.gen.active == 0 and call.gen.backend is not self._gen.backend
            if call.abandoned:
                self._abandoned_running -= 1
                log.warning("an abandoned pose call returned after all (%s)", "error" if error else "ok")
            else:
                self._running.discard(call)
                self._inflight -= 1
                for _, c, _ in call.batch:
                    c.inflight -= 1
                if error is not None:
                    self._on_failure(call, error)
                elif published is not None:
                    self._on_success(call, published)
            self._cond.notify_all()
        if error is not None and not call.abandoned:
            log.error("pose batch of %d failed: %r", len(call.batch), error, exc_info=error)
        if close:
            self._close_backend(call.gen.backend)

    def _process_batch(self, call: _Call) -> int | None:
        """Decode, infer and (unless abandoned meanwhile) publish; returns the frames posed."""
        t0 = time.perf_counter()
        images, sizes, kept = [], [], []
        for key, c, frame in call.batch:
            try:
                img, full = decode_scaled(frame.jpeg, self.config.inference_size, "RGB", self.limits)
            except ImageError as exc:  # the session reports it to its client when it renders
                log.debug("pose skips frame %d of %s: %s", frame.frame_id, key, exc)
                continue
            images.append(img)
            sizes.append(full)
            kept.append((key, c, frame))
        if not kept:
            return None
        t1 = time.perf_counter()
        results = self._infer(call.gen.backend, images, [k for k, _, _ in kept])
        t2 = time.perf_counter()
        if len(results) != len(kept):
            raise RuntimeError(f"backend returned {len(results)} poses for {len(kept)} images")
        done = now_ms()
        with self._cond:
            if call.abandoned:  # too late: the clients were told pose is restarting
                return None
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
        return len(kept)

    def _infer(self, backend: PoseBackend, images: list, streams: list) -> list[FramePose]:
        """``backend.infer``, retried in halves on out-of-memory (and the batch cap halved)."""
        try:
            return backend.infer(images, streams)
        except Exception as exc:
            if not is_out_of_memory(exc) or len(images) <= 1:
                raise
            half = len(images) // 2
            with self._cond:
                self.stats.ooms += 1
                self._batch_cap = max(1, min(self._batch_cap, half))
                self._cap_successes = 0
            log.warning("pose backend out of memory on a batch of %d: batch cap now %d", len(images), half)
            _free_cuda_cache()
            return self._infer(backend, images[:half], streams[:half]) + self._infer(
                backend, images[half:], streams[half:]
            )

    # -- faults (called with the lock held) ------------------------------------------------
    def _on_success(self, call: _Call, posed: int) -> None:
        if call.gen is not self._gen:
            return
        call.gen.warm_sizes.add(len(call.batch))
        self._failures = 0
        if self._batch_cap < self.config.max_size:
            self._cap_successes += 1
            if self._cap_successes >= self.faults.grow_after:
                self._batch_cap += 1
                self._cap_successes = 0
                log.info("pose batch cap grows back to %d", self._batch_cap)
        if self._state != "ok" and self._paused_until is None:
            log.warning("pose backend recovered (%s)", self._reason)
            self._state, self._message, self._reason = "ok", "", ""
            self._backoff_level = 0

    def _on_failure(self, call: _Call, error: Exception) -> None:
        self.stats.errors += 1
        metrics.POSE_ERRORS.inc()
        if gpu_context_lost(error):
            self._lose_device(error)
            return
        if call.gen is not self._gen:
            return  # the backend it ran on is already being replaced
        self._failures += 1
        if self._failures >= self.faults.failures_to_restart:
            self._begin_restart(f"pose model failed {self._failures} times in a row ({type(error).__name__}: {error})")

    def _lose_device(self, error: Exception) -> None:
        """No batch runs again in this process (a rebuilt backend would fail the same way)."""
        if self._device_lost:
            return
        self._device_lost = True
        self._paused_until = float("inf")  # the supervisor never restarts; the loop takes no batch
        self._state = "down"
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        self._reason = f"the GPU context is lost ({type(error).__name__}: {first_line})"
        self._message = f"{self._reason}: this process cannot use the GPU again and must be restarted"
        log.critical("pose worker: %s", self._message)
        self._cond.notify_all()
        hook = self.on_device_lost
        if hook is not None:  # outside this lock: the hook may end the process
            threading.Thread(target=hook, args=(self._message,), name="device-lost", daemon=True).start()

    def _begin_restart(self, reason: str) -> None:
        if self._paused_until is not None:
            return
        f = self.faults
        delay = min(f.backoff_s * 2**self._backoff_level, f.backoff_max_s)
        self._backoff_level += 1
        self._last_backoff_s = delay
        self._paused_until = time.monotonic() + delay
        self._state = "restarting"
        self._reason = reason
        self._message = f"{reason}; restarting it in {delay:.1f} s - frames come back without the garment meanwhile"
        self.stats.restarts += 1
        log.warning("pose backend: %s", self._message)
        self._cond.notify_all()

    def _abandon(self, call: _Call) -> None:
        call.abandoned = True
        self._running.discard(call)
        self._abandoned_running += 1
        self._inflight -= 1
        for _, c, _ in call.batch:
            c.inflight -= 1
        self.stats.hangs += 1
        self.stats.errors += 1
        metrics.POSE_ERRORS.inc()
        timeout = (
            self.faults.infer_timeout_s if len(call.batch) in call.gen.warm_sizes else self.faults.warmup_timeout_s
        )
        if call.gen is self._gen:
            self._begin_restart(f"pose model did not answer a batch of {len(call.batch)} within {timeout:.1f} s")

    # -- supervisor thread: the watchdog and the restarts -------------------------------------
    def _supervise(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    return
                now = time.monotonic()
                for call in [c for c in self._running if c.deadline <= now]:
                    self._abandon(call)
                due = (
                    self._paused_until is not None
                    and self._paused_until <= now
                    and self._abandoned_running < self.faults.max_abandoned
                )
                if not due:
                    wake = [c.deadline for c in self._running]
                    if self._paused_until is not None:
                        wake.append(self._paused_until)
                    self._cond.wait(min([0.25, *(w - now for w in wake)]) if wake else 0.25)
                    continue
            self._restart()

    def _restart(self) -> None:
        """Rebuild the backend (outside the lock: it may take seconds) on fresh threads."""
        old = self._gen
        backend = old.backend
        if self.factory is not None:
            try:
                backend = self.factory()
            except Exception as exc:
                log.exception("rebuilding the pose backend failed")
                with self._cond:
                    self._paused_until = None
                    self._begin_restart(f"rebuilding the pose model failed ({type(exc).__name__}: {exc})")
                return
        with self._cond:
            if self._stop or self._device_lost:
                new_gen = None
            else:
                new_gen = _Generation(
                    old.number + 1, backend, _InferPool(self._max_inflight, f"pose-batch-g{old.number + 1}")
                )
                self._gen = new_gen
                old.retired = True
                self._paused_until = None
                self._failures = 0
                self._message = f"{self._reason}; restarted, waiting for a good batch"
                close = old.active == 0 and old.backend is not backend
                self._cond.notify_all()
        if new_gen is None:
            if backend is not old.backend:
                self._close_backend(backend)
            return
        log.warning("pose backend restarted (generation %d)", new_gen.number)
        old.pool.shutdown()
        if close:
            self._close_backend(old.backend)

    @staticmethod
    def _close_backend(backend: PoseBackend) -> None:
        try:
            backend.close()
        except Exception:
            log.exception("closing a retired pose backend failed")

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
            "pose_state": self._state,
            "pose_message": self._message,
            "restarts": s.restarts,
            "restart_backoff_s": self._last_backoff_s,
            "hangs": s.hangs,
            "ooms": s.ooms,
            "batch_cap": self._batch_cap,
            "abandoned_calls": self._abandoned_running,
        }
