"""RTMPose (CSPNeXt backbone + RTMCC SimCC head) in plain PyTorch.

Why this exists: the official RTMPose weights are published as MMPose checkpoints, and pulling in
mmcv/mmdet/mmpose just to run one top-down model is a heavy, version-fragile dependency. This
module rebuilds the network with ``torch.nn`` only, keeping MMPose's module names (``stem``,
``stage1``..``stage4``, ``conv``/``bn`` inside conv blocks, ``depthwise_conv``/``pointwise_conv``,
``final_layer``, ``mlp``, ``gau``, ``cls_x``, ``cls_y``) so that an official checkpoint's
``state_dict`` loads with ``strict=True``.

Structure follows the MMPose RTMPose configs (``projects/rtmpose``): CSPNeXt arch P5,
``expand_ratio=0.5``, ``channel_attention=True``, SiLU, ``out_indices=(4,)``; RTMCCHead with a
7x7 final conv, a ScaleNorm + Linear token embedding and one self-attention GAU
(hidden 256, s 128, expansion 2, SiLU, no relative bias, no RoPE), SimCC split ratio 2.

BatchNorm eps: the CSPNeXt class default is ``BN(eps=1e-3, momentum=0.03)``, but every RTMPose
config overrides it with ``norm_cfg=dict(type='SyncBN')``, i.e. PyTorch's defaults
(eps 1e-5, momentum 0.1). The released weights were trained and evaluated with those, so they are
the default here; pass ``norm_eps=1e-3`` to get the class default instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SIZES", "CSPNeXt", "RTMCCHead", "RTMPose", "build_rtmpose"]

# size -> (deepen_factor, widen_factor), as in the rtmpose-{t,s,m,l} configs.
SIZES: dict[str, tuple[float, float]] = {
    "t": (0.167, 0.375),
    "s": (0.33, 0.5),
    "m": (0.67, 0.75),
    "l": (1.0, 1.0),
}

# CSPNeXt P5: (in_channels, out_channels, num_blocks, add_identity, use_spp) per stage.
_P5 = ((64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False), (512, 1024, 3, False, True))

_NormCfg = tuple[float, float]  # (eps, momentum) for every BatchNorm2d


class ConvBNAct(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> SiLU; same names as mmcv ``ConvModule``."""

    def __init__(
        self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, norm: _NormCfg = (1e-5, 0.1)
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=norm[0], momentum=norm[1])
        self.activate = nn.SiLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.activate(self.bn(self.conv(x)))


class DWSepConv(nn.Module):
    """Depthwise kxk (with stride) + pointwise 1x1, each with BN + SiLU (mmcv ``DepthwiseSeparableConvModule``)."""

    def __init__(self, cin: int, cout: int, k: int, norm: _NormCfg = (1e-5, 0.1), stride: int = 1) -> None:
        super().__init__()
        self.depthwise_conv = ConvBNAct(cin, cin, k, stride=stride, groups=cin, norm=norm)
        self.pointwise_conv = ConvBNAct(cin, cout, 1, norm=norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class ChannelAttention(nn.Module):
    """Global-average-pool -> 1x1 conv (with bias) -> hard sigmoid gate, as in mmdet's CSPLayer."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return x * F.hardsigmoid(self.fc(x.mean(dim=(2, 3), keepdim=True)))


class CSPNeXtBlock(nn.Module):
    """3x3 conv (plain, or separable with ``depthwise``) then separable 5x5, optional residual."""

    def __init__(self, channels: int, add_identity: bool, norm: _NormCfg, depthwise: bool = False) -> None:
        super().__init__()
        self.conv1: nn.Module = (
            DWSepConv(channels, channels, 3, norm) if depthwise else ConvBNAct(channels, channels, 3, norm=norm)
        )
        self.conv2 = DWSepConv(channels, channels, 5, norm)
        self.add_identity = add_identity

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class CSPLayer(nn.Module):
    """Cross-stage-partial layer: a block-stack branch and a shortcut branch, concatenated and gated.

    mmdet's ``CSPLayer`` with CSPNeXt blocks and expand ratio 0.5; ``cout`` defaults to ``cin``.
    """

    def __init__(
        self,
        channels: int,
        num_blocks: int,
        add_identity: bool,
        norm: _NormCfg,
        cout: int | None = None,
        depthwise: bool = False,
        attention: bool = True,
    ) -> None:
        super().__init__()
        cout = channels if cout is None else cout
        mid = int(cout * 0.5)  # expand_ratio
        self.main_conv = ConvBNAct(channels, mid, 1, norm=norm)
        self.short_conv = ConvBNAct(channels, mid, 1, norm=norm)
        self.final_conv = ConvBNAct(2 * mid, cout, 1, norm=norm)
        self.blocks = nn.Sequential(*(CSPNeXtBlock(mid, add_identity, norm, depthwise) for _ in range(num_blocks)))
        self.attention: nn.Module = ChannelAttention(2 * mid) if attention else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = torch.cat((self.blocks(self.main_conv(x)), self.short_conv(x)), dim=1)
        return self.final_conv(self.attention(y))


class SPPBottleneck(nn.Module):
    """1x1 reduce, concat of max-pools (5, 9, 13) with the input, 1x1 project."""

    def __init__(self, channels: int, norm: _NormCfg, kernel_sizes: Sequence[int] = (5, 9, 13)) -> None:
        super().__init__()
        mid = channels // 2
        self.conv1 = ConvBNAct(channels, mid, 1, norm=norm)
        self.poolings = nn.ModuleList(nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes)
        self.conv2 = ConvBNAct(mid * (len(kernel_sizes) + 1), channels, 1, norm=norm)
        # Stride-1 max-pools with -inf padding compose: k then k gives 2k - 1. Cascading the
        # smallest pool gives the same maps for (5, 9, 13) with 15 window taps instead of 27
        # (the pools were ~6 % of RTMPose-m's GPU time at batch 256 on an H100).
        k0 = kernel_sizes[0]
        self._cascade = list(kernel_sizes) == [k0 + i * (k0 - 1) for i in range(len(kernel_sizes))]

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        if self._cascade:  # SPPF's identity: pool 9 = pool 5 twice, pool 13 = three times
            pooled, y = [], x
            for _ in self.poolings:
                y = self.poolings[0](y)
                pooled.append(y)
        else:
            pooled = [pool(x) for pool in self.poolings]
        return self.conv2(torch.cat([x, *pooled], dim=1))


class CSPNeXt(nn.Module):
    """CSPNeXt-P5 backbone.

    RTMPose uses the stride-32 map only (``out_indices=(4,)``, plain convs); RTMDet-nano uses
    ``depthwise=True`` (separable downsamples and blocks) and the stride 8/16/32 maps.
    """

    def __init__(
        self,
        deepen_factor: float,
        widen_factor: float,
        norm: _NormCfg = (1e-5, 0.1),
        depthwise: bool = False,
        out_indices: Sequence[int] = (4,),
    ) -> None:
        super().__init__()
        c0 = int(_P5[0][0] * widen_factor)
        half = int(_P5[0][0] * widen_factor // 2)
        self.stem = nn.Sequential(
            ConvBNAct(3, half, 3, stride=2, norm=norm),
            ConvBNAct(half, half, 3, norm=norm),
            ConvBNAct(half, c0, 3, norm=norm),
        )
        self.out_indices = tuple(out_indices)
        widths = []
        for i, (cin, cout, n, add_identity, use_spp) in enumerate(_P5, start=1):
            cin, cout = int(cin * widen_factor), int(cout * widen_factor)
            n = max(round(n * deepen_factor), 1)
            down = (
                DWSepConv(cin, cout, 3, norm, stride=2) if depthwise else ConvBNAct(cin, cout, 3, stride=2, norm=norm)
            )
            layers: list[nn.Module] = [down]
            if use_spp:
                layers.append(SPPBottleneck(cout, norm))
            layers.append(CSPLayer(cout, n, add_identity, norm, depthwise=depthwise))
            self.add_module(f"stage{i}", nn.Sequential(*layers))
            widths.append(cout)
        self.out_channels_per_stage = [widths[i - 1] for i in self.out_indices]
        self.out_channels = self.out_channels_per_stage[-1]

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        x = self.stem(x)
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"stage{i}")(x)
            if i in self.out_indices:
                outs.append(x)
        return outs[0] if len(outs) == 1 else outs


class ScaleNorm(nn.Module):
    """x / (||x|| / sqrt(dim)) * g with a single learnable scalar ``g`` (MMPose ScaleNorm)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class Scale(nn.Module):
    """Learnable per-channel multiplier on the GAU residual path (MMPose ``Scale``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class RTMCCBlock(nn.Module):
    """Self-attention Gated Attention Unit over the keypoint tokens (the RTMPose config).

    Only the variant the body models use is built: self-attention, no relative position bias
    (so no ``w``/``a``/``b`` parameters), no RoPE, no dropout / drop-path, biasless linears.
    """

    def __init__(self, dims: int = 256, s: int = 128, expansion_factor: int = 2, eps: float = 1e-5) -> None:
        super().__init__()
        self.s = s
        self.e = int(dims * expansion_factor)
        self.o = nn.Linear(self.e, dims, bias=False)
        self.uv = nn.Linear(dims, 2 * self.e + s, bias=False)
        self.gamma = nn.Parameter(torch.rand(2, s))
        self.beta = nn.Parameter(torch.rand(2, s))
        self.ln = ScaleNorm(dims, eps=eps)
        self.res_scale = Scale(dims)  # in_token_dims == out_token_dims -> shortcut
        self.sqrt_s = math.sqrt(s)
        nn.init.xavier_uniform_(self.uv.weight)

    def forward(self, x: Tensor) -> Tensor:
        uv = F.silu(self.uv(self.ln(x)))
        u, v, base = torch.split(uv, [self.e, self.e, self.s], dim=-1)
        base = base.unsqueeze(2) * self.gamma + self.beta  # (B, K, 2, s)
        q, k = base.unbind(dim=2)
        kernel = torch.square(F.relu(torch.bmm(q, k.transpose(1, 2)) / self.sqrt_s))  # (B, K, K)
        return self.res_scale(x) + self.o(u * torch.bmm(kernel, v))


class RTMCCHead(nn.Module):
    """SimCC head: 7x7 conv to K maps, flatten, embed, GAU, then per-axis classifiers."""

    def __init__(
        self,
        in_channels: int,
        num_keypoints: int = 17,
        input_size: tuple[int, int] = (192, 256),
        simcc_split_ratio: float = 2.0,
        hidden_dims: int = 256,
    ) -> None:
        super().__init__()
        w, h = input_size
        flatten_dims = (w // 32) * (h // 32)
        self.final_layer = nn.Conv2d(in_channels, num_keypoints, 7, padding=3)
        self.mlp = nn.Sequential(ScaleNorm(flatten_dims), nn.Linear(flatten_dims, hidden_dims, bias=False))
        self.gau = RTMCCBlock(hidden_dims, s=128, expansion_factor=2)
        self.cls_x = nn.Linear(hidden_dims, int(w * simcc_split_ratio), bias=False)
        self.cls_y = nn.Linear(hidden_dims, int(h * simcc_split_ratio), bias=False)

    def forward(self, feat: Tensor) -> tuple[Tensor, Tensor]:
        x = self.gau(self.mlp(torch.flatten(self.final_layer(feat), 2)))
        return self.cls_x(x), self.cls_y(x)


class RTMPose(nn.Module):
    """Top-down pose model: person crop (N, 3, H, W), normalised -> SimCC logits (x, y)."""

    def __init__(self, backbone: CSPNeXt, head: RTMCCHead, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.input_size = input_size
        self.simcc_split_ratio = 2.0

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.head(self.backbone(x))


def build_rtmpose(
    size: str,
    input_size: tuple[int, int] = (192, 256),
    num_keypoints: int = 17,
    norm_eps: float = 1e-5,
    norm_momentum: float = 0.1,
) -> RTMPose:
    """Build RTMPose-{t,s,m,l}; ``input_size`` is (width, height) as in the MMPose configs."""
    if size not in SIZES:
        raise ValueError(f"unknown RTMPose size {size!r}; expected one of {sorted(SIZES)}")
    w, h = input_size
    if w % 32 or h % 32:
        raise ValueError(f"input_size {input_size} must be multiples of 32")
    deepen, widen = SIZES[size]
    backbone = CSPNeXt(deepen, widen, norm=(norm_eps, norm_momentum))
    head = RTMCCHead(backbone.out_channels, num_keypoints, (w, h))
    return RTMPose(backbone, head, (w, h))
