"""The web server: app factory, page and API blueprints, the WebSocket session, the runner."""

from .app import create_app

__all__ = ["create_app"]
