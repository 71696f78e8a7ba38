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
