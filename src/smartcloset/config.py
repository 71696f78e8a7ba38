"""Server settings with their defaults, one dataclass; ``create_app(test_config)`` overrides them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"  # loopback unless the operator says otherwise
    port: int = 8000
    pose_backend: str = "auto"
    pose_device: str = "auto"  # "cpu" | "cuda" | "auto" (for RTMPose; MediaPipe runs on the CPU)
    pose_compile: bool = False  # torch.compile RTMPose on CUDA (slower start, faster batches)
    batch_max: int = 8  # frames per pose batch
    batch_deadline_ms: float = 4.0  # how long a waiting frame waits for other clients' frames
    # RTMPose batches in flight at once on CUDA, each on its own thread and stream (0: the
    # backend's default, 2). More lets one engine process overlap more host work with the GPU.
    batch_inflight: int = 0
    inference_size: tuple[int, int] = (640, 360)  # pose input, (w, h); frames are fitted into it
    # BlazePose's person mask, passed to the renderer with the keypoints. Off until a renderer
    # uses it (arm occlusion): on one 40 FPS client it costs ~12 % of the pose rate here.
    segmentation: bool = False
    # The frame path. "session": each client's thread decodes, draws and encodes on the CPU (the
    # pose worker batches poses); "batched": one engine per device decodes, poses, draws and
    # encodes every client's frame together (nvJPEG + RTMPose + BatchRenderer on a GPU);
    # "auto": batched where RTMPose runs on CUDA, else session (faster on a CPU).
    render: str = "auto"
    processes: int = 1  # server processes sharing the port (and, with "batched", the engine processes)
    # Engine processes for "batched" (engine_ipc.py), each holding the GPU: started whenever
    # processes > 1 or engines > 1, and every server process spreads its clients over all of them.
    engines: int = 1
    # The interpreter's thread switch interval where a batched engine runs in the same process
    # as the sockets (0: Python's default, 5 ms). The engine's host Python holds the GIL for long
    # stretches; every hand-off of a frame (socket reader -> session -> engine collector -> batch
    # thread -> sender) may wait one interval for it. Measured on an H200, one client, same call:
    # p95 14.1-14.4 ms at 1 ms against 16.4-17.6 ms at 5 ms. Engine processes keep Python's
    # default: no measurement there says it pays.
    gil_switch_ms: float = 1.0
    # Which library does JPEG on CUDA for "batched": nvImageCodec (the gpu-jpeg extra: 4:2:0
    # output ~27 % smaller, a decoder per batch thread) or torchvision's nvJPEG. "auto":
    # nvImageCodec where installed and the engine runs in the sockets' process, torchvision in
    # engine processes (pipeline.engine_gpu_jpeg says what was measured).
    gpu_jpeg: str = "auto"
    # torch.compile the batched renderer's per-pixel steps (render/batched.py says why). Off by
    # default: on an H200 it drew a batch of 32 in 7.1 ms against 12.9 ms, but through the server
    # one client's latency did not change and 64 clients gave no clear gain (docs/performance.md,
    # "Stop 13"), and it costs ~20 s of compiling at start.
    render_compile: bool = False
    # Replay the batched renderer's draws as CUDA graphs (render/replay.py says why): on CUDA,
    # with the eager steps. Off by default: on an H200 it cut one client's p95 from 11.1 to
    # 6.3 ms, but 64 clients in engine processes drew fewer frames (1,802-1,854/s against
    # 1,892-1,904) at a higher p95, and its CUDA test (graphed = eager pictures) still finds more
    # seam values differing than two eager runs do (docs/performance.md, "Stop 16", "Stop 17").
    render_graphs: bool = False
    # The batched renderer's rasteriser, shading, arms and composite as Triton kernels
    # (render/kernels.py: 19 launches a batch where the PyTorch steps are 254 - the render's host
    # time is what limited a busy engine) or as the PyTorch steps. "auto": Triton on CUDA, PyTorch
    # elsewhere. On an H200 64 clients got 30 FPS each at p95 23.6-26.0 ms with the kernels,
    # 39-45 ms with the steps (docs/performance.md, "Stop 20").
    render_kernels: str = "auto"
    # How the threads that use the GPU wait for it (cuda_wait.py says why): "spin" holds a core
    # per waiting thread, "block" sleeps until the driver wakes it; "auto" is CUDA's own choice,
    # which spins on any host with more cores than CUDA contexts.
    cuda_wait: str = "auto"
    transport_only: bool = False  # benchmarks: echo each JPEG, no decode/pose/render (transport ceiling)
    pose_random_weights: bool = False  # benchmarks: RTMPose without its checkpoint (speed only)
    engine_addresses: list[str] = field(default_factory=list)  # set by the runner: the engine processes' sockets
    engine_authkeys: list[str] = field(default_factory=list)  # and their keys, in the same order
    pose_stand_in: bool = False  # benchmarks: replace found poses by a standing person (see simulate.py)
    max_clients: int = 32  # WebSockets in total; past it a new one is closed with 1013 and why
    # WebSockets from one peer address (0: no limit). The peer is the socket's address (a
    # forwarded-for header is not trusted): behind a reverse proxy every client shares one, so
    # raise it or set 0 there.
    max_clients_per_address: int = 8
    # Browser origins allowed on /ws and on the API's changing requests besides the page's own
    # (an Origin equal to the request's Host), e.g. "https://mirror.example". Requests without
    # an Origin header (not a browser: bench, scripts) are not checked - the attack is in browsers.
    allowed_origins: list[str] = field(default_factory=list)
    # Required (query ``token=``, ``Authorization: Bearer``, ``X-Smart-Closet-Token``) when set;
    # on a non-loopback host one is generated at start when none is given (server/security.py).
    access_token: str | None = None
    send_timeout_s: float = 10.0  # a reader that takes no bytes this long is disconnected
    max_message_bytes: int = 8 * 1024 * 1024  # transport limit: bigger closes the socket (1009)
    max_frame_bytes: int = 4 * 1024 * 1024  # a frame bigger than this is refused, stream goes on
    max_frame_width: int = 3840
    max_frame_height: int = 2160
    jpeg_quality: int = 80
    pose_wait_ms: float = 0.0  # 0: never wait for a frame's own pose; extrapolate instead
    default_garments: list[str] = field(default_factory=lambda: ["tshirt-navy"])
    closet_dir: str | None = None
    stats_interval_s: float = 1.0
    pose_watchdog_s: float = 15.0  # a pose batch running longer is abandoned and the backend rebuilt
    max_errors: int = 50  # protocol errors per session before it is closed (1008)

    def __post_init__(self) -> None:
        if self.engines < 1:
            raise ValueError(f"engines must be at least 1, got {self.engines}")
        if self.gpu_jpeg not in ("auto", "nvimgcodec", "torchvision"):
            raise ValueError(f"gpu_jpeg must be auto, nvimgcodec or torchvision, got {self.gpu_jpeg!r}")
        if self.cuda_wait not in ("auto", "spin", "block"):
            raise ValueError(f"cuda_wait must be auto, spin or block, got {self.cuda_wait!r}")
        if self.batch_inflight < 0:
            raise ValueError(f"batch_inflight must be 0 (the backend's default) or more, got {self.batch_inflight}")

    @property
    def engine_processes(self) -> int:
        """How many engine processes ``serve`` starts: ``engines`` where the batched path runs
        in processes of its own (several socket processes or several engines), else none."""
        several = self.processes > 1 or self.engines > 1
        return self.engines if self.render == "batched" and not self.transport_only and several else 0

    @property
    def several_processes(self) -> bool:
        """Whether more than one process serves (metrics are then shared: metrics.py)."""
        return self.processes > 1 or self.engine_processes > 0

    @classmethod
    def from_mapping(cls, values: dict) -> ServerConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        cfg = cls(**values)
        cfg.inference_size = tuple(cfg.inference_size)  # type: ignore[assignment]
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)
