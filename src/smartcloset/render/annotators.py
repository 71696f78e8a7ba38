"""Composable renderers, supervision-style: each is ``annotate(frame, pose) -> frame``.

``pose`` is the :class:`~smartcloset.pose.timeline.TimedKeypoints` for the frame's own capture
time. Annotators draw in place on a BGR uint8 frame and return it, so a look is a list of
them applied in order (``render_frame``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from ..closet.garment import Garment
from ..pose.timeline import TimedKeypoints
from ..pose.types import KP
from .composite import composite, premultiply
from .mesh import MIN_SCORE, GarmentMesh, body_frame, part_transforms, part_transforms_batch, skin
from .occlusion import arm_mask, restore
from .shading import Shading, shade
from .warp import warp_mesh


class Annotator(Protocol):
    def annotate(self, frame: np.ndarray, pose: TimedKeypoints) -> np.ndarray: ...


@dataclass
class Placement:
    """A garment's mesh on one body: texture level, source vertices at that level, frame vertices."""

    level: int
    src: np.ndarray  # (N, 2) texture pixels of pyramid level ``level``
    dst: np.ndarray  # (N, 2) frame pixels


SMALL_BATCH = 2  # bodies up to which ``rigs`` binds one by one (bench/binding.py: faster at 1, slower at 8)


@dataclass
class Rig:
    """A garment's part transforms for one body (skinned later, anywhere)."""

    level: int
    matrices: np.ndarray  # (P, 3, 3), garment pixels -> frame pixels, in ``mesh.weights`` order


class GarmentAnnotator:
    """Draws one garment on the person, skinned to their keypoints.

    The texture is kept as a premultiplied pyramid; each frame warps from the level nearest the
    on-screen size, so a garment drawn at 520 px wide does not alias when it is 150 px on screen.
    """

    def __init__(self, garment: Garment, max_levels: int = 4) -> None:
        self.garment = garment
        rgba = garment.rgba
        self.mesh = GarmentMesh.build(garment, rgba[..., 3])
        self._layers = self.mesh.layers  # body layers first, then sleeves on top
        self._pyramid = [premultiply(rgba)]
        for _ in range(max_levels - 1):
            if min(self._pyramid[-1].shape[:2]) < 64:
                break
            self._pyramid.append(cv2.pyrDown(self._pyramid[-1]))
        a = self.mesh.anchors
        self._root = ("left_hip", "right_hip") if garment.category == "bottom" else ("left_shoulder", "right_shoulder")
        self._root_width = float(np.linalg.norm(a[self._root[0]] - a[self._root[1]]))

    @property
    def layers(self) -> list[tuple[str, np.ndarray]]:
        """(kind, triangles) per drawing layer, bottom first."""
        return self._layers

    @property
    def pyramid(self) -> list[np.ndarray]:
        """The premultiplied BGRA texture, full size first, each level half the one before."""
        return self._pyramid

    def rig(self, keypoints: np.ndarray) -> Rig | None:
        """The body's part transforms, in ``mesh.weights`` order, and the pyramid level: what the
        batched renderer needs to skin the mesh itself, on the GPU. None when the root is not seen."""
        body = body_frame(keypoints, self.mesh)
        if body is None:
            return None
        parts = part_transforms(self.mesh, body)
        matrices = np.stack([parts.get(name, np.eye(3)) for name in self.mesh.weights])
        return Rig(self._level(body), matrices)

    def rigs(self, keypoints: Sequence[np.ndarray]) -> list[Rig | None]:
        """``rig`` for many bodies at once: the common case in array operations
        (``part_transforms_batch``), the rest one by one - the same matrices either way."""
        if len(keypoints) <= SMALL_BATCH:  # the array set-up costs more than it saves here
            return [self.rig(k) for k in keypoints]
        kp = np.stack([np.asarray(k, dtype=np.float64) for k in keypoints])
        mats, fast = part_transforms_batch(self.mesh, kp)
        ends = kp[:, [KP[self._root[0]], KP[self._root[1]]], :2]
        levels = self._levels(np.sqrt(((ends[:, 0] - ends[:, 1]) ** 2).sum(axis=1)))
        return [Rig(int(levels[i]), mats[i]) if fast[i] else self.rig(keypoints[i]) for i in range(len(kp))]

    def _level(self, body) -> int:
        pair = body.hips if self.garment.category == "bottom" else body.shoulders
        return int(self._levels(np.array([np.linalg.norm(pair[0] - pair[1])]))[0])

    def _levels(self, widths: np.ndarray) -> np.ndarray:
        """The pyramid level per body from its root width (shoulders, or hips for a bottom):
        the texture level nearest the size it is drawn at."""
        scale = np.maximum(widths / self._root_width, 1e-3)
        return np.clip(np.floor(np.log2(1.0 / scale)), 0, len(self._pyramid) - 1).astype(int)

    def placement(self, keypoints: np.ndarray) -> Placement | None:
        """Where the mesh lands on this body, and which pyramid level to sample: the geometry the
        CPU and the batched (GPU) renderers share. None when the garment's root is not seen."""
        body = body_frame(keypoints, self.mesh)
        if body is None:
            return None
        level = self._level(body)
        return Placement(level, self.mesh.vertices / (2**level), skin(self.mesh, body))

    def annotate(self, frame: np.ndarray, pose: TimedKeypoints) -> np.ndarray:
        """The whole garment, unshaded, with no arm in front: the simplest use."""
        return self.draw(frame, pose)

    def draw(
        self,
        frame: np.ndarray,
        pose: TimedKeypoints,
        kinds: tuple[str, ...] = ("body", "sleeve"),
        shading: Shading | None = None,
    ) -> np.ndarray:
        """Draw the layers of these kinds; with ``shading`` (of the camera frame), shaded by it."""
        if pose.keypoints is None:
            return frame
        place = self.placement(pose.keypoints)
        if place is None:
            return frame
        texture = self._pyramid[place.level]
        for kind, triangles in self._layers:
            if kind not in kinds:
                continue
            out = warp_mesh(texture, place.src, triangles, place.dst, (frame.shape[1], frame.shape[0]))
            if out is None:
                continue
            patch, (x0, y0) = out
            if shading is not None:
                patch = shade(patch, shading.patch(x0, y0, patch.shape[1], patch.shape[0]))
            composite(frame, patch, (x0, y0))
        return frame


class LookAnnotator:
    """A whole look, layered the way clothes are worn.

    Garments are drawn in ``draw_order`` (bottoms, tucked tops, dresses, tops, outerwear). For
    each: its body, then the person's forearms and hands restored from the camera frame (so a
    hand on the belly or crossed arms stay in front of the cloth), then its sleeves over the
    arms - an outer garment's body then covers an inner garment's sleeves, as a jacket does.
    Each patch is shaded by the frame's own light and folds.
    """

    def __init__(self, garments: Sequence[GarmentAnnotator], occlusion: bool = True, shading: bool = True) -> None:
        self.garments = list(garments)
        self.occlusion = occlusion
        self.shading = shading

    def annotate(self, frame: np.ndarray, pose: TimedKeypoints) -> np.ndarray:
        if pose.keypoints is None or not self.garments:
            return frame
        shaded = Shading(frame) if self.shading else None
        arms = arm_mask(pose.keypoints, frame.shape[:2], pose.mask) if self.occlusion else None
        original = (
            frame[arms[1][1] : arms[1][1] + arms[0].shape[0], arms[1][0] : arms[1][0] + arms[0].shape[1]].copy()
            if arms
            else None
        )
        for g in self.garments:
            g.draw(frame, pose, ("body",), shaded)
            if arms is not None:
                restore(frame, original, arms)
            g.draw(frame, pose, ("sleeve",), shaded)
        return frame


_SKELETON = [
    ("left_shoulder", "right_shoulder"),
    ("left_shoulder", "left_elbow"),
    ("left_elbow", "left_wrist"),
    ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"),
    ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"),
    ("left_hip", "right_hip"),
    ("left_hip", "left_knee"),
    ("left_knee", "left_ankle"),
    ("right_hip", "right_knee"),
    ("right_knee", "right_ankle"),
]


class SkeletonAnnotator:
    """Keypoints and bones, for debugging the pose under the garment."""

    def __init__(self, color: tuple[int, int, int] = (0, 255, 255), thickness: int = 2) -> None:
        self.color = color
        self.thickness = thickness

    def annotate(self, frame: np.ndarray, pose: TimedKeypoints) -> np.ndarray:
        if pose.keypoints is None:
            return frame
        kp = pose.keypoints
        for a, b in _SKELETON:
            pa, pb = kp[KP[a]], kp[KP[b]]
            if pa[2] >= MIN_SCORE and pb[2] >= MIN_SCORE:
                cv2.line(
                    frame, (int(pa[0]), int(pa[1])), (int(pb[0]), int(pb[1])), self.color, self.thickness, cv2.LINE_AA
                )
        for x, y, s in kp:
            if s >= MIN_SCORE:
                cv2.circle(frame, (int(x), int(y)), self.thickness + 2, self.color, -1, cv2.LINE_AA)
        return frame


def render_frame(frame: np.ndarray, pose: TimedKeypoints, annotators: Sequence[Annotator]) -> np.ndarray:
    for annotator in annotators:
        frame = annotator.annotate(frame, pose)
    return frame
