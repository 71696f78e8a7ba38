"""Making RTMPose fast for inference: BatchNorm folded into the convolutions, and CUDA-graph
replay per batch-size bucket (a small batch is launch-bound: one graph replay instead of a few
hundred kernel launches).
"""

from __future__ import annotations

import threading

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .model import ConvBNAct

# Graphs are captured one at a time, and in "thread_local" mode: the other in-flight batches'
# threads keep decoding, allocating and synchronising meanwhile, which would invalidate a capture
# in the default (global) mode.
_CAPTURE_LOCK = threading.Lock()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every conv+BN pair into one conv with a bias (in place, eval mode); returns ``model``."""
    model.eval()
    for module in model.modules():
        if isinstance(module, ConvBNAct) and isinstance(module.bn, nn.BatchNorm2d):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()
    return model


class GraphRunner:
    """Runs ``model`` on CUDA through captured graphs, one per batch-size bucket.

    A batch is padded up to the next bucket (powers of two up to ``max_batch``), copied into that
    graph's static input and replayed; outputs are sliced back to the real batch.
    """

    def __init__(
        self,
        model: nn.Module,
        input_shape: tuple[int, int, int],
        dtype: torch.dtype,
        max_batch: int = 256,
        channels_last: bool = True,
    ) -> None:
        self.model = model
        self.shape = input_shape
        self.dtype = dtype
        self.channels_last = channels_last
        self.buckets = [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if b <= max_batch]
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple[torch.Tensor, ...]]] = {}
        self.pool = None

    def _bucket(self, n: int) -> int:
        for b in self.buckets:
            if b >= n:
                return b
        raise ValueError(f"batch of {n} is over the largest bucket {self.buckets[-1]}")

    def _capture(self, b: int):
        with _CAPTURE_LOCK:
            return self.graphs.get(b) or self._capture_locked(b)

    def _capture_locked(self, b: int):
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        static = torch.zeros((b, *self.shape), device="cuda", dtype=self.dtype).contiguous(memory_format=fmt)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(3):  # warm up (cuDNN picks its algorithms) outside the capture
                self.model(static)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            out = self.model(static)
        self.pool = graph.pool()
        self.graphs[b] = (graph, static, out)
        return self.graphs[b]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = x.shape[0]
        b = self._bucket(n)
        graph, static, out = self.graphs.get(b) or self._capture(b)
        static[:n].copy_(x)
        graph.replay()
        return out[0][:n], out[1][:n]


class TopDownGraph:
    """Crop + model + decode for frames already on the GPU, as one CUDA graph.

    A batch of 8 frames is launch-bound: the crop's and decode's small kernels and the host's
    tensor building cost more than the model. Here the frames, the crop matrices and the owner
    of each box live in static buffers; one replay runs everything and leaves keypoints and scores
    in static outputs. One graph per (frames, persons) bucket.
    """

    def __init__(
        self, model: nn.Module, input_size: tuple[int, int], frame_shape: tuple[int, int], dtype=torch.float16
    ) -> None:
        self.model = model
        self.input_size = input_size
        self.frame_shape = frame_shape  # (H, W)
        self.dtype = dtype
        self.graphs: dict[tuple[int, int], tuple] = {}
        self.pool = None

    def _capture(self, frames: int, persons: int):
        with _CAPTURE_LOCK:
            return self.graphs.get((frames, persons)) or self._capture_locked(frames, persons)

    def _capture_locked(self, frames: int, persons: int):
        from .topdown import decode

        h, w = self.frame_shape
        images = torch.zeros((frames, 3, h, w), dtype=torch.uint8, device="cuda")
        theta = torch.zeros((persons, 2, 3), dtype=torch.float32, device="cuda")
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        owner = torch.zeros((persons,), dtype=torch.long, device="cuda")
        iw, ih = self.input_size
        mean = torch.tensor((123.675, 116.28, 103.53), device="cuda", dtype=self.dtype).view(1, 3, 1, 1)
        std = torch.tensor((58.395, 57.12, 57.375), device="cuda", dtype=self.dtype).view(1, 3, 1, 1)

        def step():
            grid = torch.nn.functional.affine_grid(theta, [persons, 3, ih, iw], align_corners=False).to(self.dtype)
            src = images.index_select(0, owner).to(self.dtype)
            crops = torch.nn.functional.grid_sample(
                src, grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
            x = ((crops - mean) / std).contiguous(memory_format=torch.channels_last)
            return decode(*self.model(x))

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            out = step()
        self.pool = graph.pool()
        self.graphs[(frames, persons)] = (graph, images, theta, owner, out)
        return self.graphs[(frames, persons)]

    def __call__(
        self, images: torch.Tensor, theta: torch.Tensor, owner: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``images`` (F, 3, H, W) uint8 on the GPU; ``theta`` (P, 2, 3) and ``owner`` (P,) as
        ``topdown.crop`` builds them. Returns crop-pixel keypoints (P, K, 2) and scores (P, K)."""
        f, p = images.shape[0], theta.shape[0]
        key = (_pow2(f), _pow2(p))  # padded up to buckets: a few graphs serve every batch size
        graph, s_images, s_theta, s_owner, out = self.graphs.get(key) or self._capture(*key)
        # The slots past f and p keep older contents: valid frames and indices (< the bucket),
        # whose results are cut off below.
        s_images[:f].copy_(images, non_blocking=True)
        s_theta[:p].copy_(theta, non_blocking=True)
        s_owner[:p].copy_(owner, non_blocking=True)
        graph.replay()
        return out[0][:p], out[1][:p]


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()
