"""The batched renderer's draws as CUDA graphs: captured once per plan key, replayed with new data.

Why: on the GPU the render is bound by its host, not its kernels. A batch of 8 is ~130 kernels
and ~220 PyTorch operations - ~7 ms of one core (the GIL held most of it) for ~1.4 ms of GPU
work (H200, docs/performance.md); through the server the render was what kept 64 clients' p95
above 30 ms (with no garment drawn it was 20 ms). A graph replays all of it for one launch.

How: ``BatchRenderer.plan`` works a batch out on the host - its structure (``_Plan.key``: what
each frame draws, every box and size) and one float32 array of data (segments, triangles,
composite indices). ``BatchRenderer._draw`` issues only device operations whose shapes the key
fixes, so a graph captured from one plan replays any plan of the same key once its data (and
frames) are copied into the graph's own input tensors.

* Per thread (the engine's in-flight batches run on a CUDA stream each): its graphs share one
  memory pool, replayed one at a time on its stream.
* A key is captured the second time it is seen (a batch's make-up can be one-off), at most
  ``limit`` graphs a thread (least recently used go). Batches are padded to a power of two
  (``BatchRenderer.render``), so that batch sizes of 9-16 share keys.
* Off by default (``ServerConfig.render_graphs``): on an H200 one client's p95 fell from 14.8
  to 8.8 ms, but 64 clients in engine processes drew fewer frames with graphs, unpadded
  (1,761-1,783/s against 1,868) and padded (1,730-1,792/s against 1,880), holding twice the GPU
  memory (docs/performance.md, "Stop 16").
* A capture that fails leaves that key to the eager path, and three failures turn replay off:
  a graph is an optimisation, never a reason to lose a frame.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass
class _Graph:
    """One captured draw and the tensors it reads and writes (kept alive with it)."""

    graph: torch.cuda.CUDAGraph
    frames: torch.Tensor  # input: (B, 3, H, W) uint8
    staging: torch.Tensor  # input: the plan's data, pinned host memory
    data: torch.Tensor  # input: the plan's data on the device
    out: torch.Tensor  # output: (B, 3, H, W) uint8
    keep: list  # what the graph reads by address: textures, garments
    copied: torch.cuda.Event = field(default_factory=torch.cuda.Event)  # the last staging -> device copy


class _Thread:
    """One thread's graphs, their pool and side stream."""

    def __init__(self) -> None:
        self.graphs: OrderedDict = OrderedDict()
        self.seen: Counter = Counter()
        self.failed: set = set()
        self.pool = None
        self.stream: torch.cuda.Stream | None = None


class GraphReplay:
    """CUDA graphs of one renderer's draws (``BatchRenderer(graphs=True)``)."""

    def __init__(self, renderer, limit: int = 48, capture_after: int = 2, max_failures: int = 3) -> None:
        self._renderer = renderer
        self.limit = limit
        self.capture_after = capture_after
        self._max_failures = max_failures
        self._local = threading.local()
        self._lock = threading.Lock()
        self.failures = 0
        self.captures = 0
        self.replays = 0

    @property
    def enabled(self) -> bool:
        return self.failures < self._max_failures

    def _thread(self) -> _Thread:
        t = getattr(self._local, "state", None)
        if t is None:
            t = self._local.state = _Thread()
        return t

    def draw(self, frames: torch.Tensor, plan) -> torch.Tensor | None:
        """The plan drawn by its graph - captured now if its key has come often enough - or None
        where the caller draws it eagerly. ``frames`` may be fewer than the plan's: the rest pad
        the batch (nobody on them) and are not returned."""
        key = plan.key
        if key is None or not self.enabled:
            return None
        t = self._thread()
        entry = t.graphs.get(key)
        if entry is None:
            if key in t.failed:
                return None
            t.seen[key] += 1
            if len(t.seen) > 4096:  # bounded: keys seen once long ago are forgotten
                t.seen = Counter({k: n for k, n in t.seen.items() if n > 1})
            if t.seen[key] < self.capture_after:
                return None
            entry = self._capture(t, frames, plan)
            if entry is None:
                return None
            t.graphs[key] = entry
            while len(t.graphs) > self.limit:
                t.graphs.popitem(last=False)
        else:
            if entry.staging.numel() != len(plan.data):  # a key that does not fix the data's size
                log.error(
                    "render: a plan's data does not fit its graph (%d, %d)", len(plan.data), entry.staging.numel()
                )
                del t.graphs[key]
                t.failed.add(key)
                return None
            t.graphs.move_to_end(key)
            self._load(entry, frames, plan)
            entry.graph.replay()
        with self._lock:
            self.replays += 1
        # A tensor of the caller's own (the graph's output is rewritten by its next replay), less
        # the frames that pad the batch.
        return entry.out[: len(frames)].clone()

    @staticmethod
    def _load(entry: _Graph, frames: torch.Tensor, plan) -> None:
        """The batch's frames and data into the graph's inputs, on the current stream."""
        entry.copied.synchronize()  # the staging buffer's last copy is done: it may be rewritten
        entry.staging.numpy()[:] = plan.data
        entry.frames[: len(frames)].copy_(frames)  # frames past them pad the batch: never shown
        entry.data.copy_(entry.staging, non_blocking=True)
        entry.copied.record()

    def _capture(self, t: _Thread, frames: torch.Tensor, plan) -> _Graph | None:
        renderer = self._renderer
        device = frames.device
        try:
            if t.stream is None:
                t.stream = torch.cuda.Stream(device)
                t.pool = torch.cuda.graph_pool_handle()
            static = torch.cat([frames, frames.new_zeros((plan.shape[0] - len(frames), *frames.shape[1:]))])
            staging = torch.from_numpy(np.array(plan.data)).pin_memory()
            data = torch.empty(len(plan.data), dtype=torch.float32, device=device)
            data.copy_(staging, non_blocking=True)
            # Once eagerly first: what the draw makes lazily (textures, kernels, cuDNN's plans)
            # is made outside the capture.
            renderer._draw(static, plan, data)
            keep = [] if plan.warp is None else [(a, renderer.texture(a, lv)) for a, lv, _, _ in plan.warp.textures]
            graph = torch.cuda.CUDAGraph()
            current = torch.cuda.current_stream(device)
            t.stream.wait_stream(current)
            with torch.cuda.stream(t.stream):
                graph.capture_begin(pool=t.pool, capture_error_mode="thread_local")
                try:
                    out = renderer._draw(static, plan, data)
                finally:
                    graph.capture_end()
            current.wait_stream(t.stream)
            graph.replay()  # the batch it was captured from
            entry = _Graph(graph, static, staging, data, out, keep)
            entry.copied.record()  # after the staging buffer's first copy
        except Exception:
            t.failed.add(plan.key)
            with self._lock:
                self.failures += 1
                failures = self.failures
            log.exception(
                "render: CUDA graph capture failed (%d of %d before replay is off); this batch is drawn eagerly",
                failures,
                self._max_failures,
            )
            return None
        with self._lock:
            self.captures += 1
        log.debug("render: graph %d captured for a batch of %d", self.captures, plan.shape[0])
        return entry
