"""Starter garments drawn by the project itself (no third-party images), deterministically.

Each garment is a *sketch*: cloth polygons, darker panels (collars, bands, pockets), fold
shadows, seams and stitching, buttons and zips, plus its anchor points. ``render`` turns a sketch
into an RGBA image at 2x, shades it so it reads as cloth (light from above, darker toward the
silhouette, soft folds, a faint weave) and downsamples it for clean edges.
``python -m smartcloset.closet.draw [DIR]`` rewrites the files shipped in ``closet/starter/``.

All tops share one frame (shoulder anchors 188 px apart at y=106, hips 132 px apart at y=402),
drawn in an A-pose (arms 60-72 deg below horizontal), so the skinning bends them little for a
person standing naturally. Bottoms share another (hips at y=120).
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .garment import DEFAULT_LAYER, save_garment

log = logging.getLogger(__name__)

SS = 2  # supersampling factor
Pt = tuple[float, float]


@dataclass
class Sketch:
    width: int
    height: int
    cloth: list[list[Pt]] = field(default_factory=list)  # filled polygons (their union is the garment)
    panels: list[tuple[list[Pt], float]] = field(default_factory=list)  # polygon, darkening 0..1
    folds: list[tuple[list[Pt], float, float]] = field(default_factory=list)  # polyline, width, strength
    seams: list[tuple[list[Pt], float, bool]] = field(default_factory=list)  # polyline, width, dashed
    buttons: list[tuple[Pt, float]] = field(default_factory=list)  # centre, radius
    zips: list[list[Pt]] = field(default_factory=list)
    anchors: dict[str, Pt] = field(default_factory=dict)


def mirror(pts: list[Pt], cx: float) -> list[Pt]:
    return [(2 * cx - x, y) for x, y in pts]


def curve(a: Pt, ctrl: Pt, b: Pt, n: int = 16) -> list[Pt]:
    t = np.linspace(0, 1, n)[:, None]
    pts = (1 - t) ** 2 * np.array(a) + 2 * (1 - t) * t * np.array(ctrl) + t**2 * np.array(b)
    return [(float(x), float(y)) for x, y in pts]


def _fixed(pts: list[Pt]) -> np.ndarray:
    return (np.array(pts, dtype=np.float64) * SS * 16).round().astype(np.int32)  # shift=4


def _polyline(img: np.ndarray, pts: list[Pt], value, width: float, dashed: bool = False) -> None:
    p = _fixed(pts)
    thick = max(1, int(round(width * SS)))
    for i in range(len(p) - 1):
        a, b = p[i].astype(float), p[i + 1].astype(float)
        if not dashed:
            cv2.line(img, tuple(p[i]), tuple(p[i + 1]), value, thick, cv2.LINE_AA, 4)
            continue
        n = max(2, int(np.linalg.norm(b - a) / (16 * SS * 6)))
        for k in range(0, n, 2):
            s, e = a + (b - a) * k / n, a + (b - a) * (k + 1) / n
            cv2.line(img, tuple(s.astype(int)), tuple(e.astype(int)), value, thick, cv2.LINE_AA, 4)


def render(sketch: Sketch, color_bgr: tuple[int, int, int], seed: int = 7) -> np.ndarray:
    big = (sketch.height * SS, sketch.width * SS)
    mask = np.zeros(big, np.uint8)
    for poly in sketch.cloth:
        cv2.fillPoly(mask, [_fixed(poly)], 255, cv2.LINE_AA, 4)
    base = np.array(color_bgr, np.float32) / 255.0
    yy, xx = np.mgrid[0 : big[0], 0 : big[1]].astype(np.float32)
    light = 1.04 - 0.12 * (yy / big[0]) - 0.05 * (xx / big[1])
    edge = cv2.distanceTransform((mask > 127).astype(np.uint8), cv2.DIST_L2, 5) / SS
    light *= 0.78 + 0.22 * np.clip(edge / 30.0, 0, 1)
    folds = np.zeros(big, np.float32)
    for line, width, strength in sketch.folds:
        _polyline(folds, line, float(strength), width)
    light *= 1.0 - 0.4 * np.clip(cv2.GaussianBlur(folds, (0, 0), 8 * SS), 0, 1)
    rng = np.random.default_rng(seed)
    light *= 1.0 + 0.025 * cv2.GaussianBlur(rng.standard_normal(big).astype(np.float32), (0, 0), 0.8 * SS)
    panel = np.zeros(big, np.float32)
    for poly, amount in sketch.panels:
        layer = np.zeros(big, np.uint8)
        cv2.fillPoly(layer, [_fixed(poly)], 255, cv2.LINE_AA, 4)
        panel = np.maximum(panel, layer / 255.0 * amount)
    light *= 1.0 - panel
    img = np.clip(base * light[..., None], 0, 1)
    # Seams, stitching, zips and buttons in darker (or lighter, on dark cloth) shades of the cloth.
    dark_cloth = float(base.mean()) < 0.25
    ink = np.zeros(big, np.float32)
    for line, width, dashed in sketch.seams:
        _polyline(ink, line, 1.0, width, dashed)
    seam_colour = np.clip(base * (1.9 if dark_cloth else 0.7) + (0.08 if dark_cloth else 0), 0, 1)
    img = img * (1 - ink[..., None]) + seam_colour * ink[..., None]
    metal = np.zeros(big, np.float32)
    for line in sketch.zips:
        _polyline(metal, line, 1.0, 3.0)
    for (x, y), r in sketch.buttons:
        cv2.circle(metal, (int(x * SS * 16), int(y * SS * 16)), int(r * SS * 16), 1.0, -1, cv2.LINE_AA, 4)
    img = img * (1 - metal[..., None]) + np.array([0.72, 0.72, 0.70]) * metal[..., None]
    img8 = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    rgba = np.dstack([img8, mask])
    return cv2.resize(rgba, (sketch.width, sketch.height), interpolation=cv2.INTER_AREA)


# -- tops, outerwear, dresses ------------------------------------------------------------------

TOP_W = 560
CX = TOP_W / 2
SHOULDER = (CX - 94, 106.0)  # wearer's right shoulder anchor (image left)
HIP = (CX - 66, 402.0)


def _direction(deg: float) -> np.ndarray:
    return np.array([-math.cos(math.radians(deg)), math.sin(math.radians(deg))])


def top_sketch(
    sleeve: str = "short",
    neck: str = "crew",
    hem: float = 430.0,
    shirttail: float = 0.0,
    rib: float = 0.0,
    front: str = "plain",
) -> Sketch:
    """A top seen from the front; every variant shares the anchor frame above."""
    long = sleeve == "long"
    deg = 72.0 if long else 60.0
    d, n = _direction(deg), _direction(deg - 90.0) * np.array([-1, -1])  # along the sleeve, across it (down-in)
    shoulder_top = np.array([CX - 120, 86.0])
    length, cuff = (318.0, 66.0) if long else (100.0, 80.0)
    top_end = shoulder_top + length * d
    low_end = top_end + cuff * n
    armpit = (CX - 128, 198.0)
    height = int(max(hem + shirttail, 470 if long else 0) + 24)
    right = [(CX - 40, 60.0), tuple(shoulder_top), tuple(top_end), tuple(low_end), armpit]
    right += curve(armpit, (CX - 118, 320.0), (CX - 130, hem), 10)[1:]
    hem_curve = curve((CX - 130, hem), (CX, hem + 16 + 2 * shirttail), (CX + 130, hem), 16)[1:-1]
    neck_dip = {"crew": 112.0, "collar": 120.0, "hood": 104.0, "stand": 62.0}[neck]
    neck_curve = curve((CX + 40, 60.0), (CX, neck_dip + (neck_dip - 60)), (CX - 40, 60.0), 14)[1:-1]
    outline = right + hem_curve + list(reversed(mirror(right, CX))) + neck_curve
    s = Sketch(TOP_W, height, cloth=[outline])
    sh = np.array(SHOULDER)
    s.anchors = {
        "neck": (CX, 60.0),
        "right_shoulder": SHOULDER,
        "left_shoulder": (2 * CX - SHOULDER[0], SHOULDER[1]),
        "right_armpit": armpit,
        "left_armpit": (2 * CX - armpit[0], armpit[1]),
        "right_elbow": tuple(sh + 185 * d),
        "left_elbow": (2 * CX - (sh + 185 * d)[0], (sh + 185 * d)[1]),
        "right_hip": HIP,
        "left_hip": (2 * CX - HIP[0], HIP[1]),
        "hem": (CX, hem + 8),
    }
    if long:
        s.anchors["right_wrist"] = tuple(sh + 350 * d)
        s.anchors["left_wrist"] = (2 * CX - (sh + 350 * d)[0], (sh + 350 * d)[1])
    for side in (lambda p: p, lambda p: mirror(p, CX)):
        s.seams.append((side([(CX - 40, 60.0), tuple(shoulder_top)]), 1.6, False))  # shoulder seam
        s.seams.append((side([tuple(shoulder_top), armpit]), 1.6, False))  # armhole
        cuff_in = [tuple(top_end - 14 * d), tuple(low_end - 14 * d)]
        s.seams.append((side(cuff_in), 1.0, True))
        if long:
            s.panels.append(
                (side([tuple(top_end - 26 * d), tuple(top_end), tuple(low_end), tuple(low_end - 26 * d)]), 0.10)
            )
            elbow = sh + 185 * d
            s.folds.append((side([tuple(elbow + 10 * n), tuple(elbow + 40 * n + 20 * d)]), 5, 0.8))
        s.folds.append((side([(CX - 122, 210.0), (CX - 60, 246.0)]), 6, 1.0))
        s.folds.append((side([(CX - 120, 236.0), (CX - 74, 270.0)]), 5, 0.8))
    if rib:
        s.panels.append(([(CX - 131, hem - rib), (CX + 131, hem - rib), *reversed(hem_curve), (CX - 131, hem)], 0.12))
    else:
        s.seams.append(
            (curve((CX - 124, hem - 12), (CX, hem + 4 + 2 * shirttail), (CX + 124, hem - 12), 16), 1.0, True)
        )
    if neck == "crew":
        outer = curve((CX + 40, 60.0), (CX, 164.0), (CX - 40, 60.0), 20)
        inner = curve((CX + 54, 66.0), (CX, 180.0), (CX - 54, 66.0), 20)
        s.panels.append((outer + list(reversed(inner)), 0.12))
        s.panels.append((curve((CX - 40, 60.0), (CX, 74.0), (CX + 40, 60.0), 14) + outer, 0.35))
    elif neck == "collar":  # pointed shirt collar over a button placket
        for side in (lambda p: p, lambda p: mirror(p, CX)):
            flap = side([(CX - 44, 58.0), (CX - 4, 120.0), (CX - 36, 128.0), (CX - 66, 76.0)])
            s.panels.append((flap, 0.06))
            s.seams.append((flap + [flap[0]], 1.2, False))
        s.panels.append(
            ([(CX - 12, 120.0), (CX + 12, 120.0), (CX + 12, hem + shirttail), (CX - 12, hem + shirttail)], 0.05)
        )
        s.seams.append(([(CX + 12, 122.0), (CX + 12, hem + shirttail + 10)], 1.0, False))
        s.buttons += [((CX, y), 4.0) for y in np.arange(150.0, hem + shirttail, 62.0)]
        s.panels.append(
            ([(CX - 100, 170.0), (CX - 40, 170.0), (CX - 40, 236.0), (CX - 70, 246.0), (CX - 100, 236.0)], 0.07)
        )
        s.seams.append(([(CX - 100, 170.0), (CX - 40, 170.0)], 1.2, False))
    elif neck == "hood":  # the hood down, folded behind the neck; drawstrings; kangaroo pocket
        hood = curve((CX - 90, 96.0), (CX - 96, 36.0), (CX, 34.0), 14) + curve(
            (CX, 34.0), (CX + 96, 36.0), (CX + 90, 96.0), 14
        )
        s.cloth.append(hood + [(CX, 120.0)])
        s.panels.append((curve((CX - 58, 84.0), (CX, 40.0), (CX + 58, 84.0), 14) + [(CX, 110.0)], 0.32))
        for x in (CX - 22, CX + 22):
            s.seams.append(([(x, 106.0), (x + (x - CX) * 0.2, 200.0)], 2.2, False))
        pocket = [(CX - 96, 300.0), (CX + 96, 300.0), (CX + 120, hem - rib - 6), (CX - 120, hem - rib - 6)]
        s.panels.append((pocket, 0.06))
        s.seams.append((pocket + [pocket[0]], 1.2, True))
    elif neck == "stand":  # jacket: stand collar, zip, welt pockets
        s.cloth.append([(CX - 46, 40.0), (CX + 46, 40.0), (CX + 50, 70.0), (CX - 50, 70.0)])
        s.panels.append(([(CX - 46, 40.0), (CX + 46, 40.0), (CX + 50, 70.0), (CX - 50, 70.0)], 0.15))
        s.zips.append([(CX, 42.0), (CX, hem + 12)])
        for side in (lambda p: p, lambda p: mirror(p, CX)):
            s.seams.append((side([(CX - 98, 300.0), (CX - 70, 380.0)]), 2.0, False))
            s.seams.append((side([(CX - 118, 150.0), (CX - 40, 130.0)]), 1.0, True))
    if front == "darts":
        for side in (lambda p: p, lambda p: mirror(p, CX)):
            s.folds.append((side([(CX - 70, 300.0), (CX - 64, 380.0)]), 4, 0.6))
    return s


def dress_sketch() -> Sketch:
    """A sleeveless dress: fitted bodice, waist seam, flared skirt above the knee."""
    right = [(CX - 42, 62.0), (CX - 96, 72.0)]
    right += curve((CX - 96, 72.0), (CX - 96, 170.0), (CX - 122, 190.0), 8)[1:]
    right += curve((CX - 122, 190.0), (CX - 98, 260.0), (CX - 100, 300.0), 8)[1:]
    right += curve((CX - 100, 300.0), (CX - 128, 400.0), (CX - 196, 640.0), 10)[1:]
    hem = curve((CX - 196, 640.0), (CX, 676.0), (CX + 196, 640.0), 18)[1:-1]
    neck = curve((CX + 42, 62.0), (CX, 200.0), (CX - 42, 62.0), 16)[1:-1]
    outline = right + hem + list(reversed(mirror(right, CX))) + neck
    s = Sketch(TOP_W, 690, cloth=[outline])
    s.anchors = {
        "neck": (CX, 62.0),
        "right_shoulder": (CX - 90, 100.0),
        "left_shoulder": (CX + 90, 100.0),
        "right_armpit": (CX - 122, 190.0),
        "left_armpit": (CX + 122, 190.0),
        "right_hip": HIP,
        "left_hip": (2 * CX - HIP[0], HIP[1]),
        "right_knee": (CX - 70, 700.0),
        "left_knee": (CX + 70, 700.0),
        "hem": (CX, 660.0),
    }
    s.seams.append((curve((CX - 100, 300.0), (CX, 312.0), (CX + 100, 300.0), 16), 1.6, False))
    s.seams.append((curve((CX - 188, 626.0), (CX, 660.0), (CX + 188, 626.0), 18), 1.0, True))
    for side in (lambda p: p, lambda p: mirror(p, CX)):
        s.folds.append((side([(CX - 50, 210.0), (CX - 44, 290.0)]), 4, 0.7))  # bodice dart
        for x0, x1 in ((CX - 80, CX - 130), (CX - 40, CX - 62), (CX - 8, CX - 10)):
            s.folds.append((side([(x0, 330.0), (x1, 630.0)]), 7, 0.9))
    return s


# -- bottoms -----------------------------------------------------------------------------------

BOTTOM_W = 460
BX = BOTTOM_W / 2


def trousers_sketch() -> Sketch:
    right = [
        (BX - 100, 40.0),
        (BX - 114, 150.0),
        (BX - 118, 420.0),
        (BX - 120, 722.0),
        (BX - 28, 722.0),
        (BX - 18, 420.0),
    ]
    right += curve((BX - 18, 420.0), (BX - 6, 220.0), (BX, 196.0), 8)[1:]
    outline = right + list(reversed(mirror(right, BX)))[1:]
    s = Sketch(BOTTOM_W, 740, cloth=[outline])
    s.anchors = {
        "right_hip": (BX - 66, 120.0),
        "left_hip": (BX + 66, 120.0),
        "crotch": (BX, 196.0),
        "right_knee": (BX - 70, 420.0),
        "left_knee": (BX + 70, 420.0),
        "right_ankle": (BX - 74, 712.0),
        "left_ankle": (BX + 74, 712.0),
    }
    s.panels.append(([(BX - 100, 40.0), (BX + 100, 40.0), (BX + 102, 70.0), (BX - 102, 70.0)], 0.1))
    s.seams.append(([(BX - 102, 70.0), (BX + 102, 70.0)], 1.2, False))
    s.seams.append((curve((BX + 6, 72.0), (BX + 14, 170.0), (BX, 190.0), 10), 1.4, False))  # fly
    for side in (lambda p: p, lambda p: mirror(p, BX)):
        s.seams.append((side([(BX - 106, 84.0), (BX - 64, 150.0)]), 1.6, False))  # pocket
        s.folds.append((side([(BX - 70, 230.0), (BX - 72, 700.0)]), 3, 0.7))  # crease
        s.folds.append((side([(BX - 100, 400.0), (BX - 40, 440.0)]), 6, 0.6))  # knee
        s.panels.append((side([(BX - 84, 36.0), (BX - 76, 36.0), (BX - 76, 74.0), (BX - 84, 74.0)]), 0.15))  # loop
        s.seams.append((side([(BX - 118, 706.0), (BX - 30, 706.0)]), 1.0, True))
    return s


def skirt_sketch() -> Sketch:
    right = [(BX - 96, 44.0), (BX - 112, 140.0), (BX - 190, 440.0)]
    hem = curve((BX - 190, 440.0), (BX, 470.0), (BX + 190, 440.0), 18)[1:-1]
    outline = right + hem + list(reversed(mirror(right, BX)))
    s = Sketch(BOTTOM_W, 484, cloth=[outline])
    s.anchors = {
        "right_hip": (BX - 66, 120.0),
        "left_hip": (BX + 66, 120.0),
        "right_knee": (BX - 70, 420.0),
        "left_knee": (BX + 70, 420.0),
        "hem": (BX, 455.0),
    }
    s.panels.append(([(BX - 96, 44.0), (BX + 96, 44.0), (BX + 100, 72.0), (BX - 100, 72.0)], 0.12))
    s.seams.append(([(BX - 100, 72.0), (BX + 100, 72.0)], 1.2, False))
    s.seams.append((curve((BX - 182, 426.0), (BX, 454.0), (BX + 182, 426.0), 18), 1.0, True))
    for x0, x1 in ((-70, -140), (-30, -64), (10, 14), (50, 96), (84, 160)):
        s.folds.append(([(BX + x0, 90.0), (BX + x1, 440.0)], 8, 0.9))
    return s


# -- the starter closet ------------------------------------------------------------------------

# id, name, category, sketch factory, colourways (id suffix, name, BGR)
STARTER = [
    (
        "tshirt",
        "T-shirt",
        "top",
        lambda: top_sketch("short", "crew"),
        [("white", "White", (236, 238, 240)), ("navy", "Navy", (92, 52, 28)), ("red", "Red", (48, 40, 196))],
    ),
    (
        "longsleeve",
        "Long-sleeve",
        "top",
        lambda: top_sketch("long", "crew"),
        [("grey", "Grey", (150, 150, 146)), ("black", "Black", (40, 38, 38))],
    ),
    (
        "shirt",
        "Shirt",
        "top",
        lambda: top_sketch("long", "collar", hem=440.0, shirttail=14.0),
        [("blue", "Light blue", (226, 196, 160)), ("white", "White", (244, 244, 240))],
    ),
    (
        "hoodie",
        "Hoodie",
        "top",
        lambda: top_sketch("long", "hood", hem=446.0, rib=22.0),
        [("grey", "Grey", (170, 166, 160)), ("green", "Green", (80, 120, 70))],
    ),
    (
        "jacket",
        "Jacket",
        "outerwear",
        lambda: top_sketch("long", "stand", hem=436.0, rib=18.0),
        [("black", "Black", (36, 34, 34)), ("tan", "Tan", (96, 140, 186))],
    ),
    (
        "dress",
        "Dress",
        "dress",
        dress_sketch,
        [("burgundy", "Burgundy", (58, 30, 120)), ("teal", "Teal", (130, 120, 30))],
    ),
    ("skirt", "Skirt", "bottom", skirt_sketch, [("black", "Black", (40, 38, 38)), ("denim", "Denim", (140, 96, 62))]),
    (
        "trousers",
        "Trousers",
        "bottom",
        trousers_sketch,
        [("khaki", "Khaki", (120, 160, 180)), ("denim", "Denim", (120, 70, 40))],
    ),
]


def starter_garments() -> list[tuple[dict, np.ndarray]]:
    out = []
    for kind, kind_name, category, factory, colours in STARTER:
        sketch = factory()
        siblings = [{"id": f"{kind}-{c}", "name": f"{n} {kind_name}"} for c, n, _ in colours]
        for colour, colour_name, bgr in colours:
            meta = {
                "id": f"{kind}-{colour}",
                "name": f"{colour_name} {kind_name}",
                "category": category,
                "layer": DEFAULT_LAYER[category],
                "tucked": False,
                "anchors": {k: [round(v[0], 2), round(v[1], 2)] for k, v in sketch.anchors.items()},
                "variants": siblings,
                "license": "CC0-1.0",
                "source": "drawn by smartcloset.closet.draw",
            }
            out.append((meta, render(sketch, bgr)))
    return out


def write_starter(folder: Path) -> list[Path]:
    for old in folder.glob("*.json"):
        old.unlink()
    for old in folder.glob("*.png"):
        old.unlink()
    return [save_garment(meta, rgba, folder) for meta, rgba in starter_garments()]


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    logging.basicConfig(level=logging.INFO)
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("starter")
    for p in write_starter(target):
        log.info("wrote %s", p)
