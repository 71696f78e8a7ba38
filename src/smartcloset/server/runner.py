"""Serving the app with Gunicorn's threaded worker (``gthread``).

Why Gunicorn: it is a production WSGI server that flask-sock supports (it hands the raw socket
to simple-websocket), unlike Waitress; and its ``gthread`` worker gives each WebSocket its own
thread, which is what simple-websocket's blocking API needs - no monkey-patching as with
eventlet/gevent. One worker process: the pose worker (and its model) lives in that process and
is shared by every client, so frames from all clients can be batched together. ``--processes N``
runs N such workers on one port (the kernel spreads connections over them), each with its own
engine on the same GPU: the way past one process's GIL and socket throughput - measured in
docs/performance.md. Limits (``--max-clients``) then count per process.
"""

from __future__ import annotations

import logging

from gunicorn.app.base import BaseApplication

from ..config import ServerConfig

log = logging.getLogger(__name__)


class _Gunicorn(BaseApplication):
    def __init__(self, overrides: dict, options: dict) -> None:
        self.overrides = overrides
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from .app import create_app  # built in the worker process, after the fork

        return create_app(self.overrides)


def serve(config: ServerConfig, log_level: str = "info") -> None:
    from .security import ensure_token

    ensure_token(config)  # here, before the fork: generated once, logged once, given to the worker
    engine = None
    if config.processes > 1 and config.render == "batched" and not config.transport_only:
        # One engine process holds the GPU for all server processes (engine_ipc.py says why).
        from ..engine_ipc import start_engine_process

        config.engine_address, config.engine_authkey, engine = start_engine_process(config.to_dict())
        log.info("engine process %d ready at %s", engine.pid, config.engine_address)
    overrides = config.to_dict()
    options = {
        "bind": f"{config.host}:{config.port}",
        "workers": max(1, config.processes),
        "worker_class": "gthread",
        # Each WebSocket holds a thread for its lifetime, and admission (ws.py) stops at
        # max_clients of them, so these 8 are always left for the page, the API and for
        # refusing the connections past the limits (a refusal holds a thread only for the close
        # handshake). A gthread connection waits in the worker's queue while all are busy.
        "threads": config.max_clients + 8,
        "timeout": 60,
        "graceful_timeout": 5,
        "keepalive": 5,
        "loglevel": log_level,
        "accesslog": None,
    }
    log.info("serving on http://%s:%d (gunicorn gthread, %d threads)", config.host, config.port, options["threads"])
    _Gunicorn(overrides, options).run()
