import numpy as np
import pytest

from smartcloset import codec
from smartcloset.codec import ImageError, ImageLimits


@pytest.fixture(scope="module")
def jpeg():
    img = np.zeros((720, 1280, 3), np.uint8)
    img[100:300, 200:600] = (0, 0, 255)
    return codec.encode(img, 85)


def test_decode_round_trip(jpeg):
    img = codec.decode(jpeg)
    assert img.shape == (720, 1280, 3)
    assert abs(int(img[200, 400, 2]) - 255) < 8 and img[200, 400, 0] < 10


def test_decode_scaled_uses_the_inference_box(jpeg):
    img, full = codec.decode_scaled(jpeg, (640, 360))
    assert img.shape == (360, 640, 3) and full == (1280, 720)
    img, _ = codec.decode_scaled(jpeg, (500, 500))  # aspect kept, fitted inside
    assert img.shape == (281, 500, 3)


def test_encoding_is_420(jpeg):
    import simplejpeg

    assert simplejpeg.decode_jpeg_header(jpeg)[3] == "420"


@pytest.mark.parametrize(
    "data, code",
    [(b"", "empty_frame"), (b"hello world", "not_jpeg"), (b"\xff\xd8\xff" + bytes(40), "bad_jpeg")],
)
def test_bad_bytes(data, code):
    with pytest.raises(ImageError) as err:
        codec.decode(data)
    assert err.value.code == code


def test_truncated_jpeg_is_refused(jpeg):
    with pytest.raises(ImageError) as err:
        codec.decode(jpeg[: len(jpeg) // 2])
    assert err.value.code == "bad_jpeg"


def test_limits_checked_before_decoding(jpeg):
    with pytest.raises(ImageError) as err:
        codec.decode(jpeg, limits=ImageLimits(max_bytes=100))
    assert err.value.code == "too_large"
    with pytest.raises(ImageError) as err:
        codec.jpeg_size(jpeg, ImageLimits(max_width=640, max_height=360, max_pixels=640 * 360))
    assert err.value.code == "too_many_pixels"


def test_huge_dimensions_in_a_tiny_file_are_refused(jpeg):
    # Patch the SOF0 marker to claim 60000 x 60000 pixels: a decompression bomb's header.
    data = bytearray(jpeg)
    i = data.index(b"\xff\xc0")
    data[i + 5 : i + 9] = (60000).to_bytes(2, "big") + (60000).to_bytes(2, "big")
    with pytest.raises(ImageError) as err:
        codec.jpeg_size(bytes(data))
    assert err.value.code == "too_many_pixels"


def test_a_frame_nvjpeg_refuses_but_the_host_reads_is_not_the_clients_fault(jpeg):
    """The batched path's decode: a batch nvJPEG refuses is retried frame by frame, and a frame
    it still refuses goes to the host decoder - only what that refuses too is a bad JPEG."""
    torch = pytest.importorskip("torch")
    from smartcloset import codec_gpu

    class RefusingNvjpeg:  # torchvision.io as a decoder that fails every call
        class ImageReadMode:
            RGB = "RGB"

        calls = 0

        def decode_jpeg(self, data, mode, device):
            self.calls += 1
            raise RuntimeError("nvjpeg status 6")

    io = RefusingNvjpeg()
    broken = jpeg[: len(jpeg) // 2]
    out = codec_gpu._decode_nvjpeg([jpeg, broken], torch.device("cpu"), codec.DEFAULT_LIMITS, io)
    assert io.calls == 3  # the batch, then each frame
    assert isinstance(out[0], torch.Tensor) and out[0].shape == (3, 720, 1280)
    assert torch.equal(out[0], torch.from_numpy(codec.decode(jpeg, "RGB")).permute(2, 0, 1))
    assert isinstance(out[1], ImageError) and out[1].code == "bad_jpeg"  # as the host path says


@pytest.fixture
def fresh_gpu_jpeg(monkeypatch):
    """codec_gpu decides the GPU JPEG library once per process: start each test undecided."""
    pytest.importorskip("torch")
    from smartcloset import codec_gpu

    monkeypatch.setattr(codec_gpu, "_trials", {})
    monkeypatch.setattr(codec_gpu, "_local", __import__("threading").local())
    return codec_gpu


def test_gpu_jpeg_falls_back_to_torchvision_unless_asked_for_by_name(fresh_gpu_jpeg, monkeypatch):
    import sys

    import torch

    monkeypatch.setitem(sys.modules, "nvidia.nvimgcodec", None)  # as where the extra is not installed
    cuda = torch.device("cuda")  # only a name here: nothing runs on it
    g = fresh_gpu_jpeg
    with pytest.raises(
        RuntimeError, match=r"--gpu-jpeg nvimgcodec cannot start on cuda: .*pip install 'smart-closet\[gpu-jpeg\]'"
    ):
        g.resolve_gpu_jpeg(cuda, "nvimgcodec")
    assert g.resolve_gpu_jpeg(cuda, "auto") == "torchvision"
    assert g.gpu_codec(cuda, "auto") is None
    assert g.resolve_gpu_jpeg(cuda, "torchvision") == "torchvision"
    assert g.resolve_gpu_jpeg(torch.device("cpu"), "nvimgcodec") == "torchvision"  # no GPU JPEG on a CPU
    with pytest.raises(ValueError, match="gpu_jpeg must be one of"):
        g.resolve_gpu_jpeg(cuda, "turbo")


def test_gpu_jpeg_frames_the_hardware_decoder_cannot_read_go_to_the_host(fresh_gpu_jpeg, monkeypatch, jpeg):
    """nvImageCodec answers None for a frame it cannot decode: that frame alone goes to the host
    decoder, which names what is wrong with it; the others keep their place in the batch."""
    import torch

    from smartcloset import codec_nvimgcodec

    decoded = torch.full((3, 720, 1280), 7, dtype=torch.uint8)

    class FakeCodec:  # nvImageCodec on a GPU with JPEG engines, reading only the first frame
        can_decode = True

        def __init__(self, device):
            self.batches = []

        def decode(self, jpegs):
            self.batches.append(len(jpegs))
            return [decoded] + [None] * (len(jpegs) - 1)

        def encode(self, images, quality):
            return [b"\xff\xd8" + bytes([quality]) for _ in images]

    monkeypatch.setattr(codec_nvimgcodec, "NvImageCodec", FakeCodec)
    g = fresh_gpu_jpeg
    cuda = torch.device("cuda")
    out = g.decode_batch([jpeg, b"not a jpeg", jpeg[: len(jpeg) // 2]], cuda)
    assert out[0] is decoded
    assert isinstance(out[1], ImageError) and out[1].code == "not_jpeg"
    assert isinstance(out[2], ImageError) and out[2].code == "bad_jpeg"
    assert g.gpu_codec(cuda).batches == [3]  # one call for the batch

    class OnCuda:  # encode_batch looks at the first image's device only
        device = cuda

    assert g.encode_batch([OnCuda(), OnCuda()], [80, 70]) == [b"\xff\xd8\x50", b"\xff\xd8\x46"]
    assert g.resolve_gpu_jpeg(cuda, "torchvision") == "torchvision"  # asking for torchvision still gets it


def test_nvimgcodec_on_cuda_matches_torchvision_and_writes_420(jpeg):
    """On a GPU with nvImageCodec installed: its decode matches torchvision's nvJPEG closely,
    and its encode is 4:2:0 and close to what it encoded."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (the GPU JPEG path)")
    pytest.importorskip("nvidia.nvimgcodec", reason="needs the gpu-jpeg extra (nvImageCodec)")
    from smartcloset import codec_gpu
    from smartcloset.codec_nvimgcodec import NvImageCodec

    cuda = torch.device("cuda")
    nvi = NvImageCodec(cuda)
    reference = codec_gpu.decode_batch([jpeg], cuda, gpu_jpeg="torchvision")[0]
    if nvi.can_decode:
        ours = nvi.decode([jpeg, b"not a jpeg"])
        assert ours[1] is None
        assert (ours[0].float() - reference.float()).abs().mean() < 1.0
    (out,) = nvi.encode([reference], 85)
    back = torch.from_numpy(codec.decode(out, "RGB")).permute(2, 0, 1).to(cuda).float()
    mse = (back - reference.float()).pow(2).mean()
    assert 10 * torch.log10(255**2 / mse) > 35
    sof = out.index(b"\xff\xc0")
    assert out[sof + 11] == 0x22  # luma sampled 2x2: chroma at half size both ways (4:2:0)


def test_a_batch_nvimgcodec_fails_as_a_whole_goes_to_torchvision(fresh_gpu_jpeg, monkeypatch, jpeg):
    """A failed nvImageCodec call costs no frames: torchvision decodes or encodes that batch."""
    import torch

    from smartcloset import codec_nvimgcodec

    class FailingCodec:
        can_decode = True

        def __init__(self, device):
            pass

        def decode(self, jpegs):
            raise RuntimeError("nvimgcodec: decoder lost")

        def encode(self, images, quality):
            raise RuntimeError("nvimgcodec: encoder lost")

    class Torchvision:  # torchvision.io, as far as codec_gpu uses it
        class ImageReadMode:
            RGB = "RGB"

        def decode_jpeg(self, data, mode, device):
            return [torch.full((3, 4, 4), len(d) % 251, dtype=torch.uint8) for d in data]

        def encode_jpeg(self, images, quality):
            return [torch.tensor([0xFF, 0xD8, quality], dtype=torch.uint8) for _ in images]

    monkeypatch.setattr(codec_nvimgcodec, "NvImageCodec", FailingCodec)
    monkeypatch.setattr(fresh_gpu_jpeg, "_torchvision_io", Torchvision)
    cuda = torch.device("cuda")
    out = fresh_gpu_jpeg.decode_batch([jpeg, jpeg[:-5]], cuda)
    assert [int(o[0, 0, 0]) for o in out] == [len(jpeg) % 251, (len(jpeg) - 5) % 251]

    class OnCuda:
        device = cuda

        def contiguous(self):
            return self

    assert fresh_gpu_jpeg.encode_batch([OnCuda(), OnCuda()], [80, 80]) == [b"\xff\xd8\x50", b"\xff\xd8\x50"]
