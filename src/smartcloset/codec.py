"""JPEG in and out, with limits checked before any pixel is decoded.

simplejpeg (libjpeg-turbo) because it releases the GIL, decodes straight to BGR/RGB, and can
decode at 1/2, 1/4, 1/8 scale in the IDCT - the pose worker's 640x360 costs a fraction of a
full 1280x720 decode. Encoding uses 4:2:0 chroma (simplejpeg's 4:4:4 default is ~26 % bigger).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg


class ImageError(ValueError):
    """An image we refuse; ``code`` goes back to the client in the error message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 4 * 1024 * 1024
    max_width: int = 3840
    max_height: int = 2160
    max_pixels: int = 3840 * 2160


DEFAULT_LIMITS = ImageLimits()


def jpeg_size(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> tuple[int, int]:
    """(width, height) from the JPEG header, after the byte and pixel limits are checked."""
    if not data:
        raise ImageError("empty_frame", "image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageError("too_large", f"image of {len(data)} bytes is over the {limits.max_bytes}-byte limit")
    if data[:3] != b"\xff\xd8\xff":
        raise ImageError("not_jpeg", "not a JPEG image (no SOI marker)")
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as exc:
        raise ImageError("bad_jpeg", f"unreadable JPEG header: {exc}") from None
    if width <= 0 or height <= 0:
        raise ImageError("bad_jpeg", f"JPEG has an empty size {width}x{height}")
    if width > limits.max_width or height > limits.max_height or width * height > limits.max_pixels:
        raise ImageError(
            "too_many_pixels", f"image {width}x{height} is over the {limits.max_width}x{limits.max_height} limit"
        )
    return width, height


def decode(data: bytes, colorspace: str = "BGR", limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Full-size decode; truncated or corrupt data raises ImageError (strict mode)."""
    jpeg_size(data, limits)
    try:
        return simplejpeg.decode_jpeg(data, colorspace=colorspace, strict=True)
    except ValueError as exc:
        raise ImageError("bad_jpeg", f"corrupt or truncated JPEG: {exc}") from None


def fit_size(width: int, height: int, box: tuple[int, int]) -> tuple[int, int]:
    """The largest size with the image's aspect that fits in ``box`` (never upscales)."""
    s = min(box[0] / width, box[1] / height, 1.0)
    return max(1, round(width * s)), max(1, round(height * s))


def decode_scaled(
    data: bytes, box: tuple[int, int], colorspace: str = "RGB", limits: ImageLimits = DEFAULT_LIMITS
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode to fit ``box`` (w, h), scaling in the IDCT where possible; returns (image, full size)."""
    width, height = jpeg_size(data, limits)
    tw, th = fit_size(width, height, box)
    try:
        # libjpeg-turbo picks the smallest n/8 scale that is still >= the minimum size asked.
        img = simplejpeg.decode_jpeg(data, colorspace=colorspace, strict=True, min_width=tw, min_height=th)
    except ValueError as exc:
        raise ImageError("bad_jpeg", f"corrupt or truncated JPEG: {exc}") from None
    if img.shape[1] != tw or img.shape[0] != th:
        img = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
    return img, (width, height)


def encode(image: np.ndarray, quality: int = 80, colorspace: str = "BGR") -> bytes:
    return simplejpeg.encode_jpeg(
        np.ascontiguousarray(image), quality=quality, colorspace=colorspace, colorsubsampling="420"
    )
