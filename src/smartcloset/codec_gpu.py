"""JPEG for a whole batch on the frames' device: nvJPEG on CUDA (through torchvision), simplejpeg
on the CPU - the batched frame path's decode and encode.

On CUDA the compressed bytes go up (a few hundred kB a frame instead of 2.7 MB of pixels), are
decoded to (3, H, W) uint8 RGB on the GPU in one batched call, and come back encoded the same
way, so pixels never cross the bus. A batch that nvJPEG refuses (one corrupt frame fails the
whole call) is decoded again frame by frame, so one bad frame costs only itself. Every frame's
header was checked against the limits (``codec.jpeg_size``) before it got here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from . import codec
from .codec import DEFAULT_LIMITS, ImageError, ImageLimits

log = logging.getLogger(__name__)


def _torchvision_io():
    try:
        from torchvision import io
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "nvJPEG needs torchvision (pip install torchvision matching your torch); "
            "or run the frame path on the CPU (--render session)"
        ) from exc
    return io


def decode_batch(
    jpegs: Sequence[bytes], device: torch.device, limits: ImageLimits = DEFAULT_LIMITS
) -> list[torch.Tensor | ImageError]:
    """Per JPEG, a (3, H, W) uint8 RGB tensor on ``device`` - or the ImageError it raised."""
    if device.type != "cuda":
        return [_decode_host(data, limits) for data in jpegs]
    return _decode_nvjpeg(jpegs, device, limits, _torchvision_io())


def _decode_host(jpeg: bytes, limits: ImageLimits) -> torch.Tensor | ImageError:
    try:
        return torch.from_numpy(codec.decode(jpeg, "RGB", limits)).permute(2, 0, 1)
    except ImageError as exc:
        return exc


def _decode_nvjpeg(jpegs: Sequence[bytes], device: torch.device, limits: ImageLimits, io) -> list:
    data = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
    try:
        return list(io.decode_jpeg(data, mode=io.ImageReadMode.RGB, device=device))
    except RuntimeError:
        log.debug("batched nvJPEG decode failed; decoding the %d frames one by one", len(data))
    out: list[torch.Tensor | ImageError] = []
    rescued = 0
    for jpeg, d in zip(jpegs, data):
        try:
            out.append(io.decode_jpeg(d, mode=io.ImageReadMode.RGB, device=device))
        except RuntimeError:
            # nvJPEG may refuse frames the host decoder reads (one lent H200 answered 850-3,027
            # frames of a run with bad_jpeg where another machine ran the same builds clean). The
            # client hears its frame is bad - and is closed after enough of them - only if the
            # host decoder refuses it too.
            img = _decode_host(jpeg, limits)
            rescued += not isinstance(img, ImageError)
            out.append(img if isinstance(img, ImageError) else img.to(device))
    if rescued:
        log.warning("nvJPEG refused %d frame(s) that the host decoder reads; decoded on the host", rescued)
    return out


def encode_batch(images: torch.Tensor | Sequence[torch.Tensor], qualities: Sequence[int]) -> list[bytes]:
    """(3, H, W) uint8 RGB tensors -> JPEG bytes, nvJPEG on CUDA (one call per quality)."""
    images = list(images)
    out: list[bytes | None] = [None] * len(images)
    if not images:
        return []
    if images[0].device.type != "cuda":
        for i, (img, q) in enumerate(zip(images, qualities)):
            out[i] = codec.encode(np.ascontiguousarray(img.permute(1, 2, 0).numpy()), q, "RGB")
        return out  # type: ignore[return-value]
    io = _torchvision_io()
    for q in sorted(set(qualities)):
        idx = [i for i, qq in enumerate(qualities) if qq == q]
        encoded = io.encode_jpeg([images[i].contiguous() for i in idx], quality=int(q))
        sizes = [int(e.numel()) for e in encoded]
        host = torch.cat([e.reshape(-1) for e in encoded]).cpu().numpy()  # one copy back
        offsets = np.cumsum([0, *sizes])
        for k, i in enumerate(idx):
            out[i] = host[offsets[k] : offsets[k + 1]].tobytes()
    return out  # type: ignore[return-value]
