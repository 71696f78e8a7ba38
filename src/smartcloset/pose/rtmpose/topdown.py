"""Top-down pre- and post-processing exactly as MMPose does it for RTMPose, batched in torch.

box -> centre and scale (padding 1.25, the aspect ratio fixed to the model's) -> an affine crop
of every box of every frame in one ``grid_sample`` on the device (equal to OpenCV's
``warpAffine`` with bilinear sampling and a zero border, within interpolation error) -> RGB
normalised with MMPose's mean/std; SimCC logits -> argmax at split ratio 2.0, score = the smaller
of the x and y maxima (MMPose's ``get_simcc_maximum``) -> keypoints back in image pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..weights import MEAN, STD

PADDING = 1.25
SPLIT_RATIO = 2.0


def box_to_center_scale(
    boxes: np.ndarray, input_size: tuple[int, int], padding: float = PADDING
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) xyxy boxes -> centres (N, 2) and scales (N, 2) with the model's aspect (w / h)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    center = (boxes[:, :2] + boxes[:, 2:]) / 2
    scale = (boxes[:, 2:] - boxes[:, :2]) * padding
    aspect = input_size[0] / input_size[1]
    w, h = scale[:, 0], scale[:, 1]
    wider = w > h * aspect
    scale = np.stack([np.where(wider, w, h * aspect), np.where(wider, w / aspect, h)], axis=1)
    return center, scale


def crop_matrices(center: np.ndarray, scale: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """(N, 2, 3) affine matrices taking image pixels to crop pixels (as cv2.warpAffine's M)."""
    s = np.asarray(input_size, np.float32)[None] / scale  # crop pixels per image pixel (x, y)
    m = np.zeros((len(center), 2, 3), np.float32)
    m[:, 0, 0], m[:, 1, 1] = s[:, 0], s[:, 1]
    m[:, :, 2] = np.asarray(input_size, np.float32)[None] / 2 - center * s
    return m


def crop_thetas(
    center: np.ndarray, scale: np.ndarray, input_size: tuple[int, int], frame_shape: tuple[int, int]
) -> np.ndarray:
    """(N, 2, 3) ``affine_grid`` matrices for the crops, built on the host in one go.

    Crop pixel x maps to image x = cx + (x + 0.5 - w/2) * sw / w - 0.5 (pixel centres), which in
    grid_sample's normalised coordinates (align_corners=False) is an affine map of the output's.
    """
    H, W = frame_shape
    w, h = input_size
    c = np.asarray(center, np.float32).reshape(-1, 2)
    sc = np.asarray(scale, np.float32).reshape(-1, 2)
    theta = np.zeros((len(c), 2, 3), np.float32)
    theta[:, 0, 0] = sc[:, 0] / W
    theta[:, 1, 1] = sc[:, 1] / H
    theta[:, 0, 2] = 2 * c[:, 0] / W - 1 + 1.0 / W - sc[:, 0] / (w * W)
    theta[:, 1, 2] = 2 * c[:, 1] / H - 1 + 1.0 / H - sc[:, 1] / (h * H)
    return theta


def crop(
    images: torch.Tensor, image_index: torch.Tensor, center: np.ndarray, scale: np.ndarray, input_size: tuple[int, int]
) -> torch.Tensor:
    """Crops (N, 3, h, w), normalised, of RGB uint8 ``images`` (B, 3, H, W) on their device.

    ``image_index`` (N,) says which image each box comes from: one call crops every person of
    every frame of a batch.
    """
    _, _, H, W = images.shape
    w, h = input_size
    theta = torch.from_numpy(crop_thetas(center, scale, input_size, (H, W))).to(images.device)
    grid = F.affine_grid(theta, [len(theta), 3, h, w], align_corners=False)
    # Sample in half precision on a GPU (half the bytes of float; the crop is exact to 1/255 of a
    # level anyway), in float on the CPU where half is slow.
    dtype = torch.float16 if images.is_cuda else torch.float32
    src = images.index_select(0, image_index.to(images.device)).to(dtype)
    crops = F.grid_sample(src, grid.to(dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    mean = torch.tensor(MEAN, device=images.device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images.device, dtype=dtype).view(1, 3, 1, 1)
    return (crops - mean) / std


def decode(
    simcc_x: torch.Tensor, simcc_y: torch.Tensor, split_ratio: float = SPLIT_RATIO
) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCC logits -> keypoints (N, K, 2) in crop pixels and scores (N, K)."""
    max_x, x = simcc_x.float().max(dim=-1)
    max_y, y = simcc_y.float().max(dim=-1)
    scores = torch.minimum(max_x, max_y)
    kp = torch.stack([x, y], dim=-1).float() / split_ratio
    kp[scores <= 0] = -1
    return kp, scores


def to_image(keypoints: np.ndarray, center: np.ndarray, scale: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Crop-pixel keypoints (N, K, 2) back to image pixels, as MMPose maps them."""
    size = np.asarray(input_size, np.float32)
    return keypoints / size * scale[:, None] + center[:, None] - scale[:, None] / 2
