"""RTMDet-nano person detector in plain PyTorch, loadable from MMPose's released checkpoint.

Built to match ``projects/rtmpose/rtmdet/person/rtmdet_nano_320-8xb32_coco-person.py`` (MMPose),
which inherits ``mmdet::rtmdet/rtmdet_l_8xb32-300e_coco.py``:

* backbone ``CSPNeXt`` P5, deepen 0.33, widen 0.25, ``use_depthwise=True``, channel attention,
  ``out_indices=(2, 3, 4)`` -> 64/128/256 channels at strides 8/16/32. ``use_depthwise`` makes the
  stride-2 conv of each stage and the first 3x3 conv of every ``CSPNeXtBlock`` depthwise-separable
  (the stem stays plain convs; the 5x5 conv of the block is depthwise-separable either way).
* neck ``CSPNeXtPAFPN`` in (64, 128, 256), out 64, one block per CSP layer. As released in
  mmdet 3.x, ``use_depthwise`` reaches the CSP layers' blocks, the two bottom-up ``downsamples``
  and the three ``out_convs`` (the 1x1 ``reduce_layers`` stay plain); the neck's CSP layers have
  no channel attention (mmdet does not pass that flag there).
* head ``RTMDetSepBNHead``: 1 class, 64 channels, 2 stacked convs per branch, ``use_depthwise=True``
  and ``share_conv=False`` in this config (so nothing is shared between levels: each level has its
  own depthwise-separable convs, BNs and 1x1 predictors), ``exp_on_reg=False``,
  ``with_objectness=False``; the regression output is a distance (l, t, r, b) times the stride.
* every BatchNorm is ``SyncBN`` with PyTorch defaults (eps 1e-5), SiLU activations.
* input: BGR (``bgr_to_rgb=False``), mean (103.53, 116.28, 123.675), std (57.375, 57.12, 58.395);
  test pipeline ``Resize(320, keep_ratio=True)`` then ``Pad`` to 320x320 with 114 (bottom/right).
* priors: ``MlvlPointGenerator(offset=0)``, i.e. (x * stride, y * stride); boxes by
  ``distance2bbox``, clipped to the padded input; scores are sigmoids; NMS IoU 0.6.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rtmpose.model import ConvBNAct, CSPLayer, CSPNeXt, DWSepConv

__all__ = [
    "INPUT_SIZE",
    "MEAN_BGR",
    "STD_BGR",
    "STRIDES",
    "RTMDet",
    "RTMDetDetector",
    "build_rtmdet_nano",
    "decode",
    "grid_priors",
    "letterbox",
    "nms",
    "unletterbox",
]

INPUT_SIZE = 320
STRIDES = (8, 16, 32)
PAD_VALUE = 114.0
# DetDataPreprocessor of the RTMDet configs: BGR order (bgr_to_rgb=False).
MEAN_BGR = (103.53, 116.28, 123.675)
STD_BGR = (57.375, 57.12, 58.395)

_NORM = (1e-5, 0.1)  # SyncBN -> PyTorch BatchNorm defaults


def _sep(cin: int, cout: int, k: int, stride: int = 1) -> DWSepConv:
    return DWSepConv(cin, cout, k, _NORM, stride=stride)


def _csp(cin: int, cout: int, num_blocks: int) -> CSPLayer:
    """The neck's CSP layers: separable blocks, no residual, no channel attention."""
    return CSPLayer(cin, num_blocks, False, _NORM, cout=cout, depthwise=True, attention=False)


class PAFPN(nn.Module):
    """``CSPNeXtPAFPN`` with ``use_depthwise=True``: separable blocks, downsamples and output convs."""

    def __init__(self, in_channels: Sequence[int] = (64, 128, 256), out_channels: int = 64, num_blocks: int = 1):
        super().__init__()
        c = list(in_channels)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.reduce_layers = nn.ModuleList()
        self.top_down_blocks = nn.ModuleList()
        for idx in range(len(c) - 1, 0, -1):
            self.reduce_layers.append(ConvBNAct(c[idx], c[idx - 1], 1, norm=_NORM))
            self.top_down_blocks.append(_csp(2 * c[idx - 1], c[idx - 1], num_blocks))
        self.downsamples = nn.ModuleList()
        self.bottom_up_blocks = nn.ModuleList()
        for idx in range(len(c) - 1):
            self.downsamples.append(_sep(c[idx], c[idx], 3, stride=2))
            self.bottom_up_blocks.append(_csp(2 * c[idx], c[idx + 1], num_blocks))
        self.out_convs = nn.ModuleList(_sep(ci, out_channels, 3) for ci in c)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        n = len(feats)
        inner = [feats[-1]]
        for j, idx in enumerate(range(n - 1, 0, -1)):
            high = self.reduce_layers[j](inner[0])
            inner[0] = high
            inner.insert(0, self.top_down_blocks[j](torch.cat((self.upsample(high), feats[idx - 1]), 1)))
        outs = [inner[0]]
        for idx in range(n - 1):
            outs.append(self.bottom_up_blocks[idx](torch.cat((self.downsamples[idx](outs[-1]), inner[idx + 1]), 1)))
        return [conv(o) for conv, o in zip(self.out_convs, outs)]


class SepBNHead(nn.Module):
    """``RTMDetSepBNHead`` as configured: per-level separable conv towers and 1x1 predictors."""

    def __init__(
        self,
        num_classes: int = 1,
        in_channels: int = 64,
        feat_channels: int = 64,
        stacked_convs: int = 2,
        strides: Sequence[int] = STRIDES,
    ) -> None:
        super().__init__()
        self.strides = tuple(strides)

        def tower() -> nn.ModuleList:
            return nn.ModuleList(
                _sep(in_channels if i == 0 else feat_channels, feat_channels, 3) for i in range(stacked_convs)
            )

        self.cls_convs = nn.ModuleList(tower() for _ in self.strides)
        self.reg_convs = nn.ModuleList(tower() for _ in self.strides)
        self.rtm_cls = nn.ModuleList(nn.Conv2d(feat_channels, num_classes, 1) for _ in self.strides)
        self.rtm_reg = nn.ModuleList(nn.Conv2d(feat_channels, 4, 1) for _ in self.strides)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        cls_out, reg_out = [], []
        for lvl, (x, stride) in enumerate(zip(feats, self.strides)):
            c = x
            for layer in self.cls_convs[lvl]:
                c = layer(c)
            r = x
            for layer in self.reg_convs[lvl]:
                r = layer(r)
            cls_out.append(self.rtm_cls[lvl](c))
            reg_out.append(self.rtm_reg[lvl](r) * stride)  # exp_on_reg=False
        return cls_out, reg_out


class RTMDet(nn.Module):
    """Normalised BGR (N, 3, H, W) -> per-level class logits (N, C, h, w) and distances (N, 4, h, w) in pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = CSPNeXt(0.33, 0.25, _NORM, depthwise=True, out_indices=(2, 3, 4))
        self.neck = PAFPN(self.backbone.out_channels_per_stage, 64, 1)
        self.bbox_head = SepBNHead(1, 64, 64, 2, STRIDES)

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        return self.bbox_head(self.neck(self.backbone(x)))


def build_rtmdet_nano() -> RTMDet:
    """RTMDet-nano person detector with MMDet's parameter names (random weights)."""
    return RTMDet()


def grid_priors(sizes: Sequence[tuple[int, int]], strides: Sequence[int] = STRIDES, device=None) -> Tensor:
    """(sum h*w, 3) points (x, y, stride), row-major per level, offset 0 as ``MlvlPointGenerator``."""
    out = []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid(
            torch.arange(h, device=device, dtype=torch.float32) * s,
            torch.arange(w, device=device, dtype=torch.float32) * s,
            indexing="ij",
        )
        out.append(torch.stack((xs.reshape(-1), ys.reshape(-1), torch.full((h * w,), float(s), device=device)), 1))
    return torch.cat(out)


def decode(
    cls_maps: Sequence[Tensor],
    reg_maps: Sequence[Tensor],
    strides: Sequence[int] = STRIDES,
    max_shape: tuple[int, int] | None = (INPUT_SIZE, INPUT_SIZE),
) -> tuple[Tensor, Tensor]:
    """Boxes (B, P, 4) xyxy and sigmoid scores (B, P, C) from one image batch's head outputs.

    ``reg_maps`` are distances (left, top, right, bottom) in input pixels, as the head returns them;
    ``max_shape`` (h, w) clips boxes like ``distance2bbox`` does (None: no clipping).
    """
    b = cls_maps[0].shape[0]
    priors = grid_priors([tuple(m.shape[-2:]) for m in cls_maps], strides, cls_maps[0].device)
    scores = torch.cat([m.permute(0, 2, 3, 1).reshape(b, -1, m.shape[1]) for m in cls_maps], 1).sigmoid()
    dist = torch.cat([m.permute(0, 2, 3, 1).reshape(b, -1, 4) for m in reg_maps], 1).float()
    px, py = priors[:, 0], priors[:, 1]
    boxes = torch.stack((px - dist[..., 0], py - dist[..., 1], px + dist[..., 2], py + dist[..., 3]), -1)
    if max_shape is not None:
        h, w = max_shape
        boxes = torch.stack(
            (
                boxes[..., 0].clamp(0, w),
                boxes[..., 1].clamp(0, h),
                boxes[..., 2].clamp(0, w),
                boxes[..., 3].clamp(0, h),
            ),
            -1,
        )
    return boxes, scores


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of xyxy boxes (N, 4) x (M, 4) -> (N, M)."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / union.clamp(min=1e-12)


def nms(boxes: Tensor, scores: Tensor, iou: float) -> Tensor:
    """Greedy NMS: indices of kept boxes, highest score first (drops overlaps with IoU > ``iou``)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    over = (box_iou(boxes[order], boxes[order]) > iou).cpu()
    n = len(order)
    suppressed = torch.zeros(n, dtype=torch.bool)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


def letterbox(image: np.ndarray, size: int = INPUT_SIZE) -> tuple[Tensor, tuple[float, float]]:
    """MMDet test pipeline on an RGB uint8 image: keep-ratio resize, pad to ``size`` with 114, BGR,
    normalise. Returns (1, 3, size, size) float32 and the (w, h) scale factors to undo it."""
    h, w = image.shape[:2]
    ratio = min(size / h, size / w)  # mmcv.imrescale with scale (size, size)
    nw, nh = int(w * ratio + 0.5), int(h * ratio + 0.5)
    x = torch.from_numpy(np.ascontiguousarray(image[..., ::-1])).permute(2, 0, 1)[None].float()  # RGB -> BGR
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)  # cv2 INTER_LINEAR
        x = x.clamp(0, 255).round()  # cv2 returns uint8
    x = F.pad(x, (0, size - nw, 0, size - nh), value=PAD_VALUE)
    mean = torch.tensor(MEAN_BGR).view(1, 3, 1, 1)
    std = torch.tensor(STD_BGR).view(1, 3, 1, 1)
    return (x - mean) / std, (nw / w, nh / h)


def unletterbox(boxes: np.ndarray, scale: tuple[float, float], shape: tuple[int, int] | None = None) -> np.ndarray:
    """Map xyxy boxes from the padded input back to the image (divide by the scale; clip to (h, w))."""
    sx, sy = scale
    out = np.asarray(boxes, np.float32).reshape(-1, 4) / np.array([sx, sy, sx, sy], np.float32)
    if shape is not None:
        h, w = shape
        out[:, 0::2] = out[:, 0::2].clip(0, w)
        out[:, 1::2] = out[:, 1::2].clip(0, h)
    return out


def _strip_checkpoint(state: dict) -> dict:
    """Drop what is not network weights (data-preprocessor buffers), if a checkpoint carries any."""
    return {k: v for k, v in state.items() if not k.startswith("data_preprocessor.")}


class RTMDetDetector:
    """Person boxes from RTMDet-nano: ``detect(rgb) -> (N, 4) float32 xyxy``, best first."""

    name = "rtmdet-nano"

    def __init__(
        self,
        weights: str | Path | None = "rtmdet-nano-person",
        device: str = "cpu",
        score_thr: float = 0.3,
        max_people: int = 8,
        nms_iou: float = 0.6,
        nms_pre: int = 1000,
    ) -> None:
        self.device = torch.device(device)
        self.score_thr = score_thr
        self.max_people = max_people
        self.nms_iou = nms_iou
        self.nms_pre = nms_pre
        model = build_rtmdet_nano()
        if weights is not None:
            from . import weights as W

            # a declared name (verified cache entry), else a checkpoint file path
            is_file = Path(weights).is_file()
            source = Path(weights) if is_file else W.get(str(weights))
            model.load_state_dict(_strip_checkpoint(W.load_state_dict(source)), strict=True)
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> np.ndarray:
        """Person boxes in image pixels, sorted by score (at most ``max_people``)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
        x, scale = letterbox(image)
        cls_maps, reg_maps = self.model(x.to(self.device))
        boxes, scores = decode(cls_maps, reg_maps)
        boxes, scores = boxes[0], scores[0, :, 0]
        keep = scores > self.score_thr
        boxes, scores = boxes[keep], scores[keep]
        if len(scores) > self.nms_pre:
            scores, top = scores.topk(self.nms_pre)
            boxes = boxes[top]
        wh = boxes[:, 2:] - boxes[:, :2]
        valid = (wh > 0).all(1)  # min_bbox_size=0
        boxes, scores = boxes[valid], scores[valid]
        kept = nms(boxes, scores, self.nms_iou)[: self.max_people]
        return unletterbox(boxes[kept].float().cpu().numpy(), scale, image.shape[:2])
