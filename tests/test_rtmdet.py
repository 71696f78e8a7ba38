"""RTMDet-nano person detector: MMDet-compatible names/shapes, decoding, NMS, letterbox."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from smartcloset.pose.rtmdet import (  # noqa: E402
    INPUT_SIZE,
    RTMDetDetector,
    build_rtmdet_nano,
    decode,
    letterbox,
    nms,
    unletterbox,
)


@pytest.fixture(scope="module")
def model():
    return build_rtmdet_nano().eval()


def test_state_dict_prefixes(model):
    keys = model.state_dict().keys()
    tops = {k.split(".")[0] for k in keys}
    assert tops == {"backbone", "neck", "bbox_head"}
    seconds = {".".join(k.split(".")[:2]) for k in keys}
    assert {f"backbone.{n}" for n in ("stem", "stage1", "stage2", "stage3", "stage4")} <= seconds
    assert {
        "neck.reduce_layers",
        "neck.top_down_blocks",
        "neck.downsamples",
        "neck.bottom_up_blocks",
        "neck.out_convs",
        "bbox_head.cls_convs",
        "bbox_head.reg_convs",
        "bbox_head.rtm_cls",
        "bbox_head.rtm_reg",
    } == {s for s in seconds if not s.startswith("backbone")}
    assert not any(k.startswith("bbox_head.scales") or "rtm_obj" in k for k in keys)


# Names and shapes worked out from mmdet's CSPNeXt / CSPNeXtPAFPN / CSPLayer / RTMDetSepBNHead
# sources with the rtmdet_nano_320-8xb32_coco-person config (widen 0.25, deepen 0.33, depthwise).
EXPECTED = {
    "backbone.stem.0.conv.weight": (8, 3, 3, 3),
    "backbone.stem.2.conv.weight": (16, 8, 3, 3),
    "backbone.stage1.0.depthwise_conv.conv.weight": (16, 1, 3, 3),
    "backbone.stage1.0.pointwise_conv.conv.weight": (32, 16, 1, 1),
    "backbone.stage1.1.blocks.0.conv1.depthwise_conv.conv.weight": (16, 1, 3, 3),
    "backbone.stage1.1.blocks.0.conv2.depthwise_conv.conv.weight": (16, 1, 5, 5),
    "backbone.stage1.1.attention.fc.weight": (32, 32, 1, 1),
    "backbone.stage2.1.blocks.1.conv2.pointwise_conv.conv.weight": (32, 32, 1, 1),
    "backbone.stage3.1.final_conv.bn.running_var": (128,),
    "backbone.stage4.1.conv1.conv.weight": (128, 256, 1, 1),
    "backbone.stage4.1.conv2.conv.weight": (256, 512, 1, 1),
    "backbone.stage4.2.main_conv.conv.weight": (128, 256, 1, 1),
    "backbone.stage4.2.attention.fc.bias": (256,),
    "neck.reduce_layers.0.conv.weight": (128, 256, 1, 1),
    "neck.reduce_layers.1.conv.weight": (64, 128, 1, 1),
    "neck.top_down_blocks.0.main_conv.conv.weight": (64, 256, 1, 1),
    "neck.top_down_blocks.1.blocks.0.conv1.depthwise_conv.conv.weight": (32, 1, 3, 3),
    "neck.downsamples.1.depthwise_conv.conv.weight": (128, 1, 3, 3),
    "neck.bottom_up_blocks.1.final_conv.conv.weight": (256, 256, 1, 1),
    "neck.out_convs.2.depthwise_conv.conv.weight": (256, 1, 3, 3),
    "neck.out_convs.2.pointwise_conv.conv.weight": (64, 256, 1, 1),
    "bbox_head.cls_convs.0.0.depthwise_conv.conv.weight": (64, 1, 3, 3),
    "bbox_head.cls_convs.2.1.pointwise_conv.bn.num_batches_tracked": (),
    "bbox_head.reg_convs.1.1.pointwise_conv.conv.weight": (64, 64, 1, 1),
    "bbox_head.rtm_cls.0.weight": (1, 64, 1, 1),
    "bbox_head.rtm_cls.2.bias": (1,),
    "bbox_head.rtm_reg.1.weight": (4, 64, 1, 1),
}


def test_exact_keys_and_shapes(model):
    sd = model.state_dict()
    for key, shape in EXPECTED.items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    assert "neck.top_down_blocks.0.attention.fc.weight" not in sd  # no channel attention in the neck
    assert "bbox_head.cls_convs.0.0.conv.weight" not in sd  # use_depthwise head, share_conv=False
    assert len(sd) == 698


def test_bn_eps_is_syncbn_default(model):
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-5 for m in bns)


def test_param_count(model):
    # MMPose's RTMPose README lists RTMDet-nano at 0.99 M params / 0.31 GFLOPs.
    assert sum(p.numel() for p in model.parameters()) == 994_423


def test_output_shapes(model):
    with torch.no_grad():
        cls, reg = model(torch.zeros(2, 3, INPUT_SIZE, INPUT_SIZE))
    assert [tuple(c.shape) for c in cls] == [(2, 1, 40, 40), (2, 1, 20, 20), (2, 1, 10, 10)]
    assert [tuple(r.shape) for r in reg] == [(2, 4, 40, 40), (2, 4, 20, 20), (2, 4, 10, 10)]


def test_decode_hand_made_maps():
    sizes = [(40, 40), (20, 20), (10, 10)]
    cls = [torch.full((1, 1, h, w), -20.0) for h, w in sizes]
    reg = [torch.zeros(1, 4, h, w) for h, w in sizes]
    cls[1][0, 0, 5, 3] = 2.0  # stride 16: prior at (48, 80), offset 0
    reg[1][0, :, 5, 3] = torch.tensor([10.0, 20.0, 30.0, 40.0])
    cls[0][0, 0, 0, 0] = 0.0  # stride 8: prior at (0, 0) -> clipped at the border
    reg[0][0, :, 0, 0] = torch.tensor([5.0, 5.0, 5.0, 5.0])
    boxes, scores = decode(cls, reg)
    assert boxes.shape == (1, 1600 + 400 + 100, 4) and scores.shape == (1, 2100, 1)
    i = 1600 + 5 * 20 + 3
    assert torch.allclose(boxes[0, i], torch.tensor([38.0, 60.0, 78.0, 120.0]))
    assert scores[0, i, 0] == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-6)
    assert torch.allclose(boxes[0, 0], torch.tensor([0.0, 0.0, 5.0, 5.0]))
    assert scores[0, 0, 0] == pytest.approx(0.5)
    j = 2100 - 1  # last prior at stride 32: (288, 288); clipped to 320
    reg[2][0, :, 9, 9] = torch.tensor([8.0, 8.0, 100.0, 100.0])
    boxes, _ = decode(cls, reg)
    assert torch.allclose(boxes[0, j], torch.tensor([280.0, 280.0, 320.0, 320.0]))
    boxes, _ = decode(cls, reg, max_shape=None)
    assert torch.allclose(boxes[0, j], torch.tensor([280.0, 280.0, 388.0, 388.0]))


def _nms_numpy(boxes: np.ndarray, scores: np.ndarray, thr: float) -> list[int]:
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = []
        for j in order:
            xx1, yy1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            xx2, yy2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = max(xx2 - xx1, 0) * max(yy2 - yy1, 0)
            area_i = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
            area_j = (boxes[j, 2] - boxes[j, 0]) * (boxes[j, 3] - boxes[j, 1])
            if inter / (area_i + area_j - inter) <= thr:
                rest.append(j)
        order = rest
    return keep


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("thr", [0.3, 0.6])
def test_nms_matches_numpy(seed, thr):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 200, (60, 2))
    wh = rng.uniform(10, 80, (60, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.uniform(0, 1, 60).astype(np.float32)
    got = nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).tolist()
    assert got == _nms_numpy(boxes.astype(np.float64), scores, thr)


def test_nms_empty():
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).numel() == 0


@pytest.mark.parametrize("shape", [(480, 640), (640, 360), (320, 320), (100, 50)])
def test_letterbox_round_trip(shape):
    h, w = shape
    image = np.full((h, w, 3), 200, np.uint8)
    x, (sx, sy) = letterbox(image)
    assert x.shape == (1, 3, INPUT_SIZE, INPUT_SIZE) and x.dtype == torch.float32
    ratio = min(INPUT_SIZE / h, INPUT_SIZE / w)
    nw, nh = int(w * ratio + 0.5), int(h * ratio + 0.5)
    assert (sx, sy) == (nw / w, nh / h)
    # content region keeps the image value, the rest is the 114 pad (checked after un-normalising)
    mean = torch.tensor([103.53, 116.28, 123.675]).view(1, 3, 1, 1)
    std = torch.tensor([57.375, 57.12, 58.395]).view(1, 3, 1, 1)
    raw = x * std + mean
    assert torch.allclose(raw[..., :nh, :nw], torch.tensor(200.0), atol=1e-3)
    if nw < INPUT_SIZE:
        assert torch.allclose(raw[..., nw:], torch.tensor(114.0), atol=1e-3)
    if nh < INPUT_SIZE:
        assert torch.allclose(raw[..., nh:, :], torch.tensor(114.0), atol=1e-3)
    box = np.array([[0.1 * w, 0.2 * h, 0.7 * w, 0.9 * h]], np.float32)
    in_input = box * np.array([sx, sy, sx, sy], np.float32)
    assert np.allclose(unletterbox(in_input, (sx, sy), shape), box, atol=1e-3)


def test_letterbox_is_bgr():
    image = np.zeros((32, 32, 3), np.uint8)
    image[..., 0] = 255  # pure red in RGB
    x, _ = letterbox(image)
    raw = x[0, :, 0, 0] * torch.tensor([57.375, 57.12, 58.395]) + torch.tensor([103.53, 116.28, 123.675])
    assert torch.allclose(raw, torch.tensor([0.0, 0.0, 255.0]), atol=1e-3)  # red lands in channel 2


def test_detector_random_weights():
    det = RTMDetDetector(weights=None, score_thr=0.0, max_people=5)
    assert det.name == "rtmdet-nano"
    rng = np.random.default_rng(0)
    boxes = det.detect(rng.integers(0, 256, (240, 400, 3), dtype=np.uint8))
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert len(boxes) <= 5
    if len(boxes):
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 400).all()
        assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= 240).all()
    default = RTMDetDetector(weights=None).detect(np.zeros((100, 100, 3), np.uint8))
    assert default.dtype == np.float32 and default.shape[1:] == (4,)
