"""Security: access token, Origin and Host checks, headers, paths built from ids, no pickle."""

from __future__ import annotations

import io
import logging
import re
import socket
import threading
from pathlib import Path

import pytest

from smartcloset.pose.types import FramePose
from smartcloset.server import security
from smartcloset.server.security import CSP, host_allowed, is_loopback, normalize_origin, origin_allowed

SRC = Path(__file__).resolve().parents[1] / "src" / "smartcloset"


class NoPersonBackend:
    """A pose backend that finds nobody: the security checks do not need a model."""

    name = "none"
    device = "cpu"
    max_inflight = 1

    def infer(self, images, streams):
        return [FramePose() for _ in images]

    def release(self, stream):
        pass

    def close(self):
        pass


def make_app(closet: Path, **config):
    from smartcloset.server import create_app

    return create_app(
        {"TESTING": True, "POSE_BACKEND_INSTANCE": NoPersonBackend(), "closet_dir": str(closet), **config}
    )


@pytest.fixture(scope="module")
def token_app(tmp_path_factory):
    app = make_app(
        tmp_path_factory.mktemp("closet"), access_token="s3cret-token", allowed_origins=["https://m.example"]
    )
    yield app
    app.extensions["smartcloset"].stop()


def handshake(port: int, path: str = "/ws", origin: str | None = None, host: str | None = None) -> tuple[int, bytes]:
    """A raw WebSocket handshake: (HTTP status, the response's body or b"" for a 101)."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host or f'127.0.0.1:{port}'}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin:
        lines.append(f"Origin: {origin}")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 101:
            s.settimeout(2)
            try:
                while chunk := s.recv(65536):
                    body += chunk
            except OSError:
                pass
        return status, body if status != 101 else b""


# -- the checks as functions -------------------------------------------------------------------


def test_loopback_names():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost", "app.localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.5", "::", "example.com", "localhost.evil.com"))


@pytest.mark.parametrize(
    "origin, host, allowed, ok",
    [
        (None, "127.0.0.1:8000", [], True),  # not a browser
        ("http://127.0.0.1:8000", "127.0.0.1:8000", [], True),
        ("http://LOCALHOST:8000", "localhost:8000", [], True),
        ("https://mirror.example", "mirror.example:443", [], True),  # default port
        ("http://127.0.0.1:8001", "127.0.0.1:8000", [], False),  # another port is another origin
        ("http://localhost:8000", "127.0.0.1:8000", [], False),
        ("https://evil.example", "127.0.0.1:8000", [], False),
        ("null", "127.0.0.1:8000", [], False),  # sandboxed frames, file: pages
        ("file://", "127.0.0.1:8000", [], False),
        ("http://127.0.0.1:8000.evil.example", "127.0.0.1:8000", [], False),
        ("https://m.example", "10.0.0.2:8000", ["https://M.example/"], True),
        ("http://m.example", "10.0.0.2:8000", ["https://m.example"], False),  # scheme matters
    ],
)
def test_origin_allowed(origin, host, allowed, ok):
    assert origin_allowed(origin, host, allowed) is ok


def test_normalize_origin_and_host_check():
    assert normalize_origin("HTTPS://Example.COM:443/") == "https://example.com"
    assert normalize_origin("http://[::1]:8000") == "http://[::1]:8000"
    assert normalize_origin("http://x:99999") is None
    assert host_allowed("127.0.0.1:8000", []) and host_allowed("localhost", []) and host_allowed("[::1]:80", [])
    assert not host_allowed("rebind.evil.example:8000", [])
    assert host_allowed("mirror.lan:8000", ["http://mirror.lan:8000"])


def test_a_non_loopback_host_gets_a_generated_token_logged_once(caplog):
    from smartcloset.config import ServerConfig

    cfg = ServerConfig(host="0.0.0.0", port=8123)
    with caplog.at_level(logging.WARNING, logger="smartcloset.server.security"):
        token = security.ensure_token(cfg)
        assert security.ensure_token(cfg) == token  # kept, not regenerated
    assert token and len(token) >= 32 and cfg.access_token == token
    (record,) = [r for r in caplog.records if "token" in r.getMessage()]
    assert f":8123/?token={token}" in record.getMessage()
    assert security.ensure_token(ServerConfig(host="127.0.0.1")) is None  # loopback: none needed
    assert security.ensure_token(ServerConfig(host="10.1.2.3", access_token="mine")) == "mine"


# -- headers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/api/garments", "/healthz", "/api/garments/nope/thumbnail.png", "/nothing"])
def test_security_headers_on_every_response(client, path):
    resp = client.get(path)
    assert resp.headers["Content-Security-Policy"] == CSP
    assert "script-src 'self';" in CSP and "frame-ancestors 'none'" in CSP and "unsafe" not in CSP
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["Permissions-Policy"].startswith("camera=(self)")
    assert resp.headers["Cross-Origin-Opener-Policy"] == "same-origin"


def test_the_built_page_needs_no_inline_script_or_style():
    """The CSP has no 'unsafe-inline': the page must not need it."""
    from smartcloset.server.pages import WEBAPP_DIR

    if not (WEBAPP_DIR / "index.html").is_file():
        pytest.skip("web page not built (make test builds it)")
    html = (WEBAPP_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"
    assert "<style" not in html and " style=" not in html


# -- Host and Origin (loopback app, no token) --------------------------------------------------


def test_dns_rebinding_host_is_refused(client):
    resp = client.get("/api/garments", headers={"Host": "rebind.evil.example:8000"})
    assert resp.status_code == 403 and resp.get_json()["reason"] == "host"
    assert client.get("/api/garments", headers={"Host": "127.0.0.1:8000"}).status_code == 200


def test_cross_site_changes_are_refused(client, closet_dir):
    before = sorted(p.name for p in closet_dir.iterdir())
    body = {"photo": (io.BytesIO(b"\xff\xd8\xff" + bytes(64)), "a.jpg"), "category": "top"}
    resp = client.post("/api/garments", data=body, headers={"Origin": "https://evil.example"})
    assert resp.status_code == 403 and resp.get_json()["reason"] == "origin"
    assert client.delete("/api/garments/tshirt-navy", headers={"Origin": "null"}).status_code == 403
    assert sorted(p.name for p in closet_dir.iterdir()) == before
    # The page's own origin gets through to the handler (which finds the photo bad).
    body = {"photo": (io.BytesIO(b"GIF89a"), "a.gif"), "category": "top"}
    assert client.post("/api/garments", data=body, headers={"Origin": "http://localhost"}).status_code == 400
    # A cross-site GET is harmless (the browser does not let the page read it): not refused.
    assert client.get("/api/garments", headers={"Origin": "https://evil.example"}).status_code == 200


def test_cross_site_websocket_is_refused_before_the_upgrade(live_server):
    status, body = handshake(live_server.port, origin="https://evil.example")
    assert status == 403 and b"origin" in body
    assert handshake(live_server.port, origin=f"http://127.0.0.1:{live_server.port}")[0] == 101
    assert handshake(live_server.port)[0] == 101  # no Origin: not a browser (bench, scripts)
    assert handshake(live_server.port, host="rebind.evil.example")[0] == 403


# -- the access token --------------------------------------------------------------------------


def test_token_is_required_everywhere_but_health_and_assets(token_app):
    c = token_app.test_client()
    assert c.get("/healthz").status_code == 200
    assert c.get("/assets/nothing.js").status_code == 404  # open (the public page code), just absent
    page = c.get("/")
    assert page.status_code == 401 and b"access token" in page.data and page.mimetype == "text/html"
    for path in ("/api/garments", "/api/stats", "/metrics", "/api/garments/tshirt-navy/thumbnail.png"):
        resp = c.get(path)
        assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer"), path
        assert c.get(path, query_string={"token": "wrong"}).status_code == 401
    assert c.delete("/api/garments/x").status_code == 401
    assert c.get("/api/garments", query_string={"token": "s3cret-token"}).status_code == 200
    assert c.get("/api/garments", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    assert c.get("/api/garments", headers={"X-Smart-Closet-Token": "s3cret-token"}).status_code == 200
    assert c.get("/api/garments", headers={"Authorization": "Bearer s3cret-tokeN"}).status_code == 401
    assert c.delete("/api/garments/nope", headers={"X-Smart-Closet-Token": "s3cret-token"}).status_code == 404


def test_the_page_opened_with_its_token_gets_a_strict_cookie(token_app):
    c = token_app.test_client()
    resp = c.get("/?token=s3cret-token")
    assert resp.status_code in (200, 503)  # 503: the page is not built here; the cookie is set anyway
    cookie = resp.headers["Set-Cookie"]
    assert "smartcloset-token=s3cret-token" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert c.get("/api/garments/tshirt-navy/thumbnail.png").status_code == 200  # <img> requests carry it
    assert "Set-Cookie" not in c.get("/?token=wrong").headers


def test_websocket_needs_the_token(token_app):
    from conftest import LiveServer

    server = LiveServer(token_app)
    try:
        status, body = handshake(server.port)
        assert status == 401 and b"token" in body
        assert handshake(server.port, "/ws?token=s3cret-token")[0] == 101
        # An allowed other origin with the token: in; a foreign one with the token: still out.
        assert handshake(server.port, "/ws?token=s3cret-token", origin="https://m.example")[0] == 101
        assert handshake(server.port, "/ws?token=s3cret-token", origin="https://evil.example")[0] == 403
    finally:
        server.stop()


# -- paths from ids, and no pickle ---------------------------------------------------------------


@pytest.mark.parametrize(
    "gid",
    [
        "../x",
        "..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "/etc/passwd",
        "x%00.json",
        "..",
        ".",
        "C:%5Cwindows",
        "a" * 300,
    ],
)
def test_garment_ids_never_reach_the_file_system(client, closet_dir, gid):
    """Ids are looked up in the closet's dict, never joined onto a path; changes need a user garment."""
    outside = closet_dir.parent / "outside.json"
    outside.write_text("{}")
    before = sorted(p.name for p in closet_dir.iterdir())
    for method, path, kw in (
        ("get", f"/api/garments/{gid}/thumbnail.png", {}),
        ("get", f"/api/garments/{gid}/image.png", {}),
        ("put", f"/api/garments/{gid}/anchors", {"json": {"anchors": {}}}),
        ("delete", f"/api/garments/{gid}", {}),
    ):
        status = getattr(client, method)(path, **kw).status_code
        assert status in (400, 404, 405), (method, path, status)
    assert outside.read_text() == "{}" and sorted(p.name for p in closet_dir.iterdir()) == before


def test_sidecar_ids_are_validated(tmp_path):
    from smartcloset.closet.garment import GarmentError, load_garment

    for gid in ("../x", "/abs", "a\x00b", "a/b", "", "x" * 65):
        path = tmp_path / "g.json"
        path.write_text(f'{{"schema": 1, "id": {gid!r}}}'.replace("'", '"').replace("\x00", "\\u0000"))
        with pytest.raises(GarmentError, match="id"):
            load_garment(path)


def test_no_pickle_anywhere():
    """Nothing the project loads may run code: no pickle, no torch.load without weights_only."""
    bad = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"pickle\.loads?\(|allow_pickle\s*=\s*True|joblib\.load|dill\.|cloudpickle", text):
            bad.append(f"{path.name}: {m.group(0)}")
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                bad.append(f"{path.name}: {m.group(0)}")
    assert not bad, bad
    assert 'torch.load(path, map_location="cpu", weights_only=True)' in (SRC / "pose" / "weights.py").read_text()


def test_concurrent_admission_never_overshoots(app):
    """try_admit/leave from many threads at once: the per-address and total counts stay exact."""
    pipeline = app.extensions["smartcloset"]
    cfg = pipeline.config
    admitted: list[str] = []
    lock = threading.Lock()
    go = threading.Event()

    def one(addr: str):
        go.wait()
        if pipeline.try_admit(addr) is None:
            with lock:
                admitted.append(addr)

    base = pipeline.clients
    threads = [threading.Thread(target=one, args=(f"10.0.0.{i % 3}",)) for i in range(60)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    try:
        assert len(admitted) == min(cfg.max_clients - base, 3 * cfg.max_clients_per_address)
        assert all(admitted.count(a) <= cfg.max_clients_per_address for a in set(admitted))
        assert pipeline.clients == base + len(admitted)
    finally:
        for a in admitted:
            pipeline.leave(a)
    assert pipeline.clients == base and not any(k.startswith("10.0.0.") for k in pipeline._per_address)
