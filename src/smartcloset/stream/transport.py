"""Making simple-websocket (under flask-sock) fit a live video stream.

Four things it does not do by itself, each measured or reported:

* It accepts the browser's permessage-deflate. On JPEG that costs ~2.3 ms per frame to save
  <1 %; ``DeclineCompression`` strips the offer from the handshake, so none is negotiated.
* Its ``send`` calls ``socket.send`` (its issue #45): a big message can go out partially.
  ``FrameSender`` encodes with the connection's own wsproto state and uses ``sendall``,
  under a lock - and the session sends from one thread only.
* Its ``send`` blocks for as long as the peer takes no bytes: a client that stops reading would
  hold the sending thread (and its socket) forever. ``FrameSender`` cuts off a peer that takes
  no bytes for ``timeout_s``.
* Its receive queue is an unbounded list filled by a reader thread. ``bound_inbox`` swaps in a
  ``BoundedInbox``: past ``limit`` waiting messages the oldest is dropped and counted, so a
  client flooding faster than we read costs a few frames of memory, never more.

And one thing wsproto (under simple-websocket) does slowly: every byte a client sends is masked
(RFC 6455), and wsproto unmasks with four ``bytes.translate`` passes - ~100 us for a 37 kB frame
on the 2-core VM, about half of the Python a socket process spends on a frame (py-spy). NumPy
does the same XOR in ~13 us; ``NumpyXorMasker`` takes wsproto's place (``speed_up_masking``,
called on import), for the server's unmasking and a Python client's masking alike.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from collections import deque

import numpy as np
import wsproto.frame_protocol
from simple_websocket import ConnectionClosed
from wsproto.events import BytesMessage, TextMessage

log = logging.getLogger(__name__)


class NumpyXorMasker:
    """wsproto's ``XorMaskerSimple`` - the RFC 6455 mask, XORed over a message that may come in
    several pieces, its key turning with each piece's length - with the XOR done by NumPy."""

    def __init__(self, masking_key: bytes | bytearray) -> None:
        self._key = bytes(masking_key)

    def process(self, data: bytes | bytearray) -> bytearray:
        out = bytearray(data)
        n = len(out)
        if not n:
            return out
        whole = n - n % 4
        if whole:
            words = np.frombuffer(out, dtype=np.uint32, count=whole // 4)  # a writable view of ``out``
            np.bitwise_xor(words, np.frombuffer(self._key, dtype=np.uint32), out=words)
        for i in range(whole, n):  # the last 1-3 bytes
            out[i] ^= self._key[i - whole]
        turn = n % 4
        self._key = self._key[turn:] + self._key[:turn]
        return out


WSPROTO_XOR_MASKER = wsproto.frame_protocol.XorMaskerSimple  # wsproto's own (the tests compare)


def speed_up_masking() -> None:
    """Have wsproto mask and unmask with ``NumpyXorMasker`` (it looks the class up on each frame)."""
    wsproto.frame_protocol.XorMaskerSimple = NumpyXorMasker  # type: ignore[misc]


speed_up_masking()


class DeclineCompression:
    """WSGI middleware: remove ``Sec-WebSocket-Extensions`` so no compression is negotiated."""

    def __init__(self, app) -> None:
        self.app = app

    def __call__(self, environ, start_response):
        environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        return self.app(environ, start_response)


class BoundedInbox(deque):
    """A receive queue (with the list API simple-websocket uses) that cannot grow without bound.

    Binary messages are video frames: past ``limit`` of them waiting, the oldest frame is
    dropped (newest frame wins). Text messages are control messages and are never dropped for
    a frame; past ``text_limit`` of them the oldest text is dropped too, and counted apart so
    the session can tell the client it is sending control messages faster than they are read.
    """

    def __init__(self, limit: int, items=(), text_limit: int = 64) -> None:
        super().__init__()
        # simple-websocket's reader thread appends while the session's thread pops: the scan
        # in append() must not see the deque change under it ("deque mutated during iteration",
        # found by the flood test in tests/test_overload.py).
        self._lock = threading.Lock()
        self.limit = limit
        self.text_limit = text_limit
        self.dropped = 0
        self.dropped_text = 0
        for item in items:
            self.append(item)

    def append(self, item) -> None:
        binary = isinstance(item, (bytes, bytearray))
        with self._lock:
            same = [i for i, x in enumerate(self) if isinstance(x, (bytes, bytearray)) == binary]
            if len(same) >= (self.limit if binary else self.text_limit):
                del self[same[0]]
                if binary:
                    self.dropped += 1
                else:
                    self.dropped_text += 1
            super().append(item)

    def pop(self, index: int = -1):
        with self._lock:
            return self.popleft() if index == 0 else super().pop()


def bound_inbox(ws, limit: int) -> BoundedInbox:
    """Replace ``ws``'s receive list with a BoundedInbox (keeping anything already queued)."""
    inbox = BoundedInbox(limit, list(ws.input_buffer))
    ws.input_buffer = inbox
    return inbox


class FrameSender:
    """Sends whole messages on a simple-websocket connection with ``sendall``.

    With ``timeout_s``, a peer that takes no bytes for that long (its receive window stays
    full: it stopped reading) is disconnected rather than waited for: the session's thread and
    socket are freed, and the kernel's send buffer is the most that is ever held for it.
    """

    def __init__(self, ws, timeout_s: float | None = None) -> None:
        self.ws = ws
        self.timeout_s = timeout_s if timeout_s and hasattr(socket, "MSG_DONTWAIT") else None
        self._lock = threading.Lock()
        self.bytes_sent = 0
        self.stalled = False  # cut off for not reading

    def send(self, data: bytes | str) -> None:
        ws = self.ws
        if not ws.connected:
            raise ConnectionClosed(ws.close_reason, ws.close_message)
        event = BytesMessage(data=data) if isinstance(data, (bytes, bytearray)) else TextMessage(data=str(data))
        with self._lock:
            out = ws.ws.send(event)
            try:
                if self.timeout_s is None:
                    ws.sock.sendall(out)
                else:
                    self._send_within(out)
            except OSError:
                ws.connected = False
                raise ConnectionClosed(ws.close_reason, ws.close_message) from None
            self.bytes_sent += len(out)

    def _send_within(self, out: bytes) -> None:
        sock = self.ws.sock
        view = memoryview(out)
        poller = None
        while view:
            try:
                view = view[sock.send(view, socket.MSG_DONTWAIT) :]
                continue
            except BlockingIOError:
                pass
            if poller is None:
                poller = select.poll()  # not select(): descriptors may be past 1024
                poller.register(sock, select.POLLOUT)
            if not poller.poll(self.timeout_s * 1000):
                self.stalled = True
                log.info("peer took no bytes for %.0f s (not reading): disconnected", self.timeout_s)
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # its reader thread sees the end too
                except OSError:
                    pass
                raise TimeoutError("peer stopped reading")
