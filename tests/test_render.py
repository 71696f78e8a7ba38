"""Garment format, mesh geometry, the warp and the compositing."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from smartcloset.closet.garment import GarmentError, load_garment
from smartcloset.closet.store import STARTER_DIR, Closet
from smartcloset.pose.simulate import standing_keypoints
from smartcloset.pose.timeline import TimedKeypoints
from smartcloset.pose.types import KP
from smartcloset.render.annotators import GarmentAnnotator, SkeletonAnnotator, render_frame
from smartcloset.render.composite import composite, premultiply
from smartcloset.render.mesh import GarmentMesh, body_frame, skin
from smartcloset.render.warp import warp_mesh


@pytest.fixture(scope="module")
def garment():
    return load_garment(STARTER_DIR / "tshirt-navy.json")


# -- format ----------------------------------------------------------------------------------


def test_starter_closet_has_every_kind_with_colour_variants(garment):
    garments = Closet(user_dir="/nonexistent").list()
    kinds = {g.id.rsplit("-", 1)[0] for g in garments}
    assert {"tshirt", "longsleeve", "shirt", "hoodie", "jacket", "dress", "skirt", "trousers"} <= kinds
    assert {g.category for g in garments} == {"top", "outerwear", "dress", "bottom"}
    for g in garments:
        assert len(g.variants) >= 2 and g.id in {v["id"] for v in g.variants}
        assert g.rgba.shape[2] == 4 and (g.rgba[..., 3] > 0).mean() > 0.2
    assert garment.category == "top"


def test_starter_files_are_what_the_drawing_code_draws():
    import smartcloset.closet.draw as draw

    for kind, _, _, factory, colours in draw.STARTER:
        colour, _, bgr = colours[0]  # colourways share the drawing code path
        shipped = cv2.imread(str(STARTER_DIR / f"{kind}-{colour}.png"), cv2.IMREAD_UNCHANGED)
        rgba = draw.render(factory(), bgr)
        assert shipped.shape == rgba.shape
        assert np.abs(shipped.astype(int) - rgba).max() <= 1, kind


@pytest.mark.parametrize(
    "patch, field",
    [
        ({"schema": 2}, "schema"),
        ({"id": "../evil"}, "id"),
        ({"category": "hat"}, "category"),
        ({"image": "../x.png"}, "image"),
        ({"image": "missing.png"}, "image"),
        ({"anchors": {"left_shoulder": [1, 2]}}, "anchors"),
        ({"anchors": {"left_knee_cap": [1, 2]}}, "anchors.left_knee_cap"),
        ({"anchors": "x"}, "anchors"),
        ({"layer": "top"}, "layer"),
        ({"license": 5}, "license"),
    ],
)
def test_broken_sidecars_name_the_file_and_field(tmp_path, patch, field):
    data = json.loads((STARTER_DIR / "tshirt-navy.json").read_text())
    shutil.copy(STARTER_DIR / "tshirt-navy.png", tmp_path / "tshirt-navy.png")
    data.update(patch)
    if field == "anchors.left_knee_cap":
        data["anchors"] = dict(
            json.loads((STARTER_DIR / "tshirt-navy.json").read_text())["anchors"], left_knee_cap=[1, 2]
        )
    path = tmp_path / "g.json"
    path.write_text(json.dumps(data))
    with pytest.raises(GarmentError) as err:
        load_garment(path)
    assert str(path) in str(err.value) and repr(field) in str(err.value)


def test_closet_skips_a_broken_file_and_keeps_the_rest(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    closet = Closet(tmp_path)
    assert "tshirt-navy" in closet and len(closet.errors) == 1 and "bad.json" in closet.errors[0]


# -- mesh ------------------------------------------------------------------------------------


def probe(mesh: GarmentMesh, points, part: str) -> GarmentMesh:
    """A mesh of just these garment points, all moved by one part (to see where they land)."""
    pts = np.array(points, np.float64)
    return GarmentMesh(
        pts, mesh.triangles[:0], {part: np.ones(len(pts))}, mesh.anchors, mesh.category, np.zeros(len(pts), np.int8)
    )


def test_anchors_land_on_the_keypoints(garment):
    mesh = GarmentMesh.build(garment, garment.rgba[..., 3])
    kp = standing_keypoints()
    body = body_frame(kp, mesh)
    # Map the anchor points themselves through the skinning (as a mesh of just those points).
    names = ["left_shoulder", "right_shoulder", "left_hip", "right_hip"]
    got = skin(probe(mesh, [mesh.anchors[n] for n in names], "torso"), body)
    want = np.array([kp[KP[n], :2] for n in names])
    assert np.abs(got - want).max() < 0.5


def test_sleeves_follow_the_upper_arm(garment):
    mesh = GarmentMesh.build(garment, garment.rgba[..., 3])
    for elbow in ((800, 220), (760, 330), (650, 300)):  # arm out, down, across the body
        kp = standing_keypoints()
        kp[KP["left_elbow"], :2] = elbow
        body = body_frame(kp, mesh)
        got = skin(probe(mesh, [mesh.anchors["left_elbow"]], "left_sleeve"), body)
        assert np.abs(got[0] - elbow).max() < 0.5


def orientation(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    p = points[triangles]
    return np.sign(
        (p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 1, 1] - p[:, 0, 1]) * (p[:, 2, 0] - p[:, 0, 0])
    )


@pytest.mark.parametrize("scale, dx", [(1.0, 0.0), (0.6, -200.0), (1.4, 150.0)])
@pytest.mark.parametrize("elbow", [(740, 330), (760, 330), (800, 300)])  # arms down to half raised
def test_no_triangle_folds_over_in_a_normal_pose(garment, scale, dx, elbow):
    mesh = GarmentMesh.build(garment, garment.rgba[..., 3])
    kp = standing_keypoints()
    kp[KP["left_elbow"], :2], kp[KP["right_elbow"], :2] = elbow, (1280 - elbow[0], elbow[1])
    kp[:, :2] = (kp[:, :2] - (640, 360)) * scale + (640 + dx, 360)
    dst = skin(mesh, body_frame(kp, mesh))
    for part in mesh.parts:
        assert (orientation(dst, part) == orientation(mesh.vertices, part)).all()


@pytest.mark.parametrize("elbow", [(700, 330), (720, 330), (850, 220), (830, 130)])  # pressed in, raised
def test_extreme_arms_fold_only_the_underarm_band_never_the_torso(garment, elbow):
    mesh = GarmentMesh.build(garment, garment.rgba[..., 3])
    kp = standing_keypoints()
    kp[KP["left_elbow"], :2], kp[KP["right_elbow"], :2] = elbow, (1280 - elbow[0], elbow[1])
    dst = skin(mesh, body_frame(kp, mesh))
    torso, *sleeves = mesh.parts
    assert (orientation(dst, torso) == orientation(mesh.vertices, torso)).all()
    for part in sleeves:
        folded = part[orientation(dst, part) != orientation(mesh.vertices, part)]
        assert len(folded) <= 0.2 * len(part)  # an arm across the body folds ~15 % of its sleeve
        # Folds sit where the cloth bunches: next to the seam, never out in the sleeve.
        sleeve = mesh.weights["left_sleeve"] + mesh.weights["right_sleeve"]
        assert (sleeve[folded].max(axis=-1) < 0.999).all()


def test_missing_keypoints_degrade_gracefully(garment):
    mesh = GarmentMesh.build(garment, garment.rgba[..., 3])
    kp = standing_keypoints()
    kp[KP["left_shoulder"], 2] = 0.05
    assert body_frame(kp, mesh) is None  # no shoulders: nothing to dress
    kp = standing_keypoints()
    kp[[KP["left_elbow"], KP["right_elbow"], KP["left_hip"], KP["right_hip"]], 2] = 0.0
    body = body_frame(kp, mesh)
    dst = skin(mesh, body)
    # Without elbows the sleeves hang beside the torso; without hips the torso keeps the
    # garment's proportions: everything stays within a body-sized box around the shoulders.
    assert np.isfinite(dst).all()
    assert dst[:, 0].min() > 440 and dst[:, 0].max() < 840 and dst[:, 1].min() > 120 and dst[:, 1].max() < 560


# -- warp and composite ----------------------------------------------------------------------


def test_warp_of_an_affine_mesh_matches_warpaffine():
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 4), dtype=np.uint8), (0, 0), 3)
    tex[..., 3] = 255
    ys, xs = np.mgrid[0:121:20, 0:161:20]
    src = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    nx = xs.shape[1]
    tris = []
    for j in range(ys.shape[0] - 1):
        for i in range(nx - 1):
            v = j * nx + i
            tris += [(v, v + 1, v + nx + 1), (v, v + nx + 1, v + nx)]
    tris = np.array(tris)
    A = np.array([[1.3, 0.2, 50.0], [-0.15, 1.1, 40.0]])
    dst = src @ A[:, :2].T + A[:, 2]
    for step in (1, 2):
        patch, (x0, y0) = warp_mesh(tex, src, tris, dst, (400, 300), map_step=step)
        ref = cv2.warpAffine(tex, A, (400, 300), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        ref_roi = ref[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]]
        inner = cv2.erode((patch[..., 3] == 255).astype(np.uint8), np.ones((5, 5))) > 0
        diff = np.abs(patch[..., :3].astype(int) - ref_roi[..., :3])[inner]
        assert inner.sum() > 10000 and diff.mean() < 1.0 and diff.max() <= 6, (step, diff.mean(), diff.max())


def test_composite_premultiplied():
    frame = np.full((4, 4, 3), 200, np.uint8)
    bgra = np.zeros((2, 2, 4), np.uint8)
    bgra[..., :3] = (0, 0, 255)
    bgra[..., 3] = (255, 128, 0, 64)[0:2] + (0,) * 0 if False else np.array([[255, 128], [0, 64]])
    composite(frame, premultiply(bgra), (1, 1))
    assert tuple(frame[1, 1]) == (0, 0, 255)  # opaque
    assert tuple(frame[2, 1]) == (200, 200, 200)  # transparent
    assert abs(int(frame[1, 2, 0]) - 100) <= 1 and abs(int(frame[1, 2, 2]) - 228) <= 1  # half
    assert tuple(frame[0, 0]) == (200, 200, 200)  # outside the patch


def test_garment_lands_on_the_torso_and_leaves_the_background(garment):
    frame = np.full((720, 1280, 3), (40, 160, 40), np.uint8)
    out = render_frame(frame.copy(), TimedKeypoints(standing_keypoints(), "own"), [GarmentAnnotator(garment)])
    changed = np.abs(out.astype(int) - frame).sum(axis=2) > 30
    torso = changed[240:420, 600:680]
    assert torso.mean() > 0.99  # chest to hips covered
    assert not changed[:, :450].any() and not changed[:, 850:].any() and not changed[600:].any()
    assert np.abs(out[330, 640].astype(int) - (92, 52, 28)).max() < 60  # navy, shaded


def test_no_pose_no_change(garment):
    frame = np.full((720, 1280, 3), 90, np.uint8)
    out = render_frame(frame.copy(), TimedKeypoints(None, "none"), [GarmentAnnotator(garment), SkeletonAnnotator()])
    assert np.array_equal(out, frame)


def test_garment_partly_outside_the_frame(garment):
    frame = np.zeros((720, 1280, 3), np.uint8)
    out = GarmentAnnotator(garment).annotate(frame, TimedKeypoints(standing_keypoints(1.0, 620.0), "own"))
    assert out[:, 1180:].any() and not out[:, :1000].any()


# -- jointed parts: forearms, legs, skirts ----------------------------------------------------


def starter(gid: str):
    return load_garment(STARTER_DIR / f"{gid}.json")


def land(mesh: GarmentMesh, kp: np.ndarray, anchor: str, part: str) -> np.ndarray:
    return skin(probe(mesh, [mesh.anchors[anchor]], part), body_frame(kp, mesh))[0]


def test_long_sleeves_bend_at_the_elbow():
    g = starter("shirt-blue")
    mesh = GarmentMesh.build(g, g.rgba[..., 3])
    kp = standing_keypoints()
    kp[KP["left_elbow"], :2] = (780, 300)
    kp[KP["left_wrist"], :2] = (700, 250)  # forearm folded up across the body
    assert np.abs(land(mesh, kp, "left_elbow", "left_sleeve") - (780, 300)).max() < 0.5
    assert np.abs(land(mesh, kp, "left_elbow", "left_forearm") - (780, 300)).max() < 0.5  # joined at the elbow
    assert np.abs(land(mesh, kp, "left_wrist", "left_forearm") - (700, 250)).max() < 0.5
    # The cuff of the whole skinned mesh ends near the wrist, not along the upper arm's line.
    dst = skin(mesh, body_frame(kp, mesh))
    cuff = mesh.weights["left_forearm"] > 0.99
    assert np.linalg.norm(dst[cuff].mean(axis=0) - (720, 262)) < 60


def test_trouser_legs_follow_knees_and_ankles():
    g = starter("trousers-khaki")
    mesh = GarmentMesh.build(g, g.rgba[..., 3])
    kp = standing_keypoints()
    kp[KP["left_knee"], :2] = (760, 520)  # knee out, as in a squat
    kp[KP["left_ankle"], :2] = (700, 690)
    assert np.abs(land(mesh, kp, "left_hip", "pelvis") - kp[KP["left_hip"], :2]).max() < 0.5
    assert np.abs(land(mesh, kp, "left_knee", "left_thigh") - (760, 520)).max() < 0.5
    assert np.abs(land(mesh, kp, "left_knee", "left_shin") - (760, 520)).max() < 0.5
    assert np.abs(land(mesh, kp, "left_ankle", "left_shin") - (700, 690)).max() < 0.5
    dst = skin(mesh, body_frame(kp, mesh))
    base = mesh.parts[0]
    assert (orientation(dst, base) == orientation(mesh.vertices, base)).all()


def test_skirts_follow_the_knees_and_bottoms_need_hips():
    g = starter("skirt-black")
    mesh = GarmentMesh.build(g, g.rgba[..., 3])
    assert "skirt" in mesh.weights and "left_thigh" not in mesh.weights
    kp = standing_keypoints()
    kp[[KP["left_knee"], KP["right_knee"]], 0] += 60  # knees swing right
    knee_mid = kp[[KP["left_knee"], KP["right_knee"]], :2].mean(axis=0)
    probe_mesh = probe(mesh, [(mesh.anchors["left_knee"] + mesh.anchors["right_knee"]) / 2], "skirt")
    assert np.abs(skin(probe_mesh, body_frame(kp, mesh))[0] - knee_mid).max() < 0.5
    kp[KP["left_hip"], 2] = 0.0
    assert body_frame(kp, mesh) is None  # a bottom binds to the hips: none without them


def test_a_dress_has_a_torso_and_a_skirt_and_no_sleeves():
    g = starter("dress-burgundy")
    mesh = GarmentMesh.build(g, g.rgba[..., 3])
    assert {"torso", "skirt"} <= set(mesh.weights) and not any("sleeve" in k for k in mesh.weights)
    out = GarmentAnnotator(g).annotate(np.zeros((720, 1280, 3), np.uint8), TimedKeypoints(standing_keypoints(), "own"))
    assert out[300:560, 600:680].mean() > 20  # chest down to the knees is dressed


@pytest.mark.parametrize(
    "gid",
    ["longsleeve-grey", "shirt-blue", "hoodie-grey", "jacket-black", "dress-teal", "skirt-denim", "trousers-denim"],
)
def test_every_kind_renders_without_folding_its_base(gid):
    g = starter(gid)
    mesh = GarmentMesh.build(g, g.rgba[..., 3])
    kp = standing_keypoints()
    dst = skin(mesh, body_frame(kp, mesh))
    assert np.isfinite(dst).all()
    assert (orientation(dst, mesh.parts[0]) == orientation(mesh.vertices, mesh.parts[0])).all()


# -- layering, arms in front, shading --------------------------------------------------------


def test_draw_order_layers_and_tucks():
    from smartcloset.closet.garment import draw_order

    tee, jacket, jeans = starter("tshirt-navy"), starter("jacket-black"), starter("trousers-denim")
    assert [g.id for g in draw_order([jacket, tee, jeans])] == ["trousers-denim", "tshirt-navy", "jacket-black"]
    tee.tucked = True
    assert [g.id for g in draw_order([jacket, tee, jeans])] == ["tshirt-navy", "trousers-denim", "jacket-black"]
    tee.tucked = False


def test_layered_look_outer_garment_covers_the_inner_one():
    from smartcloset.render.annotators import LookAnnotator

    tee, jacket = GarmentAnnotator(starter("tshirt-red")), GarmentAnnotator(starter("jacket-black"))
    frame = np.full((720, 1280, 3), 200, np.uint8)
    out = LookAnnotator([tee, jacket], occlusion=False, shading=False).annotate(
        frame.copy(), TimedKeypoints(standing_keypoints(), "own")
    )
    chest = out[260:400, 600:680].reshape(-1, 3).mean(axis=0)
    assert chest.max() < 90  # black jacket over the red tee, not red


def test_a_forearm_across_the_torso_stays_in_front():
    from smartcloset.render.annotators import LookAnnotator

    frame = np.full((720, 1280, 3), (40, 160, 40), np.uint8)
    kp = standing_keypoints()
    kp[KP["left_elbow"], :2] = (740, 330)
    kp[KP["left_wrist"], :2] = (600, 360)  # forearm across the belly
    cv2.line(frame, (740, 330), (600, 360), (60, 120, 230), 30)  # the real (skin-coloured) arm
    tk = TimedKeypoints(kp, "own")
    tee = GarmentAnnotator(starter("tshirt-navy"))
    without = LookAnnotator([tee], occlusion=False, shading=False).annotate(frame.copy(), tk)
    with_arms = LookAnnotator([tee], occlusion=True, shading=False).annotate(frame.copy(), tk)
    arm = (slice(340, 352), slice(640, 700))  # on the forearm, over the torso
    assert np.abs(without[arm].astype(int) - (92, 52, 28)).mean() < 60  # hidden under the cloth...
    assert np.abs(with_arms[arm].astype(int) - (60, 120, 230)).mean() < 25  # ... unless drawn in front
    assert np.array_equal(with_arms[250:300, 610:640], without[250:300, 610:640])  # the chest is unchanged


def test_person_mask_trims_the_arm_to_the_person():
    from smartcloset.render.occlusion import arm_mask

    def full(arms):  # the arms' box mask, placed in a frame-sized one
        out = np.zeros((720, 1280), np.uint8)
        m, (x0, y0) = arms
        out[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = m
        return out

    kp = standing_keypoints()
    kp[KP["left_wrist"], :2] = (600, 360)
    capsule = full(arm_mask(kp, (720, 1280)))
    person = np.zeros((360, 640), np.uint8)  # backend resolution, half of the frame
    person[:, :310] = 255  # the person ends at x = 620 in the frame
    trimmed = full(arm_mask(kp, (720, 1280), person))
    assert capsule[:, 640:].any() and not trimmed[:, 624:].any() and trimmed[:, :600].any()
    kp[KP["left_wrist"], 2] = kp[KP["right_wrist"], 2] = 0.1
    assert arm_mask(kp, (720, 1280)) is None  # no confident forearm, nothing restored


def test_arm_capsules_of_a_batch_are_each_bodys_own_seen_ones_first():
    """The batched renderer takes every frame's arms in one array call: each body's rows must be
    what it gets alone - the seen forearm and hand of each side, left first, none for a body
    whose shoulders are not seen."""
    from smartcloset.render.occlusion import arm_capsules, arm_segments

    both = standing_keypoints()
    right_only = standing_keypoints(1.1, 40)
    right_only[KP["left_wrist"], 2] = 0.1
    no_shoulders = standing_keypoints()
    no_shoulders[KP["left_shoulder"], 2] = 0.2
    caps, count = arm_capsules(np.stack([both, right_only, no_shoulders]))
    assert count.tolist() == [4, 2, 0] and caps.shape == (3, 4, 5)
    for body, c, n in zip((both, right_only, no_shoulders), caps, count):
        alone = arm_segments(body)
        assert len(alone) == n and not c[n:].any()
        for (start, end, width), row in zip(alone, c):
            assert np.array_equal(row[:4], [*start, *end]) and row[4] == width
    right = right_only[[KP["right_elbow"], KP["right_wrist"]], :2]
    assert np.array_equal(caps[1, 0, :4], right.reshape(-1))  # the right forearm, first
    assert caps[1, 1, 4] == pytest.approx(1.1 * caps[1, 0, 4])  # and its hand, a little wider


def test_shading_follows_the_folds_of_the_frame_and_keeps_the_colour():
    from smartcloset.render.shading import shade, shading_map

    flat = np.full((200, 200, 3), 120, np.uint8)
    assert np.allclose(shading_map(flat), 1.0, atol=1e-3)
    folded = flat.copy()
    folded[:, 96:104] = 60  # a dark crease
    factor = shading_map(folded)
    assert factor[100, 100] < 0.9 and abs(float(np.median(factor)) - 1.0) < 0.02
    patch = np.dstack([np.full((200, 200, 3), 100, np.uint8), np.full((200, 200), 255, np.uint8)])
    shaded = shade(patch, factor)
    assert shaded[100, 100, 0] < 90 and shaded[100, 20, 0] == 100 and (shaded[..., 3] == 255).all()


def _varied_bodies(n: int, seed: int = 0) -> list[np.ndarray]:
    """Standing people with noise from a pixel to 80 px, some keypoints unseen, some facing away
    (shoulders swapped), some with a twisted torso - every branch of the binding."""
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(n):
        k = standing_keypoints(rng.uniform(0.5, 1.5), rng.uniform(0, 100))
        k[:, :2] += rng.normal(0, rng.choice([1, 20, 80]), size=(17, 2))
        if rng.random() < 0.3:
            k[rng.integers(0, 17, size=rng.integers(1, 5)), 2] = 0.1
        if rng.random() < 0.1:
            k[[KP["left_shoulder"], KP["right_shoulder"]]] = k[[KP["right_shoulder"], KP["left_shoulder"]]]
        if rng.random() < 0.05:
            k[KP["left_hip"], :2] = k[KP["right_shoulder"], :2]
        bodies.append(k)
    return bodies


def test_binding_a_batch_of_bodies_equals_binding_each():
    """``GarmentAnnotator.rigs`` (array operations for the common case) gives every garment of
    the closet the same part matrices and pyramid level as ``rig`` body by body."""
    from smartcloset.render.mesh import part_transforms_batch

    bodies = _varied_bodies(300)
    closet = Closet(user_dir="/nonexistent")
    for g in closet.list():
        ann = GarmentAnnotator(g)
        _, fast = part_transforms_batch(ann.mesh, np.stack(bodies))
        assert 0.3 < fast.mean() < 1.0, (g.id, fast.mean())  # both ways are exercised
        for body, got in zip(bodies, ann.rigs(bodies)):
            want = ann.rig(body)
            assert (got is None) == (want is None), g.id
            if want is not None:
                assert got.level == want.level, g.id
                np.testing.assert_allclose(got.matrices, want.matrices, rtol=1e-9, atol=1e-9, err_msg=g.id)
