"""The embedded default backend, with the model that ships in the mediapipe wheel (no download)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from smartcloset.pose.accuracy import pck
from smartcloset.pose.backend import PoseBackend, create_backend
from smartcloset.pose.mediapipe_backend import BLAZEPOSE_TO_COCO17, landmarks_to_person


@pytest.fixture(scope="module")
def backend():
    b = create_backend("mediapipe", segmentation=True)
    yield b
    b.close()


def test_landmark_mapping_to_coco17():
    lm = np.zeros((33, 3), np.float32)
    lm[:, 0] = np.arange(33) / 33
    lm[:, 1] = 0.5
    lm[:, 2] = 0.9
    p = landmarks_to_person(lm, 200, 100)
    assert np.allclose(p.keypoints[:, 0], BLAZEPOSE_TO_COCO17 / 33 * 200, atol=1e-3)
    assert np.allclose(p.keypoints[:, 1], 50) and p.score == pytest.approx(0.9)
    assert p.keypoints[5, 0] == pytest.approx(11 / 33 * 200)  # left_shoulder <- BlazePose 11


def test_is_a_pose_backend(backend):
    assert isinstance(backend, PoseBackend) and backend.name == "mediapipe" and backend.max_inflight >= 1


def test_pck_on_the_labelled_people(backend, people_truth):
    correct = total = 0
    for path, gt in people_truth:
        rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        (pose,) = backend.infer([rgb], [None])
        assert len(pose.persons) == 1
        c, n = pck(pose.persons[0].keypoints, gt, 0.2)
        correct, total = correct + c, total + n
    assert total == 34 and correct / total >= 0.9, (correct, total)


def test_batch_of_streams_tracks_each_and_keeps_the_mask(backend, video_frames):
    small = [cv2.cvtColor(cv2.resize(f, (640, 360)), cv2.COLOR_BGR2RGB) for f in video_frames[:6]]
    for a, b in zip(small[0::2], small[1::2]):
        poses = backend.infer([a, b], ["client-a", "client-b"])
        assert [len(p.persons) for p in poses] == [1, 1]
        mask = poses[0].mask
        assert mask.shape == (360, 640) and mask.dtype == np.uint8
        person = poses[0].persons[0]
        x1, y1, x2, y2 = person.bbox.astype(int)
        # The mask is the person: high inside the shoulders-hips box, low at the frame corners.
        ls, rh = person.keypoints[5, :2].astype(int), person.keypoints[12, :2].astype(int)
        cx, cy = (ls + rh) // 2
        assert mask[cy, cx] > 200 and mask[5, 5] < 30 and mask[5, 634] < 30
    backend.release("client-a")
    backend.release("client-b")


def test_bad_image_raises_a_clear_error(backend):
    with pytest.raises(ValueError, match="RGB uint8"):
        backend.infer([np.zeros((10, 10), np.uint8)], [None])
