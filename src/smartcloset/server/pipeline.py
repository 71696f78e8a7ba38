"""What every session shares: the config, the pose worker (one per device) and the closet."""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..closet.store import Closet
from ..codec import ImageLimits
from ..config import ServerConfig
from ..cuda_wait import set_cuda_wait
from ..pose.backend import PoseBackend, create_backend
from ..pose.worker import BatchConfig, FaultPolicy, PoseWorker
from ..render.annotators import GarmentAnnotator

log = logging.getLogger(__name__)


@dataclass
class Pipeline:
    config: ServerConfig
    worker: PoseWorker
    closet: Closet
    limits: ImageLimits
    _annotators: dict[str, GarmentAnnotator] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _clients: int = 0
    _per_address: dict[str, int] = field(default_factory=dict)  # open WebSockets per peer address
    sessions: set = field(default_factory=set)  # live Session objects, for a clean shutdown

    @classmethod
    def start(cls, config: ServerConfig, backend: PoseBackend | None = None) -> Pipeline:
        factory = None  # rebuilds the backend when the worker restarts it (a test's instance is reused)
        if backend is None and not config.engine_addresses:
            factory = backend_factory(config)
            set_cuda_wait(config.cuda_wait)  # before the backend makes this process's CUDA context
            backend = factory()
        limits = image_limits(config)
        if config.engine_addresses:  # --render batched --processes N / --engines K: the engine processes
            from ..engine_ipc import EngineGroup

            worker = EngineGroup.connect(config.engine_addresses, config.engine_authkeys)  # type: ignore[assignment]
            n, name, device = len(config.engine_addresses), worker.backend.name, worker.backend.device
            log.info("frames go to %d engine process(es) (%s on %s)", n, name, device)
        elif _batched(config, backend):
            if config.gil_switch_ms > 0:  # the engine beside the sockets: why in config.gil_switch_ms
                sys.setswitchinterval(config.gil_switch_ms / 1000.0)
            worker = build_engine(config, backend, factory)
        else:
            worker = PoseWorker(backend, _batch(config), limits, factory=factory, faults=_faults(config)).start()
        closet = Closet(config.closet_dir)
        log.info("closet: %d garments (%s)", len(closet.list()), closet.user_dir)
        return cls(config, worker, closet, limits)

    @property
    def batched(self) -> bool:
        """Whether frames take the batched path (the engine renders) or each session renders."""
        return getattr(self.worker, "batched", False)

    def annotator(self, garment_id: str) -> GarmentAnnotator:
        """The garment's renderer, built once (mesh + texture pyramid) and shared by sessions."""
        with self._lock:
            ann = self._annotators.get(garment_id)
            if ann is None or ann.garment is not self.closet.get(garment_id):
                ann = GarmentAnnotator(self.closet.get(garment_id))
                self._annotators[garment_id] = ann
            return ann

    def try_admit(self, address: str = "?") -> str | None:
        """Take a WebSocket slot for a client at ``address``: None when admitted, else why not.

        Both limits are checked and taken under one lock, so concurrent handshakes can never
        overshoot; every admitted client must ``leave(address)`` exactly once.
        """
        cfg = self.config
        with self._lock:
            if self._clients >= cfg.max_clients:
                return f"server full: {cfg.max_clients} clients connected, try again later"
            mine = self._per_address.get(address, 0)
            if cfg.max_clients_per_address and mine >= cfg.max_clients_per_address:
                return f"too many connections from your address ({mine}, at most {cfg.max_clients_per_address})"
            self._clients += 1
            self._per_address[address] = mine + 1
            return None

    def leave(self, address: str = "?") -> None:
        with self._lock:
            self._clients -= 1
            left = self._per_address.get(address, 0) - 1
            if left > 0:
                self._per_address[address] = left
            else:
                self._per_address.pop(address, None)

    @property
    def clients(self) -> int:
        return self._clients

    def stop(self) -> None:
        for session in list(self.sessions):
            session.shutdown()
        self.worker.stop()


def image_limits(config: ServerConfig) -> ImageLimits:
    return ImageLimits(
        max_bytes=config.max_frame_bytes,
        max_width=config.max_frame_width,
        max_height=config.max_frame_height,
        max_pixels=config.max_frame_width * config.max_frame_height,
    )


def _batch(config: ServerConfig) -> BatchConfig:
    return BatchConfig(config.batch_max, config.batch_deadline_ms, tuple(config.inference_size))


def _faults(config: ServerConfig) -> FaultPolicy:
    return FaultPolicy(infer_timeout_s=config.pose_watchdog_s)


def build_engine(config: ServerConfig, backend: PoseBackend, factory=None):
    """The batched frame path on the backend's device, warmed up and running (in this process,
    or in the engine process that ``--processes N`` shares)."""
    from ..engine import FrameEngine

    device = backend.device if str(backend.device).startswith("cuda") else "cpu"
    engine = FrameEngine(
        backend,
        _batch(config),
        image_limits(config),
        device=device,
        gpu_jpeg=engine_gpu_jpeg(config),
        render_compile=config.render_compile,
        render_graphs=config.render_graphs,
        render_kernels=config.render_kernels,
        factory=factory,
        faults=_faults(config),
    )
    return engine.warm_up().start()


def engine_gpu_jpeg(config: ServerConfig) -> str:
    """``--gpu-jpeg`` for an engine: "auto" leaves the choice to codec_gpu (nvImageCodec where
    installed) where the engine runs in the sockets' own process, and takes torchvision's nvJPEG
    where engine processes serve socket processes. Measured on an H100, same calls: one client
    (one process) got all 30 FPS with nvImageCodec against 20-23 with torchvision (p95 13.3-14.4
    against 14.7-15.1 ms); 64 clients on two engine processes with MPS drew 714-1,406 frames/s
    with nvImageCodec (two rows of four collapsed, their frames dropped in the socket processes)
    against 967-1,314 with torchvision. Engine processes were not measured otherwise."""
    if config.gpu_jpeg == "auto" and config.engine_processes:
        return "torchvision"
    return config.gpu_jpeg


def backend_factory(config: ServerConfig) -> Callable[[], PoseBackend]:
    """What builds the configured pose backend (again, when the worker restarts it)."""
    options: dict = {}
    if config.pose_backend.startswith("rtmpose"):
        options = {"compile": config.pose_compile} | ({"weights": False} if config.pose_random_weights else {})
        if config.batch_inflight:
            options["inflight"] = config.batch_inflight

    def factory() -> PoseBackend:
        made = create_backend(
            config.pose_backend, device=config.pose_device, segmentation=config.segmentation, **options
        )
        if config.pose_stand_in:
            from ..pose.simulate import StandInPose

            log.warning("benchmark mode: poses replaced by a stand-in person (--pose-stand-in)")
            made = StandInPose(made)
        return made

    return factory


def _batched(config: ServerConfig, backend: PoseBackend) -> bool:
    """``--render``: "auto" batches where the pose runs on CUDA (and the transport is not alone)."""
    if config.transport_only or config.render == "session":
        return False
    if config.render == "batched":
        return True
    if config.render != "auto":
        raise ValueError(f"unknown frame path {config.render!r}: auto, session or batched")
    return str(backend.device).startswith("cuda")
