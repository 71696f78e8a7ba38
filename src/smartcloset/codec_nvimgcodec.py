"""JPEG for a batch on a CUDA device through NVIDIA's nvImageCodec (the optional ``gpu-jpeg`` extra).

Why it exists beside torchvision's nvJPEG: with many clients the host CPU limits the engine,
not the GPU. torchvision decodes with nvJPEG's hybrid backend (Huffman decoding on the host)
and encodes frame by frame with a host sync each. nvImageCodec decodes a whole batch on the
GPU - on the hardware JPEG engines of an A100/H100/H200 where they exist, else in CUDA - and
encodes a batch per call. ``bench/gpu_jpeg.py`` measures the two side by side.

Images stay planar (3, H, W) uint8 RGB torch tensors on the device, as the renderer takes them;
they cross into and out of nvImageCodec without copies (DLPack / CUDA array interface), on the
calling thread's current CUDA stream. A decoder and an encoder hold GPU state, so the engine
keeps one ``NvImageCodec`` per batch thread.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

log = logging.getLogger(__name__)

# "hw": the hardware JPEG engines only; "hybrid": nvJPEG's CUDA decoder (nvImageCodec files it
# under HYBRID_CPU_GPU - there is no GPU_ONLY JPEG decoder or encoder, asking for one fails with
# "Code: 7"); "auto": both, the library spreading a batch between them. Never its CPU codecs: a
# frame the GPU cannot decode goes to our host decoder, which checks the limits and says why.
DECODE_BACKENDS = ("auto", "hw", "hybrid")


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
    """A batched JPEG decoder and encoder bound to one CUDA device."""

    def __init__(self, device: torch.device, decode_backend: str = "auto", threads: int = 2) -> None:
        if device.type != "cuda":
            raise ValueError(f"nvImageCodec runs on CUDA devices, not {device}")
        if decode_backend not in DECODE_BACKENDS:
            raise ValueError(f"decode_backend must be one of {DECODE_BACKENDS}, got {decode_backend!r}")
        nv = self._nv = load()
        self.device = device
        index = device.index if device.index is not None else torch.cuda.current_device()
        hw, hybrid = nv.BackendKind.HW_GPU_ONLY, nv.BackendKind.HYBRID_CPU_GPU
        kinds = {"hw": [hw], "hybrid": [hybrid], "auto": [hw, hybrid]}[decode_backend]
        # Each instance would start a thread per core and 15 CUDA streams; the engine has a few
        # batch threads per process, each with its own instance, and a batch is one call.
        opts = f":num_cuda_streams={threads}"
        self._decoder = nv.Decoder(
            device_id=index, max_num_cpu_threads=threads, backends=[nv.Backend(k) for k in kinds], options=opts
        )
        # nvJPEG's CUDA encoder only (no CPU fallback hiding a slow path behind a fast name).
        self._encoder = nv.Encoder(
            device_id=index, max_num_cpu_threads=threads, backends=[nv.Backend(hybrid)], options=opts
        )
        self._decode_params = nv.DecodeParams(
            apply_exif_orientation=False,  # a camera frame has none; a phone photo goes through the closet
            color_spec=nv.ColorSpec.SRGB,
            sample_format=nv.SampleFormat.P_RGB,
        )
        self._encode_params: dict[int, object] = {}
        self.decode_backend = decode_backend

    def _stream(self) -> int:
        return torch.cuda.current_stream(self.device).cuda_stream

    def decode(self, jpegs: Sequence[bytes]) -> list[torch.Tensor | None]:
        """Per JPEG, a (3, H, W) uint8 RGB tensor on the device - None where it cannot be decoded."""
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

    def encode(self, images: Sequence[torch.Tensor], qualities: Sequence[int]) -> list[bytes]:
        """(3, H, W) uint8 RGB tensors on the device -> JPEG bytes (4:2:0), one call per quality."""
        nv = self._nv
        stream = self._stream()
        out: list[bytes | None] = [None] * len(images)
        for q in sorted(set(qualities)):
            idx = [i for i, qq in enumerate(qualities) if qq == q]
            wrapped = [nv.as_image(images[i].contiguous(), stream, sample_format=nv.SampleFormat.P_RGB) for i in idx]
            coded = self._encoder.encode(wrapped, ".jpg", params=self._params(int(q)), cuda_stream=stream)
            for i, cs in zip(idx, coded):
                if cs is None:
                    raise RuntimeError(f"nvImageCodec could not encode a {tuple(images[i].shape)} frame")
                out[i] = bytes(cs)
        return out  # type: ignore[return-value]

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
