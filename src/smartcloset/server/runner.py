"""Serving the app with Gunicorn's threaded worker (``gthread``).

Why Gunicorn: it is a production WSGI server that flask-sock supports (it hands the raw socket
to simple-websocket), unlike Waitress; and its ``gthread`` worker gives each WebSocket its own
thread, which is what simple-websocket's blocking API needs - no monkey-patching as with
eventlet/gevent. One worker process: the pose worker (and its model) lives in that process and
is shared by every client, so frames from all clients can be batched together. ``--processes N``
runs N such workers on one port (the kernel spreads connections over them): the way past one
process's GIL and socket throughput - measured in docs/performance.md. Limits (``--max-clients``)
then count per process. With ``--render batched`` and ``--processes N > 1`` or ``--engines K > 1``
the GPU work moves to K engine processes that every worker shares (engine_ipc.py).
"""

from __future__ import annotations

import atexit
import logging
from concurrent.futures import ThreadPoolExecutor

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
    if config.engines > 1 and (config.render != "batched" or config.transport_only):
        log.warning("--engines %d ignored: engine processes run only with --render batched", config.engines)
    if config.engine_processes:
        _start_engines(config)
    overrides = config.to_dict()
    options = {
        "bind": f"{config.host}:{config.port}",
        "workers": max(1, config.processes),
        "worker_class": "gthread",
        # Each worker its own listening socket (SO_REUSEPORT), so the kernel spreads connections
        # evenly over them. On one shared socket whichever worker wakes first accepts: on an
        # H200 host 128 bench clients all landed on one of 4 workers, whose GIL then fed the
        # engines 67 frames/s (0.5 FPS a client) while the other three sat idle.
        "reuse_port": config.processes > 1,
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
        "child_exit": _worker_exited,
    }
    log.info("serving on http://%s:%d (gunicorn gthread, %d threads)", config.host, config.port, options["threads"])
    _Gunicorn(overrides, options).run()


def _start_engines(config: ServerConfig):
    """Start ``config.engines`` engine processes that hold the GPU for every server process
    (engine_ipc.py says why), give the workers their addresses and keys, and keep them running
    (``EngineKeeper``: one that exits is started again)."""
    from ..engine_ipc import EngineKeeper, start_engine_process

    values = config.to_dict()
    with ThreadPoolExecutor(config.engine_processes) as pool:  # side by side: each warms up (or compiles) for a while
        started = list(pool.map(lambda _: start_engine_process(values), range(config.engine_processes)))
    config.engine_addresses = [address for address, _, _ in started]
    config.engine_authkeys = [key for _, key, _ in started]
    for address, _, proc in started:
        log.info("engine process %d ready at %s", proc.pid, address)
    keeper = EngineKeeper(values, started)
    atexit.register(keeper.stop)
    return keeper.start()


def _worker_exited(server, worker) -> None:
    """Gunicorn's hook in the master: a worker's live gauges leave /metrics with it."""
    from .. import metrics

    metrics.process_exited(worker.pid)
