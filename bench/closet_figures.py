"""The closet's figures: render time per garment, anchor error and jitter on the person video,
and the before/after pictures in docs/.

    .venv/bin/python bench/closet_figures.py [--pictures]

Render times are medians on this machine's CPU at 1280x720. The anchor error compares where the
rendered garment's anchors land (the live path: BlazePose at 640x360, the keypoint timeline with
One-Euro smoothing, the skinned mesh) with the video's reference keypoints, in % of the shoulder
width. Jitter is the RMS frame-to-frame acceleration of those anchors, with and without smoothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from smartcloset.bench import letterbox, letterbox_keypoints
from smartcloset.closet.garment import draw_order, load_garment
from smartcloset.closet.importer import import_garment
from smartcloset.closet.store import STARTER_DIR
from smartcloset.pose.backend import create_backend
from smartcloset.pose.timeline import KeypointTimeline, TimedKeypoints
from smartcloset.pose.types import KP
from smartcloset.render.annotators import GarmentAnnotator, LookAnnotator
from smartcloset.render.mesh import GarmentMesh, body_frame, skin
from smartcloset.tryon import _pose_input

log = logging.getLogger("closet_figures")
ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
KINDS = [
    "tshirt-navy",
    "longsleeve-grey",
    "shirt-blue",
    "hoodie-grey",
    "jacket-tan",
    "dress-burgundy",
    "skirt-denim",
    "trousers-khaki",
]
IMPORTS = {"dress": "dress", "hoodie": "top", "outwear": "outerwear", "shirt": "top", "t-shirt": "top"}


def video():
    cap = cv2.VideoCapture(str(FIXTURES / "video" / "pose_squats.mp4"))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(letterbox(f, (1280, 720)))
    data = json.loads((FIXTURES / "video" / "pose_squats_coco17_per_frame.json").read_text())
    src = (data["width"], data["height"])
    truth = []
    for f in data["frames"]:
        kp = letterbox_keypoints(np.array(f["keypoints"]).reshape(17, 3), src, (1280, 720))
        kp[:, 2] = 1.0
        truth.append(kp)
    return frames, truth, 1000.0 / data["fps"]


def median_ms(fn, n: int = 30) -> float:
    fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts) * 1000)


def render_times(frame, kp) -> None:
    pose = TimedKeypoints(kp, "own")
    log.info("render time at 1280x720 (median of 30, this CPU):")
    for gid in KINDS:
        ann = GarmentAnnotator(load_garment(STARTER_DIR / f"{gid}.json"))
        log.info("  %-16s warp + composite %5.1f ms", gid, median_ms(lambda a=ann: a.annotate(frame.copy(), pose)))
    for look in (["tshirt-navy", "trousers-khaki"], ["shirt-blue", "jacket-tan"]):
        anns = [GarmentAnnotator(g) for g in draw_order([load_garment(STARTER_DIR / f"{i}.json") for i in look])]
        full = LookAnnotator(anns, occlusion=True, shading=True)
        plain = LookAnnotator(anns, occlusion=False, shading=False)
        log.info(
            "  %-32s two layers %5.1f ms; with occlusion + shading %5.1f ms",
            " + ".join(look),
            median_ms(lambda a=plain: a.annotate(frame.copy(), pose)),
            median_ms(lambda a=full: a.annotate(frame.copy(), pose)),
        )


def anchor_tracks(frames, truth, dt_ms, gid: str):
    """Per frame: (rendered anchor positions smoothed, unsmoothed, reference keypoints)."""
    garment = load_garment(STARTER_DIR / f"{gid}.json")
    mesh = GarmentMesh.build(garment, garment.rgba[..., 3])
    names = [
        ("left_shoulder", "torso"),
        ("right_shoulder", "torso"),
        ("left_hip", "torso"),
        ("right_hip", "torso"),
        ("left_elbow", "left_sleeve"),
        ("right_elbow", "right_sleeve"),
    ]
    backend = create_backend("mediapipe", segmentation=False)
    timeline = KeypointTimeline()
    out = []
    for i, frame in enumerate(frames):
        t = i * dt_ms
        small = _pose_input(frame, (640, 360))
        (pose,) = backend.infer([small], ["video"])
        timeline.add(t, pose.scaled(1280 / small.shape[1], 720 / small.shape[0]), t, 720)
        raw, smooth = timeline.at(t), timeline.smoothed(t)
        row = []
        for tk in (smooth, raw):
            body = body_frame(tk.keypoints, mesh) if tk.keypoints is not None else None
            if body is None:
                row.append(None)
                continue
            pts = [
                skin(
                    GarmentMesh(
                        mesh.anchors[n][None],
                        mesh.triangles[:0],
                        {p: np.ones(1)},
                        mesh.anchors,
                        mesh.category,
                        np.zeros(1, np.int8),
                    ),
                    body,
                )[0]
                for n, p in names
            ]
            row.append(np.array(pts))
        out.append((row[0], row[1], np.array([truth[i][KP[n], :2] for n, _ in names])))
    backend.close()
    return out, [n for n, _ in names]


def anchor_figures(frames, truth, dt_ms) -> None:
    tracks, names = anchor_tracks(frames, truth, dt_ms, "tshirt-navy")
    errs, acc = [], {"smoothed": [], "raw": []}
    for smooth, _, ref in tracks:
        if smooth is None:
            continue
        sw = np.linalg.norm(ref[0] - ref[1])
        errs.append(np.linalg.norm(smooth - ref, axis=1) / sw * 100)
    errs = np.array(errs)
    log.info(
        "anchor error on the video (T-shirt; percent of shoulder width; BlazePose + timeline + mesh vs the video's reference):"
    )
    for j, n in enumerate(names):
        log.info("  %-15s median %5.1f %%  p90 %5.1f %%", n, np.median(errs[:, j]), np.percentile(errs[:, j], 90))
    log.info("  all             median %5.1f %%", np.median(errs))
    for k, key in enumerate(("smoothed", "raw")):
        pos = np.array([t[k] for t in tracks if t[k] is not None])
        a = pos[2:] - 2 * pos[1:-1] + pos[:-2]
        acc[key] = float(np.sqrt(np.mean(np.sum(a**2, axis=-1))))
    log.info(
        "jitter (RMS frame-to-frame acceleration of the anchors, px/frame^2): smoothed %.1f, raw %.1f (x%.2f)",
        acc["smoothed"],
        acc["raw"],
        acc["smoothed"] / acc["raw"],
    )


def pictures(frames, truth) -> None:
    docs = ROOT / "docs" / "garments"
    docs.mkdir(parents=True, exist_ok=True)
    i = 0
    kp = TimedKeypoints(truth[i], "own")
    crop = lambda img: cv2.resize(img[:, 400:880], (240, 360), interpolation=cv2.INTER_AREA)  # noqa: E731
    tiles = [cv2.putText(crop(frames[i]).copy(), "before", (8, 22), 0, 0.6, (0, 0, 0), 2)]
    for gid in KINDS:
        out = LookAnnotator([GarmentAnnotator(load_garment(STARTER_DIR / f"{gid}.json"))]).annotate(
            frames[i].copy(), kp
        )
        tiles.append(cv2.putText(crop(out), gid, (8, 22), 0, 0.5, (0, 0, 0), 2))
    cv2.imwrite(str(docs / "starter-on-person.jpg"), np.hstack(tiles), [cv2.IMWRITE_JPEG_QUALITY, 85])
    with tempfile.TemporaryDirectory() as tmp:
        tiles = [tiles[0]]
        flat = []
        for stem, cat in IMPORTS.items():
            (path,) = (FIXTURES / "garments").glob(f"{stem}-*.jpg")
            g = import_garment(path.read_bytes(), cat, stem, tmp)
            out = LookAnnotator([GarmentAnnotator(g)]).annotate(frames[i].copy(), kp)
            tiles.append(cv2.putText(crop(out), stem, (8, 22), 0, 0.5, (0, 0, 0), 2))
            vis = g.rgba[..., :3].copy()
            vis[g.rgba[..., 3] < 128] = (90, 140, 90)
            for x, y in g.anchors.values():
                cv2.circle(vis, (int(x), int(y)), 6, (0, 255, 255), -1)
            s = 360 / vis.shape[0]
            flat.append(cv2.resize(vis, (int(vis.shape[1] * s), 360)))
        cv2.imwrite(str(docs / "imported-on-person.jpg"), np.hstack(tiles), [cv2.IMWRITE_JPEG_QUALITY, 85])
        cv2.imwrite(str(docs / "imported-cutouts.jpg"), np.hstack(flat), [cv2.IMWRITE_JPEG_QUALITY, 85])
    log.info("pictures written to %s", docs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pictures", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    frames, truth, dt = video()
    render_times(frames[0], truth[0])
    anchor_figures(frames, truth, dt)
    if args.pictures:
        pictures(frames, truth)


if __name__ == "__main__":
    main()
