"""The keypoint timeline on synthetic trajectories with known truth."""

import math

import numpy as np
import pytest

from smartcloset.pose.filter import OneEuroFilter, OneEuroParams
from smartcloset.pose.simulate import FRAME_HEIGHT as H
from smartcloset.pose.simulate import interpolation_error, live_error, one_euro_figures, pose_at
from smartcloset.pose.timeline import KeypointTimeline, TimelineParams


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


def test_extrapolation_beats_holding_the_last_pose():
    # 25 FPS pose arriving 60 ms late, 40 FPS render: the live case on a CPU.
    held = live_error(25, 40, 60, "hold")
    timeline = live_error(25, 40, 60, "timeline")
    assert timeline < 0.5 * held, (timeline, held)


def test_interpolation_error_is_small_when_pose_is_ahead_of_render():
    interp, nearest = interpolation_error(25)
    assert interp < 0.1 * nearest, (interp, nearest)


def test_one_euro_reduces_jitter_at_rest_and_keeps_lag_small_in_motion():
    ratio, lag_px = one_euro_figures(OneEuroParams(), noise_px=3.0, speed=0.5)
    assert ratio < 0.25, ratio  # frame-to-frame jitter cut by more than 4x
    assert lag_px < 12, lag_px  # a keypoint moving half a frame height per second


def test_one_euro_runs_on_real_timestamps():
    f = OneEuroFilter()
    assert np.allclose(f(np.array([[1.0, 1.0]]), 0.0), 1.0)
    assert np.allclose(f(np.array([[5.0, 5.0]]), 0.0), 1.0)  # same time: nothing new
    y1 = f(np.array([[2.0, 2.0]]), 0.010)[0, 0]
    f2 = OneEuroFilter()
    f2(np.array([[1.0, 1.0]]), 0.0)
    y2 = f2(np.array([[2.0, 2.0]]), 0.100)[0, 0]
    assert 1.0 < y1 < y2 < 2.0  # a longer gap moves the estimate further


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
