"""The server end to end: real sockets on loopback, real WebSocket clients, the real model."""

from __future__ import annotations

import json
import socket
import threading
import time

import numpy as np
import pytest
import simple_websocket
from rawws import RawWs

from conftest import torso_box
from smartcloset import codec
from smartcloset.stream.protocol import pack_frame, parse_reply


class WsClient:
    def __init__(self, url: str) -> None:
        self.ws = simple_websocket.Client.connect(url, receive_bytes=65536)
        self.texts: list[dict] = []

    def send_frame(self, frame_id: int, jpeg: bytes, capture_ms: float | None = None) -> None:
        self.ws.send(pack_frame(frame_id, time.time() * 1000 if capture_ms is None else capture_ms, jpeg))

    def next_reply(self, timeout: float = 10.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = self.ws.receive(timeout=max(0.01, end - time.monotonic()))
            if msg is None:
                continue
            if isinstance(msg, str):
                self.texts.append(json.loads(msg))
                continue
            return parse_reply(msg)
        raise AssertionError("no rendered frame within the timeout")

    def next_text(self, kind: str, timeout: float = 5.0) -> dict:
        for t in self.texts:
            if t["type"] == kind:
                self.texts.remove(t)
                return t
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            msg = self.ws.receive(timeout=max(0.01, end - time.monotonic()))
            if isinstance(msg, str):
                m = json.loads(msg)
                if m["type"] == kind:
                    return m
                self.texts.append(m)
        raise AssertionError(f"no {kind!r} message within the timeout")

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


def dressed_reply(client: WsClient, jpeg: bytes, box, tries: int = 60):
    """Stream the same frame until the reply shows a garment in ``box``.

    A new client's first frames come back undressed: the pose arrives a few frames later.
    """
    x1, y1, x2, y2 = box
    before = codec.decode(jpeg)[y1:y2, x1:x2].astype(int)
    for i in range(tries):
        client.send_frame(1000 + i, jpeg)
        head, out = client.next_reply()
        if np.abs(codec.decode(out)[y1:y2, x1:x2] - before).mean() > 40:
            return head, out
        time.sleep(0.03)
    raise AssertionError("no garment within the tries")


@pytest.fixture()
def ws(live_server):
    c = WsClient(live_server.ws_url)
    yield c
    c.close()


def stream(client: WsClient, jpegs: list[bytes], n: int, fps: float = 20.0):
    """Send n frames at fps, collecting every reply; returns [(header, jpeg)]."""
    replies = []
    done = threading.Event()

    def reader():
        while not done.is_set() or len(replies) < n:
            try:
                msg = client.ws.receive(timeout=0.5)
            except simple_websocket.ConnectionClosed:
                return
            if msg is None:
                if done.is_set():
                    return
                continue
            if isinstance(msg, str):
                client.texts.append(json.loads(msg))
            else:
                replies.append(parse_reply(msg))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(n):
        client.send_frame(i, jpegs[i % len(jpegs)])
        time.sleep(1 / fps)
    time.sleep(1.0)
    done.set()
    t.join(5)
    return replies


# -- HTTP ------------------------------------------------------------------------------------


def test_health_garments_thumbnail_metrics(client):
    assert client.get("/healthz").status_code == 200
    data = client.get("/api/garments").get_json()
    ids = [g["id"] for g in data["garments"]]
    assert "tshirt-navy" in ids and data["default"] == ["tshirt-navy"]
    thumb = client.get(data["garments"][0]["thumbnail"])
    assert thumb.status_code == 200 and thumb.data[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get("/api/garments/nope/thumbnail.png").status_code == 404
    assert b"smartcloset_frames_received_total" in client.get("/metrics").data
    assert client.get("/assets/../../server/app.py").status_code == 404


def test_the_built_page_is_served(client):
    from smartcloset.server.pages import WEBAPP_DIR

    if not (WEBAPP_DIR / "index.html").is_file():
        pytest.skip("web page not built (make test builds it)")
    page = client.get("/")
    assert page.status_code == 200 and b'<div id="root">' in page.data
    import re

    asset = re.search(rb'src="(/assets/[^"]+\.js)"', page.data).group(1).decode()
    resp = client.get(asset)
    assert resp.status_code == 200 and resp.cache_control.max_age == 31536000


# -- the live loop ---------------------------------------------------------------------------


def test_frames_come_back_with_the_garment_on_the_torso(ws, video_frames, video_jpegs, video_truth):
    hello = ws.next_text("hello")
    assert hello["look"] == ["tshirt-navy"] and hello["backend"] == "mediapipe"
    replies = stream(ws, video_jpegs[:20], 20, fps=10)
    assert len(replies) >= 15
    head, jpeg = replies[-1]
    assert head.pose_source in ("own", "interpolated", "extrapolated", "held") and head.persons == 1
    assert head.received_ms <= head.sent_ms and head.pose_ms <= head.sent_ms
    out = codec.decode(jpeg)
    src = video_frames[head.frame_id % 20]
    diff = np.abs(out.astype(int) - src).sum(axis=2)
    # The person's torso (from the video's reference keypoints) changed ...
    x1, y1, x2, y2 = torso_box(video_truth[head.frame_id % 20])
    assert (diff[y1:y2, x1:x2] > 60).mean() > 0.9
    # ... the background did not (beyond JPEG noise).
    assert np.median(diff[:, :300]) < 15 and np.median(diff[:, 1000:]) < 15
    chest = out[y1:y2, x1:x2].reshape(-1, 3).mean(axis=0)
    assert np.abs(chest - (92, 52, 28)).max() < 60, chest  # navy on her pink T-shirt


def test_choosing_another_garment_changes_the_output(ws, video_jpegs, video_truth):
    ws.next_text("hello")
    box = torso_box(video_truth[0])
    _, navy = dressed_reply(ws, video_jpegs[0], box)
    ws.ws.send(json.dumps({"type": "select", "garments": ["tshirt-white"]}))
    assert ws.next_text("look")["garments"] == ["tshirt-white"]
    _, white = dressed_reply(ws, video_jpegs[0], box)
    x1, y1, x2, y2 = box
    chest = lambda j: codec.decode(j)[y1:y2, x1:x2].mean()  # noqa: E731
    assert chest(white) > chest(navy) + 80


def test_stats_message(ws, video_jpegs):
    stream(ws, video_jpegs, 10, fps=20)
    stats = ws.next_text("stats")
    assert stats["received"] >= 10 and stats["sent"] >= 1 and stats["pose_fps"] >= 0 and stats["backend"] == "mediapipe"
    assert set(stats["stage_ms"]) == {"decode", "render", "encode"}


# -- bad input: an error to that client, the stream goes on -----------------------------------

BAD_MESSAGES = {
    "not_jpeg": pack_frame(1, 0, b"GIF89a" + bytes(100)),
    "empty_frame": pack_frame(2, 0, b""),
    "bad_header": b"\x00\x01\x02",
    "bad_version": b"SC\x07\x01" + bytes(12) + b"\xff\xd8\xff",
    "bad_jpeg": pack_frame(3, 0, b"\xff\xd8\xff" + bytes(64)),
    "too_large": pack_frame(4, 0, b"\xff\xd8\xff" + bytes(5 * 1024 * 1024)),
}


@pytest.mark.parametrize("code", list(BAD_MESSAGES))
def test_bad_frames_get_an_error_and_the_stream_goes_on(ws, video_jpegs, code):
    ws.next_text("hello")
    ws.ws.send(BAD_MESSAGES[code])
    err = ws.next_text("error")
    assert err["code"] == code and err["message"]
    ws.send_frame(10, video_jpegs[0])
    head, _ = ws.next_reply()
    assert head.frame_id == 10


def test_truncated_jpeg_is_reported_when_decoded(ws, video_jpegs):
    ws.next_text("hello")
    ws.send_frame(5, video_jpegs[0][: len(video_jpegs[0]) // 2])
    err = ws.next_text("error")
    assert err["code"] == "bad_jpeg" and err["frame_id"] == 5
    ws.send_frame(6, video_jpegs[1])
    assert ws.next_reply()[0].frame_id == 6


def test_too_many_pixels(ws):
    ws.next_text("hello")
    big = codec.encode(np.zeros((2200, 4000, 3), np.uint8), 30)
    ws.send_frame(1, big)
    assert ws.next_text("error")["code"] == "too_many_pixels"


@pytest.mark.parametrize(
    "text, code",
    [
        ("{", "bad_json"),
        ('{"type":"teleport"}', "unknown_type"),
        ('{"type":"select","garments":["no-such-garment"]}', "unknown_garment"),
        ('{"type":"select","garments":[' + ",".join(['"x"'] * 20000) + "]}", "control_too_large"),
    ],
)
def test_bad_control_messages_get_an_error(ws, video_jpegs, text, code):
    ws.next_text("hello")
    ws.ws.send(text)
    assert ws.next_text("error")["code"] == code
    ws.send_frame(1, video_jpegs[0])
    assert ws.next_reply()[0].frame_id == 1


def test_ping_pong(ws):
    ws.ws.send('{"type":"ping","t":12.5}')
    assert ws.next_text("pong")["t"] == 12.5


def wait_closed(c: WsClient, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while c.ws.connected and time.monotonic() < end:
        time.sleep(0.05)


def test_oversized_message_closes_with_a_reason(ws):
    ws.ws.send(pack_frame(1, 0, bytes(9 * 1024 * 1024)))
    wait_closed(ws)
    assert not ws.ws.connected and ws.ws.close_reason == 1009


def test_a_flood_of_errors_ends_the_session_cleanly(ws):
    for _ in range(30):
        try:
            ws.ws.send("{")
        except (simple_websocket.ConnectionClosed, OSError):  # OSError: the client's close race
            break
    wait_closed(ws)
    assert not ws.ws.connected and ws.ws.close_reason == 1008
    errors = [m for m in ws.texts if m["type"] == "error"]
    assert all(m["code"] == "bad_json" for m in errors)


def test_one_bad_client_does_not_disturb_another(live_server, video_jpegs):
    good, bad = WsClient(live_server.ws_url), WsClient(live_server.ws_url)
    try:
        stop = threading.Event()

        def attack():
            i = 0
            while not stop.is_set():
                try:
                    bad.ws.send(BAD_MESSAGES[list(BAD_MESSAGES)[i % 5]])
                except (simple_websocket.ConnectionClosed, OSError):  # OSError: the client's close race
                    return
                i += 1
                time.sleep(0.01)

        t = threading.Thread(target=attack)
        t.start()
        replies = stream(good, video_jpegs, 20, fps=10)
        stop.set()
        t.join()
        assert len(replies) >= 15 and not [m for m in good.texts if m["type"] == "error"]
    finally:
        good.close()
        bad.close()


def test_disconnect_mid_stream_frees_everything(app, live_server, video_jpegs):
    pipeline = app.extensions["smartcloset"]
    before = wait_idle(pipeline)
    assert before == 0
    c = WsClient(live_server.ws_url)
    c.send_frame(1, video_jpegs[0])
    c.next_reply()
    assert pipeline.worker.client_count == before + 1
    # Half a frame, then the socket dies.
    msg = pack_frame(2, 0, video_jpegs[0])
    c.ws.sock.sendall(c.ws.ws.send(simple_websocket.ws.Message(data=msg))[: len(msg) // 2])
    c.ws.sock.shutdown(socket.SHUT_RDWR)
    c.ws.sock.close()
    assert wait_idle(pipeline) == before  # pose slot, tracking state and the admission slot freed


def wait_idle(pipeline, timeout: float = 10.0) -> int:
    """Wait for earlier tests' sessions to finish closing; returns the sessions left."""
    end = time.monotonic() + timeout
    while (pipeline.clients or pipeline.worker.client_count) and time.monotonic() < end:
        time.sleep(0.05)
    return max(pipeline.clients, pipeline.worker.client_count)


def test_server_full_is_refused_with_a_reason(app, live_server):
    assert wait_idle(app.extensions["smartcloset"]) == 0
    cap = app.extensions["smartcloset"].config.max_clients
    clients = []
    try:
        for _ in range(cap):
            clients.append(WsClient(live_server.ws_url))
        end = time.monotonic() + 5
        while app.extensions["smartcloset"].clients < cap and time.monotonic() < end:
            time.sleep(0.02)  # each handler admits its client just after the handshake
        # Read off the wire: the close comes right after the 101, and simple-websocket's client
        # can miss a close that arrives in the same read as the handshake (it then says 1005).
        extra = RawWs(live_server.port)
        clients.append(extra)
        refusal = extra.admission()
        assert refusal == ("refused", 1013, f"server full: {cap} clients connected, try again later")
    finally:
        for c in clients:
            c.close()
    end = time.monotonic() + 5
    while app.extensions["smartcloset"].clients and time.monotonic() < end:
        time.sleep(0.05)


def test_compression_is_declined(live_server):
    with socket.create_connection(("127.0.0.1", live_server.port), timeout=5) as s:
        s.sendall(
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        )
        head = s.recv(4096).split(b"\r\n\r\n")[0].lower()
    assert b"101" in head.split(b"\r\n")[0] and b"sec-websocket-extensions" not in head
