"""A well-behaved client for the tests that break things: it streams real frames at a steady rate
and records every reply (arrival time, pose source), error and status message it gets."""

from __future__ import annotations

import json
import threading
import time
from collections import deque

import simple_websocket
from test_server import WsClient

from smartcloset.stream.protocol import parse_reply


class Streamer:
    def __init__(self, url: str, jpegs: list[bytes], fps: float = 15.0) -> None:
        self.client = WsClient(url)
        self.jpegs = jpegs
        self.fps = fps
        self.replies: deque[tuple[float, str]] = deque(maxlen=100_000)  # (arrival, pose source)
        self.errors: list[dict] = []
        self.status: list[dict] = []
        self.closed = threading.Event()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._send, self._recv)]
        for t in self._threads:
            t.start()

    def _send(self) -> None:
        t0, k = time.monotonic(), 0
        while not self._stop.is_set():
            time.sleep(max(0.0, t0 + k / self.fps - time.monotonic()))
            try:
                self.client.send_frame(k, self.jpegs[k % len(self.jpegs)])
            except (simple_websocket.ConnectionClosed, OSError):  # OSError: the client's close race
                self.closed.set()
                return
            k += 1

    def _recv(self) -> None:
        while not self._stop.is_set():
            try:
                msg = self.client.ws.receive(timeout=0.5)
            except simple_websocket.ConnectionClosed:
                self.closed.set()
                return
            if isinstance(msg, str):
                m = json.loads(msg)
                if m["type"] == "error":
                    self.errors.append(m)
                elif m["type"] == "status":
                    self.status.append(m)
            elif msg is not None:
                self.replies.append((time.monotonic(), parse_reply(msg)[0].pose_source))

    def fps_between(self, t0: float, t1: float) -> float:
        return sum(1 for at, _ in list(self.replies) if t0 <= at < t1) / (t1 - t0)

    def since(self, t: float) -> list[str]:
        """Pose sources of the replies that arrived from ``t`` on."""
        return [src for at, src in list(self.replies) if at >= t]

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self.client.close()
