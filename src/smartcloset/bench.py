"""``smart-closet bench``: N WebSocket clients stream a video at F FPS; we measure what returns.

Frames are letterboxed to the requested size and JPEG-encoded once up front (a browser encodes
on its own machine; the server's CPU should be spent on the server's work). Each client sends
on its own clock with real capture timestamps, reads replies on another thread, and keeps
nothing but counters and bounded samples. The first ``warmup`` seconds are not counted.
"""

from __future__ import annotations

import collections
import json
import logging
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
import simple_websocket

from . import codec
from .stream.protocol import ProtocolError, pack_frame, parse_reply
from .stream.transport import FrameSender

log = logging.getLogger(__name__)


@dataclass
class BenchConfig:
    video: str
    clients: int = 1
    seconds: float = 10.0
    fps: float = 30.0
    size: tuple[int, int] = (1280, 720)
    url: str | None = None
    backend: str = "auto"
    port: int = 0
    warmup: float = 2.0
    jpeg_quality: int = 80
    serve_args: list[str] = field(default_factory=list)
    client_processes: int = 1  # spread the clients over this many processes (one Python can't feed 100)
    # Where py-spy (if on PATH) writes what holds each server process's GIL during the window:
    # collapsed stacks, one file a process, named by its role.
    profile_dir: str | None = None


def letterbox(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    w, h = size
    s = min(w / frame.shape[1], h / frame.shape[0])
    nw, nh = max(1, round(frame.shape[1] * s)), max(1, round(frame.shape[0] * s))
    out = np.zeros((h, w, 3), np.uint8)
    x0, y0 = (w - nw) // 2, (h - nh) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


def letterbox_keypoints(kp: np.ndarray, src_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Keypoints of a (w, h) ``src_size`` frame, moved into its ``letterbox`` to ``size``."""
    w, h = size
    s = min(w / src_size[0], h / src_size[1])
    nw, nh = round(src_size[0] * s), round(src_size[1] * s)
    out = np.array(kp, np.float32).copy()
    out[:, 0] = out[:, 0] * s + (w - nw) // 2
    out[:, 1] = out[:, 1] * s + (h - nh) // 2
    return out


def load_frames(path: str, size: tuple[int, int], quality: int = 80, limit: int = 300) -> list[bytes]:
    cap = cv2.VideoCapture(path)
    frames = []
    while len(frames) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(codec.encode(letterbox(frame, size), quality))
    cap.release()
    if not frames:
        raise RuntimeError(f"no frames could be read from {path}")
    return frames


@dataclass
class ClientResult:
    sent: int = 0
    received: int = 0
    errors: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    error_samples: dict[str, str] = field(default_factory=dict)  # the first message of each code
    rtt_ms: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    pose_sources: dict[str, int] = field(default_factory=dict)
    last_stats: dict = field(default_factory=dict)


class BenchClient:
    def __init__(self, url: str, frames: list[bytes], fps: float, offset: int) -> None:
        self.ws = simple_websocket.Client.connect(url, receive_bytes=65536)
        self.sender = FrameSender(self.ws)
        self.frames = frames
        self.fps = fps
        self.offset = offset  # clients start at different points of the video
        self.result = ClientResult()
        self.measuring = False
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send, daemon=True),
            threading.Thread(target=self._recv, daemon=True),
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> None:
        self._threads[0].join(5)
        deadline = time.monotonic() + 1.0  # let the last replies arrive
        while time.monotonic() < deadline and self.ws.connected:
            time.sleep(0.05)
        try:
            self.ws.close()
        except Exception:  # already closed by the server
            pass
        self._threads[1].join(5)

    def _send(self) -> None:
        period = 1.0 / self.fps
        t0 = time.monotonic()
        k = 0
        while not self._stop.is_set():
            delay = t0 + k * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            jpeg = self.frames[(k + self.offset) % len(self.frames)]
            try:
                self.sender.send(pack_frame(k, time.time() * 1000.0, jpeg))
            except simple_websocket.ConnectionClosed:
                return
            if self.measuring:
                self.result.sent += 1
            k += 1

    def _recv(self) -> None:
        r = self.result
        while True:
            try:
                msg = self.ws.receive(timeout=0.5)
            except simple_websocket.ConnectionClosed:
                return
            if msg is None:
                if not self.ws.connected:
                    return
                continue
            now = time.time() * 1000.0
            if isinstance(msg, str):
                m = json.loads(msg)
                if m.get("type") == "stats":
                    r.last_stats = m
                elif m.get("type") == "error" and self.measuring:
                    r.errors += 1
                    code = str(m.get("code"))
                    r.error_codes[code] = r.error_codes.get(code, 0) + 1
                    r.error_samples.setdefault(code, str(m.get("message", ""))[:300])
                continue
            try:
                head, _ = parse_reply(msg)
            except ProtocolError:
                r.errors += 1
                continue
            if not self.measuring:
                continue
            r.received += 1
            r.rtt_ms.append(now - head.capture_ms)
            r.latency_ms.append(head.sent_ms - head.received_ms)
            r.pose_sources[head.pose_source] = r.pose_sources.get(head.pose_source, 0) + 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, *args: str, wait: bool = True) -> subprocess.Popen:
    """``smart-closet serve`` on 127.0.0.1:``port`` in a child process (quiet), healthy on return."""
    cmd = [sys.executable, "-m", "smartcloset", "--log-level", "warning", "serve", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    if wait:
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc)
        except RuntimeError:
            stop_server(proc)
            raise
    return proc


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def wait_healthy(base: str, proc: subprocess.Popen | None, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {base} not healthy after {timeout:.0f} s")


def _cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12]) + int(parts[13]) + int(parts[14])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _server_pids(proc: subprocess.Popen) -> list[int]:
    """The server process and its children (gunicorn's worker)."""
    pids = [proc.pid]
    try:
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return pids


def _role(pid: int, master: int) -> str:
    """What a server process does: the gunicorn master, an engine (GPU) or a socket worker."""
    if pid == master:
        return "master"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read()
    except OSError:
        return "gone"
    return "engine" if b"smartcloset.engine_ipc" in cmd else "socket"


def cpu_by_role(roles: dict[int, str], before: dict[int, float], after: dict[int, float], window: float):
    """Each server process's CPU over the window, grouped by role: one process near 100 % is
    bound by its GIL however idle the machine is - the sum hides it."""
    out: dict[str, list[float]] = {}
    for pid, role in roles.items():
        if pid in before and pid in after:
            out.setdefault(role, []).append(round(100.0 * (after[pid] - before[pid]) / window, 1))
    return {k: sorted(v, reverse=True) for k, v in out.items()}


class GilProfiler:
    """py-spy ``record --gil`` on every server process but the master for the measured window:
    whose Python holds each GIL, as collapsed stacks. Nothing where py-spy is not installed
    (it is a benchmarking aid, not a dependency)."""

    def __init__(self, out_dir: str | None, roles: dict[int, str], seconds: float) -> None:
        self.procs: list[subprocess.Popen] = []
        exe = shutil.which("py-spy")
        if not out_dir or exe is None:
            if out_dir:
                log.warning("no py-spy on PATH: no GIL profile")
            return
        os.makedirs(out_dir, exist_ok=True)
        for pid, role in roles.items():
            if role in ("master", "gone"):
                continue
            cmd = [exe, "record", "--pid", str(pid), "--gil", "--rate", "200", "--format", "raw", "--nonblocking"]
            cmd += ["--duration", str(max(1, int(seconds))), "--output", os.path.join(out_dir, f"{role}-{pid}.txt")]
            self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def wait(self) -> None:
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def _client_group(url: str, frames: list[bytes], fps: float, offsets: list[int], warmup: float, seconds: float):
    """A child process's share of the clients: connect, warm up, measure, return the results,
    the window and the CPU seconds this process spent in it (the load generator's own cost: on
    one machine it takes cores from the server it measures)."""
    clients = [BenchClient(url, frames, fps, off) for off in offsets]
    for c in clients:
        c.start()
    time.sleep(warmup)
    t0, cpu0 = time.monotonic(), time.process_time()
    for c in clients:
        c.measuring = True
    time.sleep(seconds)
    for c in clients:
        c.measuring = False
    window, cpu = time.monotonic() - t0, time.process_time() - cpu0
    for c in clients:
        c.stop()
    for c in clients:
        c.join()
    return [c.result for c in clients], window, cpu


class GpuSampler:
    """GPU utilisation and memory through NVML (nvidia-ml-py), sampled every 100 ms; nothing
    where there is no NVIDIA GPU or no NVML."""

    def __init__(self) -> None:
        self.util: list[float] = []
        self.mem_mb: list[float] = []
        self._stop = threading.Event()
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.name = pynvml.nvmlDeviceGetName(self._handle)
        except Exception:  # no NVML here: report nothing rather than guess
            self._nvml = None
            self.name = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GpuSampler:
        if self._nvml is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(1)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            rates = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            self.util.append(float(rates.gpu))
            self.mem_mb.append(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20)

    def summary(self) -> dict | None:
        if not self.util:
            return None
        return {
            "name": self.name,
            "util_percent_mean": round(float(np.mean(self.util)), 1),
            "util_percent_p50": round(float(np.median(self.util)), 1),
            "memory_mb_max": round(max(self.mem_mb), 0),
        }


def run_bench(cfg: BenchConfig) -> dict:
    groups = max(1, min(cfg.client_processes, cfg.clients))
    frames = load_frames(cfg.video, cfg.size, cfg.jpeg_quality, limit=300 if groups == 1 else 90)
    proc = None
    if cfg.url:
        ws_url = cfg.url
        base = ws_url.replace("ws://", "http://").replace("wss://", "https://").rsplit("/ws", 1)[0]
    else:
        port = cfg.port or free_port()
        limit = str(max(cfg.clients + 4, 32))
        args = ["--backend", cfg.backend, "--max-clients", limit, "--max-clients-per-address", "0"]
        proc = start_server(port, *args, *cfg.serve_args, wait=False)
        base, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
    gpu = GpuSampler()
    try:
        wait_healthy(base, proc)
        # Each group of clients connects, warms up and measures on its own clock (``_client_group``):
        # in a thread for one group, in spawned processes for several (one Python cannot feed 100).
        if groups == 1:
            pool = ThreadPoolExecutor(1)
            lead = cfg.warmup
        else:
            pool = ProcessPoolExecutor(groups, mp_context=multiprocessing.get_context("spawn"))
            lead = cfg.warmup + 3.0  # the children spawn and import meanwhile
        offsets = [[i * 7 for i in range(cfg.clients) if i % groups == g] for g in range(groups)]
        with pool:
            pending = [pool.submit(_client_group, ws_url, frames, cfg.fps, off, lead, cfg.seconds) for off in offsets]
            time.sleep(lead)
            before = _get_json(base + "/api/stats")
            pids = _server_pids(proc) if proc else []
            roles = {p: _role(p, proc.pid) for p in pids} if proc else {}
            cpu0 = {p: c for p in pids if (c := _cpu_seconds(p)) is not None}
            profiler = GilProfiler(cfg.profile_dir, roles, cfg.seconds)
            t0 = time.monotonic()
            with gpu:
                time.sleep(cfg.seconds)
            window = time.monotonic() - t0
            after = _get_json(base + "/api/stats")
            cpu1 = {p: c for p in pids if (c := _cpu_seconds(p)) is not None}
            profiler.wait()
            results, windows, client_cpu = [], [], 0.0
            for job in pending:
                rs, w, cpu = job.result(timeout=cfg.seconds + lead + 60)
                results += rs
                windows += [w] * len(rs)
                client_cpu += cpu / w
    finally:
        if proc is not None:
            stop_server(proc)

    out_fps = [r.received / w for r, w in zip(results, windows)]
    returned = sum(out_fps)  # frames sent back per second, all clients
    server_cpu = round(100.0 * sum(cpu1[p] - cpu0[p] for p in cpu1 if p in cpu0) / window, 1) if pids else None
    in_fps = [r.sent / w for r, w in zip(results, windows)]
    rtt = [v for r in results for v in r.rtt_ms]
    lat = [v for r in results for v in r.latency_ms]
    sources: dict[str, int] = {}
    for r in results:
        for k, v in r.pose_sources.items():
            sources[k] = sources.get(k, 0) + v
    stage = {}
    for key in ("decode", "pose", "render", "encode"):
        vals = [r.last_stats.get("stage_ms", {}).get(key) for r in results]
        vals = [v for v in vals if v is not None]
        stage[key] = round(float(np.median(vals)), 2) if vals else None
    if stage.get("pose") is None:
        stage["pose"] = after.get("pose_ms_p50") and round(after["pose_ms_p50"], 2)
    stage["pose_decode"] = after.get("pose_decode_ms_p50") and round(after["pose_decode_ms_p50"], 2)
    return {
        "clients": cfg.clients,
        "size": f"{cfg.size[0]}x{cfg.size[1]}",
        "seconds": round(window, 2),
        "input_fps": round(float(np.median(in_fps)), 2),
        "output_fps": round(float(np.median(out_fps)), 2),
        "output_fps_p5": round(float(np.percentile(out_fps, 5)), 2),
        "processed_fps": round((after["processed"] - before["processed"]) / window, 2),
        # Frames that came back with their own pose, all clients: the processed rate seen from
        # outside (with --processes N the server's /api/stats speaks for one process only).
        "own_pose_fps": round(sum(r.pose_sources.get("own", 0) / w for r, w in zip(results, windows)), 2),
        "latency_ms": {"p50": _pct(lat, 50), "p95": _pct(lat, 95), "p99": _pct(lat, 99)},
        "rtt_ms": {"p50": _pct(rtt, 50), "p95": _pct(rtt, 95)},
        "dropped_frames": sum(r.last_stats.get("dropped", 0) for r in results),
        "dropped_at": dict(
            sum((collections.Counter(r.last_stats.get("dropped_at", {})) for r in results), collections.Counter())
        ),
        "unanswered_frames": sum(max(r.sent - r.received, 0) for r in results),
        "errors": sum(r.errors for r in results),
        "error_codes": dict(sum((collections.Counter(r.error_codes) for r in results), collections.Counter())),
        "error_samples": {k: v for r in results for k, v in r.error_samples.items()},
        "mean_batch_size": after.get("mean_batch_size") and round(after["mean_batch_size"], 2),
        "stage_ms": stage,
        "pose_sources": sources,
        "server_cpu_percent": server_cpu,
        # Comparable across client counts and machines: the server's CPU for each frame sent back.
        "server_cpu_ms_per_frame": round(10.0 * server_cpu / returned, 3)
        if server_cpu is not None and returned
        else None,
        "server_cpu_by_role": cpu_by_role(roles, cpu0, cpu1, window) if pids else None,
        "client_cpu_percent": round(100.0 * client_cpu, 1),  # the load generator, all its processes
        "backend": after.get("backend"),
        "device": after.get("device"),
        "cpu_count": os.cpu_count(),
        "frame_path": after.get("frame_path", "session"),
        "engines_processed_fps": engine_rates(before, after, window),
        "engines_clients": engine_clients(after),
        "gpu": gpu.summary(),
        "client_processes": groups,
    }


def engine_rates(before: dict, after: dict, window: float) -> list[float] | None:
    """Frames each engine process took per second over the window (``--engines K``; None for
    one engine). Why: an engine that stalls leaves its clients - half of them, with two - with
    nothing while the other's get all, which the medians over clients blur."""
    b, a = before.get("engines"), after.get("engines")
    if not b or not a or len(a) != len(b) or window <= 0:
        return None
    return [round(((y.get("processed") or 0) - (x.get("processed") or 0)) / window, 1) for x, y in zip(b, a)]


def engine_clients(after: dict) -> list[int] | None:
    """Clients on each engine process at the window's end (None for one engine). Why: the
    busiest engine sets the tail latency, and an uneven share shows here first (stop 18)."""
    engines = after.get("engines")
    return [int(e.get("clients") or 0) for e in engines] if engines else None


def print_table(result: dict, out) -> None:
    lat, rtt, st = result["latency_ms"], result["rtt_ms"], result["stage_ms"]
    rows = [
        ("clients", result["clients"]),
        ("input FPS / client", result["input_fps"]),
        ("output FPS / client (median, p5)", f"{result['output_fps']}, {result['output_fps_p5']}"),
        ("pose FPS (all clients)", result["processed_fps"]),
        ("latency ms p50/p95/p99", f"{lat['p50']} / {lat['p95']} / {lat['p99']}"),
        ("round trip ms p50/p95", f"{rtt['p50']} / {rtt['p95']}"),
        ("dropped / unanswered", f"{result['dropped_frames']} / {result['unanswered_frames']}"),
        ("mean batch size", result["mean_batch_size"]),
        ("stage ms (median)", ", ".join(f"{k} {v}" for k, v in st.items())),
        ("pose sources", ", ".join(f"{k} {v}" for k, v in sorted(result["pose_sources"].items()))),
        ("server CPU % (ms a frame)", f"{result['server_cpu_percent']} ({result['server_cpu_ms_per_frame']})"),
        ("bench clients' CPU %", result["client_cpu_percent"]),
        ("backend / device", f"{result['backend']} / {result['device']}"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        out.write(f"{k:<{width}}  {v}\n")
