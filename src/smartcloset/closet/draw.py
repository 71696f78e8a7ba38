"""Starter garments drawn by the project itself (no third-party images), deterministically.

Each is drawn at 2x and downsampled for clean edges, then shaded so it reads as cloth: a soft
gradient, darker toward the silhouette, fold shadows at the armpits and waist, stitched seams,
a ribbed collar and a faint knit texture. ``python -m smartcloset.closet.draw DIR`` rewrites
the files shipped in ``closet/starter/``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import cv2
import numpy as np

from .garment import save_garment

log = logging.getLogger(__name__)

SS = 2  # supersampling factor
W, H = 520, 470
CX = W / 2

# colourway id -> (name, BGR)
TSHIRT_COLOURS = {
    "white": ("White T-shirt", (236, 238, 240)),
    "navy": ("Navy T-shirt", (92, 52, 28)),
    "red": ("Red T-shirt", (48, 40, 196)),
}


def _mirror(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    return [(W - x, y) for x, y in pts]


def _poly(pts: list[tuple[float, float]]) -> np.ndarray:
    return (np.array(pts, dtype=np.float64) * SS * 16).round().astype(np.int32)  # shift=4


def _line(img: np.ndarray, pts: list[tuple[float, float]], color, width: float, dashed: bool = False) -> None:
    p = _poly(pts)
    for i in range(len(p) - 1):
        if dashed:
            a, b = p[i].astype(float), p[i + 1].astype(float)
            n = max(2, int(np.linalg.norm(b - a) / (16 * SS * 7)))
            for k in range(0, n, 2):
                s, e = a + (b - a) * k / n, a + (b - a) * (k + 1) / n
                cv2.line(
                    img, tuple(s.astype(int)), tuple(e.astype(int)), color, max(1, int(width * SS)), cv2.LINE_AA, 4
                )
        else:
            cv2.line(img, tuple(p[i]), tuple(p[i + 1]), color, max(1, int(width * SS)), cv2.LINE_AA, 4)


def _curve(a, ctrl, b, n: int = 16) -> list[tuple[float, float]]:
    t = np.linspace(0, 1, n)[:, None]
    pts = (1 - t) ** 2 * np.array(a) + 2 * (1 - t) * t * np.array(ctrl) + t**2 * np.array(b)
    return [tuple(p) for p in pts]


def tshirt_geometry() -> tuple[list[tuple[float, float]], dict[str, tuple[float, float]]]:
    """Outline (wearer's right half drawn on the image's left, then mirrored) and anchors."""
    d = np.array([-0.500, 0.866])  # upper-arm direction in the drawing: 60 deg below horizontal
    shoulder_top = np.array([140.0, 86.0])
    sleeve_top_end = shoulder_top + 100 * d
    sleeve_low_end = sleeve_top_end + 80 * np.array([0.866, 0.500])
    right = [
        (222.0, 60.0),  # neck side
        tuple(shoulder_top),
        tuple(sleeve_top_end),
        tuple(sleeve_low_end),
        (152.0, 196.0),  # armpit
        *_curve((152.0, 196.0), (160.0, 320.0), (150.0, 428.0), 10)[1:],
    ]
    hem = _curve((150.0, 428.0), (CX, 444.0), (W - 150.0, 428.0), 14)[1:-1]
    neck = _curve((W - 222.0, 60.0), (CX, 112.0), (222.0, 60.0), 14)[1:-1]
    outline = right + hem + list(reversed(_mirror(right))) + neck
    r_sh = np.array([166.0, 106.0])
    anchors = {
        "neck": (CX, 60.0),
        "right_shoulder": tuple(r_sh),
        "left_shoulder": (W - r_sh[0], r_sh[1]),
        "right_armpit": (152.0, 196.0),
        "left_armpit": (W - 152.0, 196.0),
        "right_elbow": tuple(r_sh + 185 * d),
        "left_elbow": (W - (r_sh + 185 * d)[0], (r_sh + 185 * d)[1]),
        "right_hip": (CX - 66, 402.0),
        "left_hip": (CX + 66, 402.0),
        "hem": (CX, 436.0),
    }
    return outline, {k: (float(v[0]), float(v[1])) for k, v in anchors.items()}


def draw_tshirt(color_bgr: tuple[int, int, int], seed: int = 7) -> tuple[np.ndarray, dict]:
    outline, anchors = tshirt_geometry()
    big = (H * SS, W * SS)
    mask = np.zeros(big, np.uint8)
    cv2.fillPoly(mask, [_poly(outline)], 255, cv2.LINE_AA, 4)

    base = np.empty((*big, 3), np.float32)
    base[:] = np.array(color_bgr, np.float32) / 255.0
    # Light from above-left; darker toward the silhouette (cloth turning away from the light).
    yy, xx = np.mgrid[0 : big[0], 0 : big[1]].astype(np.float32)
    light = 1.04 - 0.12 * (yy / big[0]) - 0.05 * (xx / big[1])
    edge = cv2.distanceTransform((mask > 127).astype(np.uint8), cv2.DIST_L2, 5) / SS
    light *= 0.78 + 0.22 * np.clip(edge / 36.0, 0, 1)
    # Fold shadows: soft strokes from the armpits inward and across the waist.
    folds = np.zeros(big, np.float32)
    for side in (1, -1):
        for k, (dy, length) in enumerate(((0, 70), (22, 55), (48, 40))):
            x0 = CX - side * (CX - 158)
            a = (x0, 205 + dy)
            b = (x0 + side * length, 240 + dy + 10 * k)
            _line(folds, [a, b], 1.0, 6)
        _line(folds, [(CX - side * 80, 330), (CX - side * 20, 365)], 0.7, 9)
    folds = cv2.GaussianBlur(folds, (0, 0), 9 * SS)
    light *= 1.0 - 0.35 * np.clip(folds, 0, 1)
    # Knit texture: fine noise, seeded so the file is reproducible.
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.standard_normal(big).astype(np.float32), (0, 0), 0.8 * SS)
    light *= 1.0 + 0.025 * noise
    img = np.clip(base * light[..., None], 0, 1)

    # Collar: a ribbed band just inside the neckline, a touch darker, with rib lines.
    neck_outer = _curve((W - 222.0, 60.0), (CX, 112.0), (222.0, 60.0), 20)
    neck_inner = _curve((W - 208.0, 66.0), (CX, 128.0), (208.0, 66.0), 20)
    band = np.zeros(big, np.uint8)
    cv2.fillPoly(band, [_poly(neck_outer + list(reversed(neck_inner)))], 255, cv2.LINE_AA, 4)
    bandf = (band / 255.0)[..., None]
    img = img * (1 - 0.12 * bandf)
    ribs = np.zeros(big, np.float32)
    for i in range(0, 20, 1):
        _line(ribs, [neck_outer[i], neck_inner[i]], 1.0, 0.6)
    img *= 1 - 0.10 * (ribs * (band / 255.0))[..., None]
    # Inside of the back neck, seen through the neckline.
    back = np.zeros(big, np.uint8)
    cv2.fillPoly(
        back, [_poly(_curve((222.0, 60.0), (CX, 74.0), (W - 222.0, 60.0), 14) + neck_outer)], 255, cv2.LINE_AA, 4
    )
    img = img * (1 - 0.35 * (back / 255.0)[..., None])

    # Seams and stitching, in a darker shade of the cloth.
    seam = tuple(float(c) * 0.72 / 255.0 for c in color_bgr)
    ink = np.zeros_like(img)
    ink_mask = np.zeros(big, np.float32)
    for pts in (outline[0:2], outline[1:2] + [outline[4]]):  # shoulder seam, sleeve seam
        for p in (pts, _mirror(pts)):
            _line(ink_mask, p, 1.0, 1.6)
    _line(ink_mask, _curve((156.0, 414.0), (CX, 430.0), (W - 156.0, 414.0), 16), 1.0, 1.0, dashed=True)
    for side in (outline[2:4], _mirror(outline[2:4])):
        a, b = np.array(side[0]), np.array(side[1])
        inward = np.array([0.500, -0.866]) if side[0][0] < CX else np.array([-0.500, -0.866])
        _line(ink_mask, [tuple(a + 12 * inward), tuple(b + 12 * inward)], 1.0, 1.0, dashed=True)
    ink[:] = seam
    img = img * (1 - ink_mask[..., None]) + ink * ink_mask[..., None]

    img8 = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    rgba = np.dstack([img8, mask])
    rgba = cv2.resize(rgba, (W, H), interpolation=cv2.INTER_AREA)
    return rgba, anchors


def starter_garments() -> list[tuple[dict, np.ndarray]]:
    out = []
    for key, (name, bgr) in TSHIRT_COLOURS.items():
        rgba, anchors = draw_tshirt(bgr)
        meta = {
            "id": f"tshirt-{key}",
            "name": name,
            "category": "top",
            "layer": 20,
            "anchors": {k: [round(v[0], 2), round(v[1], 2)] for k, v in anchors.items()},
            "variants": [{"id": f"tshirt-{k}", "name": n} for k, (n, _) in TSHIRT_COLOURS.items()],
            "license": "CC0-1.0",
            "source": "drawn by smartcloset.closet.draw",
        }
        out.append((meta, rgba))
    return out


def write_starter(folder: Path) -> list[Path]:
    return [save_garment(meta, rgba, folder) for meta, rgba in starter_garments()]


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    logging.basicConfig(level=logging.INFO)
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("starter")
    for p in write_starter(target):
        log.info("wrote %s", p)
