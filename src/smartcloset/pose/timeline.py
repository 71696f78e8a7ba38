"""Keypoints at any capture time, from pose results that arrive late and irregularly.

The pose worker runs behind the camera and skips frames under load; the renderer draws every
frame. So each rendered frame asks the timeline for the keypoints *at its own capture time*:

* its own pose, if that frame was posed ("own");
* between two results: linear interpolation at the real timestamps ("interpolated");
* after the newest result: constant-velocity extrapolation from the two newest results, the
  velocity capped (``max_speed``) and the horizon capped (``max_extrapolate_ms``), confidence
  decaying with age (``exp(-age / confidence_tau_ms)``) ("extrapolated"; "held" when only one
  result exists);
* older than ``max_hold_ms``: nothing - the person has probably left.

Then the One-Euro filter smooths the sequence of rendered frames. Times are in the client's
capture clock (ms), which is the clock the frames were taken on - never an assumed rate.
"""

from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass

import numpy as np

from .filter import OneEuroFilter, OneEuroParams
from .types import FramePose


@dataclass
class PoseSample:
    t_ms: float  # capture time of the posed frame (client clock)
    pose: FramePose  # in full-frame pixels
    done_ms: float  # server clock when the pose was ready
    frame_height: int
    keypoints: np.ndarray | None = None  # the primary person's, chosen once when stored

    def __post_init__(self) -> None:
        if self.keypoints is None:
            person = self.pose.primary()
            self.keypoints = None if person is None else person.keypoints


@dataclass
class TimedKeypoints:
    """The keypoints for one rendered frame and where they came from."""

    keypoints: np.ndarray | None  # (17, 3) x, y, score in full-frame pixels
    source: str  # "own" | "interpolated" | "extrapolated" | "held" | "none"
    pose_done_ms: float = math.nan  # server time the newest pose used was done
    age_ms: float = 0.0  # capture-time distance to the nearest pose used
    mask: np.ndarray | None = None  # person mask of the nearest pose, backend resolution
    persons: int = 0


@dataclass(frozen=True)
class TimelineParams:
    capacity: int = 8
    max_extrapolate_ms: float = 120.0
    max_hold_ms: float = 600.0
    max_speed: float = 4.0  # frame heights per second a keypoint may move when extrapolated
    confidence_tau_ms: float = 300.0
    filter: OneEuroParams = OneEuroParams()


class KeypointTimeline:
    """Per-client store of pose results by capture time; thread-safe (worker adds, renderer reads)."""

    def __init__(self, params: TimelineParams = TimelineParams()) -> None:
        self.params = params
        self._times: list[float] = []
        self._samples: list[PoseSample] = []
        self._cond = threading.Condition()
        self._filter = OneEuroFilter(params.filter)
        self._last_render_t: float | None = None

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, t_ms: float, pose: FramePose, done_ms: float, frame_height: int) -> None:
        """Store a result; results may arrive out of capture order (batches in flight)."""
        with self._cond:
            i = bisect.bisect_left(self._times, t_ms)
            sample = PoseSample(t_ms, pose, done_ms, frame_height)
            if i < len(self._times) and self._times[i] == t_ms:
                self._samples[i] = sample
            else:
                self._times.insert(i, t_ms)
                self._samples.insert(i, sample)
            while len(self._samples) > self.params.capacity:
                self._times.pop(0)
                self._samples.pop(0)
            self._cond.notify_all()

    def wait_for(self, t_ms: float, timeout_s: float) -> bool:
        """Wait until a result at or after ``t_ms`` exists (the frame's own pose, or newer)."""
        with self._cond:
            return self._cond.wait_for(lambda: bool(self._times) and self._times[-1] >= t_ms, timeout_s)

    # -- raw query -----------------------------------------------------------------------
    def at(self, t_ms: float) -> TimedKeypoints:
        """Unsmoothed keypoints for capture time ``t_ms``."""
        with self._cond:
            samples = [s for s in self._samples if s.keypoints is not None]
        if not samples:
            return TimedKeypoints(None, "none")
        times = [s.t_ms for s in samples]
        i = bisect.bisect_left(times, t_ms)
        p = self.params
        if i < len(samples) and times[i] == t_ms:
            s = samples[i]
            return self._result(s.keypoints.copy(), "own", s, 0.0, s.done_ms)
        if 0 < i < len(samples):  # between two results
            a, b = samples[i - 1], samples[i]
            w = (t_ms - a.t_ms) / (b.t_ms - a.t_ms)
            ka, kb = a.keypoints, b.keypoints
            kp = ka + w * (kb - ka)
            nearest = a if w < 0.5 else b
            age = min(t_ms - a.t_ms, b.t_ms - t_ms)
            return self._result(kp, "interpolated", nearest, age, max(a.done_ms, b.done_ms))
        if i == 0:  # older than everything we hold: hold the oldest
            s = samples[0]
            age = s.t_ms - t_ms
            if age > p.max_hold_ms:
                return TimedKeypoints(None, "none")
            kp = s.keypoints.copy()
            kp[:, 2] *= math.exp(-age / p.confidence_tau_ms)
            return self._result(kp, "held", s, age, s.done_ms)
        # After the newest result: extrapolate.
        last = samples[-1]
        age = t_ms - last.t_ms
        if age > p.max_hold_ms:
            return TimedKeypoints(None, "none")
        kp = last.keypoints.copy()
        source = "held"
        if len(samples) >= 2:
            prev = samples[-2]
            dt = last.t_ms - prev.t_ms
            if 0 < dt <= p.max_hold_ms:
                velocity = (kp[:, :2] - prev.keypoints[:, :2]) / dt  # px per ms
                vmax = p.max_speed * last.frame_height / 1000.0
                speed = np.linalg.norm(velocity, axis=1, keepdims=True)
                velocity *= np.minimum(1.0, vmax / np.maximum(speed, 1e-9))
                kp[:, :2] += velocity * min(age, p.max_extrapolate_ms)
                source = "extrapolated"
        kp[:, 2] *= math.exp(-age / p.confidence_tau_ms)
        return self._result(kp, source, last, age, last.done_ms)

    @staticmethod
    def _result(kp: np.ndarray, source: str, nearest: PoseSample, age: float, done: float) -> TimedKeypoints:
        return TimedKeypoints(
            kp.astype(np.float32), source, done, float(age), nearest.pose.mask, len(nearest.pose.persons)
        )

    # -- smoothed query (one renderer per timeline) --------------------------------------
    def smoothed(self, t_ms: float) -> TimedKeypoints:
        """``at(t_ms)`` passed through the One-Euro filter, in render order."""
        tk = self.at(t_ms)
        if tk.keypoints is None:
            self._filter.reset()
            self._last_render_t = None
            return tk
        if self._last_render_t is not None and t_ms - self._last_render_t > self.params.max_hold_ms:
            self._filter.reset()
        with self._cond:
            height = self._samples[-1].frame_height if self._samples else 1
        scale = float(max(height, 1))
        xy = self._filter(tk.keypoints[:, :2] / scale, t_ms / 1000.0) * scale
        tk.keypoints = np.concatenate([xy.astype(np.float32), tk.keypoints[:, 2:3]], axis=1)
        self._last_render_t = max(t_ms, self._last_render_t or t_ms)
        return tk
