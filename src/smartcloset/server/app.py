"""The Flask application factory."""

from __future__ import annotations

import atexit
import logging

from flask import Flask

from ..config import ServerConfig
from ..stream.transport import DeclineCompression
from .pipeline import Pipeline

log = logging.getLogger(__name__)


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: page, API and WebSocket blueprints around one shared pipeline.

    ``test_config`` overrides :class:`~smartcloset.config.ServerConfig` fields; the special
    key ``POSE_BACKEND_INSTANCE`` passes a ready backend object (tests).
    """
    overrides = dict(test_config or {})
    backend = overrides.pop("POSE_BACKEND_INSTANCE", None)
    testing = overrides.pop("TESTING", False)
    config = ServerConfig.from_mapping(overrides)

    app = Flask(__name__, static_folder=None)
    app.config.update(
        TESTING=testing,
        MAX_CONTENT_LENGTH=16 * 1024 * 1024,
        SOCK_SERVER_OPTIONS={
            "receive_bytes": 65536,  # ~2x faster than simple-websocket's 4096 for JPEG frames
            "max_message_size": config.max_message_bytes,
            "ping_interval": 25,  # finds clients that vanished without closing
        },
    )
    pipeline = Pipeline.start(config, backend)
    app.extensions["smartcloset"] = pipeline
    atexit.register(pipeline.stop)

    from . import api, pages, security, ws

    security.init_app(app, pipeline.config)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(ws.bp)
    app.wsgi_app = DeclineCompression(app.wsgi_app)  # type: ignore[method-assign]
    return app


def get_pipeline(app: Flask) -> Pipeline:
    return app.extensions["smartcloset"]
