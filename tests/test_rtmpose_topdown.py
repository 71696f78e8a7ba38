"""RTMPose's top-down steps against small NumPy/OpenCV references."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="PyTorch is the optional 'rtmpose' extra")

from smartcloset.pose.rtmpose.topdown import box_to_center_scale, crop, crop_matrices, decode, to_image  # noqa: E402
from smartcloset.pose.weights import MEAN, STD  # noqa: E402

SIZE = (192, 256)  # (w, h)


def test_box_to_center_scale_pads_and_fixes_the_aspect():
    center, scale = box_to_center_scale(np.array([[100, 50, 200, 450], [0, 0, 400, 100]]), SIZE)
    assert np.allclose(center, [[150, 250], [200, 50]])
    # tall box: height 400 * 1.25 = 500, width follows the 3:4 aspect; wide box: width leads
    assert np.allclose(scale, [[375, 500], [500, 500 * 4 / 3]])


def test_batched_crop_matches_warpaffine():
    rng = np.random.default_rng(0)
    images = [cv2.GaussianBlur(rng.integers(0, 256, (360, 640, 3), dtype=np.uint8), (0, 0), 2) for _ in range(2)]
    boxes = np.array([[100, 40, 260, 330], [420, 10, 700, 200], [-50, 100, 120, 380]], np.float32)  # one off the edge
    owner = np.array([0, 1, 1])
    center, scale = box_to_center_scale(boxes, SIZE)
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    got = crop(batch, torch.from_numpy(owner), center, scale, SIZE).permute(0, 2, 3, 1).numpy()
    for k, m in enumerate(crop_matrices(center, scale, SIZE)):
        ref = cv2.warpAffine(
            images[owner[k]], m, SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
        ref = (ref.astype(np.float32) - MEAN) / STD
        diff = np.abs(got[k] - ref)
        assert np.median(diff) < 0.01 and np.percentile(diff, 99) < 0.05, (k, np.median(diff), diff.max())


def test_decode_is_the_argmax_with_the_smaller_maximum_as_score():
    sx = torch.full((1, 2, 384), -1.0)
    sy = torch.full((1, 2, 512), -1.0)
    sx[0, 0, 100], sy[0, 0, 300] = 0.9, 0.7
    sx[0, 1, 10], sy[0, 1, 20] = -0.2, -0.1  # no positive evidence: MMPose marks it -1
    kp, score = decode(sx, sy)
    assert torch.allclose(kp[0, 0], torch.tensor([50.0, 150.0])) and score[0, 0].item() == pytest.approx(0.7)
    assert (kp[0, 1] == -1).all()


def test_keypoints_map_back_through_the_inverse_crop():
    center, scale = box_to_center_scale(np.array([[100, 40, 260, 330]]), SIZE)
    m = crop_matrices(center, scale, SIZE)[0]
    pts_img = np.array([[150.0, 100.0], [230.0, 300.0]])
    pts_crop = pts_img @ m[:, :2].T + m[:, 2]
    assert np.allclose(to_image(pts_crop[None], center, scale, SIZE)[0], pts_img, atol=1e-3)
