"""A garment's triangle mesh, skinned to the body's keypoints like a 2D jointed puppet.

Every garment is cut into parts along its seams, each part following one body transform:

* **torso** (tops, outerwear, dresses): a homography from the garment's shoulder and hip
  anchors onto the body's;
* **upper sleeve** (shoulder -> elbow) and, where the garment has wrist anchors, **lower sleeve**
  (elbow -> wrist): each a bone that stretches along the limb and scales across it with the
  torso, so a long sleeve bends at the elbow;
* **pelvis** (bottoms): the hips, and the **thighs** (hip -> knee) and **shins** (knee -> ankle)
  of trouser legs; **skirt** (skirts and the lower part of dresses): the hips and the knees'
  midpoint, so a skirt sways with the knees.

Across each seam the weights blend over a band *inside* the child part (sleeve, forearm, leg),
so the parent stays rigid - a torso never folds - and a joint bends without gaps or tears.
Low-confidence keypoints never fling cloth away: missing hips come from the shoulders and the
garment's own proportions, a missing elbow lets the arm hang beside the body, a missing wrist
or ankle continues the limb straight, missing knees keep the legs straight below the hips.
Shoulders missing (tops) or hips missing (bottoms): no garment - nothing sensible to bind to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from ..closet.garment import Garment
from ..pose.types import KP

MIN_SCORE = 0.3  # keypoints below this confidence are treated as missing
GRID_CELLS = 10  # mesh cells across the shoulders (or hips): enough to bend, few enough to be cheap
BAND = 0.3  # blend band across a seam, as a fraction of the shoulder (or hip) width

SIDES = ("left", "right")


def _perp(v: np.ndarray) -> np.ndarray:
    return np.array([-v[1], v[0]], dtype=np.float64)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-6)


def _axes(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors right->left ("across") and perpendicular, pointing down the image."""
    across = _unit(left - right)
    down = _perp(across)
    return across, (-down if down[1] < 0 else down)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _cross(u: np.ndarray, v: np.ndarray) -> float:
    return float(u[0] * v[1] - u[1] * v[0])


@dataclass
class GarmentMesh:
    """Vertices (N, 2) and triangles (T, 3) in garment pixels, and the parts that move them.

    ``weights`` maps a part name to its per-vertex weight (they sum to 1 per vertex);
    ``layers`` lists the triangle sets drawn one over the other: the base (torso, pelvis,
    skirt), then legs, then sleeves.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    weights: dict[str, np.ndarray]
    anchors: dict[str, np.ndarray]
    category: str
    layer_of_vertex: np.ndarray = field(repr=False)  # (N,) 0 base, 1/2 legs, 3/4 sleeves

    @property
    def parts(self) -> list[np.ndarray]:
        """Triangles per drawing layer. A triangle touching a limb belongs to that limb's layer,
        so every base vertex has limb weight 0: the base layer cannot fold, and a transparent
        corner of a sleeve never punches a hole in the torso below it."""
        return [tris for _, tris in self.layers]

    @property
    def layers(self) -> list[tuple[str, np.ndarray]]:
        """(kind, triangles) per drawing layer, in order; kind is "body" or "sleeve" (sleeves go
        over the arms, everything else under them)."""
        lay = self.layer_of_vertex[self.triangles].max(axis=1)
        return [("sleeve" if k >= 3 else "body", self.triangles[lay == k]) for k in range(5) if (lay == k).any()]

    @classmethod
    def build(cls, garment: Garment, alpha: np.ndarray, cells: int = GRID_CELLS) -> GarmentMesh:
        a = {k: np.array(v, dtype=np.float64) for k, v in garment.anchors.items()}
        width = _reference_width(a, garment.category)
        h, w = alpha.shape
        step = max(4, int(round(width / cells)))
        ys, xs = np.nonzero(alpha > 0)
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        gx = np.unique(np.r_[np.arange(x0, x1, step), x1].clip(0, w))
        gy = np.unique(np.r_[np.arange(y0, y1, step), y1].clip(0, h))
        X, Y = np.meshgrid(gx.astype(np.float64), gy.astype(np.float64))
        verts = np.stack([X.ravel(), Y.ravel()], axis=1)
        nx = len(gx)
        cloth = alpha > 0
        tris = []
        for j in range(len(gy) - 1):
            for i in range(nx - 1):
                if cloth[int(gy[j]) : int(gy[j + 1]) + 1, int(gx[i]) : int(gx[i + 1]) + 1].any():
                    v = j * nx + i
                    tris.append((v, v + 1, v + nx + 1))
                    tris.append((v, v + nx + 1, v + nx))
        triangles = np.array(tris, dtype=np.int32).reshape(-1, 3)
        weights, layer = _part_weights(verts, a, garment.category, BAND * width)
        return cls(verts, triangles, weights, a, garment.category, layer)


def _reference_width(a: dict[str, np.ndarray], category: str) -> float:
    if category != "bottom" and "left_shoulder" in a and "right_shoulder" in a:
        return float(np.linalg.norm(a["left_shoulder"] - a["right_shoulder"]))
    return float(np.linalg.norm(a["left_hip"] - a["right_hip"])) * 1.4


def _beyond(verts: np.ndarray, point: np.ndarray, normal: np.ndarray) -> np.ndarray:
    return (verts - point) @ normal


def _part_weights(verts: np.ndarray, a: dict[str, np.ndarray], category: str, band: float):
    """Per-vertex weight of each part, and each vertex's drawing layer."""
    n = len(verts)
    weights: dict[str, np.ndarray] = {}
    layer = np.zeros(n, np.int8)
    ramp = lambda d: _smoothstep(d / band)  # noqa: E731  0 on the seam, 1 a band inside the child
    remaining = np.ones(n)

    if category == "bottom":
        base = "pelvis"
    else:
        base = "torso"
        across, down = _axes(a["left_shoulder"], a["right_shoulder"])
        for k, side in enumerate(SIDES):
            sh, pit, elb = a.get(f"{side}_shoulder"), a.get(f"{side}_armpit"), a.get(f"{side}_elbow")
            if pit is None or elb is None:
                continue
            outward = across if side == "left" else -across
            normal = _perp(_unit(pit - sh))
            if np.dot(normal, outward) < 0:
                normal = -normal
            # The sleeve: above the armpit, what lies beyond the armhole seam; below it, what lies
            # outside the side seam (a hanging sleeve runs alongside the body there).
            beyond_armhole, beyond_side = _beyond(verts, sh, normal), _beyond(verts, pit, outward)
            below = np.where(
                beyond_side > 0, np.maximum(beyond_armhole, beyond_side), np.minimum(beyond_armhole, beyond_side)
            )
            depth = np.where((pit - verts) @ down > 0, beyond_armhole, below)
            sleeve = ramp(depth) * remaining
            layer[depth > 0] = 3 + k
            wrist = a.get(f"{side}_wrist")
            if wrist is not None:  # a long sleeve bends at the elbow
                axis = _unit(elb - sh)
                forearm = ramp(_beyond(verts, elb, axis)) * sleeve
                weights[f"{side}_forearm"] = forearm
                sleeve = sleeve - forearm
            weights[f"{side}_sleeve"] = sleeve
            remaining = remaining - sleeve - weights.get(f"{side}_forearm", 0)

    if category in ("bottom", "dress"):
        hip_axis, hip_down = _axes(a["left_hip"], a["right_hip"])
        mid_hip = (a["left_hip"] + a["right_hip"]) / 2
        knees = all(f"{s}_knee" in a for s in SIDES)
        legs = category == "bottom" and knees and "crotch" in a
        if legs:  # trousers: two legs below the crotch, split at the centre line
            below = _beyond(verts, a["crotch"], hip_down)
            for k, side in enumerate(SIDES):
                outward = hip_axis if side == "left" else -hip_axis
                on_side = _beyond(verts, mid_hip, outward) > 0
                leg = np.where(on_side, ramp(below), 0.0) * remaining
                layer[(below > 0) & on_side] = 1 + k
                if f"{side}_ankle" in a:
                    shin = ramp(_beyond(verts, a[f"{side}_knee"], _unit(a[f"{side}_ankle"] - a[f"{side}_knee"]))) * leg
                    weights[f"{side}_shin"] = shin
                    leg = leg - shin
                weights[f"{side}_thigh"] = leg
                remaining = remaining - leg - weights.get(f"{side}_shin", 0)
        elif knees:  # a skirt (or a dress's skirt) follows the hips and the knees' midpoint
            skirt = ramp(_beyond(verts, mid_hip, hip_down)) * remaining
            weights["skirt"] = skirt
            remaining = remaining - skirt
    weights[base] = remaining
    return weights, layer


@dataclass
class BodyFrame:
    """The body points a garment binds to, after filling in missing ones ((2, 2): left, right)."""

    shoulders: np.ndarray | None
    hips: np.ndarray
    elbows: np.ndarray | None = None
    wrists: np.ndarray | None = None
    knees: np.ndarray | None = None
    ankles: np.ndarray | None = None


def _pair(kp: np.ndarray, ok: np.ndarray, name: str) -> np.ndarray | None:
    i, j = KP[f"left_{name}"], KP[f"right_{name}"]
    return kp[[i, j], :2] if ok[i] and ok[j] else None


def _continue_limb(
    base: np.ndarray, joint: np.ndarray, ratio: np.ndarray, given: np.ndarray, ok: np.ndarray
) -> np.ndarray:
    """Per side: the keypoint if seen, else the limb continued straight with the garment's ratio."""
    guess = joint + (joint - base) * ratio[:, None]
    return np.where(ok[:, None], given, guess)


def body_frame(keypoints: np.ndarray, mesh: GarmentMesh) -> BodyFrame | None:
    """Pick (or estimate) the points the garment needs; None if its root is not seen."""
    kp = np.asarray(keypoints, dtype=np.float64)
    ok = kp[:, 2] >= MIN_SCORE
    a = mesh.anchors
    side_ok = lambda name: np.array([ok[KP[f"{s}_{name}"]] for s in SIDES])  # noqa: E731
    shoulders = _pair(kp, ok, "shoulder")
    hips = _pair(kp, ok, "hip")
    if mesh.category == "bottom":
        if hips is None or np.linalg.norm(hips[0] - hips[1]) < 4:
            return None
        scale = np.linalg.norm(hips[0] - hips[1]) / np.linalg.norm(a["left_hip"] - a["right_hip"])
    else:
        if shoulders is None or np.linalg.norm(shoulders[0] - shoulders[1]) < 4:
            return None
        scale = np.linalg.norm(shoulders[0] - shoulders[1]) / np.linalg.norm(a["left_shoulder"] - a["right_shoulder"])
        if hips is None:  # the garment's own proportions: where its hips sit below its shoulders
            across, down = _axes(shoulders[0], shoulders[1])
            g_across, g_down = _axes(a["left_shoulder"], a["right_shoulder"])
            offs = np.array([a["left_hip"], a["right_hip"]]) - (a["left_shoulder"] + a["right_shoulder"]) / 2
            hips = shoulders.mean(axis=0) + scale * (np.outer(offs @ g_across, across) + np.outer(offs @ g_down, down))
    frame = BodyFrame(shoulders, np.asarray(hips))
    if shoulders is not None and "left_elbow" in a:
        across, down = _axes(shoulders[0], shoulders[1])
        elbows = []
        for i, side in enumerate(SIDES):
            e = KP[f"{side}_elbow"]
            if ok[e]:
                elbows.append(kp[e, :2])
                continue
            g_len = np.linalg.norm(a[f"{side}_elbow"] - a[f"{side}_shoulder"])
            outward = across if side == "left" else -across
            elbows.append(shoulders[i] + scale * g_len * (down * np.cos(0.2) + outward * np.sin(0.2)))
        frame.elbows = np.array(elbows)
        if "left_wrist" in a:
            ratio = np.array(
                [
                    np.linalg.norm(a[f"{s}_wrist"] - a[f"{s}_elbow"])
                    / np.linalg.norm(a[f"{s}_elbow"] - a[f"{s}_shoulder"])
                    for s in SIDES
                ]
            )
            given = np.array([kp[KP[f"{s}_wrist"], :2] for s in SIDES])
            frame.wrists = _continue_limb(shoulders, frame.elbows, ratio, given, side_ok("wrist") & side_ok("elbow"))
    if "left_knee" in a:
        _, down = _axes(frame.hips[0], frame.hips[1])
        g_len = np.array([np.linalg.norm(a[f"{s}_knee"] - a[f"{s}_hip"]) for s in SIDES])
        straight = frame.hips + np.outer(scale * g_len, down)
        given = np.array([kp[KP[f"{s}_knee"], :2] for s in SIDES])
        frame.knees = np.where(side_ok("knee")[:, None], given, straight)
        if "left_ankle" in a:
            ratio = np.array(
                [
                    np.linalg.norm(a[f"{s}_ankle"] - a[f"{s}_knee"]) / np.linalg.norm(a[f"{s}_knee"] - a[f"{s}_hip"])
                    for s in SIDES
                ]
            )
            given = np.array([kp[KP[f"{s}_ankle"], :2] for s in SIDES])
            frame.ankles = _continue_limb(frame.hips, frame.knees, ratio, given, side_ok("ankle") & side_ok("knee"))
    return frame


def _bone_affine(g0, g1, b0, b1, cross_scale: float, flip: bool) -> np.ndarray:
    """2x3 affine taking the garment bone g0->g1 onto the body bone b0->b1."""
    gl, bl = np.linalg.norm(g1 - g0), np.linalg.norm(b1 - b0)
    gu, bu = (g1 - g0) / max(gl, 1e-6), (b1 - b0) / max(bl, 1e-6)
    gv, bv = _perp(gu), _perp(bu) * (-1 if flip else 1)
    m = np.outer(bu, gu) * (bl / max(gl, 1e-6)) + np.outer(bv, gv) * cross_scale
    return np.hstack([m, (b0 - m @ g0)[:, None]])


def _apply(A: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ A[:, :2].T + A[:, 2]


def _three_point(src: list[np.ndarray], dst: list[np.ndarray]) -> np.ndarray:
    return cv2.getAffineTransform(np.array(src, np.float32), np.array(dst, np.float32)).astype(np.float64)


def part_transforms(mesh: GarmentMesh, body: BodyFrame) -> dict[str, np.ndarray]:
    """Per part with any weight, the 3x3 (projective) matrix taking garment pixels to frame
    pixels: the torso's homography, the other parts' affines. ``skin`` blends them per vertex;
    the batched renderer blends them on the GPU for a whole batch of frames."""
    a, w = mesh.anchors, mesh.weights
    out: dict[str, np.ndarray] = {}
    g_hips = [a["left_hip"], a["right_hip"]]
    hip_w = np.linalg.norm(body.hips[0] - body.hips[1]) / np.linalg.norm(g_hips[0] - g_hips[1])
    if body.shoulders is not None and "left_shoulder" in a:
        g_quad = np.array([a["left_shoulder"], a["right_shoulder"], a["right_hip"], a["left_hip"]], np.float32)
        b_quad = np.array([body.shoulders[0], body.shoulders[1], body.hips[1], body.hips[0]], np.float32)
        cross = np.linalg.norm(body.shoulders[0] - body.shoulders[1]) / np.linalg.norm(
            a["left_shoulder"] - a["right_shoulder"]
        )
        g_hand = _cross(a["left_shoulder"] - a["right_shoulder"], (g_hips[0] + g_hips[1]) / 2 - a["left_shoulder"])
        b_hand = _cross(body.shoulders[0] - body.shoulders[1], body.hips.mean(axis=0) - body.shoulders[0])
        flip = (g_hand > 0) != (b_hand > 0)  # facing away mirrors the torso; limbs mirror with it
    else:
        cross, flip = hip_w, False
    for name, weight in w.items():
        if not weight.any():
            continue
        if name == "torso":
            if abs(cv2.contourArea(b_quad)) < 16.0 or not cv2.isContourConvex(b_quad):
                # A twisted or collapsed torso: an affine map (shoulders, hip midpoint) cannot fold.
                M = _three_point(
                    [a["left_shoulder"], a["right_shoulder"], (g_hips[0] + g_hips[1]) / 2],
                    [body.shoulders[0], body.shoulders[1], body.hips.mean(axis=0)],
                )
            else:
                M = cv2.getPerspectiveTransform(g_quad, b_quad)
        elif name in ("pelvis", "skirt"):
            g_mid, b_mid = (g_hips[0] + g_hips[1]) / 2, body.hips.mean(axis=0)
            if name == "skirt" and body.knees is not None:
                g_low, b_low = (a["left_knee"] + a["right_knee"]) / 2, body.knees.mean(axis=0)
            else:  # straight down from the hips, scaled like them
                _, g_down = _axes(*g_hips)
                _, b_down = _axes(body.hips[0], body.hips[1])
                g_low, b_low = g_mid + g_down * 100.0, b_mid + b_down * 100.0 * hip_w
            M = _three_point([g_hips[0], g_hips[1], g_low], [body.hips[0], body.hips[1], b_low])
        else:
            side, part = name.split("_", 1)
            i = SIDES.index(side)
            bones = {
                "sleeve": ("shoulder", "elbow", body.shoulders, body.elbows),
                "forearm": ("elbow", "wrist", body.elbows, body.wrists),
                "thigh": ("hip", "knee", body.hips, body.knees),
                "shin": ("knee", "ankle", body.knees, body.ankles),
            }[part]
            g0, g1, b0, b1 = a[f"{side}_{bones[0]}"], a[f"{side}_{bones[1]}"], bones[2][i], bones[3][i]
            M = _bone_affine(g0, g1, b0, b1, cross, flip)
        out[name] = M if M.shape == (3, 3) else np.vstack([M, [0.0, 0.0, 1.0]])
    return out


def skin(mesh: GarmentMesh, body: BodyFrame) -> np.ndarray:
    """Vertex positions (N, 2) in frame pixels for this body."""
    v, w = mesh.vertices, mesh.weights
    out = np.zeros_like(v)
    for name, M in part_transforms(mesh, body).items():
        if M[2, 0] == 0 and M[2, 1] == 0 and M[2, 2] == 1:
            pos = _apply(M[:2], v)
        else:
            pos = cv2.perspectiveTransform(v[None].astype(np.float64), M)[0]
        out += w[name][:, None] * pos
    return out


# -- the same binding for a whole batch of bodies ----------------------------------------------


def _fast_pairs(mesh: GarmentMesh) -> list[str] | None:
    """The keypoint pairs the vectorised binding needs seen, or None where this garment's
    anchors take a shape it does not cover (then every body goes through ``body_frame``)."""
    a = mesh.anchors
    if ("left_wrist" in a and "left_elbow" not in a) or ("left_ankle" in a and "left_knee" not in a):
        return None
    if mesh.category == "bottom":
        if "left_shoulder" in a or "left_elbow" in a or "left_hip" not in a:
            return None
        pairs = ["hip"]
    else:
        if "left_shoulder" not in a or "left_hip" not in a:
            return None
        pairs = ["shoulder", "hip"] + [n for n in ("elbow", "wrist") if f"left_{n}" in a]
    return pairs + [n for n in ("knee", "ankle") if f"left_{n}" in a]


def _norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt((v * v).sum(axis=-1))


def _cross_b(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _perp_b(v: np.ndarray) -> np.ndarray:
    return np.stack([-v[..., 1], v[..., 0]], axis=-1)


def _solve_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(B, 3, 2) float32 point triples -> (B, 3, 3) affines, as ``cv2.getAffineTransform``."""
    s = np.concatenate([src.astype(np.float64), np.ones(src.shape[:-1] + (1,))], axis=-1)  # (B, 3, 3)
    m = np.linalg.solve(s, dst.astype(np.float64))  # (B, 3, 2): [x y 1] @ m = dst
    out = np.zeros((len(src), 3, 3))
    out[:, :2] = m.transpose(0, 2, 1)
    out[:, 2, 2] = 1.0
    return out


def _bone_affines(g0, g1, b0, b1, cross: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """``_bone_affine`` for a batch: garment bone (2,) points, body bones (B, 2)."""
    gl, bl = float(np.linalg.norm(g1 - g0)), _norm(b1 - b0)
    gu = (g1 - g0) / max(gl, 1e-6)
    bu = (b1 - b0) / np.maximum(bl, 1e-6)[:, None]
    gv, bv = _perp(gu), _perp_b(bu) * np.where(flip, -1.0, 1.0)[:, None]
    m = bu[:, :, None] * gu[None, None, :] * (bl / max(gl, 1e-6))[:, None, None]
    m = m + bv[:, :, None] * gv[None, None, :] * cross[:, None, None]
    out = np.zeros((len(b0), 3, 3))
    out[:, :2, :2] = m
    out[:, :2, 2] = b0 - m @ g0
    out[:, 2, 2] = 1.0
    return out


def part_transforms_batch(mesh: GarmentMesh, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``part_transforms`` for a batch of bodies ((B, K, 3) keypoints) in array operations:
    (B, P, 3, 3) matrices in ``mesh.weights`` order (identity for weightless parts) and which
    bodies they hold. Why: the batched renderer binds every frame's garments each batch, and
    one body at a time cost ~0.3 ms of host Python a garment a frame.

    Only the common case is done here - every keypoint the garment binds to seen, the torso a
    plain convex quadrilateral; the other bodies (estimated points, twisted torsos, no garment)
    are left False for ``body_frame`` and ``part_transforms`` to do one by one."""
    kp = np.asarray(keypoints, dtype=np.float64)
    n, parts = len(kp), list(mesh.weights)
    mats = np.broadcast_to(np.eye(3), (n, len(parts), 3, 3)).copy()
    pairs = _fast_pairs(mesh)
    if pairs is None or n == 0:
        return mats, np.zeros(n, bool)
    a = mesh.anchors
    pts = {p: kp[:, [KP[f"left_{p}"], KP[f"right_{p}"]], :2] for p in pairs}  # (B, 2, 2) each
    fast = np.ones(n, bool)
    for p in pairs:
        fast &= (kp[:, [KP[f"left_{p}"], KP[f"right_{p}"]], 2] >= MIN_SCORE).all(axis=1)
    root = "hip" if mesh.category == "bottom" else "shoulder"
    fast &= _norm(pts[root][:, 0] - pts[root][:, 1]) >= 4
    hips = pts["hip"]
    hip_w = _norm(hips[:, 0] - hips[:, 1]) / np.linalg.norm(a["left_hip"] - a["right_hip"])
    if "shoulder" in pts:
        sh = pts["shoulder"]
        cross = _norm(sh[:, 0] - sh[:, 1]) / np.linalg.norm(a["left_shoulder"] - a["right_shoulder"])
        g_mid = (a["left_hip"] + a["right_hip"]) / 2
        g_hand = _cross(a["left_shoulder"] - a["right_shoulder"], g_mid - a["left_shoulder"])
        flip = (g_hand > 0) != (_cross_b(sh[:, 0] - sh[:, 1], hips.mean(axis=1) - sh[:, 0]) > 0)
    else:
        cross, flip = hip_w, np.zeros(n, bool)
    for i, name in enumerate(parts):
        if not mesh.weights[name].any():
            continue
        if name == "torso":
            g_quad = np.array([a["left_shoulder"], a["right_shoulder"], a["right_hip"], a["left_hip"]], np.float32)
            quad = np.stack([sh[:, 0], sh[:, 1], hips[:, 1], hips[:, 0]], axis=1).astype(np.float32)
            q = quad.astype(np.float64)
            nxt = np.roll(q, -1, axis=1)
            edges = nxt - q
            turns = _cross_b(edges, np.roll(edges, -1, axis=1))  # (B, 4): the turn at each corner
            area = 0.5 * np.abs(_cross_b(q, nxt).sum(axis=1))  # the shoelace formula
            # Strictly convex and clear of the area limit; a borderline quad goes the exact way.
            fast &= ((turns > 1e-6).all(axis=1) | (turns < -1e-6).all(axis=1)) & (area > 16.0 + 1e-3)
            # OpenCV's own solver, body by body (~10 us each): a near-degenerate quad gives an
            # ill-conditioned system, where another LU would land pixels elsewhere.
            for row in np.flatnonzero(fast):
                mats[row, i] = cv2.getPerspectiveTransform(g_quad, quad[row])
        elif name in ("pelvis", "skirt"):
            g_hips = np.array([a["left_hip"], a["right_hip"]])
            g_mid, b_mid = g_hips.mean(axis=0), hips.mean(axis=1)
            if name == "skirt" and "knee" in pts:
                g_low = np.broadcast_to((a["left_knee"] + a["right_knee"]) / 2, (n, 2))
                b_low = pts["knee"].mean(axis=1)
            else:  # straight down from the hips, scaled like them
                _, g_down = _axes(*g_hips)
                across = (hips[:, 0] - hips[:, 1]) / np.maximum(_norm(hips[:, 0] - hips[:, 1]), 1e-6)[:, None]
                down = _perp_b(across)
                b_down = np.where(down[:, 1:2] < 0, -down, down)
                g_low = np.broadcast_to(g_mid + g_down * 100.0, (n, 2))
                b_low = b_mid + b_down * 100.0 * hip_w[:, None]
            src = np.stack([np.broadcast_to(g_hips[0], (n, 2)), np.broadcast_to(g_hips[1], (n, 2)), g_low], axis=1)
            dst = np.stack([hips[:, 0], hips[:, 1], b_low], axis=1)
            mats[fast, i] = _solve_affine(src[fast].astype(np.float32), dst[fast].astype(np.float32))
        else:
            side, part = name.split("_", 1)
            j = SIDES.index(side)
            start, end = {
                "sleeve": ("shoulder", "elbow"),
                "forearm": ("elbow", "wrist"),
                "thigh": ("hip", "knee"),
                "shin": ("knee", "ankle"),
            }[part]
            g0, g1 = a[f"{side}_{start}"], a[f"{side}_{end}"]
            mats[:, i] = _bone_affines(g0, g1, pts[start][:, j], pts[end][:, j], cross, flip)
    return mats, fast
