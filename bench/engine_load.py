"""The frame engine alone at saturation: what one engine process can draw, and where its host
time goes - without sockets, IPC or the load generator in the way.

N clients whose newest-frame slots never run dry (a feeder thread offers each client a new frame
``--offer-fps`` times a second, from the fixture video) feed one ``FrameEngine`` - RTMPose-m with
random weights and the stand-in person, the T-shirt drawn by ``BatchRenderer``, nvJPEG both ways -
exactly as ``serve --render batched`` builds it. Prints frames drawn/s, the batch sizes, the
stage medians and the latency from offer to delivery; with ``--profile`` also the host profile of
every thread (yappi, CPU clock: the interpreter's own time is what one process cannot spread).

    PYTHONPATH=src python3 bench/engine_load.py --clients 32 --seconds 10 [--inflight 2] [--profile]
"""

from __future__ import annotations

import argparse
import io
import json
import threading
import time
from pathlib import Path

import numpy as np

from smartcloset.bench import load_frames
from smartcloset.closet.store import Closet
from smartcloset.engine import FrameEngine
from smartcloset.pose.rtmpose_backend import FullFrameDetector, RTMPoseBackend
from smartcloset.pose.simulate import StandInPose
from smartcloset.pose.timeline import KeypointTimeline
from smartcloset.pose.worker import BatchConfig
from smartcloset.render.annotators import GarmentAnnotator
from smartcloset.stats import now_ms
from smartcloset.stream.protocol import ClientFrame

VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "video" / "pose_squats.mp4"


class Sink:
    """A client as the engine sees it: counts what comes back and how long it took."""

    jpeg_quality = 80

    def __init__(self, look: list) -> None:
        self.look = look
        self.delivered = 0
        self.errors = 0
        self.latency_ms: list[float] = []

    def render_look(self) -> list:
        return self.look

    def deliver(self, rendered) -> None:
        self.delivered += 1
        self.latency_ms.append(now_ms() - rendered.frame.received_ms)

    def frame_error(self, frame, error) -> None:
        self.errors += 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--offer-fps", type=float, default=60.0, help="frames offered per client per second")
    ap.add_argument("--batch-max", type=int, default=32)
    ap.add_argument("--inflight", type=int, default=0, help="batches in flight (0: the backend's default)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--profile", action="store_true", help="host profile of every thread (needs yappi)")
    ap.add_argument("--out", help="write the row as JSON here")
    args = ap.parse_args()

    jpegs = load_frames(str(VIDEO), (1280, 720), 80, 64)
    backend = StandInPose(
        RTMPoseBackend(
            "rtmpose-m", args.device, weights=False, detector=FullFrameDetector(), inflight=args.inflight or None
        )
    )
    engine = FrameEngine(backend, BatchConfig(args.batch_max, 4.0, (640, 360)), device=args.device)
    engine.warm_up().start()
    look = [GarmentAnnotator(Closet(user_dir="/nonexistent").get("tshirt-navy"))]
    sinks = {}
    for c in range(args.clients):
        sinks[c] = Sink(look)
        engine.register(c, KeypointTimeline(), sinks[c])

    stop = threading.Event()

    def feed() -> None:
        period = 1.0 / args.offer_fps
        frame_id = 0
        next_t = time.perf_counter()
        while not stop.is_set():
            for c in range(args.clients):
                t = now_ms()
                engine.submit(c, ClientFrame(frame_id, t, jpegs[(frame_id + c) % len(jpegs)], t))
            frame_id += 1
            next_t += period
            time.sleep(max(0.0, next_t - time.perf_counter()))

    feeder = threading.Thread(target=feed, name="feeder", daemon=True)
    feeder.start()
    time.sleep(args.warmup)
    for s in sinks.values():
        s.delivered, s.latency_ms = 0, []
    batches0 = engine.stats.batches
    if args.profile:
        import yappi

        yappi.set_clock_type("cpu")
        yappi.start(builtins=True)
    t0 = time.perf_counter()
    time.sleep(args.seconds)
    elapsed = time.perf_counter() - t0
    if args.profile:
        yappi.stop()
    delivered = sum(s.delivered for s in sinks.values())
    batches = engine.stats.batches - batches0
    latencies = np.concatenate([np.asarray(s.latency_ms) for s in sinks.values()]) if delivered else np.zeros(1)
    per_client = [s.delivered / elapsed for s in sinks.values()]
    row = {
        "clients": args.clients,
        "inflight": backend.max_inflight,
        "batch_max": args.batch_max,
        "frames_per_s": round(delivered / elapsed, 1),
        "fps_per_client_median": round(float(np.median(per_client)), 2),
        "fps_per_client_min": round(float(np.min(per_client)), 2),
        "mean_batch": round(delivered / max(batches, 1), 2),
        "latency_ms": {q: round(float(np.percentile(latencies, p)), 1) for q, p in (("p50", 50), ("p95", 95))},
        "stage_ms_p50": {k: round(v, 2) for k, v in engine.snapshot()["stage_ms_p50"].items()},
        "errors": sum(s.errors for s in sinks.values()),
    }
    stop.set()
    engine.stop()
    print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(row, indent=1))
    if args.profile:
        out = io.StringIO()
        yappi.get_thread_stats().print_all(out=out)
        stats = yappi.get_func_stats()
        stats.sort("tsub").print_all(
            out=out, columns={0: ("name", 80), 1: ("ncall", 10), 2: ("tsub", 8), 3: ("ttot", 8), 4: ("tavg", 8)}
        )
        print("\n".join(out.getvalue().splitlines()[:80]))


if __name__ == "__main__":
    main()
