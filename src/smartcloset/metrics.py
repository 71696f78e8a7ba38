"""Prometheus metrics (served at /metrics). Process-wide, like prometheus_client's registry.

With several processes (``--processes N``, engine processes) every process writes its values to
the folder named by ``PROMETHEUS_MULTIPROC_DIR`` (set by ``serve`` before anything imports
prometheus_client) and /metrics, whichever process answers, adds them all up - prometheus_client's
multiprocess mode. One process keeps the plain in-memory registry.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

_MS_BUCKETS = (1, 2, 4, 6, 8, 10, 15, 20, 30, 40, 50, 75, 100, 150, 250, 500, 1000)

FRAMES_RECEIVED = Counter("smartcloset_frames_received_total", "Camera frames received")
FRAMES_SENT = Counter("smartcloset_frames_sent_total", "Rendered frames sent")
FRAMES_DROPPED = Counter(
    "smartcloset_frames_dropped_total", "Frames replaced before processing (newest frame wins)", ["stage"]
)
FRAME_ERRORS = Counter("smartcloset_frame_errors_total", "Rejected client messages", ["code"])
POSE_BATCH_SIZE = Histogram(
    "smartcloset_pose_batch_size", "Images per pose batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
STAGE_MS = Histogram("smartcloset_stage_ms", "Time per pipeline stage (ms)", ["stage"], buckets=_MS_BUCKETS)
LATENCY_MS = Histogram("smartcloset_latency_ms", "Server receive -> send per frame (ms)", buckets=_MS_BUCKETS)
ACTIVE_CLIENTS = Gauge("smartcloset_active_clients", "Open WebSocket sessions", multiprocess_mode="livesum")
POSE_ERRORS = Counter("smartcloset_pose_errors_total", "Pose batches that failed")
ENGINE_RESTARTS = Counter("smartcloset_engine_restarts_total", "Engine processes started again after they exited")
REFUSED = Counter(
    "smartcloset_refused_total", "Requests and WebSockets refused (origin, host, token, limits)", ["reason"]
)


def exposition() -> bytes:
    """The text /metrics serves: this process's registry, or every process's values summed."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path)
    return generate_latest(registry)


def process_exited(pid: int) -> None:
    """Forget a dead process's live gauges (its counters and histograms still count)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
