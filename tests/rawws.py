"""A bare WebSocket client on a plain socket, for the tests that need to see the wire: a
close frame the server sends right after the handshake (simple-websocket's client can miss one
that arrives in the same read as the 101 response: it then reports 1005, no status)."""

from __future__ import annotations

import json
import socket
import struct


class RawWs:
    """A bare WebSocket client on a plain socket: any source address, any receive buffer, and
    nothing read unless asked - what a misbehaving client looks like."""

    def __init__(self, port: int, source: str = "127.0.0.1", rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((source, 0))
        self.sock.settimeout(15)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            assert chunk, "connection closed during the handshake"
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.status = int(head.split(b" ", 2)[1])

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def next_message(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame (server frames are unmasked)."""
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", self._read(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", self._read(8))
        return b0 & 0x0F, self._read(n)

    def admission(self) -> tuple[str, int | None, str]:
        """("admitted", None, "") on the hello message, else ("refused", close code, reason)."""
        op, payload = self.next_message()
        if op == 0x8:
            return "refused", struct.unpack(">H", payload[:2])[0], payload[2:].decode()
        assert op == 0x1 and json.loads(payload)["type"] == "hello", (op, payload[:80])
        return "admitted", None, ""

    def send_binary(self, data: bytes) -> None:
        """One masked binary frame; the all-zero mask key leaves the payload as is (legal, cheap)."""
        n = len(data)
        if n < 126:
            head = struct.pack(">BB", 0x82, 0x80 | n)
        elif n < 65536:
            head = struct.pack(">BBH", 0x82, 0x80 | 126, n)
        else:
            head = struct.pack(">BBQ", 0x82, 0x80 | 127, n)
        self.sock.sendall(head + b"\x00\x00\x00\x00" + data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
