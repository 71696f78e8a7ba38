"""Who may use the server, and what the page may do: token, Origin and Host checks, headers.

* **Access token.** Off on loopback (only this machine can connect). When the server is bound
  to any other address it is required: given with ``--token``, or else generated at start and
  logged once with the full URL, the way Jupyter does. It is accepted as the query parameter
  ``token=``, an ``Authorization: Bearer`` header, an ``X-Smart-Closet-Token`` header, or the
  cookie the page gets when it is opened with a valid ``?token=`` (``HttpOnly``,
  ``SameSite=Strict``: so ``<img>`` thumbnails work, and no other site's page can use it).
  Compared with ``hmac.compare_digest``. ``/healthz`` and the static ``/assets/`` (the public
  page code) are open, for health probes and so that a refusal page can be shown.
* **Origin** (cross-site WebSocket hijacking and CSRF): a WebSocket handshake or a changing API
  request (POST/PUT/PATCH/DELETE) that carries an ``Origin`` must come from the page's own
  origin (the Origin's host:port equals the request's ``Host``) or from one listed in
  ``allowed_origins``. Browsers always send ``Origin`` on these, and a page cannot forge it; a
  request without one is not from a browser (bench, scripts), and those are not the attack.
* **Host** (DNS rebinding): bound to loopback, a request must name a loopback host (or an
  allowed origin's host). Otherwise a site whose name re-resolves to 127.0.0.1 would be "same
  origin" with this server and pass the Origin check.
* **Headers** on every response: a Content-Security-Policy that the built page passes (no
  inline script or style; workers, blobs and the camera stream allowed; ``connect-src 'self'``
  covers the same-origin ``ws:``/``wss:`` socket in CSP3 browsers), nosniff, no referrer (the
  token in the URL never leaks through ``Referer``), camera for this origin only, no framing.

These refusals happen before the WebSocket upgrade, as HTTP errors with a JSON body: they are
met only by attackers and misconfigured clients. Capacity refusals (a person's browser must be
able to show why) are close frames after the upgrade, in ``ws.py``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
import socket
from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, request

from .. import metrics
from ..config import ServerConfig

log = logging.getLogger(__name__)

COOKIE = "smartcloset-token"
TOKEN_HEADER = "X-Smart-Closet-Token"
OPEN_PATHS = ("/healthz",)
OPEN_PREFIXES = ("/assets/",)
CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "media-src 'self' blob: mediastream:",
        "font-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers without CSP2
}

NEEDS_TOKEN_PAGE = """<!doctype html><meta charset="utf-8"><title>Smart Closet</title>
<h1>This mirror needs its access token</h1>
<p>Open the address the server printed when it started: it ends in <code>/?token=…</code>.</p>"""


def is_loopback(host: str) -> bool:
    """True for names and addresses that only this machine can reach."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ensure_token(config: ServerConfig) -> str | None:
    """The token the server requires; a generated one when bound beyond loopback without one.

    Serving an unguessable URL is what keeps a mirror exposed on a LAN from being anybody's
    camera sink and closet editor. The generated token is logged with the URL once, at start.
    """
    if config.access_token or is_loopback(config.host):
        return config.access_token
    config.access_token = secrets.token_urlsafe(24)
    shown = socket.gethostname() if config.host in ("0.0.0.0", "::", "") else config.host
    log.warning(
        "bound to %s, which other machines can reach, and no --token was given: every request needs this "
        "generated token. Open http://%s:%d/?token=%s",
        config.host,
        shown,
        config.port,
        config.access_token,
    )
    return config.access_token


def _origin(scheme: str, host: str, port: int | None) -> str:
    default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(scheme)
    host = host.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{host}" if port in (None, default) else f"{host}:{port}"


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` lower-cased, the default port dropped; None when not an origin."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return f"{parts.scheme}://{_origin(parts.scheme, parts.hostname, port)}"


def origin_allowed(origin: str | None, host: str, allowed: list[str]) -> bool:
    """May a browser page from ``origin`` use this server, reached as ``host`` (the Host header)?"""
    if origin is None:
        return True  # not a browser: cross-site hijacking needs one
    norm = normalize_origin(origin)
    if norm is None:  # "null" (sandboxed frames, file: pages) and garbage
        return False
    if norm in {normalize_origin(a) for a in allowed}:
        return True
    scheme = norm.split("://", 1)[0]
    same = normalize_origin(f"{scheme}://{host}")
    return same is not None and same == norm


def host_allowed(host: str, allowed: list[str]) -> bool:
    """Bound to loopback: the Host header must name loopback (DNS rebinding), or an allowed origin."""
    try:
        name = urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return False
    if is_loopback(name):
        return True
    return any((urlsplit(a).hostname or "") == name for a in allowed)


def presented_tokens() -> list[str]:
    """Every token the request carries: query, headers, cookie."""
    found = [request.args.get("token", ""), request.headers.get(TOKEN_HEADER, ""), request.cookies.get(COOKIE, "")]
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        found.append(auth[7:].strip())
    return [t for t in found if t]


def token_ok(expected: str, presented: list[str]) -> bool:
    want = expected.encode()
    return any(hmac.compare_digest(want, t.encode()) for t in presented)


def _refuse(status: int, reason: str, message: str) -> Response:
    metrics.REFUSED.labels(reason).inc()
    log.info("refused %s %s from %s: %s", request.method, request.path, request.remote_addr, message)
    if status == 401 and request.path == "/":
        resp = Response(NEEDS_TOKEN_PAGE, status=401, mimetype="text/html")
    else:
        resp = jsonify(error=message, reason=reason)
        resp.status_code = status
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="smart-closet"'
    return resp


def init_app(app: Flask, config: ServerConfig) -> None:
    """Install the checks (before every request) and the headers (after every response)."""
    token = ensure_token(config)
    guard_host = is_loopback(config.host)

    @app.before_request
    def _check() -> Response | None:
        host = request.host
        if guard_host and not host_allowed(host, config.allowed_origins):
            return _refuse(403, "host", f"Host {host!r} is not this loopback server (DNS rebinding?)")
        if request.path == "/ws" or request.method in CHANGING:
            origin = request.headers.get("Origin")
            if not origin_allowed(origin, host, config.allowed_origins):
                return _refuse(403, "origin", f"origin {origin!r} may not use this server (see --allow-origin)")
        if token is None or request.path in OPEN_PATHS or request.path.startswith(OPEN_PREFIXES):
            return None
        if not token_ok(token, presented_tokens()):
            return _refuse(401, "token", "an access token is required: open the URL with ?token= printed at start")
        return None

    @app.after_request
    def _headers(resp: Response) -> Response:
        for key, value in HEADERS.items():
            resp.headers.setdefault(key, value)
        query_token = request.args.get("token")
        if token is not None and request.path == "/" and query_token and token_ok(token, [query_token]):
            resp.set_cookie(COOKIE, query_token, httponly=True, samesite="Strict", secure=request.is_secure, path="/")
        return resp
