"""The batching pose worker, with a backend double that records what it was given."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from smartcloset import codec
from smartcloset.pose.backend import PoseBackend
from smartcloset.pose.timeline import KeypointTimeline
from smartcloset.pose.types import FramePose, Person
from smartcloset.pose.worker import BatchConfig, FaultPolicy, PoseWorker
from smartcloset.stream.protocol import ClientFrame


class RecordingBackend:
    """Puts every keypoint at the image centre, so the scale back to full size is checkable."""

    name = "recording"
    device = "cpu"

    def __init__(self, delay_s: float = 0.0, max_inflight: int = 1, fail_on: int | None = None) -> None:
        self.delay_s = delay_s
        self.max_inflight = max_inflight
        self.fail_on = fail_on
        self.batches: list[list] = []
        self.shapes: list[tuple] = []
        self.released: list = []
        self.lock = threading.Lock()
        self.running = 0
        self.max_running = 0

    def infer(self, images, streams):
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            return self._infer(images, streams)
        finally:
            with self.lock:
                self.running -= 1

    def _infer(self, images, streams):
        with self.lock:
            n = len(self.batches)
            self.batches.append(list(streams))
            self.shapes.extend(i.shape for i in images)
        if self.fail_on is not None and n == self.fail_on:
            raise RuntimeError("injected backend failure")
        time.sleep(self.delay_s)
        out = []
        for img in images:
            h, w = img.shape[:2]
            kp = np.zeros((17, 3), np.float32)
            kp[:, 0], kp[:, 1], kp[:, 2] = w / 2, h / 2, 1.0
            out.append(FramePose([Person([0, 0, w, h], 1.0, kp)]))
        return out

    def release(self, stream):
        self.released.append(stream)

    def close(self):
        pass


@pytest.fixture(scope="module")
def jpeg720():
    return codec.encode(np.full((720, 1280, 3), 128, np.uint8))


def frame(i: int, jpeg: bytes) -> ClientFrame:
    return ClientFrame(i, float(i * 33), jpeg, received_ms=time.time() * 1000)


def wait_until(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.005)
    return False


def test_backend_double_satisfies_the_interface():
    assert isinstance(RecordingBackend(), PoseBackend)


def test_keypoints_come_back_at_full_resolution_from_a_downscaled_decode(jpeg720):
    backend = RecordingBackend()
    worker = PoseWorker(backend, BatchConfig(inference_size=(640, 360))).start()
    tl = KeypointTimeline()
    worker.register("a", tl)
    worker.submit("a", frame(1, jpeg720))
    assert wait_until(lambda: len(tl) == 1)
    worker.stop()
    assert backend.shapes == [(360, 640, 3)]  # posed at the inference size
    got = tl.at(33.0)
    assert got.source == "own" and np.allclose(got.keypoints[0, :2], (640, 360))  # full-frame centre


def test_frames_of_several_clients_form_one_batch_within_the_deadline(jpeg720):
    backend = RecordingBackend(delay_s=0.05)
    worker = PoseWorker(backend, BatchConfig(max_size=8, deadline_ms=30)).start()
    tls = {c: KeypointTimeline() for c in "abcd"}
    for c, tl in tls.items():
        worker.register(c, tl)
    for c in "abcd":
        worker.submit(c, frame(1, jpeg720))
        time.sleep(0.002)
    assert wait_until(lambda: all(len(tl) for tl in tls.values()))
    worker.stop()
    assert sorted(backend.batches[0]) == list("abcd")
    assert worker.stats.batch_sizes.mean() == 4


def test_batch_size_is_capped_and_one_frame_per_client(jpeg720):
    backend = RecordingBackend(delay_s=0.02)
    worker = PoseWorker(backend, BatchConfig(max_size=3, deadline_ms=20))
    clients = [f"c{i}" for i in range(7)]
    for c in clients:
        worker.register(c, KeypointTimeline())
        worker.submit(c, frame(1, jpeg720))
        worker.submit(c, frame(2, jpeg720))  # replaces frame 1: newest wins
    worker.start()
    assert wait_until(lambda: sum(map(len, backend.batches)) == 7)
    worker.stop()
    assert all(len(b) <= 3 and len(set(b)) == len(b) for b in backend.batches)


def test_a_fast_client_cannot_starve_the_others(jpeg720):
    backend = RecordingBackend(delay_s=0.01)
    worker = PoseWorker(backend, BatchConfig(max_size=1, deadline_ms=1)).start()
    tls = {c: KeypointTimeline() for c in ("fast", "slow1", "slow2")}
    for c, tl in tls.items():
        worker.register(c, tl)
    stop = threading.Event()

    def flood():
        i = 0
        while not stop.is_set():
            worker.submit("fast", frame(i, jpeg720))
            i += 1
            time.sleep(0.0005)

    t = threading.Thread(target=flood)
    t.start()
    for i in range(10):
        worker.submit("slow1", frame(i, jpeg720))
        worker.submit("slow2", frame(i, jpeg720))
        time.sleep(0.05)
    stop.set()
    t.join()
    worker.stop()
    counts = {c: sum(b.count(c) for b in backend.batches) for c in tls}
    # Batches of one, oldest-waiting first: the slow clients get every frame they sent.
    assert counts["slow1"] >= 9 and counts["slow2"] >= 9, counts


def test_under_overload_every_client_gets_its_share(jpeg720):
    """More clients than a batch holds, every slot refilled before each batch: the clients whose
    frames came last in each round must not starve. (Ordered by the waiting frame's own arrival,
    they did - the slot's newest frame always looked youngest; engine_load.py found a client at
    0.3 of 11 FPS.) Waiting is counted from when a client's slot filled, not from its newest frame."""
    backend = RecordingBackend(delay_s=0.02)
    worker = PoseWorker(backend, BatchConfig(max_size=2, deadline_ms=1)).start()
    clients = ["a", "b", "c", "d"]
    for c in clients:
        worker.register(c, KeypointTimeline())
    stop = threading.Event()

    def feed():  # every client, always in the same order, far faster than the worker takes them
        i = 0
        while not stop.is_set():
            for c in clients:
                worker.submit(c, frame(i, jpeg720))
            i += 1
            time.sleep(0.002)

    t = threading.Thread(target=feed)
    t.start()
    time.sleep(1.0)
    stop.set()
    t.join()
    worker.stop()
    counts = {c: sum(b.count(c) for b in backend.batches) for c in clients}
    fair = sum(counts.values()) / len(clients)
    assert fair >= 5 and min(counts.values()) >= 0.6 * fair, counts


def test_bad_jpeg_is_skipped_and_a_failing_batch_does_not_stop_the_worker(jpeg720):
    backend = RecordingBackend(fail_on=0)
    worker = PoseWorker(backend).start()
    tl = KeypointTimeline()
    worker.register("a", tl)
    worker.submit("a", frame(1, jpeg720))  # batch 0: the backend raises
    assert wait_until(lambda: worker.stats.errors == 1)
    worker.submit("a", frame(2, b"\xff\xd8\xff not really a jpeg"))
    worker.submit("a", frame(3, jpeg720))
    assert wait_until(lambda: len(tl) == 1)
    assert worker.alive
    worker.stop()
    assert tl.at(99.0).source == "own"


def test_unregister_releases_tracking_state(jpeg720):
    backend = RecordingBackend()
    worker = PoseWorker(backend).start()
    worker.register("a", KeypointTimeline())
    worker.unregister("a")
    worker.submit("a", frame(1, jpeg720))  # after leaving: ignored
    time.sleep(0.05)
    worker.stop()
    assert backend.released == ["a"] and backend.batches == [] and worker.client_count == 0


def test_several_batches_in_flight_when_the_backend_allows(jpeg720):
    backend = RecordingBackend(delay_s=0.1, max_inflight=2)
    worker = PoseWorker(backend, BatchConfig(max_size=1, deadline_ms=0)).start()
    tl = KeypointTimeline()
    worker.register("a", tl)
    worker.submit("a", frame(1, jpeg720))
    time.sleep(0.02)
    worker.submit("a", frame(2, jpeg720))
    assert wait_until(lambda: len(tl) == 2)
    worker.stop()
    assert backend.max_running == 2  # the second batch ran while the first was still in the backend


# -- faults: a backend that raises, hangs or runs out of memory ------------------------------


class InjectedOOM(MemoryError):
    """Stands in for torch.cuda.OutOfMemoryError on a machine with no GPU."""


class FaultyBackend(RecordingBackend):
    """A RecordingBackend whose ``mode`` a test switches: "ok", "raise", "hang", or OOM above a size."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.mode = "ok"
        self.oom_above: int | None = None
        self.release_hang = threading.Event()
        self.closed = 0
        self.calls = 0

    def _infer(self, images, streams):
        self.calls += 1
        if self.oom_above is not None and len(images) > self.oom_above:
            with self.lock:
                self.batches.append(["oom", *streams])
            raise InjectedOOM(f"injected: out of memory on {len(images)} images")
        if self.mode == "raise":
            raise RuntimeError("injected backend failure")
        if self.mode == "lose-gpu":  # what torch raises once a kernel's assert has fired
            raise RuntimeError("CUDA error: device-side assert triggered\nSearch for `cudaErrorAssert' ...")
        if self.mode == "hang":
            self.release_hang.wait(30)
        return super()._infer(images, streams)

    def close(self):
        self.closed += 1


FAST_FAULTS = FaultPolicy(
    infer_timeout_s=0.3, warmup_timeout_s=0.3, failures_to_restart=3, backoff_s=0.05, backoff_max_s=0.2
)


def feed(worker, client: str, jpeg: bytes, stop: threading.Event, period: float = 0.01) -> threading.Thread:
    """A client that keeps offering frames, as a live session does."""

    def loop():
        i = 0
        while not stop.is_set():
            worker.submit(client, frame(i, jpeg))
            i += 1
            time.sleep(period)

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def one_client(worker, jpeg: bytes) -> tuple[KeypointTimeline, threading.Event]:
    """Client "a" registered and fed until the event is set: its timeline, and the event."""
    tl = KeypointTimeline()
    worker.register("a", tl)
    stop = threading.Event()
    feed(worker, "a", jpeg, stop)
    return tl, stop


def test_repeated_failures_restart_the_backend_with_backoff_and_it_recovers(jpeg720):
    first = FaultyBackend()
    built: list[FaultyBackend] = []

    def factory():
        built.append(FaultyBackend())
        built[-1].mode = first.mode  # still broken while the test says so
        return built[-1]

    worker = PoseWorker(first, BatchConfig(max_size=1, deadline_ms=0), faults=FAST_FAULTS, factory=factory).start()
    tl, stop = one_client(worker, jpeg720)
    try:
        assert wait_until(lambda: len(tl) > 0)
        first.mode = "raise"
        backoffs = []
        for restarts in (1, 2, 3, 4, 5):  # still failing after each rebuild: the pause doubles, capped
            assert wait_until(lambda r=restarts: worker.snapshot()["restarts"] >= r)
            snap = worker.snapshot()
            assert snap["pose_state"] == "restarting" and "failed 3 times in a row" in snap["pose_message"]
            backoffs.append(snap["restart_backoff_s"])
            for b in built:
                b.mode = "raise"
        assert backoffs == [0.05, 0.1, 0.2, 0.2, 0.2], backoffs
        assert worker.health()[0] == "restarting" and worker.alive
        first.mode = "ok"
        for b in built:
            b.mode = "ok"
        posed = len(tl)
        assert wait_until(lambda: worker.health() == ("ok", ""))  # the first good batch clears it
        assert wait_until(lambda: len(tl) > posed or tl.at(1e12).source != "none")
        assert first.closed == 1 and all(b.closed == 1 for b in built[:-1]) and built[-1].closed == 0
    finally:
        stop.set()
        worker.stop()
    assert built[-1].closed == 1


def test_a_lost_gpu_context_stops_the_worker_for_good_and_says_so(jpeg720):
    """A device-side assert ends the CUDA context for the whole process: rebuilding the backend
    would fail the same way, so the worker tries no restart, stops batching, reports "down"
    (alive False: /healthz answers 503) and calls its hook once - the engine process's exit."""
    backend = FaultyBackend()
    built: list[FaultyBackend] = []
    worker = PoseWorker(
        backend,
        BatchConfig(max_size=1, deadline_ms=0),
        faults=FAST_FAULTS,
        factory=lambda: built.append(FaultyBackend()) or built[-1],
    )
    lost: list[str] = []
    worker.on_device_lost = lost.append
    tl, stop = one_client(worker.start(), jpeg720)
    try:
        assert wait_until(lambda: len(tl) > 0)
        backend.mode = "lose-gpu"
        assert wait_until(lambda: worker.health()[0] == "down")
        assert "GPU context is lost" in worker.health()[1] and "must be restarted" in worker.health()[1]
        assert wait_until(lambda: len(lost) == 1) and lost[0] == worker.health()[1]
        assert not worker.alive
        calls = backend.calls
        time.sleep(FAST_FAULTS.backoff_max_s * 3)  # past every backoff a restart would have waited
        assert built == [] and worker.snapshot()["restarts"] == 0  # no rebuild was tried
        assert backend.calls == calls and len(lost) == 1  # and no batch ran since
    finally:
        stop.set()
        worker.stop()


def test_only_errors_that_end_a_cuda_context_count_as_a_lost_gpu():
    from smartcloset.pose.worker import gpu_context_lost

    lost = [
        "CUDA error: device-side assert triggered",
        "CUDA error: an illegal memory access was encountered",
        "CUDA error: unspecified launch failure",
        "CUDA ERROR: 710",  # torchvision's encoder
        "Error while decoding JPEG images: Failed to synchronize CUDA stream: 710",  # its decoder
    ]
    kept = ["injected backend failure", "image encoding failed: 6", "a batch of 710 frames", "CUDA out of memory"]
    assert all(gpu_context_lost(RuntimeError(m)) for m in lost)
    assert not any(gpu_context_lost(RuntimeError(m)) for m in kept)
    try:  # found through what caused an error, as the engine's fallbacks re-raise
        try:
            raise RuntimeError(lost[0])
        except RuntimeError as exc:
            raise ValueError("decoding the batch failed") from exc
    except ValueError as wrapped:
        assert gpu_context_lost(wrapped)


def test_a_hung_backend_call_is_abandoned_and_the_worker_restarts(jpeg720):
    backend = FaultyBackend()
    worker = PoseWorker(backend, BatchConfig(max_size=1, deadline_ms=0), faults=FAST_FAULTS).start()  # no factory
    tl = KeypointTimeline()
    worker.register("a", tl)
    stop = threading.Event()
    feed(worker, "a", jpeg720, stop)
    try:
        assert wait_until(lambda: len(tl) > 0)
        backend.mode = "hang"
        assert wait_until(lambda: worker.snapshot()["hangs"] == 1)
        snap = worker.snapshot()
        assert snap["pose_state"] == "restarting" and "did not answer" in snap["pose_message"]
        backend.mode = "ok"  # the reused backend works again; the hung call is still inside it
        assert wait_until(lambda: worker.health()[0] == "ok")
        before = worker.stats.batches
        assert wait_until(lambda: worker.stats.batches > before + 3)  # batches flow on fresh threads
        assert worker.snapshot()["abandoned_calls"] == 1
        backend.release_hang.set()  # the hung call returns at last: counted, its result dropped
        assert wait_until(lambda: worker.snapshot()["abandoned_calls"] == 0)
    finally:
        stop.set()
        backend.release_hang.set()
        worker.stop()


def test_abandoned_calls_are_bounded(jpeg720):
    backend = FaultyBackend()
    faults = FaultPolicy(infer_timeout_s=0.2, warmup_timeout_s=0.2, backoff_s=0.01, max_abandoned=1)
    calls = []
    worker = PoseWorker(
        backend, BatchConfig(max_size=1, deadline_ms=0), faults=faults, factory=lambda: calls.append(1) or backend
    ).start()
    worker.register("a", KeypointTimeline())
    stop = threading.Event()
    feed(worker, "a", jpeg720, stop)
    try:
        backend.mode = "hang"
        assert wait_until(lambda: worker.snapshot()["hangs"] == 1)
        # One hung thread is the bound: no rebuild (no further threads) until it comes back.
        assert not wait_until(lambda: calls, timeout=0.6)
        assert worker.snapshot()["abandoned_calls"] == 1 and worker.health()[0] == "restarting"
        backend.mode = "ok"
        backend.release_hang.set()
        assert wait_until(lambda: worker.health()[0] == "ok")
        assert calls == [1]
    finally:
        stop.set()
        backend.release_hang.set()
        worker.stop()


def test_out_of_memory_halves_the_batch_and_it_grows_back(jpeg720):
    backend = FaultyBackend()
    backend.oom_above = 2  # a "GPU" that fits two frames
    faults = FaultPolicy(grow_after=3)
    worker = PoseWorker(backend, BatchConfig(max_size=8, deadline_ms=50), faults=faults)
    tls = {c: KeypointTimeline() for c in "abcdefgh"}
    for c, tl in tls.items():
        worker.register(c, tl)
        worker.submit(c, frame(1, jpeg720))
    worker.start()
    try:
        # 8 -> OOM -> halves of 4 -> OOM -> 2 + 2 ...: every client still gets its pose.
        assert wait_until(lambda: all(len(tl) == 1 for tl in tls.values()))
        snap = worker.snapshot()
        assert snap["ooms"] == 3 and snap["batch_cap"] == 2 and snap["pose_state"] == "ok" and snap["errors"] == 0
        assert all(len(b) <= 2 for b in backend.batches if b[0] != "oom")
        backend.oom_above = None  # memory is free again: the cap climbs back one step per 3 good batches
        for i in range(2, 40):
            for c in tls:
                worker.submit(c, frame(i, jpeg720))
            assert wait_until(lambda i=i: all(tl.at(i * 33.0).source == "own" for tl in tls.values()))
            if worker.snapshot()["batch_cap"] == 8:
                break
        assert worker.snapshot()["batch_cap"] == 8
        assert max(len(b) for b in backend.batches[-3:]) > 2
    finally:
        worker.stop()


def test_out_of_memory_on_a_single_frame_is_a_failure_not_a_loop(jpeg720):
    backend = FaultyBackend()
    backend.oom_above = 0
    worker = PoseWorker(backend, BatchConfig(max_size=1), faults=FAST_FAULTS).start()
    worker.register("a", KeypointTimeline())
    worker.submit("a", frame(1, jpeg720))
    try:
        assert wait_until(lambda: worker.stats.errors == 1)
        assert worker.alive and worker.snapshot()["batch_cap"] == 1
    finally:
        worker.stop()


def test_torch_cuda_oom_is_recognised_without_a_gpu():
    from smartcloset.pose.worker import is_out_of_memory

    torch = pytest.importorskip("torch")
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(InjectedOOM()) and not is_out_of_memory(RuntimeError("other"))
