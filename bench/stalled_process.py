"""One socket process stops; do the clients of the other keep their frames?

``serve --render batched --processes 2`` on this machine (MediaPipe and the renderer on the CPU):
clients stream the fixture video, then the socket process holding the fewest of them is stopped
(SIGSTOP) for a while and started again. Its own clients get nothing meanwhile - expected. The
clients of the other process must keep theirs. Which process holds which client is read from
the processes' open sockets.

A stopped process sends no frames, so the engine owes it only the replies already under way: this
does not fill its socket, and the build from before ``engine_ipc._Link`` passes it too. The
stall that link fixed needs a process that keeps sending but reads slowly
(``tests/test_engine.py``, a link whose peer never reads).

    PYTHONPATH=src python3 bench/stalled_process.py --out stalled.json
    PYTHONPATH=OLD/src python3 bench/stalled_process.py ...   # the server from another build
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from pathlib import Path

import simple_websocket

from smartcloset.bench import _server_pids, free_port, load_frames, start_server, stop_server
from smartcloset.stream.protocol import pack_frame, parse_reply

VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "video" / "pose_squats.mp4"


def socket_processes(server) -> list[int]:
    """Gunicorn's workers: the server's children that are not engine processes."""
    out = []
    for pid in _server_pids(server)[1:]:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"engine_ipc" not in f.read():
                out.append(pid)
    return out


def worker_of_client(workers: list[int], server_port: int) -> dict[int, int]:
    """{client's port: the worker holding its connection}, from the workers' open sockets."""
    inodes = {}
    for pid in workers:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes[int(link[8:-1])] = pid
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
                established = state == "01"  # not the listening socket every worker shares
                if established and int(local.rsplit(":", 1)[1], 16) == server_port and inode in inodes:
                    out[int(remote.rsplit(":", 1)[1], 16)] = inodes[inode]
    return out


def stream(
    url: str, frames: list[bytes], fps: float, stop: threading.Event, replies: list[float], port: list[int]
) -> None:
    """Send frames at ``fps`` and note the arrival time of every drawn frame that comes back."""
    ws = simple_websocket.Client.connect(url)
    port.append(ws.sock.getsockname()[1])
    try:
        ws.receive(timeout=10)  # hello
        i, next_at = 0, time.monotonic()
        while not stop.is_set():
            ws.send(pack_frame(i, time.time() * 1000, frames[i % len(frames)]))
            i += 1
            next_at += 1 / fps
            while (wait := next_at - time.monotonic()) > 0:
                msg = ws.receive(timeout=wait)
                if isinstance(msg, bytes):
                    parse_reply(msg)
                    replies.append(time.monotonic())
    finally:
        ws.close()


def rate(times: list[float], t0: float, t1: float) -> float:
    return round(sum(t0 <= t < t1 for t in times) / (t1 - t0), 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--fps", type=float, default=8.0)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--stopped-s", type=float, default=8.0)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    frames = load_frames(str(VIDEO), (w, h), 80, 60)
    port = free_port()
    proc = start_server(port, "--render", "batched", "--processes", "2", "--max-clients-per-address", "0")
    stop = threading.Event()
    replies: list[list[float]] = [[] for _ in range(args.clients)]
    ports: list[list[int]] = [[] for _ in range(args.clients)]
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        threads = [
            threading.Thread(target=stream, args=(url, frames, args.fps, stop, r, p), daemon=True)
            for r, p in zip(replies, ports)
        ]
        for t in threads:
            t.start()
            time.sleep(0.3)  # gunicorn hands connections to its workers as they accept
        time.sleep(6.0)
        workers = socket_processes(proc)
        holder = worker_of_client(workers, port)
        # The worker holding the fewest clients stops (but some): the others must keep theirs.
        victim = min((w for w in workers if w in holder.values()), key=list(holder.values()).count)
        t_stop = time.monotonic()
        os.kill(victim, signal.SIGSTOP)
        time.sleep(args.stopped_s)
        os.kill(victim, signal.SIGCONT)
        t_cont = time.monotonic()
        time.sleep(5.0)
        t_end = time.monotonic()
    finally:
        stop.set()
        stop_server(proc)
    # Ignore the first and last second of the stop: the socket buffers drain and refill.
    per_client = [
        {
            "on_stopped_process": holder.get(p[0]) == victim,
            "before": rate(r, t_stop - 4.0, t_stop),
            "stopped": rate(r, t_stop + 1.0, t_cont - 1.0),
            "after": rate(r, t_cont + 1.0, t_end),
        }
        for r, p in zip(replies, ports)
    ]
    others = [c for c in per_client if not c["on_stopped_process"]]
    result = {"clients": args.clients, "fps": args.fps, "size": args.size, "per_client": per_client}
    # What the clients of the process that kept running got while the other was stopped.
    result["others_fps_before"] = [c["before"] for c in others]
    result["others_fps_while_stopped"] = [c["stopped"] for c in others]
    print(json.dumps(result))
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
