"""Small rolling statistics for live figures (HUD, /api/stats, bench): bounded, thread-safe."""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np


class Rolling:
    """The last ``size`` values of a quantity, for medians and percentiles."""

    def __init__(self, size: int = 512) -> None:
        self._values: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._values.append(float(value))

    def values(self) -> np.ndarray:
        with self._lock:
            return np.array(self._values, dtype=np.float64)

    def percentile(self, q: float) -> float | None:
        v = self.values()
        return float(np.percentile(v, q)) if v.size else None

    def median(self) -> float | None:
        return self.percentile(50)

    def mean(self) -> float | None:
        v = self.values()
        return float(v.mean()) if v.size else None


class RateMeter:
    """Events per second over the last ``window_s`` seconds (or since creation, if sooner)."""

    def __init__(self, window_s: float = 2.0, max_events: int = 8192) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque(maxlen=max_events)
        self._lock = threading.Lock()
        self._created = time.monotonic()
        self.total = 0

    def tick(self, n: int = 1, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self.total += n
            self._times.extend([now] * n)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            while self._times and self._times[0] < now - self.window_s:
                self._times.popleft()
            span = min(self.window_s, now - self._created)
            return len(self._times) / span if span > 0 else 0.0


def now_ms() -> float:
    """Server wall clock in Unix-epoch milliseconds (the clock of reply timestamps)."""
    return time.time() * 1000.0
