"""The WebSocket endpoint ``/ws`` (flask-sock): admission, then one Session per connection."""

from __future__ import annotations

from flask import Blueprint, current_app, request
from flask_sock import Sock

from .session import Session

bp = Blueprint("ws", __name__)
sock = Sock()


@sock.route("/ws", bp=bp)
def websocket(ws) -> None:
    pipeline = current_app.extensions["smartcloset"]
    if not pipeline.try_admit():
        ws.close(1013, f"server full: {pipeline.config.max_clients} clients already connected")
        return
    try:
        Session(ws, pipeline, request.remote_addr or "?").run()
    finally:
        pipeline.leave()
