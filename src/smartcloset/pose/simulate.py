"""Synthetic keypoint trajectories with known truth, to measure the timeline and the filter.

Used by the tests (which assert the behaviour) and by ``bench/timeline_figures.py`` (which
reports the figures). A keypoint swings like a squat; pose results arrive late and at irregular
intervals, as from a busy pose worker; each rendered frame asks for its own capture time.
"""

from __future__ import annotations

import math

import numpy as np

from .filter import OneEuroFilter, OneEuroParams
from .timeline import KeypointTimeline, TimelineParams
from .types import KP, FramePose, Person

FRAME_HEIGHT = 720


def standing_keypoints(scale: float = 1.0, dx: float = 0.0) -> np.ndarray:
    """A frontal person in a 1280x720 frame (their left on the image's right)."""
    pts = {
        "nose": (640, 140),
        "left_eye": (650, 130),
        "right_eye": (630, 130),
        "left_ear": (660, 135),
        "right_ear": (620, 135),
        "left_shoulder": (710, 220),
        "right_shoulder": (570, 220),
        "left_elbow": (740, 330),
        "right_elbow": (540, 330),
        "left_wrist": (750, 430),
        "right_wrist": (530, 430),
        "left_hip": (690, 440),
        "right_hip": (590, 440),
        "left_knee": (690, 570),
        "right_knee": (590, 570),
        "left_ankle": (690, 700),
        "right_ankle": (590, 700),
    }
    kp = np.zeros((17, 3), np.float32)
    for name, (x, y) in pts.items():
        kp[KP[name]] = (640 + (x - 640) * scale + dx, 360 + (y - 360) * scale, 1.0)
    return kp


def pose_at(xy) -> FramePose:
    kp = np.zeros((17, 3), np.float32)
    kp[:, :2] = xy
    kp[:, 2] = 1.0
    return FramePose([Person([0, 0, 10, 10], 1.0, kp)])


def squat(t_ms: float) -> np.ndarray:
    """Truth: 120 px vertical swing at 0.8 Hz plus a slow 30 px sway."""
    return np.array([640.0 + 30 * math.sin(t_ms / 700), 360.0 + 120 * math.sin(2 * math.pi * 0.8 * t_ms / 1000)])


def irregular_times(rate_hz: float, seconds: float, seed: int) -> np.ndarray:
    """Timestamps (ms) at ``rate_hz`` on average, each gap 0.6-1.4x the mean."""
    rng = np.random.default_rng(seed)
    gaps = rng.uniform(0.6, 1.4, int(rate_hz * seconds * 1.5)) * 1000 / rate_hz
    t = np.cumsum(gaps)
    return t[t < seconds * 1000]


def live_error(pose_hz: float, render_hz: float, latency_ms: float, mode: str, seed: int = 1) -> float:
    """RMS error (px) of the keypoint each rendered frame gets, against the truth.

    A pose for capture time t is available from t + latency_ms. ``mode`` "timeline" asks the
    timeline for the frame's own time; "hold" uses the newest pose as it is (the naive way).
    """
    pose_t = irregular_times(pose_hz, 6.0, seed)
    render_t = irregular_times(render_hz, 6.0, seed + 1)
    tl = KeypointTimeline()
    errs, i = [], 0
    for t in render_t:
        while i < len(pose_t) and pose_t[i] + latency_ms <= t:
            tl.add(float(pose_t[i]), pose_at(squat(pose_t[i])), 0, FRAME_HEIGHT)
            i += 1
        if i < 2:
            continue
        kp = squat(pose_t[i - 1]) if mode == "hold" else tl.at(float(t)).keypoints[0, :2]
        errs.append(np.linalg.norm(kp - squat(t)))
    return float(np.sqrt(np.mean(np.square(errs))))


def interpolation_error(pose_hz: float = 25, seed: int = 3) -> tuple[float, float]:
    """RMS error (px) between pose results: (interpolated, nearest result), render behind pose."""
    pose_t = irregular_times(pose_hz, 4.0, seed)
    tl = KeypointTimeline(TimelineParams(capacity=256))
    for t in pose_t:
        tl.add(float(t), pose_at(squat(t)), 0, FRAME_HEIGHT)
    query = np.linspace(pose_t[0] + 1, pose_t[-1] - 1, 300)
    interp = [np.linalg.norm(tl.at(float(t)).keypoints[0, :2] - squat(t)) for t in query]
    nearest = [np.linalg.norm(squat(pose_t[np.abs(pose_t - t).argmin()]) - squat(t)) for t in query]
    rms = lambda v: float(np.sqrt(np.mean(np.square(v))))  # noqa: E731
    return rms(interp), rms(nearest)


def one_euro_figures(
    params: OneEuroParams = OneEuroParams(), noise_px: float = 3.0, speed: float = 0.5
) -> tuple[float, float]:
    """(jitter ratio at rest, max lag in px at ``speed`` frame heights/s) at ~30 FPS."""
    rng = np.random.default_rng(0)
    t = irregular_times(30, 5.0, 5) / 1000.0
    f = OneEuroFilter(params)
    h = FRAME_HEIGHT
    still = np.full((len(t), 17, 2), 0.5) + rng.normal(0, noise_px / h, (len(t), 17, 2))
    out = np.array([f(x, ti) for x, ti in zip(still, t)])
    ratio = float(np.std(np.diff(out[30:], axis=0)) / np.std(np.diff(still[30:], axis=0)))
    f.reset()
    moving = np.array([[[0.2 + speed * ti, 0.5]] * 17 for ti in t])
    out = np.array([f(x, ti) for x, ti in zip(moving, t)])
    lag = float(np.abs(out[30:, 0, 0] - moving[30:, 0, 0]).max() * h)
    return ratio, lag


class StandInPose:
    """Benchmarks only (``serve --pose-stand-in``): runs the real backend - its full cost - then
    replaces what it found with a standing person who sways, scaled to each frame.

    Why: the GPU benchmarks run RTMPose with random weights (its checkpoints cannot be fetched
    where the GPUs are), which find no one, so no garment would be drawn and the renderer's cost
    would be missing from the figures. Never for users: the log says so at start.
    """

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = f"{inner.name}+stand-in"
        self.device = inner.device
        self.max_inflight = inner.max_inflight
        self._n = 0
        if not callable(getattr(inner, "infer_tensors", None)):
            self.infer_tensors = None  # type: ignore[assignment]  # host frames only, as the inner one

    def _replace(self, results: list[FramePose], shapes: list[tuple[int, int]]) -> list[FramePose]:
        out = []
        for r, (h, w) in zip(results, shapes):
            self._n += 1
            kp = standing_keypoints(1.0, 40.0 * math.sin(self._n / 15.0))
            kp[:, 0] *= w / 1280.0
            kp[:, 1] *= h / 720.0
            out.append(FramePose([Person([0, 0, w, h], 1.0, kp)], r.mask))
        return out

    def infer(self, images, streams) -> list[FramePose]:
        return self._replace(self.inner.infer(images, streams), [img.shape[:2] for img in images])

    def infer_tensors(self, frames, streams) -> list[FramePose]:
        return self._replace(self.inner.infer_tensors(frames, streams), [tuple(f.shape[1:]) for f in frames])

    def release(self, stream) -> None:
        self.inner.release(stream)

    def close(self) -> None:
        self.inner.close()
