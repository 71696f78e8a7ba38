"""Newest-frame-wins slot: a one-item mailbox between a producer and a slower consumer.

Like aiortc's relay, a live stream never queues: when the consumer is busy, a new item
replaces the one still waiting, and the replaced one is counted as dropped. Memory stays at
one item whatever the rates are.
"""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class SlotClosed(Exception):
    """The slot was closed: its client is gone."""


class NewestSlot(Generic[T]):
    """Holds at most one item. ``put`` never blocks; ``get`` waits for an item.

    ``condition`` may be shared with other slots or queues so one consumer thread can wait on
    all of them at once (the session's sender waits on frames and text messages together).
    """

    def __init__(self, condition: threading.Condition | None = None) -> None:
        self._cond = condition or threading.Condition()
        self._item: T | None = None
        self._closed = False
        self.put_count = 0
        self.dropped = 0
        # When the slot last went from empty to full (monotonic s): how long its owner has been
        # waiting for the consumer. A newer item replacing a waiting one does not reset it, so a
        # consumer that serves the longest-waiting slots first starves none of them.
        self.since = 0.0

    @property
    def condition(self) -> threading.Condition:
        return self._cond

    def put(self, item: T) -> T | None:
        """Store ``item``; returns the unconsumed item it replaced (already counted as dropped)."""
        with self._cond:
            if self._closed:
                raise SlotClosed()
            replaced = self._item
            self._item = item
            self.put_count += 1
            if replaced is not None:
                self.dropped += 1
            else:
                self.since = time.monotonic()
            self._cond.notify_all()
            return replaced

    def take(self) -> T | None:
        """The waiting item, or None; never blocks. Caller may hold ``condition``."""
        with self._cond:
            item, self._item = self._item, None
            return item

    def peek(self) -> T | None:
        with self._cond:
            return self._item

    def get(self, timeout: float | None = None) -> T | None:
        """Wait up to ``timeout`` seconds for an item; None on timeout. Raises SlotClosed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._item is None:
                if self._closed:
                    raise SlotClosed()
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._item = None
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed


class InOrder:
    """Lets through only items that are not older than the last one let through.

    Two batches in flight may finish out of order; a frame handed on after a newer one would
    make the picture step back in time. Times are the server's receive times (wall clock): an
    item older by ``window_ms`` or more is a clock step, not a reordering - it passes and resets
    the order. Not thread-safe: the caller holds its lock.
    """

    def __init__(self, window_ms: float = 2000.0) -> None:
        self.window_ms = window_ms
        self.last_ms = float("-inf")
        self.late = 0

    def admit(self, t_ms: float) -> bool:
        if 0 < self.last_ms - t_ms < self.window_ms:
            self.late += 1
            return False
        self.last_ms = t_ms
        return True
