"""A garment's triangle mesh, skinned to the body's keypoints like a 2D jointed puppet.

Each mesh vertex belongs to the torso or to a sleeve, with a soft blend across the armhole
seam (the shoulder->armpit line) so torso and sleeve stay joined - no gaps, no seams - as the
arm swings. The torso follows a homography from the garment's shoulder/hip anchors to the
body's; a sleeve follows its upper arm bone (shoulder->elbow), stretched along the bone and
scaled across it with the torso, so the sleeve bends where the arm bends.

Low-confidence keypoints never make cloth fly off: hips missing -> estimated from the
shoulders and the garment's own proportions; an elbow missing -> the arm hangs along the
torso, slightly outward; shoulders missing -> no garment (nothing sensible to bind to).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..closet.garment import Garment
from ..pose.types import KP

MIN_SCORE = 0.3  # keypoints below this confidence are treated as missing
GRID_CELLS = 10  # mesh cells across the shoulders: enough to bend a sleeve, few enough to be cheap


def _perp(v: np.ndarray) -> np.ndarray:
    return np.array([-v[1], v[0]], dtype=np.float64)


def _axes(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors right->left shoulder ("across") and perpendicular, pointing down the image."""
    across = (left - right) / max(float(np.linalg.norm(left - right)), 1e-6)
    down = _perp(across)
    return across, (-down if down[1] < 0 else down)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@dataclass
class GarmentMesh:
    """Vertices (N, 2) and triangles (T, 3) in garment pixels, plus per-vertex sleeve weights."""

    vertices: np.ndarray
    triangles: np.ndarray
    weights: np.ndarray  # (N, 3): torso, left sleeve, right sleeve; rows sum to 1
    anchors: dict[str, np.ndarray]

    depth: np.ndarray  # (N, 2): signed distance into the left / right sleeve (<= 0: torso)

    @property
    def parts(self) -> list[np.ndarray]:
        """Triangles of each part (torso, left sleeve, right sleeve), to draw as layers.

        A triangle with any vertex inside a sleeve belongs to that sleeve, so every torso
        vertex has sleeve weight 0: the torso layer is a pure homography and cannot fold. The
        sleeve layers are drawn over it (where an arm lies against the body, the underarm cloth
        of the sleeve bunches there, as real cloth does). Separate layers also mean a
        transparent corner of a sleeve triangle never punches a hole in the torso below it.
        """
        inside = self.depth[self.triangles] > 0  # (T, 3, 2)
        left, right = inside[..., 0].any(axis=1), inside[..., 1].any(axis=1)
        torso = ~left & ~right
        return [t for t in (self.triangles[torso], self.triangles[left & ~right], self.triangles[right]) if len(t)]

    @classmethod
    def build(cls, garment: Garment, alpha: np.ndarray, cells: int = GRID_CELLS) -> GarmentMesh:
        a = {k: np.array(v, dtype=np.float64) for k, v in garment.anchors.items()}
        h, w = alpha.shape
        step = max(4, int(round(np.linalg.norm(a["left_shoulder"] - a["right_shoulder"]) / cells)))
        ys, xs = np.nonzero(alpha > 0)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        gx = np.unique(np.r_[np.arange(x0, x1, step), x1].clip(0, w))
        gy = np.unique(np.r_[np.arange(y0, y1, step), y1].clip(0, h))
        X, Y = np.meshgrid(gx.astype(np.float64), gy.astype(np.float64))
        verts = np.stack([X.ravel(), Y.ravel()], axis=1)
        nx = len(gx)
        # Two triangles per cell, kept only where the cell holds some cloth.
        cover = cv2.resize((alpha > 0).astype(np.uint8), (w, h))
        tris = []
        for j in range(len(gy) - 1):
            for i in range(nx - 1):
                cx0, cx1, cy0, cy1 = int(gx[i]), int(gx[i + 1]), int(gy[j]), int(gy[j + 1])
                if cover[cy0:cy1, cx0:cx1].any():
                    v = j * nx + i
                    tris.append((v, v + 1, v + nx + 1))
                    tris.append((v, v + nx + 1, v + nx))
        triangles = np.array(tris, dtype=np.int32).reshape(-1, 3)
        depth = cls._sleeve_depth(verts, a)
        band = 0.3 * np.linalg.norm(a["left_shoulder"] - a["right_shoulder"]) if "left_shoulder" in a else 1.0
        sleeves = _smoothstep(depth / band)  # 0 on the seams, 1 a band's width inside the sleeve
        weights = np.column_stack([1.0 - sleeves.sum(axis=1), sleeves])
        return cls(verts, triangles, weights, a, depth)

    @staticmethod
    def _sleeve_depth(verts: np.ndarray, a: dict[str, np.ndarray]) -> np.ndarray:
        """Per vertex, how far (garment px) it lies inside the left and right sleeve.

        A sleeve is what lies beyond the armhole seam (shoulder->armpit) and, below the
        armpit, outside the side seam. Negative: on the torso side.
        """
        depth = np.full((len(verts), 2), -1e9)
        if "left_shoulder" not in a or "right_shoulder" not in a:
            return depth
        across, down = _axes(a["left_shoulder"], a["right_shoulder"])
        for col, side in ((0, "left"), (1, "right")):
            sh, pit, elb = a.get(f"{side}_shoulder"), a.get(f"{side}_armpit"), a.get(f"{side}_elbow")
            if sh is None or pit is None or elb is None:
                continue
            outward = across if side == "left" else -across
            normal = _perp((pit - sh) / np.linalg.norm(pit - sh))
            if np.dot(normal, outward) < 0:  # point the normal toward the sleeve
                normal = -normal
            beyond_armhole = (verts - sh) @ normal
            above_armpit = (pit - verts) @ down  # > 0: above the armpit, where no side seam limits
            beyond_side = np.maximum((verts - pit) @ outward, above_armpit)
            depth[:, col] = np.minimum(beyond_armhole, beyond_side)
        return depth


@dataclass
class BodyFrame:
    """The body points a garment binds to, after filling in missing ones."""

    shoulders: np.ndarray  # (2, 2): left, right
    hips: np.ndarray  # (2, 2)
    elbows: np.ndarray  # (2, 2)


def body_frame(keypoints: np.ndarray, mesh: GarmentMesh) -> BodyFrame | None:
    """Pick (or estimate) the points the garment needs; None if the shoulders are not seen."""
    kp = np.asarray(keypoints, dtype=np.float64)
    ok = kp[:, 2] >= MIN_SCORE
    ls, rs = KP["left_shoulder"], KP["right_shoulder"]
    if not (ok[ls] and ok[rs]):
        return None
    shoulders = kp[[ls, rs], :2]
    width = np.linalg.norm(shoulders[0] - shoulders[1])
    if width < 4:
        return None
    a = mesh.anchors
    g_sw = np.linalg.norm(a["left_shoulder"] - a["right_shoulder"])
    scale = width / g_sw
    across, down = _axes(shoulders[0], shoulders[1])
    lh, rh = KP["left_hip"], KP["right_hip"]
    if ok[lh] and ok[rh]:
        hips = kp[[lh, rh], :2]
    else:  # the garment's own proportions: where its hip anchors sit below its shoulders
        g_across, g_down = _axes(a["left_shoulder"], a["right_shoulder"])
        g_mid = (a["left_shoulder"] + a["right_shoulder"]) / 2
        offs = np.array([a["left_hip"], a["right_hip"]]) - g_mid
        hips = shoulders.mean(axis=0) + scale * (np.outer(offs @ g_across, across) + np.outer(offs @ g_down, down))
    elbows = []
    for i, side in enumerate(("left", "right")):
        e = KP[f"{side}_elbow"]
        if ok[e]:
            elbows.append(kp[e, :2])
            continue
        g_len = np.linalg.norm(a.get(f"{side}_elbow", a[f"{side}_shoulder"] + [0, g_sw]) - a[f"{side}_shoulder"])
        outward = across if side == "left" else -across
        hang = down * np.cos(0.2) + outward * np.sin(0.2)  # ~11 deg away from the torso
        elbows.append(shoulders[i] + scale * g_len * hang)
    return BodyFrame(shoulders, np.asarray(hips), np.asarray(elbows))


def _bone_affine(
    g0: np.ndarray, g1: np.ndarray, b0: np.ndarray, b1: np.ndarray, cross_scale: float, flip: bool
) -> np.ndarray:
    """2x3 affine taking the garment bone g0->g1 onto the body bone b0->b1."""
    gl, bl = np.linalg.norm(g1 - g0), np.linalg.norm(b1 - b0)
    gu = (g1 - g0) / max(gl, 1e-6)
    bu = (b1 - b0) / max(bl, 1e-6)
    gv, bv = _perp(gu), _perp(bu) * (-1 if flip else 1)
    # p -> b0 + s_along * <p-g0, gu> bu + cross_scale * <p-g0, gv> bv
    m = np.outer(bu, gu) * (bl / max(gl, 1e-6)) + np.outer(bv, gv) * cross_scale
    return np.hstack([m, (b0 - m @ g0)[:, None]])


def _cross(u: np.ndarray, v: np.ndarray) -> float:
    return float(u[0] * v[1] - u[1] * v[0])


def skin(mesh: GarmentMesh, body: BodyFrame) -> np.ndarray | None:
    """Vertex positions (N, 2) in frame pixels for this body, or None if the torso is degenerate."""
    a = mesh.anchors
    g_quad = np.array([a["left_shoulder"], a["right_shoulder"], a["right_hip"], a["left_hip"]], np.float32)
    b_quad = np.array([body.shoulders[0], body.shoulders[1], body.hips[1], body.hips[0]], np.float32)
    if abs(cv2.contourArea(b_quad)) < 16.0 or not cv2.isContourConvex(b_quad):
        # A twisted or collapsed torso (side view, bad keypoints): fall back to an affine map
        # from the shoulders and the hip midpoint, which cannot fold.
        src = np.array([a["left_shoulder"], a["right_shoulder"], (a["left_hip"] + a["right_hip"]) / 2], np.float32)
        dst = np.array([body.shoulders[0], body.shoulders[1], body.hips.mean(axis=0)], np.float32)
        A = cv2.getAffineTransform(src, dst)
        torso = mesh.vertices @ A[:, :2].T + A[:, 2]
    else:
        Hm = cv2.getPerspectiveTransform(g_quad, b_quad)
        torso = cv2.perspectiveTransform(mesh.vertices[None].astype(np.float64), Hm)[0]
    g_sw = np.linalg.norm(a["left_shoulder"] - a["right_shoulder"])
    cross_scale = np.linalg.norm(body.shoulders[0] - body.shoulders[1]) / g_sw
    # Facing away from the camera mirrors the torso; the sleeves must mirror with it.
    g_hand = _cross(a["left_shoulder"] - a["right_shoulder"], (a["left_hip"] + a["right_hip"]) / 2 - a["left_shoulder"])
    b_hand = _cross(body.shoulders[0] - body.shoulders[1], body.hips.mean(axis=0) - body.shoulders[0])
    flip = (g_hand > 0) != (b_hand > 0)
    out = mesh.weights[:, :1] * torso
    for col, (i, side) in ((1, (0, "left")), (2, (1, "right"))):
        w = mesh.weights[:, col : col + 1]
        if not w.any():
            continue
        A = _bone_affine(
            a[f"{side}_shoulder"], a[f"{side}_elbow"], body.shoulders[i], body.elbows[i], cross_scale, flip
        )
        out = out + w * (mesh.vertices @ A[:, :2].T + A[:, 2])
    return out
