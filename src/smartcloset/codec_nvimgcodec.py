"""JPEG for a batch on a CUDA device through NVIDIA's nvImageCodec (the optional ``gpu-jpeg`` extra).

Why beside torchvision's nvJPEG (measured on an H100 and an H200, ``bench/gpu_jpeg.py``,
docs/performance.md): torchvision's CUDA encoder writes 4:4:4 JPEG, and nvImageCodec writes
4:2:0 like the CPU path and the page - rendered frames come out ~27 % smaller at the same
quality setting, in the same GPU time. Both decode a batch on the GPU's hardware JPEG engines
(A100/H100/H200) in the same time; torchvision's decoder is one per process behind a lock and
waits on its stream twice a call, nvImageCodec's is one per batch thread. Through the server in
one process, nvImageCodec gave one client and 8 clients all their 30 FPS where torchvision gave
20-23 and stalled (docs/performance.md). nvImageCodec's CUDA ("hybrid") decoder, which the
library would also use, was 5-6x slower on a batch of 32: this class decodes on the JPEG engines
only and says so (``can_decode``); elsewhere torchvision decodes.

Images stay planar (3, H, W) uint8 RGB torch tensors on the device, as the renderer takes them;
they cross into and out of nvImageCodec without copies (DLPack / array interface), on the
calling thread's current CUDA stream. A decoder and an encoder hold GPU state, so the engine
keeps one ``NvImageCodec`` per batch thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

log = logging.getLogger(__name__)

# Threads and CUDA streams per instance. The library's default is one per core (15 on a 16-core
# host) for every instance; on an H200 4 encoded a batch of 32-64 fastest (1, 8 and 15 slower).
THREADS = 4


def load():
    """The ``nvidia.nvimgcodec`` module, or ImportError that says how to get it."""
    try:
        from nvidia import nvimgcodec
    except ImportError as exc:
        raise ImportError(
            "nvImageCodec is not installed: pip install 'smart-closet[gpu-jpeg]' "
            "(nvidia-nvimgcodec-cu13 and nvidia-nvjpeg; use the -cu12 wheel with a CUDA 12 torch)"
        ) from exc
    return nvimgcodec


class NvImageCodec:
    """A batched JPEG encoder - and, where the GPU has JPEG engines, decoder - on one CUDA device."""

    def __init__(self, device: torch.device, threads: int = THREADS) -> None:
        if device.type != "cuda":
            raise ValueError(f"nvImageCodec runs on CUDA devices, not {device}")
        nv = self._nv = load()
        self.device = device
        index = device.index if device.index is not None else torch.cuda.current_device()
        opts = f":num_cuda_streams={threads}"
        # nvImageCodec files nvJPEG's CUDA codecs under HYBRID_CPU_GPU and the JPEG engines under
        # HW_GPU_ONLY; it has no GPU_ONLY JPEG codec (asking for one fails with "Code: 7"). Never
        # its CPU codecs: they would hide a slow path behind a fast name.
        self._encoder = nv.Encoder(
            device_id=index,
            max_num_cpu_threads=threads,
            backends=[nv.Backend(nv.BackendKind.HYBRID_CPU_GPU)],
            options=opts,
        )
        try:
            self._decoder = nv.Decoder(
                device_id=index,
                max_num_cpu_threads=threads,
                backends=[nv.Backend(nv.BackendKind.HW_GPU_ONLY)],
                options=opts,
            )
        except RuntimeError as exc:  # no JPEG engines on this GPU
            log.info("no hardware JPEG decoder on %s (%s): torchvision decodes", device, exc)
            self._decoder = None
        self._decode_params = nv.DecodeParams(
            apply_exif_orientation=False,  # a camera frame has none; a phone photo goes through the closet
            color_spec=nv.ColorSpec.SRGB,
            sample_format=nv.SampleFormat.P_RGB,
        )
        self._encode_params: dict[int, object] = {}

    @property
    def can_decode(self) -> bool:
        return self._decoder is not None

    def _stream(self) -> int:
        return torch.cuda.current_stream(self.device).cuda_stream

    def decode(self, jpegs: Sequence[bytes]) -> list[torch.Tensor | None]:
        """Per JPEG, a (3, H, W) uint8 RGB tensor on the device - None where it cannot be decoded."""
        if self._decoder is None:
            raise RuntimeError(f"no hardware JPEG decoder on {self.device}")
        nv = self._nv
        streams = [nv.CodeStream(bytes(j)) for j in jpegs]
        images = self._decoder.decode(streams, params=self._decode_params, cuda_stream=self._stream())
        out: list[torch.Tensor | None] = []
        for img in images:
            if img is None:
                out.append(None)
                continue
            t = torch.from_dlpack(img)  # waits on the decoder's stream from the current one
            out.append(t if t.shape[0] == 3 else t.permute(2, 0, 1))
        return out

    def encode(self, images: Sequence[torch.Tensor], quality: int) -> list[bytes]:
        """(3, H, W) uint8 RGB tensors on the device -> JPEG bytes (4:2:0), in one call."""
        nv = self._nv
        stream = self._stream()
        wrapped = [nv.as_image(img.contiguous(), stream, sample_format=nv.SampleFormat.P_RGB) for img in images]
        coded = self._encoder.encode(wrapped, ".jpg", params=self._params(int(quality)), cuda_stream=stream)
        if any(cs is None for cs in coded):
            raise RuntimeError(f"nvImageCodec could not encode a batch of {len(images)} frame(s)")
        return [bytes(cs) for cs in coded]

    def _params(self, quality: int):
        p = self._encode_params.get(quality)
        if p is None:
            nv = self._nv
            p = self._encode_params[quality] = nv.EncodeParams(
                quality_type=nv.QualityType.QUALITY,
                quality_value=float(quality),
                chroma_subsampling=nv.ChromaSubsampling.CSS_420,  # what the CPU path and the page use
            )
        return p
