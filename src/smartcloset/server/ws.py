"""The WebSocket endpoint ``/ws`` (flask-sock): admission, then one Session per connection.

Origin, Host and token were checked before the upgrade (``security.py``). The capacity limits
are checked here, after it, on purpose: a browser hides a refused handshake's HTTP status and
body from the page (it sees a bare 1006), while a close frame's code and reason reach it, so
the page can tell its user "server full" instead of "unreachable". Code 1013 ("try again
later") for both limits: both clear by themselves when other connections close. A refused
connection holds its thread only for the close handshake.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, request
from flask_sock import Sock

from .. import metrics
from .session import Session

log = logging.getLogger(__name__)

bp = Blueprint("ws", __name__)
sock = Sock()


@sock.route("/ws", bp=bp)
def websocket(ws) -> None:
    pipeline = current_app.extensions["smartcloset"]
    address = request.remote_addr or "?"
    refusal = pipeline.try_admit(address)
    if refusal is not None:
        metrics.REFUSED.labels("per_address" if refusal.startswith("too many") else "server_full").inc()
        log.info("refused a WebSocket from %s: %s", address, refusal)
        ws.close(1013, refusal)
        return
    try:
        Session(ws, pipeline, address).run()
    finally:
        pipeline.leave(address)
