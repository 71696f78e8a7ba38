"""One GPU engine process serving several socket processes (``--render batched --processes N``).

Measured on an H200 (docs/performance.md): one Python process moves only ~600 JPEG frames/s
through its WebSockets (simple-websocket parses and unmasks in Python, under the GIL), and N
processes that each own a CUDA context time-slice the GPU (98 % busy at 884 frames/s). So the
work is split by what limits it: N server processes hold the sockets and sessions, one engine
process holds the GPU and batches every client of every process together.

    server process: session receives -> RemoteEngine.submit -> (Unix socket) ->
    engine process: FrameEngine slot -> batch -> decode/pose/render/encode -> (Unix socket) ->
    server process: RemoteEngine reader -> session.deliver -> sender

Messages are ``u32 length | JSON | JPEG`` over ``multiprocessing.connection`` (authenticated with
a random key; ``send_bytes``/``recv_bytes`` only - nothing is pickled). Each end writes from its
own thread, out of a queue that keeps one frame per client, the newest (``_Link``): an engine
that falls behind costs its clients older frames, and a server process that stops reading costs
its own clients theirs - it never holds up the engine's batches for the other processes.

One engine process is in turn bound by its own host Python (the GPU 15-30 % busy), so
``--engines K`` runs K of them: every server process connects to all K (``EngineGroup``) and
gives each new client to the one with the fewest of its clients. An engine process whose GPU
context is lost (a device-side assert: nothing in it can use the GPU again) ends itself
(``EXIT_GPU_LOST``); each server process then moves that engine's clients to the live ones. The
serving master starts an engine process that exited again, at the same address with the same
key (``EngineKeeper``), and the server processes link up with it once it listens (``EngineGroup``):
the server heals without a restart.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import json
import logging
import math
import os
import secrets
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener

from . import metrics
from .codec import ImageError
from .stream.protocol import ClientFrame

log = logging.getLogger(__name__)

_LEN = struct.Struct("<I")
EXIT_GPU_LOST = 75  # an engine process's exit status when its CUDA context was lost (EX_TEMPFAIL)


def _pack(meta: dict, payload: bytes = b"") -> bytes:
    head = json.dumps(meta, separators=(",", ":")).encode()
    return _LEN.pack(len(head)) + head + payload


def _unpack(buf: bytes) -> tuple[dict, bytes]:
    (n,) = _LEN.unpack_from(buf)
    return json.loads(buf[4 : 4 + n]), buf[4 + n :]


class _Link:
    """One connection, written by its own thread from a queue that never blocks the caller.

    Why: a peer that reads slowly or not at all (a server process stalled on its GIL, a stopped
    one) once blocked the engine's batch thread in ``send_bytes`` - and with it every client of
    every other server process. Now a caller only queues. The queue keeps at most one message
    per slot - a client's newest frame (or reply), its newest error, the newest stats - so it
    is bounded by the number of clients; a message replaced before it went out is the older
    frame of a client that falls behind, counted in ``dropped``. A replacing message keeps the
    older one's place in line, as the newest-frame slots do.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.closed = False
        self.dropped: dict[str, int] = {}  # frames replaced before they went out, per client
        self._cond = threading.Condition()
        self._order: deque[Hashable] = deque()  # slots in sending order
        self._pending: dict[Hashable, bytes] = {}
        threading.Thread(target=self._write, name="engine-link-writer", daemon=True).start()

    def send(self, meta: dict, payload: bytes = b"", slot: tuple | None = None) -> bool:
        """Queue a message (False once the link is closed). With ``slot`` - ``("frame",
        client)``, ``("err", client)``, ``("stats",)`` - it replaces that slot's message still
        waiting; without, it is always sent (hello, join, leave)."""
        if self.closed:
            return False
        data = _pack(meta, payload)
        with self._cond:
            key: Hashable = slot if slot is not None else object()
            if key in self._pending:
                if slot is not None and slot[0] == "frame":
                    self.dropped[slot[1]] = self.dropped.get(slot[1], 0) + 1
                    metrics.FRAMES_DROPPED.labels("link").inc()
            else:
                self._order.append(key)
            self._pending[key] = data
            self._cond.notify()
        return True

    def forget(self, client: str) -> None:
        """Drop what still waits for a client that left (its frames would go nowhere), and its
        count: a server runs for months, its clients come and go."""
        with self._cond:
            for key in (("frame", client), ("err", client)):
                if self._pending.pop(key, None) is not None:
                    self._order.remove(key)
            self.dropped.pop(client, None)

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def _write(self) -> None:
        while True:
            with self._cond:
                while not self._order and not self.closed:
                    self._cond.wait()
                if self.closed:
                    return
                key = self._order.popleft()
                data = self._pending.pop(key)
            try:
                self.conn.send_bytes(data)
            except (OSError, EOFError, ValueError):  # the peer is gone (ValueError: closed here)
                self.close()
                return


# -- the engine process ----------------------------------------------------------------------------


@dataclass
class _RemoteSink:
    """A client of a server process, as the engine sees it (the ``FrameSink`` protocol)."""

    link: _Link
    client: str
    annotators: object  # callable: garment id -> GarmentAnnotator
    jpeg_quality: int = 80
    look: tuple[str, ...] = ()

    def render_look(self) -> list:
        out = []
        for g in self.look:
            try:
                out.append(self.annotators(g))
            except KeyError:  # a garment just removed, or not yet seen by this process
                continue
        return out

    def deliver(self, r) -> None:
        meta = {
            "t": "out",
            "c": self.client,
            "id": r.frame.frame_id,
            "cap": r.frame.capture_ms,
            "rec": r.frame.received_ms,
            "pose": None if math.isnan(r.pose.pose_done_ms) else r.pose.pose_done_ms,  # JSON has no NaN
            "src": r.pose.source,
            "n": r.pose.persons,
        }
        self.link.send(meta, r.jpeg, slot=("frame", self.client))

    def frame_error(self, frame: ClientFrame, error: ImageError) -> None:
        error_meta = {"t": "err", "c": self.client, "id": frame.frame_id, "code": error.code, "msg": str(error)}
        self.link.send(error_meta, slot=("err", self.client))


def run_engine_process(config_values: dict, address: str, authkey_hex: str) -> None:
    """The engine process's main: build the backend and engine, then serve server processes."""
    from .closet.store import Closet
    from .config import ServerConfig
    from .cuda_wait import set_cuda_wait
    from .pose.timeline import KeypointTimeline
    from .render.annotators import GarmentAnnotator
    from .server.pipeline import backend_factory, build_engine

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s [engine %(process)d] %(name)s: %(message)s"
    )
    config = ServerConfig.from_mapping(dict(config_values, engine_addresses=[], engine_authkeys=[]))
    factory = backend_factory(config)
    set_cuda_wait(config.cuda_wait)  # before the backend makes this process's CUDA context
    engine = build_engine(config, factory(), factory)
    engine.on_device_lost = _end_process
    if config.engines > 1 and engine.device.type == "cuda" and not mps_running():
        log.warning(
            "%d engine processes share the GPU by time-slicing: start NVIDIA MPS on this host "
            "(nvidia-cuda-mps-control -d) before serve, so their kernels run side by side - "
            "1.2-1.4x the frames at 64 clients on an H200 (README, 'Many clients on one GPU')",
            config.engines,
        )
    closet_lock = threading.Lock()
    state = {"closet": Closet(config.closet_dir), "annotators": {}}

    def annotator(garment_id: str):
        with closet_lock:
            closet = state["closet"]
            if garment_id not in closet:  # uploaded through another process: look again
                closet.reload()
            g = closet.get(garment_id)
            ann = state["annotators"].get(garment_id)
            if ann is None or ann.garment is not g:
                ann = state["annotators"][garment_id] = GarmentAnnotator(g)
            return ann

    listener = Listener(address, family="AF_UNIX", authkey=bytes.fromhex(authkey_hex))
    log.info("engine process %d serving server processes at %s", os.getpid(), address)
    links = 0
    while True:
        try:
            conn = listener.accept()
        except Exception:  # a peer that failed authentication: refuse it, keep serving
            log.warning("engine: a connection failed to authenticate")
            continue
        links += 1
        threading.Thread(
            target=_serve_link, args=(conn, links, engine, annotator, KeypointTimeline), daemon=True
        ).start()


def _end_process(message: str) -> None:
    """The engine's GPU context is lost: end the process (its links close with it), so that
    the server processes move its clients to the other engines and an operator sees it exit."""
    log.critical("engine process %d exits (status %d): %s", os.getpid(), EXIT_GPU_LOST, message)
    logging.shutdown()
    os._exit(EXIT_GPU_LOST)  # not sys.exit: threads stuck in CUDA calls must not hold the exit up


def mps_running(environ=os.environ) -> bool:
    """Whether an NVIDIA MPS control daemon listens where this process's CUDA would look for it
    (``CUDA_MPS_PIPE_DIRECTORY``, by default /tmp/nvidia-mps)."""
    pipes = environ.get("CUDA_MPS_PIPE_DIRECTORY") or "/tmp/nvidia-mps"
    return os.path.exists(os.path.join(pipes, "control"))


def _serve_link(conn: Connection, number: int, engine, annotator, timeline_cls) -> None:
    link = _Link(conn)
    sinks: dict[str, _RemoteSink] = {}
    link.send({"t": "hello", "backend": engine.backend.name, "device": str(engine.backend.device), "link": number})
    try:
        while True:
            meta, payload = _unpack(conn.recv_bytes())
            kind, client = meta.get("t"), str(meta.get("c"))
            key = (number, client)
            if kind == "frame":
                sink = sinks.get(client)
                if sink is None:
                    continue
                sink.look = tuple(meta.get("look", ()))
                sink.jpeg_quality = int(meta.get("q", 80))
                engine.submit(key, ClientFrame(int(meta["id"]), float(meta["cap"]), bytes(payload), float(meta["rec"])))
            elif kind == "join":
                sinks[client] = _RemoteSink(link, client, annotator)
                engine.register(key, timeline_cls(), sink=sinks[client])
            elif kind == "leave":
                sinks.pop(client, None)
                engine.unregister(key)
                link.forget(client)
            elif kind == "stats":
                # The server process balances its new clients over the engines by these counts:
                # every process's clients ("clients") and its own ("link_clients").
                snap = engine.snapshot() | {"pid": os.getpid(), "link_clients": len(sinks), "q": meta.get("q", 0)}
                # Frames replaced in the engine's slot, and replies replaced on their way back.
                snap["dropped"] = {c: engine.dropped((number, c)) + link.dropped.get(c, 0) for c in sinks}
                state, message = engine.health()
                link.send({"t": "stats", "s": snap, "health": [state, message]}, slot=("stats",))
    except (EOFError, OSError):
        pass
    finally:
        for client in sinks:
            engine.unregister((number, client))
        link.close()
        log.info("engine: server process link %d closed (%d clients)", number, len(sinks))


def start_engine_process(
    config_values: dict,
    timeout_s: float = 300.0,
    address: str | None = None,
    authkey: str | None = None,
    stop_at_exit: bool = True,
) -> tuple[str, str, subprocess.Popen]:
    """Start an engine process; returns (address, authkey hex, process) once it accepts. Given
    an ``address`` and ``authkey``, at those (a restart: the server processes know them).

    A plain child process (not ``multiprocessing``): the server processes that gunicorn forks
    afterwards must not inherit it as a multiprocessing child they would try to join. The
    settings and the key travel in its environment, never on its command line.
    """
    address = address or os.path.join(tempfile.mkdtemp(prefix="smartcloset-"), "engine.sock")
    authkey = authkey or secrets.token_hex(16)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(address)  # a dead engine's socket file: the new one listens there
    env = dict(os.environ, SMARTCLOSET_ENGINE_CONFIG=json.dumps(config_values), SMARTCLOSET_ENGINE_KEY=authkey)
    proc = subprocess.Popen([sys.executable, "-m", "smartcloset.engine_ipc", address], env=env)
    if stop_at_exit:
        atexit.register(_stop_process, proc)
    deadline = time.monotonic() + timeout_s
    while not os.path.exists(address):
        if proc.poll() is not None:
            raise RuntimeError(f"the engine process exited with code {proc.returncode}")
        if time.monotonic() > deadline:
            _stop_process(proc)
            raise RuntimeError(f"the engine process was not ready after {timeout_s:.0f} s")
        time.sleep(0.1)
    return address, authkey, proc


class EngineKeeper:
    """The serving master's watch over its engine processes: one that exits - its GPU context
    lost (``EXIT_GPU_LOST``), killed, crashed - is started again at its address with its key,
    after a pause that doubles while restarts come quickly one after another (up to
    ``backoff_max_s``; a run of ``healthy_after_s`` resets it). Why: until then its clients crowd
    onto the other engines and /healthz says 503; a fresh process gets a fresh CUDA context,
    which is all a lost one needs when the GPU itself is sound.

    Only the process that made it acts (gunicorn's workers are forked from the master and
    inherit its exit hooks)."""

    def __init__(
        self,
        config_values: dict,
        started: list[tuple[str, str, subprocess.Popen]],
        backoff_s: float = 1.0,
        backoff_max_s: float = 60.0,
        healthy_after_s: float = 300.0,
    ) -> None:
        self._values = config_values
        self._engines = [list(e) for e in started]  # [address, key, process]
        self._backoff = (backoff_s, backoff_max_s, healthy_after_s)
        self._owner = os.getpid()
        self._stop = threading.Event()
        self.restarts = [0] * len(started)

    def start(self) -> EngineKeeper:
        for i in range(len(self._engines)):
            threading.Thread(target=self._watch, args=(i,), name=f"engine-keeper-{i}", daemon=True).start()
        return self

    def stop(self) -> None:
        if os.getpid() != self._owner:
            return
        self._stop.set()
        for _, _, proc in self._engines:
            _stop_process(proc)

    def process(self, index: int) -> subprocess.Popen:
        return self._engines[index][2]

    def _watch(self, index: int) -> None:
        first, most, healthy = self._backoff
        pause = first
        while not self._stop.is_set():
            address, key, proc = self._engines[index]
            began = time.monotonic()
            while proc.poll() is None:
                if self._stop.wait(0.5):
                    return
            if self._stop.is_set():
                return
            pause = first if time.monotonic() - began >= healthy else pause
            log.error(
                "engine process %d (engine %d) exited with status %s: starting it again in %.0f s",
                proc.pid,
                index,
                proc.returncode,
                pause,
            )
            while not self._stop.wait(pause):
                try:
                    _, _, proc = start_engine_process(self._values, address=address, authkey=key, stop_at_exit=False)
                except Exception as exc:  # it failed to start: again, later
                    pause = min(pause * 2, most)
                    log.error("engine %d did not start again (%s): next try in %.0f s", index, exc, pause)
                    continue
                if self._stop.is_set():  # the server stopped while it started
                    _stop_process(proc)
                    return
                self._engines[index][2] = proc
                self.restarts[index] += 1
                metrics.ENGINE_RESTARTS.inc()
                log.warning("engine %d started again (process %d, restart %d)", index, proc.pid, self.restarts[index])
                pause = min(pause * 2, most)
                break


def _stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


# -- a server process's side ---------------------------------------------------------------------


class _Backend:
    def __init__(self, name: str, device: str) -> None:
        self.name, self.device = name, device


class RemoteEngine:
    """Stands in for ``FrameEngine`` in a server process: sessions use it the same way."""

    batched = True

    def __init__(self, address: str, authkey_hex: str, stats_interval_s: float = 1.0) -> None:
        from .engine import Rendered
        from .pose.timeline import TimedKeypoints

        self._Rendered, self._Timed = Rendered, TimedKeypoints
        conn = Client(address, family="AF_UNIX", authkey=bytes.fromhex(authkey_hex))
        self._link = _Link(conn)
        hello, _ = _unpack(conn.recv_bytes())
        self.backend = _Backend(hello["backend"], hello["device"])
        self.link_number = int(hello.get("link", 1))  # this process's place among the engine's links, from 1
        self._sinks: dict[Hashable, object] = {}
        self._lock = threading.Lock()
        self._answered = threading.Condition()  # stats requests asked (``_asked``) and answered
        self._asked = 0
        self._stats: dict = {  # until the engine's first answer: what sessions and /api/stats read
            "backend": self.backend.name,
            "device": self.backend.device,
            "pose_fps": 0.0,
            "processed": 0,
            "mean_batch_size": None,
            "clients": 0,
            "stage_ms_p50": {},
            "dropped": {},
        }
        self._health: tuple[str, str] = ("ok", "")
        self.on_closed = None  # called once when the engine process closes the link (EngineGroup's failover)
        self._stop = threading.Event()
        self._interval = stats_interval_s
        threading.Thread(target=self._read, name="engine-link", daemon=True).start()
        threading.Thread(target=self._poll_stats, name="engine-stats", daemon=True).start()

    def start(self) -> RemoteEngine:
        return self

    # -- what sessions call ------------------------------------------------------------------------
    def register(self, client: Hashable, timeline=None, sink=None) -> None:
        with self._lock:
            self._sinks[str(client)] = sink
        self._link.send({"t": "join", "c": str(client)})

    def unregister(self, client: Hashable) -> None:
        with self._lock:
            self._sinks.pop(str(client), None)
        self._link.forget(str(client))
        self._link.send({"t": "leave", "c": str(client)})

    def submit(self, client: Hashable, frame: ClientFrame) -> None:
        sink = self._sinks.get(str(client))
        if sink is None:
            return
        meta = {
            "t": "frame",
            "c": str(client),
            "id": frame.frame_id,
            "cap": frame.capture_ms,
            "rec": frame.received_ms,
            "look": list(getattr(sink, "look", ())),
            "q": getattr(sink, "jpeg_quality", 80),
        }
        self._link.send(meta, frame.jpeg, slot=("frame", str(client)))

    def sink_of(self, client: Hashable):
        return self._sinks.get(str(client))

    def dropped(self, client: Hashable) -> int:
        """Frames of the client replaced on the way to the engine, in its slot there, or on the way back."""
        key = str(client)
        return int(self._stats.get("dropped", {}).get(key, 0)) + self._link.dropped.get(key, 0)

    def snapshot(self) -> dict:
        inner = self._stats.get("frame_path")  # the engine's own: its device and JPEG library
        return dict(self._stats, frame_path="batched in the engine process" + (f" ({inner})" if inner else ""))

    def health(self) -> tuple[str, str]:
        if self._link.closed:
            return "down", "the engine process is gone"
        return self._health

    @property
    def alive(self) -> bool:
        return not self._link.closed

    @property
    def client_count(self) -> int:
        return len(self._sinks)

    @property
    def load(self) -> int:
        """Clients on the engine from every server process: as of its last stats for the
        others, this process's own as they are now."""
        s = self._stats
        return max(0, int(s.get("clients", 0)) - int(s.get("link_clients", 0))) + self.client_count

    def ask_stats(self, in_order: bool = False) -> int:
        """Ask for fresh stats now (``wait_stats`` waits for them); returns the request's number.
        ``in_order``: behind everything already queued on the link (a join), not in the place of
        a stats request still waiting - the answer then counts what went before it."""
        with self._answered:
            self._asked += 1
            q = self._asked
        self._link.send({"t": "stats", "q": q}, slot=None if in_order else ("stats",))
        return q

    def wait_stats(self, q: int, timeout: float) -> None:
        """Until the engine answers request ``q`` (or a later one), the link closes, or ``timeout`` s."""
        with self._answered:
            self._answered.wait_for(lambda: self._stats.get("q", 0) >= q or self._link.closed, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._link.close()
        try:
            self._link.conn.close()
        except OSError:
            pass

    # -- the link's reader ---------------------------------------------------------------------------
    def _read(self) -> None:
        conn = self._link.conn
        while not self._stop.is_set():
            try:
                meta, payload = _unpack(conn.recv_bytes())
            except (EOFError, OSError):
                self._link.close()
                with self._answered:  # a wait_stats on this link ends now
                    self._answered.notify_all()
                if self._stop.is_set():
                    return
                log.error("the engine process closed its link: it renders no more frames")
                if self.on_closed is not None:
                    self.on_closed()
                return
            kind = meta.get("t")
            if kind == "stats":
                with self._answered:
                    self._stats = meta["s"]
                    self._health = tuple(meta.get("health", ("ok", "")))  # type: ignore[assignment]
                    self._answered.notify_all()
                continue
            sink = self._sinks.get(meta.get("c"))
            if sink is None:
                continue
            frame = ClientFrame(int(meta["id"]), float(meta.get("cap", 0.0)), b"", float(meta.get("rec", 0.0)))
            if kind == "out":
                pose_ms = meta.get("pose")
                pose = self._Timed(
                    None,
                    meta.get("src", "none"),
                    float("nan") if pose_ms is None else pose_ms,
                    persons=meta.get("n", 0),
                )
                sink.deliver(self._Rendered(frame, bytes(payload), pose))  # type: ignore[attr-defined]
            elif kind == "err":
                sink.frame_error(frame, ImageError(meta.get("code", "bad_jpeg"), meta.get("msg", "")))  # type: ignore[attr-defined]

    def _poll_stats(self) -> None:
        while not self._stop.wait(self._interval):
            if self._link.closed:
                return
            self.ask_stats()


class EngineGroup:
    """K engine processes behind ``RemoteEngine``'s face (``--engines K``); sessions use it the same way.

    Why: one engine process is bound by its own host Python (one GIL for the renderer's
    per-frame Python and the codec calls) with the GPU only 15-30 % busy; K processes give K
    GILs, and their CUDA contexts time-slice the GPU. A client stays on one engine (its slot and
    timeline live there); a new one goes to the live engine with the fewest clients of *every*
    server process, counted by the engines when it comes (``join_wait_s`` at most), and among
    equals to the first from this process's own place in the engines' links, so that
    processes taking clients at the same moment start on different engines. A join holds
    ``join_lock`` (a file lock the server processes share) from asking for the counts until the
    engine has counted it: two processes that asked at once both saw the same emptiest engine,
    and 64 clients came out 7-10 an engine instead of 8 (NVIDIA H200, stops 19-20). Why every
    process's: counted per process, the remainders of uneven processes all fell to the lowest
    engines - 64 clients on 4 processes and 8 engines put 10 clients on engine 0 and 7 on
    engines 4-7, and the busiest engines set the latency (NVIDIA H200, docs/performance.md,
    "Stop 18"). When an engine process is gone, its clients move the same way to the live ones
    (their timelines start again there: a few frames extrapolated), so a lost engine costs
    them a moment, not the session. One engine is a group of one.
    """

    batched = True

    def __init__(
        self,
        engines: list[RemoteEngine],
        addresses: list[tuple[str, str]] | None = None,
        stats_interval_s: float = 1.0,
        retry_s: float = 1.0,
        join_wait_s: float = 0.1,
        join_lock: str | None = None,
    ) -> None:
        if not engines:
            raise ValueError("an engine group needs at least one engine")
        self.engines = engines
        self._join_wait_s = join_wait_s
        self._join_lock_path = join_lock
        self._join_lock_file = None
        # Where this process starts among equal engines: its link's number at the first engine
        # (1, 2, ... in the order the server processes linked up) spread over the engines.
        self._first = (engines[0].link_number - 1) % len(engines)
        self.backend = engines[0].backend
        self._of: dict[Hashable, RemoteEngine] = {}  # client -> its engine
        self._lock = threading.Lock()
        self._addresses = addresses  # (address, key) per engine: where a restarted one listens
        self._interval, self._retry_s = stats_interval_s, retry_s
        self._stopping = threading.Event()
        for e in engines:
            e.on_closed = functools.partial(self._failover, e)

    @classmethod
    def connect(cls, addresses: list[str], authkeys: list[str], stats_interval_s: float = 1.0) -> EngineGroup:
        pairs = list(zip(addresses, authkeys, strict=True))
        # Beside the first engine's socket: every server process of one server knows that one.
        lock = os.path.join(os.path.dirname(addresses[0]), "join.lock") if len(addresses) > 1 else None
        engines = [RemoteEngine(a, k, stats_interval_s) for a, k in pairs]
        return cls(engines, pairs, stats_interval_s, join_lock=lock)

    def start(self) -> EngineGroup:
        return self

    def engine_of(self, client: Hashable) -> int | None:
        """The index of the client's engine (None: not registered)."""
        engine = self._of.get(client)
        return None if engine is None else self.engines.index(engine)

    def register(self, client: Hashable, timeline=None, sink=None) -> None:
        with self._lock, self._joining():
            self._fresh_counts()
            k = len(self.engines)
            order = [self.engines[(self._first + i) % k] for i in range(k)]
            engine = min(order, key=lambda e: (not e.alive, e.load))  # min() keeps the first of equals
            self._of[client] = engine
            engine.register(client, timeline, sink=sink)
            if self._join_lock_path is not None and k > 1 and self._join_wait_s > 0:
                # Counted there before the next process asks: the answer to a request behind the join.
                engine.wait_stats(engine.ask_stats(in_order=True), self._join_wait_s)

    @contextlib.contextmanager
    def _joining(self):
        """The server processes' join lock, held for one join (``join_lock``); waited for 1 s at
        most - a join never hangs on another process, it only risks an uneven count."""
        held = False
        if self._join_lock_path is not None:
            try:
                if self._join_lock_file is None:
                    self._join_lock_file = open(self._join_lock_path, "a")  # noqa: SIM115 - kept open
                end = time.monotonic() + 1.0
                while True:
                    try:
                        fcntl.flock(self._join_lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        held = True
                        break
                    except BlockingIOError:
                        if time.monotonic() > end:
                            log.warning("join lock busy for 1 s: this client joins without it")
                            break
                        time.sleep(0.001)
            except OSError as exc:  # no lock file (a read-only folder): joins go on unlocked
                log.warning("join lock %s unavailable (%s): joins may land unevenly", self._join_lock_path, exc)
                self._join_lock_path = None
        try:
            yield
        finally:
            if held:
                fcntl.flock(self._join_lock_file, fcntl.LOCK_UN)

    def _fresh_counts(self) -> None:
        """Every live engine's client count as of now, asked of all at once and waited for
        ``join_wait_s`` at most (a busy engine answers late: its last count then stands)."""
        if len(self.engines) < 2 or self._join_wait_s <= 0:
            return
        asked = [(e, e.ask_stats()) for e in self.engines if e.alive]
        end = time.monotonic() + self._join_wait_s
        for e, q in asked:
            e.wait_stats(q, max(0.0, end - time.monotonic()))

    def unregister(self, client: Hashable) -> None:
        with self._lock:
            engine = self._of.pop(client, None)
            if engine is not None:
                engine.unregister(client)

    def _failover(self, dead: RemoteEngine) -> None:
        """``dead``'s process is gone: its clients go on with the live engines (with none left,
        they wait for it), and this process links up with it again once it is back."""
        with self._lock:
            if dead not in self.engines:  # already replaced
                return
            index = self.engines.index(dead)
            moved = [c for c, e in self._of.items() if e is dead]
            live = [e for e in self.engines if e.alive]
            if live:
                for client in moved:
                    self._move(client, dead, min(live, key=lambda e: e.load))
        if not live:
            log.error("every engine process is gone: %d client(s) get no frames until one is back", len(moved))
        elif moved:
            log.warning(
                "engine %d is gone: its %d client(s) moved to the %d live engine(s)", index, len(moved), len(live)
            )
        if self._addresses is not None and not self._stopping.is_set():
            threading.Thread(
                target=self._relink, args=(index, dead), name=f"engine-relink-{index}", daemon=True
            ).start()

    def _move(self, client: Hashable, old: RemoteEngine, new: RemoteEngine) -> None:
        sink = old.sink_of(client)
        old.unregister(client)
        self._of[client] = new
        new.register(client, sink=sink)

    def _relink(self, index: int, dead: RemoteEngine) -> None:
        """Link up again with engine ``index`` once its process listens again (the master's
        ``EngineKeeper`` restarts it). New clients go to it; the moved ones stay where they are,
        and clients left with no engine at all come back on it."""
        address, key = self._addresses[index]  # type: ignore[index]
        while not self._stopping.wait(self._retry_s):
            try:
                engine = RemoteEngine(address, key, self._interval)
            except Exception:  # not listening yet (no socket file, refused), or it died starting
                continue
            with self._lock:
                if self._stopping.is_set() or self.engines[index] is not dead:
                    engine.stop()
                    return
                engine.on_closed = functools.partial(self._failover, engine)
                self.engines[index] = engine
                stranded = [c for c, e in self._of.items() if not e.alive]
                for client in stranded:
                    self._move(client, self._of[client], engine)
            dead.stop()
            log.warning(
                "engine %d is back: new clients go to it again (%d waiting client(s) with it)", index, len(stranded)
            )
            return

    def submit(self, client: Hashable, frame: ClientFrame) -> None:
        engine = self._of.get(client)
        if engine is not None:
            engine.submit(client, frame)

    def dropped(self, client: Hashable) -> int:
        engine = self._of.get(client)
        return 0 if engine is None else engine.dropped(client)

    def snapshot(self) -> dict:
        """One engine's as it is; several: counts summed, stage times engine 0's, each under ``engines``."""
        snaps = [e.snapshot() for e in self.engines]
        if len(snaps) == 1:
            return snaps[0]
        merged = dict(snaps[0], frame_path=f"batched in {len(snaps)} engine processes", dropped={})
        for key in ("pose_fps", "processed", "clients", "batches", "errors"):
            merged[key] = sum(s.get(key) or 0 for s in snaps)
        merged["pose_fps"] = round(merged["pose_fps"], 2)
        sized = [(s["mean_batch_size"], s.get("batches") or 1) for s in snaps if s.get("mean_batch_size")]
        merged["mean_batch_size"] = sum(m * n for m, n in sized) / sum(n for _, n in sized) if sized else None
        for s in snaps:
            merged["dropped"].update(s.get("dropped", {}))
        keep = ("pose_fps", "processed", "clients", "mean_batch_size", "stage_ms_p50", "pid")
        merged["engines"] = [{k: s.get(k) for k in keep} for s in snaps]
        return merged

    def health(self) -> tuple[str, str]:
        """What the clients are told: "down" once no engine process is left; "degraded" while
        some are gone (their clients moved to the others); else the first engine's not "ok"."""
        states = [e.health() for e in self.engines]
        gone = sum(h[0] == "down" for h in states)
        if gone == len(states):
            return states[0]
        if gone:
            return "degraded", f"{gone} of {len(states)} engine processes gone: their clients moved to the others"
        return next((h for h in states if h[0] != "ok"), ("ok", ""))

    @property
    def alive(self) -> bool:
        """False while any engine process is gone: /healthz answers 503 until the master has
        started it again and this process has linked up with it (the live engines carry its
        clients meanwhile)."""
        return all(e.alive for e in self.engines)

    @property
    def client_count(self) -> int:
        return len(self._of)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        for engine in self.engines:
            engine.stop(timeout)
        with self._lock:
            if self._join_lock_file is not None:
                self._join_lock_file.close()
                self._join_lock_file = None


if __name__ == "__main__":
    run_engine_process(
        json.loads(os.environ.pop("SMARTCLOSET_ENGINE_CONFIG")), sys.argv[1], os.environ.pop("SMARTCLOSET_ENGINE_KEY")
    )
