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
from smartcloset.pose.worker import BatchConfig, PoseWorker
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
