"""The keypoint timeline on synthetic trajectories with known truth."""

import math

import numpy as np
import pytest

from smartcloset.pose.filter import OneEuroFilter, OneEuroParams
from smartcloset.pose.timeline import KeypointTimeline, TimelineParams
from smartcloset.pose.types import FramePose, Person

H = 720


def pose_at(xy) -> FramePose:
    kp = np.zeros((17, 3), np.float32)
    kp[:, :2] = xy
    kp[:, 2] = 1.0
    return FramePose([Person([0, 0, 10, 10], 1.0, kp)])


def truth(t_ms: float) -> np.ndarray:
    """A keypoint swinging like a squat: 120 px amplitude at 0.8 Hz."""
    return np.array([640.0 + 30 * math.sin(t_ms / 700), 360.0 + 120 * math.sin(2 * math.pi * 0.8 * t_ms / 1000)])


def irregular_times(rate_hz: float, seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    gaps = rng.uniform(0.6, 1.4, int(rate_hz * seconds * 1.5)) * 1000 / rate_hz
    t = np.cumsum(gaps)
    return t[t < seconds * 1000]


def test_own_pose_is_returned_unchanged():
    tl = KeypointTimeline()
    tl.add(100.0, pose_at((10, 20)), 105.0, H)
    got = tl.at(100.0)
    assert got.source == "own" and np.allclose(got.keypoints[:, :2], (10, 20)) and got.pose_done_ms == 105.0


def test_interpolates_between_results_at_their_real_times():
    tl = KeypointTimeline()
    tl.add(100.0, pose_at((0, 0)), 0, H)
    tl.add(140.0, pose_at((40, 80)), 0, H)  # results 40 ms apart, not an assumed rate
    got = tl.at(130.0)
    assert got.source == "interpolated" and np.allclose(got.keypoints[:, :2], (30, 60))


def test_results_arriving_out_of_order_are_sorted():
    tl = KeypointTimeline()
    tl.add(140.0, pose_at((40, 40)), 0, H)
    tl.add(100.0, pose_at((0, 0)), 0, H)
    assert np.allclose(tl.at(120.0).keypoints[:, :2], (20, 20))


def test_extrapolation_follows_constant_velocity_and_decays_confidence():
    tl = KeypointTimeline()
    tl.add(0.0, pose_at((100, 100)), 0, H)
    tl.add(50.0, pose_at((110, 100)), 0, H)  # 0.2 px/ms
    got = tl.at(100.0)
    assert got.source == "extrapolated"
    assert np.allclose(got.keypoints[:, :2], (120, 100), atol=1e-3)
    assert got.keypoints[0, 2] == pytest.approx(math.exp(-50 / TimelineParams().confidence_tau_ms), rel=1e-5)


def test_extrapolation_horizon_and_velocity_are_capped():
    p = TimelineParams(max_extrapolate_ms=100.0, max_speed=1.0, max_hold_ms=1000.0)
    tl = KeypointTimeline(p)
    tl.add(0.0, pose_at((0, 0)), 0, H)
    tl.add(10.0, pose_at((500, 0)), 0, H)  # a 50 px/ms glitch
    got = tl.at(510.0)
    # at most max_speed * H px/s for at most 100 ms
    assert got.keypoints[0, 0] == pytest.approx(500 + 1.0 * H * 0.1, rel=1e-4)


def test_nothing_after_the_hold_time_and_hold_with_one_result():
    tl = KeypointTimeline(TimelineParams(max_hold_ms=300.0))
    assert tl.at(0.0).source == "none"
    tl.add(0.0, pose_at((5, 5)), 0, H)
    assert tl.at(100.0).source == "held"
    assert tl.at(301.0).source == "none" and tl.at(301.0).keypoints is None


def test_capacity_is_bounded():
    tl = KeypointTimeline(TimelineParams(capacity=4))
    for i in range(100):
        tl.add(float(i), pose_at((i, i)), 0, H)
    assert len(tl) == 4


def simulate(pose_hz: float, render_hz: float, latency_ms: float, mode: str, seed: int = 1) -> float:
    """RMS error (px) of the timeline's answers against the truth at each rendered frame.

    Pose results for capture time t become available at t + latency; each rendered frame asks
    for its own capture time, as the server does.
    """
    pose_t = irregular_times(pose_hz, 6.0, seed)
    render_t = irregular_times(render_hz, 6.0, seed + 1)
    tl = KeypointTimeline()
    errs, i = [], 0
    for t in render_t:
        while i < len(pose_t) and pose_t[i] + latency_ms <= t:
            tl.add(float(pose_t[i]), pose_at(truth(pose_t[i])), 0, H)
            i += 1
        if i < 2:
            continue
        if mode == "hold":  # the naive baseline: newest pose as is
            kp = pose_at(truth(pose_t[i - 1])).persons[0].keypoints
        else:
            kp = tl.at(float(t)).keypoints
        errs.append(np.linalg.norm(kp[0, :2] - truth(t)))
    return float(np.sqrt(np.mean(np.square(errs))))


def test_extrapolation_beats_holding_the_last_pose():
    # 25 FPS pose arriving 60 ms late, 40 FPS render: the live case on a CPU.
    held = simulate(25, 40, 60, "hold")
    timeline = simulate(25, 40, 60, "timeline")
    assert timeline < 0.5 * held, (timeline, held)


def test_interpolation_error_is_small_when_pose_is_ahead_of_render():
    # Render behind pose (latency 0, frames queried after both neighbours exist).
    pose_t = irregular_times(25, 4.0, 3)
    tl = KeypointTimeline(TimelineParams(capacity=256))
    for t in pose_t:
        tl.add(float(t), pose_at(truth(t)), 0, H)
    query = np.linspace(pose_t[0] + 1, pose_t[-1] - 1, 300)
    interp = [np.linalg.norm(tl.at(float(t)).keypoints[0, :2] - truth(t)) for t in query]
    nearest = [np.linalg.norm(truth(pose_t[np.abs(pose_t - t).argmin()]) - truth(t)) for t in query]
    assert all(tl.at(float(t)).source in ("interpolated", "own") for t in query)
    assert np.sqrt(np.mean(np.square(interp))) < 0.1 * np.sqrt(np.mean(np.square(nearest)))


def test_one_euro_reduces_jitter_at_rest_and_keeps_lag_small_in_motion():
    rng = np.random.default_rng(0)
    t = irregular_times(30, 5.0, 5) / 1000.0
    f = OneEuroFilter(OneEuroParams())
    still = np.full((len(t), 17, 2), 0.5) + rng.normal(0, 3.0 / H, (len(t), 17, 2))  # 3 px noise
    out = np.array([f(x, ti) for x, ti in zip(still, t)])
    raw_jitter = np.std(np.diff(still[30:], axis=0))
    smooth_jitter = np.std(np.diff(out[30:], axis=0))
    assert smooth_jitter < raw_jitter / 4, (smooth_jitter, raw_jitter)

    f.reset()
    moving = np.array([[[0.2 + 0.5 * ti, 0.5]] * 17 for ti in t])  # half a frame height per second
    out = np.array([f(x, ti) for x, ti in zip(moving, t)])
    lag_px = np.abs(out[30:, 0, 0] - moving[30:, 0, 0]).max() * H
    assert lag_px < 12, lag_px


def test_smoothed_resets_after_the_person_leaves():
    tl = KeypointTimeline(TimelineParams(max_hold_ms=200))
    tl.add(0.0, pose_at((100, 100)), 0, H)
    assert tl.smoothed(0.0).keypoints is not None
    assert tl.smoothed(1000.0).keypoints is None
    tl.add(1000.0, pose_at((500, 500)), 0, H)
    assert np.allclose(tl.smoothed(1000.0).keypoints[:, :2], (500, 500))  # no drag from the old pose


def test_the_person_mask_travels_with_the_keypoints():
    tl = KeypointTimeline()
    mask_a, mask_b = np.zeros((4, 4), np.uint8), np.full((4, 4), 255, np.uint8)
    a, b = pose_at((0, 0)), pose_at((10, 10))
    a.mask, b.mask = mask_a, mask_b
    tl.add(0.0, a, 0, H)
    tl.add(100.0, b, 0, H)
    assert tl.at(20.0).mask is mask_a and tl.at(80.0).mask is mask_b and tl.at(150.0).mask is mask_b
