"""Native PyTorch RTMPose whose weights load from MMPose's official checkpoints."""

from __future__ import annotations

from .model import SIZES, CSPNeXt, RTMCCHead, RTMPose, build_rtmpose

__all__ = ["SIZES", "CSPNeXt", "RTMCCHead", "RTMPose", "build_rtmpose"]
