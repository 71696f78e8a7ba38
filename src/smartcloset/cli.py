"""``smart-closet``: serve the mirror, pose or dress images and videos, benchmark, list garments."""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("smartcloset")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = text.lower().split("x")
        size = int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if min(size) < 16 or max(size) > 8192:
        raise argparse.ArgumentTypeError(f"size {text} out of range")
    return size


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _share_metrics(several_processes: bool) -> None:
    """Several processes serve: give them one folder for their Prometheus values (see metrics.py).
    Here, before anything imports prometheus_client, which reads the setting at import."""
    if not several_processes or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    path = tempfile.mkdtemp(prefix="smartcloset-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    owner = os.getpid()  # gunicorn's workers inherit this exit hook: only the master cleans up
    atexit.register(lambda: os.getpid() == owner and shutil.rmtree(path, ignore_errors=True))


def cmd_serve(args: argparse.Namespace) -> int:
    from .config import ServerConfig

    cfg = ServerConfig(
        host=args.host,
        port=args.port,
        pose_backend=args.backend,
        pose_device=args.device,
        pose_compile=args.compile,
        batch_max=args.batch_max,
        batch_deadline_ms=args.batch_deadline_ms,
        batch_inflight=args.inflight,
        inference_size=args.inference_size,
        max_clients=args.max_clients,
        max_clients_per_address=args.max_clients_per_address,
        allowed_origins=args.allow_origin or [],
        access_token=args.token,
        send_timeout_s=args.send_timeout,
        pose_wait_ms=args.pose_wait_ms,
        closet_dir=args.closet,
        segmentation=args.segmentation,
        render=args.render,
        pose_watchdog_s=args.pose_watchdog,
        processes=args.processes,
        engines=args.engines,
        gil_switch_ms=args.gil_switch_ms,
        gpu_jpeg=args.gpu_jpeg,
        render_compile=args.render_compile,
        render_graphs=args.render_graphs,
        render_kernels=args.render_kernels,
        cuda_wait=args.cuda_wait,
        transport_only=args.transport_only,
        pose_random_weights=args.random_weights,
        pose_stand_in=args.pose_stand_in,
    )
    if args.garment:
        cfg.default_garments = args.garment
    _share_metrics(cfg.several_processes)
    from .server.runner import serve  # after: it imports prometheus_client

    serve(cfg, log_level=args.log_level)
    return 0


def cmd_pose(args: argparse.Namespace) -> int:
    import cv2

    from .pose.backend import create_backend

    backend = create_backend(args.backend, segmentation=False)
    out = []
    try:
        for path in args.images:
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            if image is None:
                log.error("cannot read image %s", path)
                return 2
            rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            (pose,) = backend.infer([rgb], [None])
            out.append({"image": path, "persons": [p.to_json() for p in pose.persons]})
    finally:
        backend.close()
    if args.json:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    else:
        for item in out:
            sys.stdout.write(f"{item['image']}: {len(item['persons'])} person(s)\n")
    return 0


def cmd_tryon(args: argparse.Namespace) -> int:
    from .tryon import TryOnError, tryon_file

    try:
        tryon_file(
            args.input, args.output, args.garment, backend=args.backend, closet_dir=args.closet, skeleton=args.skeleton
        )
    except TryOnError as exc:
        log.error("%s", exc)
        return 2
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import BenchConfig, print_table, run_bench

    cfg = BenchConfig(
        video=args.video,
        clients=args.clients,
        seconds=args.seconds,
        fps=args.fps,
        size=args.size,
        url=args.url,
        backend=args.backend,
        port=args.port,
        serve_args=args.serve_arg or [],
        client_processes=args.client_processes,
        profile_dir=args.profile_dir,
    )
    result = run_bench(cfg)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print_table(result, sys.stdout)
    return 0


def cmd_garments_list(args: argparse.Namespace) -> int:
    from .closet.store import Closet

    closet = Closet(args.closet)
    items = closet.list()
    if args.json:
        json.dump([g.to_json() for g in items], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for g in items:
            sys.stdout.write(f"{g.id:24} {g.category:10} {g.name}\n")
    for err in closet.errors:
        log.warning("skipped: %s", err)
    return 0


def cmd_garments_add(args: argparse.Namespace) -> int:
    from .closet.importer import GarmentImportError, import_garment
    from .closet.store import default_closet_dir

    closet_dir = Path(args.closet) if args.closet else default_closet_dir()
    try:
        data = Path(args.photo).read_bytes()
        garment = import_garment(data, args.category, args.name, closet_dir, source=f"photo {Path(args.photo).name}")
    except (OSError, GarmentImportError) as exc:
        log.error("cannot add %s: %s", args.photo, exc)
        return 2
    if args.json:
        json.dump(dict(garment.to_json(), sidecar=str(garment.sidecar_path)), sys.stdout, indent=2)
        sys.stdout.write("\n")
    sys.stdout.write(f"{garment.id}\n")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .pose import weights as W

    try:
        if args.models_command == "list":
            for w in W.WEIGHTS.values():
                m = w.meta
                sys.stdout.write(
                    f"{w.name:20} {w.input_size[0]}x{w.input_size[1]:<5} {m.get('params_m', '-')!s:>6} M  "
                    f"AP {m.get('coco_val_ap', '-')!s:>5}  {'cached' if W.is_cached(w) else 'not downloaded'}\n"
                )
            sys.stdout.write(f"cache: {W.cache_dir()}\n")
        elif args.models_command == "fetch":
            sys.stdout.write(f"{W.fetch(args.name)}\n")
        else:
            sys.stdout.write(f"{W.add(args.name, args.file)}\n")
    except W.WeightsError as exc:
        log.error("%s", exc)
        return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .pose.backend import BACKEND_NAMES

    p = argparse.ArgumentParser(prog="smart-closet", description=__doc__)
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the live mirror server")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--backend", "--pose", default="auto", choices=BACKEND_NAMES, help="pose backend")
    s.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device for RTMPose")
    s.add_argument("--compile", action="store_true", help="torch.compile RTMPose on CUDA (~45 s more at start)")
    s.add_argument("--batch-max", type=int, default=8, help="frames per pose batch")
    s.add_argument("--batch-deadline-ms", type=float, default=4.0, help="wait for other clients' frames")
    s.add_argument(
        "--inflight", type=_at_least_one, default=0, help="RTMPose batches in flight on CUDA per engine (default 2)"
    )
    s.add_argument("--inference-size", type=_size, default=(640, 360), help="pose input size WxH")
    s.add_argument("--max-clients", type=int, default=32, help="WebSocket clients in total")
    s.add_argument("--max-clients-per-address", type=int, default=8, help="WebSocket clients per address (0: any)")
    s.add_argument(
        "--allow-origin", action="append", metavar="ORIGIN", help="another browser origin allowed (repeatable)"
    )
    s.add_argument("--token", help="access token to require (default: none on loopback, else a generated one)")
    s.add_argument("--send-timeout", type=float, default=10.0, help="disconnect a client not reading for this long")
    s.add_argument("--pose-wait-ms", type=float, default=0.0, help="wait this long for a frame's own pose")
    s.add_argument("--garment", action="append", help="garment(s) worn by default (repeatable)")
    s.add_argument("--closet", help="closet folder (default: the user data dir)")
    s.add_argument(
        "--segmentation", action="store_true", help="also compute the person mask (~4 ms of CPU per posed frame)"
    )
    s.add_argument(
        "--render",
        default="auto",
        choices=["auto", "session", "batched"],
        help="frame path: per-client CPU threads, or one batched engine per device (auto: batched on CUDA)",
    )
    s.add_argument("--processes", type=int, default=1, help="server processes sharing the port and the GPU")
    s.add_argument(
        "--engines",
        type=_at_least_one,
        default=1,
        help="with --render batched: GPU engine processes (one is bound by its host Python), shared by every process",
    )
    s.add_argument(
        "--pose-watchdog", type=float, default=15.0, help="seconds before a stuck pose batch is abandoned (restart)"
    )
    s.add_argument(
        "--gil-switch-ms",
        type=float,
        default=1.0,
        help="one-process --render batched: the interpreter's thread switch interval (0: Python's 5 ms)",
    )
    s.add_argument(
        "--gpu-jpeg",
        default="auto",
        choices=["auto", "nvimgcodec", "torchvision"],
        help="JPEG on CUDA (--render batched): nvImageCodec (4:2:0 output; the gpu-jpeg "
        "extra) or torchvision's nvJPEG (auto: nvImageCodec where installed, in one process)",
    )
    s.add_argument(
        "--cuda-wait",
        default="auto",
        choices=["auto", "spin", "block"],
        help="how threads waiting for the GPU wait: spin on a core, or sleep until woken (auto: CUDA's choice, spin)",
    )
    s.add_argument(
        "--render-compile",
        action="store_true",
        help="--render batched: torch.compile the renderer's per-pixel steps (~20 s more at start; on CUDA needs Triton)",
    )
    s.add_argument(
        "--render-graphs",
        action="store_true",
        help="--render batched on CUDA: replay each batch's draw as a CUDA graph (experimental: "
        "faster for a few clients, slower for many; docs/performance.md, stops 16-17)",
    )
    s.add_argument(
        "--render-kernels",
        default="auto",
        choices=["auto", "triton", "torch"],
        help="--render batched: the rasteriser, arms and composite as Triton kernels or as PyTorch steps "
        "(auto: Triton on CUDA, PyTorch elsewhere)",
    )
    bench = s.add_argument_group("benchmarking only")
    bench.add_argument("--transport-only", action="store_true", help="echo frames: measure the transport alone")
    bench.add_argument("--random-weights", action="store_true", help="RTMPose with random weights (speed only)")
    bench.add_argument(
        "--pose-stand-in", action="store_true", help="draw on a standing stand-in person instead of the poses found"
    )
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("pose", help="find people and their COCO-17 keypoints in images")
    s.add_argument("images", nargs="+")
    s.add_argument("--json", action="store_true", help="print JSON (one entry per image)")
    s.add_argument("--backend", default="auto", choices=BACKEND_NAMES)
    s.set_defaults(func=cmd_pose)

    s = sub.add_parser("tryon", help="dress a person in an image or video file")
    s.add_argument("input")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--garment", action="append", required=True, help="garment id (repeatable, layered)")
    s.add_argument("--backend", default="auto", choices=BACKEND_NAMES)
    s.add_argument("--closet")
    s.add_argument("--skeleton", action="store_true", help="also draw the keypoints")
    s.set_defaults(func=cmd_tryon)

    s = sub.add_parser("bench", help="stream a video from N WebSocket clients and measure")
    s.add_argument("--video", required=True)
    s.add_argument("--clients", type=int, default=1)
    s.add_argument("--seconds", type=float, default=10.0)
    s.add_argument("--fps", type=float, default=30.0)
    s.add_argument("--size", type=_size, default=(1280, 720))
    s.add_argument("--json", help="write results to this file")
    s.add_argument("--url", help="bench a running server (ws://host:port/ws) instead of starting one")
    s.add_argument("--backend", default="auto", choices=BACKEND_NAMES)
    s.add_argument("--port", type=int, default=0, help="port for the server it starts (0: a free one)")
    s.add_argument("--serve-arg", action="append", help="extra argument for the server it starts (repeatable)")
    s.add_argument("--client-processes", type=int, default=1, help="spread the clients over this many processes")
    s.add_argument("--profile-dir", help="py-spy (if installed) records what holds each server process's GIL here")
    s.set_defaults(func=cmd_bench)

    m = sub.add_parser("models", help="pose model weights: list, download, import")
    msub = m.add_subparsers(dest="models_command", required=True)
    msub.add_parser("list", help="declared models and whether they are cached").set_defaults(func=cmd_models)
    s = msub.add_parser("fetch", help="download a model's weights (hash checked) into the cache")
    s.add_argument("name")
    s.set_defaults(func=cmd_models)
    s = msub.add_parser("add", help="import weights downloaded elsewhere (hash checked)")
    s.add_argument("name")
    s.add_argument("file")
    s.set_defaults(func=cmd_models)

    g = sub.add_parser("garments", help="the closet")
    gsub = g.add_subparsers(dest="garments_command", required=True)
    s = gsub.add_parser("list", help="list garments")
    s.add_argument("--json", action="store_true")
    s.add_argument("--closet")
    s.set_defaults(func=cmd_garments_list)
    s = gsub.add_parser("add", help="add a garment from a photo of it laid flat on a plain background")
    s.add_argument("photo")
    s.add_argument("--category", required=True, choices=["top", "outerwear", "dress", "bottom"])
    s.add_argument("--name")
    s.add_argument("--closet", help="closet folder (default: the user data dir)")
    s.add_argument("--json", action="store_true", help="print the garment's details before its id")
    s.set_defaults(func=cmd_garments_add)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
