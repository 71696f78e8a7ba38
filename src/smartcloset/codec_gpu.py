"""JPEG for a whole batch on the frames' device: on CUDA nvImageCodec where it is installed (the
``gpu-jpeg`` extra: 4:2:0 output, a decoder per batch thread; codec_nvimgcodec.py says why)
else torchvision's nvJPEG; simplejpeg on the CPU - the batched frame path's decode and encode.

On CUDA the compressed bytes go up (a few hundred kB a frame instead of 2.7 MB of pixels), are
decoded to (3, H, W) uint8 RGB on the GPU in one batched call, and come back encoded the same
way, so pixels never cross the bus. A batch that nvJPEG refuses (one corrupt frame fails the
whole call) is decoded again frame by frame, so one bad frame costs only itself. Every frame's
header was checked against the limits (``codec.jpeg_size``) before it got here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np
import torch

from . import codec
from .codec import DEFAULT_LIMITS, ImageError, ImageLimits

log = logging.getLogger(__name__)

# Which library does JPEG on CUDA. "auto": nvImageCodec where it works here, else torchvision.
GPU_JPEG = ("auto", "nvimgcodec", "torchvision")
_trials: dict[torch.device, Exception | None] = {}  # device -> why nvImageCodec cannot start there (None: it can)
_local = threading.local()  # nvImageCodec's decoder and encoder, one per (thread, device)


def resolve_gpu_jpeg(device: torch.device, choice: str = "auto") -> str:
    """The library that does JPEG on ``device`` for ``choice``: "nvimgcodec" or "torchvision".
    "nvimgcodec" insists (RuntimeError, saying how to install it, where it cannot start); "auto"
    falls back to torchvision with one log line. Tried once per process and device."""
    if choice not in GPU_JPEG:
        raise ValueError(f"gpu_jpeg must be one of {GPU_JPEG}, got {choice!r}")
    if choice == "torchvision" or device.type != "cuda":
        return "torchvision"
    if device not in _trials:
        try:
            from .codec_nvimgcodec import NvImageCodec

            NvImageCodec(device)  # a trial: each thread that does JPEG makes its own
            _trials[device] = None
        except Exception as exc:  # not installed, or its libraries do not load here
            _trials[device] = exc
            log.log(
                logging.INFO if isinstance(exc, ImportError) else logging.WARNING,
                "nvImageCodec cannot start on %s (%s): JPEG there through torchvision's nvJPEG",
                device,
                exc,
            )
    failure = _trials[device]
    if failure is None:
        return "nvimgcodec"
    if choice == "nvimgcodec":
        raise RuntimeError(f"--gpu-jpeg nvimgcodec cannot start on {device}: {failure}") from failure
    return "torchvision"


def gpu_codec(device: torch.device, choice: str = "auto"):
    """This thread's ``NvImageCodec`` for ``device``, or None where torchvision does the work."""
    return _thread_codec(device) if resolve_gpu_jpeg(device, choice) == "nvimgcodec" else None


def _thread_codec(device: torch.device):
    codecs = getattr(_local, "codecs", None)
    if codecs is None:
        codecs = _local.codecs = {}
    if device not in codecs:
        from .codec_nvimgcodec import NvImageCodec

        codecs[device] = NvImageCodec(device)
    return codecs[device]


def _settle(device: torch.device) -> None:
    """Wait for this thread's stream before a torchvision nvJPEG call.

    Why: torchvision's CUDA decoder takes its output tensors from the caching allocator on the
    caller's stream, then has nvJPEG write them on a private stream that does not wait for the
    caller's (pytorch/vision#9606); the encoder is treated the same way. A block the caller freed while its own kernels were still to
    read it (the renderer frees its temporaries as soon as it has queued the kernels) can be
    handed out again and overwritten before those kernels run. Settling the stream first
    leaves nothing queued to be overwritten. It costs little: the encode needs the rendered
    frames anyway, and at a batch's decode the stream is idle.
    """
    if device.type == "cuda" and torch.cuda.is_available():  # (the tests' stand-in devices have none)
        torch.cuda.current_stream(device).synchronize()


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
    jpegs: Sequence[bytes], device: torch.device, limits: ImageLimits = DEFAULT_LIMITS, gpu_jpeg: str = "auto"
) -> list[torch.Tensor | ImageError]:
    """Per JPEG, a (3, H, W) uint8 RGB tensor on ``device`` - or the ImageError it raised."""
    if device.type != "cuda":
        return [_decode_host(data, limits) for data in jpegs]
    nvi = gpu_codec(device, gpu_jpeg)
    decoded = None
    if nvi is not None and nvi.can_decode:
        try:
            decoded = nvi.decode(jpegs)
        except RuntimeError:  # the call failed as a whole: the batch still gets decoded
            log.warning("nvImageCodec failed a batch of %d frames; torchvision decodes it", len(jpegs), exc_info=True)
    if decoded is None:
        return _decode_nvjpeg(jpegs, device, limits, _torchvision_io())
    # A frame it cannot decode goes to the host decoder, which says why (or reads it after all).
    return [
        img if img is not None else _on_device(_decode_host(jpeg, limits), device) for jpeg, img in zip(jpegs, decoded)
    ]


def _on_device(img: torch.Tensor | ImageError, device: torch.device) -> torch.Tensor | ImageError:
    return img if isinstance(img, ImageError) else img.to(device)


def _decode_host(jpeg: bytes, limits: ImageLimits) -> torch.Tensor | ImageError:
    try:
        return torch.from_numpy(codec.decode(jpeg, "RGB", limits)).permute(2, 0, 1)
    except ImageError as exc:
        return exc


def _decode_nvjpeg(jpegs: Sequence[bytes], device: torch.device, limits: ImageLimits, io) -> list:
    data = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpegs]
    _settle(device)
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
            img = _on_device(_decode_host(jpeg, limits), device)
            rescued += not isinstance(img, ImageError)
            out.append(img)
    if rescued:
        log.warning("nvJPEG refused %d frame(s) that the host decoder reads; decoded on the host", rescued)
    return out


def encode_batch(
    images: torch.Tensor | Sequence[torch.Tensor], qualities: Sequence[int], gpu_jpeg: str = "auto"
) -> list[bytes]:
    """(3, H, W) uint8 RGB tensors -> JPEG bytes, on CUDA one call per quality."""
    images = list(images)
    out: list[bytes | None] = [None] * len(images)
    if not images:
        return []
    if images[0].device.type != "cuda":
        for i, (img, q) in enumerate(zip(images, qualities)):
            out[i] = codec.encode(np.ascontiguousarray(img.permute(1, 2, 0).numpy()), q, "RGB")
        return out  # type: ignore[return-value]
    nvi = gpu_codec(images[0].device, gpu_jpeg)
    for q in sorted(set(qualities)):
        idx = [i for i, qq in enumerate(qualities) if qq == q]
        for i, jpeg in zip(idx, _encode_cuda([images[i] for i in idx], int(q), nvi)):
            out[i] = jpeg
    return out  # type: ignore[return-value]


def _encode_cuda(images: list[torch.Tensor], quality: int, nvi) -> list[bytes]:
    """One quality's frames in one call: nvImageCodec where it does the work (torchvision takes
    over a call it fails, so the frames still go out), else torchvision."""
    if nvi is not None:
        try:
            return nvi.encode(images, quality)
        except RuntimeError:
            log.warning("nvImageCodec failed to encode %d frames; torchvision encodes them", len(images), exc_info=True)
    images = [img.contiguous() for img in images]
    _settle(images[0].device)
    encoded = _torchvision_io().encode_jpeg(images, quality=quality)
    sizes = [int(e.numel()) for e in encoded]
    host = torch.cat([e.reshape(-1) for e in encoded]).cpu().numpy()  # one copy back
    offsets = np.cumsum([0, *sizes])
    return [host[offsets[k] : offsets[k + 1]].tobytes() for k in range(len(images))]
