"""Soak: N clients stream the fixture video to a real ``smart-closet serve`` for a long time.

.venv/bin/python bench/soak.py --seconds 600 --json bench/results/soak-10min.json

Starts the server (offline default backend: MediaPipe) with ``smartcloset.bench``'s helpers,
runs ``--clients`` bench clients at ``--fps`` each, and every ``--sample-s`` seconds reads the
server's resident memory (``VmRSS`` from /proc: gunicorn's master plus its worker, which holds
the model and every session) and the pose worker's counters. It reports, as JSON:

* RSS over time and its growth: the median of the last ``W`` seconds against the median of the
  first ``W`` seconds after the warm-up (``W`` = min(60 s, run / 4); warm-up ``W`` unless
  ``--warmup-s`` says otherwise), so a
  one-off allocation at start (model graphs, first garments, thread stacks) is not "growth";
* errors: error messages the clients got, undecodable replies, clients disconnected before
  the end, pose batches that failed, backend restarts and hangs (all should be 0);
* FPS stability: each client's output FPS in ``--window-s`` windows (median, p5, min and the
  coefficient of variation), and how many windows had no frame at all.

The machine's load average at start and end goes in the report: other processes share it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np

from smartcloset.bench import (
    BenchClient,
    _get_json,
    _server_pids,
    free_port,
    load_frames,
    start_server,
    stop_server,
    wait_healthy,
)

log = logging.getLogger("soak")

DEFAULT_VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "video" / "pose_squats.mp4"


def rss_kb(pid: int) -> int | None:
    """Resident set size of ``pid`` in KiB (``VmRSS``), None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def _median_between(samples: list[tuple[float, float]], t0: float, t1: float) -> float | None:
    vals = [v for t, v in samples if t0 <= t <= t1]
    return float(np.median(vals)) if vals else None


def _client_fps(windows: list[float]) -> dict:
    a = np.array(windows, dtype=np.float64)
    if not a.size:
        return {"windows": []}
    return {
        "median": round(float(np.median(a)), 2),
        "p5": round(float(np.percentile(a, 5)), 2),
        "min": round(float(a.min()), 2),
        "cv": round(float(a.std() / a.mean()), 3) if a.mean() > 0 else None,
        "zero_windows": int((a == 0).sum()),
        "windows": [round(float(x), 2) for x in a],
    }


def run_soak(
    video: str,
    seconds: float = 600.0,
    clients: int = 4,
    fps: float = 15.0,
    size: tuple[int, int] = (1280, 720),
    sample_s: float = 5.0,
    window_s: float = 10.0,
    backend: str = "mediapipe",
    warmup_s: float | None = None,
) -> dict:
    frames = load_frames(video, size)
    port = free_port()
    proc = start_server(port, "--backend", backend, wait=False)
    base, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"
    load_start = _loadavg()
    bench_clients: list[BenchClient] = []
    rss: list[tuple[float, float]] = []  # (s since start, MiB) of master + worker
    worker_rss: list[tuple[float, float]] = []
    pose_fps: list[tuple[float, float]] = []
    windows: list[list[float]] = [[] for _ in range(clients)]
    disconnected = [False] * clients
    try:
        wait_healthy(base, proc)
        bench_clients = [BenchClient(ws_url, frames, fps, i * 7) for i in range(clients)]
        for c in bench_clients:
            c.measuring = True
            c.start()
        t0 = time.monotonic()
        next_sample, next_window = t0, t0 + window_s
        last_counts = [0] * clients
        last_window_t = t0
        last_processed, last_sample_t = None, t0
        while True:
            now = time.monotonic()
            if now - t0 >= seconds:
                break
            if now >= next_sample:
                pids = _server_pids(proc)
                sizes = [rss_kb(p) for p in pids]
                t = round(now - t0, 1)
                rss.append((t, sum(s for s in sizes if s) / 1024.0))
                if len(sizes) > 1 and sizes[-1]:
                    worker_rss.append((t, sizes[-1] / 1024.0))
                try:
                    stats = _get_json(base + "/api/stats")
                except OSError as exc:
                    log.warning("stats unavailable: %s", exc)
                else:
                    if last_processed is not None and now > last_sample_t:
                        pose_fps.append((t, (stats["processed"] - last_processed) / (now - last_sample_t)))
                    last_processed, last_sample_t = stats["processed"], now
                for i, c in enumerate(bench_clients):
                    if not c.ws.connected and not disconnected[i]:
                        disconnected[i] = True
                        log.error("client %d was disconnected at %.0f s", i, now - t0)
                next_sample += sample_s
            if now >= next_window:
                for i, c in enumerate(bench_clients):
                    n = c.result.received
                    windows[i].append((n - last_counts[i]) / (now - last_window_t))
                    last_counts[i] = n
                last_window_t = now
                next_window += window_s
                log.info(
                    "%4.0f s  RSS %.1f MiB  client FPS %s",
                    now - t0,
                    rss[-1][1] if rss else float("nan"),
                    " ".join(f"{w[-1]:.1f}" for w in windows),
                )
            time.sleep(max(0.0, min(next_sample, next_window) - time.monotonic()))
        elapsed = time.monotonic() - t0
        final = _get_json(base + "/api/stats")
        stuck = _close_clients(bench_clients)
    finally:
        if proc is not None:
            stop_server(proc)
    load_end = _loadavg()

    w = min(60.0, seconds / 4)
    warm = w if warmup_s is None else warmup_s
    baseline = _median_between(rss, warm, warm + w)
    last = _median_between(rss, elapsed - w, elapsed)
    wbase = _median_between(worker_rss, warm, warm + w)
    wlast = _median_between(worker_rss, elapsed - w, elapsed)
    client_errors = sum(c.result.errors for c in bench_clients)
    errors = {
        "client_error_messages": client_errors,
        "disconnected_clients": sum(disconnected),
        "clients_stuck_at_close": stuck,
        "pose_batch_errors": final.get("errors", 0),
        "pose_restarts": final.get("restarts", 0),
        "pose_hangs": final.get("hangs", 0),
    }
    per_client = []
    for i, c in enumerate(bench_clients):
        r = c.result
        per_client.append(
            dict(
                _client_fps(windows[i]),
                sent=r.sent,
                received=r.received,
                rtt_ms_p50=round(float(np.median(r.rtt_ms)), 1) if r.rtt_ms else None,
                rtt_ms_p95=round(float(np.percentile(r.rtt_ms, 95)), 1) if r.rtt_ms else None,
            )
        )
    all_windows = [x for ws in windows for x in ws]
    return {
        "seconds": round(elapsed, 1),
        "clients": clients,
        "fps_per_client": fps,
        "size": f"{size[0]}x{size[1]}",
        "backend": final.get("backend"),
        "rss": {
            "method": (
                f"VmRSS of gunicorn master + worker, sampled every {sample_s:g} s; growth = median of the last "
                f"{w:g} s vs median of {warm:g}-{warm + w:g} s (after a {warm:g} s warm-up)"
            ),
            "baseline_mib": baseline and round(baseline, 1),
            "final_mib": last and round(last, 1),
            "growth_pct": round(100.0 * (last - baseline) / baseline, 2) if baseline and last else None,
            "worker_growth_pct": round(100.0 * (wlast - wbase) / wbase, 2) if wbase and wlast else None,
            "max_mib": round(max(v for _, v in rss), 1) if rss else None,
            "samples": [[t, round(v, 1)] for t, v in rss],
        },
        "errors": errors,
        "errors_total": sum(errors.values()),
        "fps": {
            "window_s": window_s,
            "median": round(float(np.median(all_windows)), 2) if all_windows else None,
            "p5": round(float(np.percentile(all_windows, 5)), 2) if all_windows else None,
            "min": round(float(min(all_windows)), 2) if all_windows else None,
            "zero_windows": sum(1 for x in all_windows if x == 0),
            "per_client": per_client,
        },
        "pose_fps_samples": [[t, round(v, 2)] for t, v in pose_fps],
        "machine": {"cpu_count": os.cpu_count(), "loadavg_start": load_start, "loadavg_end": load_end},
    }


def _close_clients(clients: list[BenchClient], timeout: float = 15.0) -> int:
    """Stop and close every client within ``timeout``; returns how many would not close.

    (A client whose server session stopped reading never gets its close answered: the first
    10-minute run hung here instead of reporting.)
    """
    for c in clients:
        c.stop()
    joins = [threading.Thread(target=c.join, daemon=True) for c in clients]
    for t in joins:
        t.start()
    end = time.monotonic() + timeout
    stuck = 0
    for c, t in zip(clients, joins):
        t.join(max(0.0, end - time.monotonic()))
        if t.is_alive():
            stuck += 1
            log.error("a client did not close within %.0f s; dropping its socket", timeout)
            try:
                c.ws.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    return stuck


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--video", default=str(DEFAULT_VIDEO))
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--size", type=_size, default=(1280, 720))
    p.add_argument("--sample-s", type=float, default=5.0, help="RSS / stats sampling period")
    p.add_argument("--window-s", type=float, default=10.0, help="FPS window")
    p.add_argument("--backend", default="mediapipe")
    p.add_argument("--warmup-s", type=float, help="RSS baseline starts here (default: min(60 s, run / 4))")
    p.add_argument("--note", help="free text stored in the report (e.g. what else ran on the machine)")
    p.add_argument("--json", help="write the report here (it is printed too)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not Path(args.video).is_file():
        log.error(
            "soak needs the fixture video: %s not found (the shared test material beside the project)", args.video
        )
        return 3
    report = run_soak(
        args.video,
        args.seconds,
        args.clients,
        args.fps,
        args.size,
        args.sample_s,
        args.window_s,
        args.backend,
        args.warmup_s,
    )
    if args.note:
        report["machine"]["note"] = args.note
    text = json.dumps(report, indent=2) + "\n"
    if args.json:
        Path(args.json).write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
