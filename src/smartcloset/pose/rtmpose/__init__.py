"""Native PyTorch RTMPose whose weights load from MMPose's official checkpoints.

``rtmpose_m(weights="rtmpose-m")`` builds the model for a declared checkpoint (its size and input
size) and loads it strictly from the cache (``smart-closet models fetch rtmpose-m``); a path loads
a file; ``None`` leaves random weights (for speed measurements and tests).
"""

from __future__ import annotations

from pathlib import Path

from ..weights import Weights, WeightsError, get, load_state_dict
from .model import SIZES, CSPNeXt, RTMCCHead, RTMPose, build_rtmpose


def load_rtmpose(
    size: str, weights: str | Path | Weights | None = None, input_size: tuple[int, int] | None = None
) -> RTMPose:
    """An RTMPose of ``size``; ``weights``: a declared name, a :class:`Weights`, a file, or None."""
    declared = get(weights) if isinstance(weights, str) and not Path(weights).suffix else weights
    if isinstance(declared, Weights):
        if declared.arch != size:
            raise WeightsError(f"{declared.name} holds RTMPose-{declared.arch} weights, not RTMPose-{size}")
        input_size = declared.input_size
    model = build_rtmpose(size, input_size=input_size or (192, 256))
    if declared is not None:
        state = load_state_dict(declared)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"the checkpoint does not fit RTMPose-{size}: {str(exc).splitlines()[0]} ...") from None
    return model.eval()


def rtmpose_t(weights: str | Path | Weights | None = None) -> RTMPose:
    return load_rtmpose("t", weights)


def rtmpose_s(weights: str | Path | Weights | None = None) -> RTMPose:
    return load_rtmpose("s", weights)


def rtmpose_m(weights: str | Path | Weights | None = None) -> RTMPose:
    return load_rtmpose("m", weights)


def rtmpose_l(weights: str | Path | Weights | None = None) -> RTMPose:
    return load_rtmpose("l", weights)


__all__ = [
    "SIZES",
    "CSPNeXt",
    "RTMCCHead",
    "RTMPose",
    "build_rtmpose",
    "load_rtmpose",
    "rtmpose_t",
    "rtmpose_s",
    "rtmpose_m",
    "rtmpose_l",
]
