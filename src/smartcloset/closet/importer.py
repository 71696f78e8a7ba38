"""Adding a garment from an ordinary photo: cut it out, find its anchors, write it to the closet.

A flat-lay photo on a plain background: the background colour is learnt from the border (where
the garment does not reach it), GrabCut separates the garment, and the largest piece with its
holes filled is the cut-out. Anchors come from the silhouette: the neck is the lowest point of
the collar on the centre line; a shoulder is where the top outline turns from the gentle
shoulder slope into the steep sleeve; a sleeve's end is its point farthest from the shoulder
(long sleeves: that is the wrist, and the elbow lies half way); armpits, hips and knees follow
from standard garment proportions of the shoulder width. Trousers are told from skirts by the
gap between the legs.

Uploads are untrusted: the type is read from the bytes, the size and the pixel count are
checked before decoding, the garment id is generated (never a user's file name) and nothing is
written until the garment is complete (``save_garment`` writes both files atomically).
"""

from __future__ import annotations

import logging
import re
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from .garment import CATEGORIES, DEFAULT_LAYER, Garment, load_garment, save_garment

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 15 * 1024 * 1024
MAX_SIDE = 8000
MAX_PIXELS = 40_000_000
WORK_SIDE = 800  # the cut-out and the anchors are found at this size
OUT_SIDE = 720  # the garment image is stored at most this big


class ImportError_(ValueError):  # noqa: N801 - "ImportError" is a builtin
    """A photo that cannot become a garment; the message says why."""


GarmentImportError = ImportError_


def sniff(data: bytes) -> tuple[str, int, int]:
    """(type, width, height) from the header bytes alone; refuses anything but JPEG and PNG."""
    if not data:
        raise GarmentImportError("the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise GarmentImportError(f"the file is {len(data)} bytes; at most {MAX_UPLOAD_BYTES} are accepted")
    if data[:3] == b"\xff\xd8\xff":
        try:
            h, w, _, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError as exc:
            raise GarmentImportError(f"unreadable JPEG: {exc}") from None
        kind = "jpeg"
    elif data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        kind = "png"
    else:
        raise GarmentImportError("not a JPEG or PNG image (judged by its content, not its name)")
    if w <= 0 or h <= 0 or w > MAX_SIDE or h > MAX_SIDE or w * h > MAX_PIXELS:
        raise GarmentImportError(
            f"image of {w}x{h} pixels is over the {MAX_SIDE} px / {MAX_PIXELS // 1_000_000} MP limit"
        )
    return kind, w, h


def decode_photo(data: bytes) -> np.ndarray:
    sniff(data)
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise GarmentImportError("the image could not be decoded (corrupt or truncated)")
    return img


# -- cut-out -----------------------------------------------------------------------------------


def cut_out(image: np.ndarray) -> np.ndarray:
    """uint8 mask (255 = garment) of a garment photographed on a plain background."""
    h, w = image.shape[:2]
    lab = cv2.cvtColor(cv2.GaussianBlur(image, (5, 5), 0), cv2.COLOR_BGR2LAB).astype(np.float32)
    band = max(4, int(0.04 * min(h, w)))
    border = np.concatenate(
        [
            lab[:band].reshape(-1, 3),
            lab[-band:].reshape(-1, 3),
            lab[:, :band].reshape(-1, 3),
            lab[:, -band:].reshape(-1, 3),
        ]
    )
    bg = np.median(border, axis=0)
    typical = float(np.median(np.linalg.norm(border - bg, axis=1))) + 3.0  # lighting varies across the cloth
    dist = np.linalg.norm(lab - bg, axis=2)
    # Inside: probably garment, unless it is close to the background colour. The border band is
    # background where it looks like it (a garment may run off the edge of the photo).
    gc = np.full((h, w), cv2.GC_PR_FGD, np.uint8)
    gc[dist < 1.5 * typical] = cv2.GC_PR_BGD
    edge = np.zeros((h, w), bool)
    edge[:band], edge[-band:], edge[:, :band], edge[:, -band:] = True, True, True, True
    gc[edge & (dist < 3.0 * typical)] = cv2.GC_BGD
    if not (gc == cv2.GC_PR_FGD).any():
        raise GarmentImportError("no garment found: the photo looks like plain background")
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(image, gc, None, bgd, fgd, 5, cv2.GC_INIT_WITH_MASK)
    mask = np.where((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
    k = max(3, int(0.008 * min(h, w)) | 1)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    if n < 2:
        raise GarmentImportError("no garment found in the photo")
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    mask = np.where(labels == biggest, 255, 0).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 255, cv2.FILLED)  # holes (prints, buttons) are cloth
    if filled.mean() / 255 < 0.05:
        raise GarmentImportError("the garment found is too small: photograph it filling most of the frame")
    return filled


# -- anchors -----------------------------------------------------------------------------------


def _top_profile(mask: np.ndarray) -> np.ndarray:
    """Per column, the first garment row from the top (inf where the column is empty)."""
    has = mask.any(axis=0)
    first = np.argmax(mask > 0, axis=0).astype(np.float64)
    first[~has] = np.inf
    return first


def _run_width(mask: np.ndarray, y: int, cx: int) -> int:
    """Width of the garment run on row ``y`` that contains (or is nearest to) column ``cx``."""
    row = mask[int(np.clip(y, 0, mask.shape[0] - 1))] > 0
    xs = np.nonzero(row)[0]
    if not len(xs):
        return 0
    c = xs[np.argmin(np.abs(xs - cx))]
    left = c
    while left > 0 and row[left - 1]:
        left -= 1
    right = c
    while right < len(row) - 1 and row[right + 1]:
        right += 1
    return int(right - left + 1)


@dataclass
class ImportResult:
    garment: Garment
    mask_coverage: float  # share of the photo that is garment


def find_anchors(mask: np.ndarray, category: str) -> dict[str, tuple[float, float]]:
    """Anchor points from the silhouette. A hood laid out above the collar is cut from ``mask``
    (in place): worn, it hangs behind the head."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    height = y1 - y0 + 1
    # The centre line: the middle of the garment rows in its middle third (sleeves pull less there).
    mid_rows = mask[y0 + height // 3 : y0 + 2 * height // 3]
    cols = np.nonzero(mid_rows.any(axis=0))[0]
    cx = int(round((cols.min() + cols.max()) / 2))
    if category == "bottom":
        return _bottom_anchors(mask, cx, y0, y1, x0, x1)
    top = _top_profile(mask)
    hem_col = mask[:, max(cx - 2, 0) : cx + 3].any(axis=1)
    hem_y = float(np.nonzero(hem_col)[0].max())
    # The torso's width: the narrowest garment run through the centre line over the lower body
    # (where long sleeves hang free of it) for tops; at the waist for dresses, whose skirt flares.
    # The shoulder seams sit about that far apart.
    if category == "dress":
        rows, widen = np.linspace(y0 + 0.2 * height, y0 + 0.45 * height, 12), 1.1
    else:
        rows, widen = np.linspace(y0 + 0.45 * height, hem_y - 0.04 * height, 16), 1.0
    span = float(min(_run_width(mask, int(y), cx) for y in rows)) * widen
    if span < 0.15 * (x1 - x0):
        raise GarmentImportError("could not find the torso: is the garment upright and laid flat?")
    collar = top[max(cx - 3, 0) : cx + 4]
    neck_y = float(np.min(collar[np.isfinite(collar)])) if np.isfinite(collar).any() else float(y0)
    anchors: dict[str, tuple[float, float]] = {"neck": (float(cx), neck_y)}
    # Sleeveless dresses rest on their straps, inside the armholes; other tops on the shoulder seam.
    reach_out = 0.36 if category == "dress" else 0.5
    seam = {
        side: int(np.clip(cx + d * span * reach_out, 0, mask.shape[1] - 1)) for side, d in (("left", 1), ("right", -1))
    }
    reach_x = max(3, int(0.05 * span))
    seam_y = {}
    for side, x in seam.items():
        near = top[max(x - reach_x, 0) : x + reach_x + 1]
        seam_y[side] = float(near[np.isfinite(near)].min()) if np.isfinite(near).any() else float(y0)
    sh_y = max(seam_y.values())
    if category != "dress" and neck_y < sh_y - 0.45 * span:
        # A hood laid out above the collar: worn, it hangs behind the head, unseen from the front.
        cut = int(sh_y - 0.12 * span)
        mask[:cut, max(int(cx - 0.4 * span), 0) : int(cx + 0.4 * span)] = 0
        top = _top_profile(mask)
        anchors["neck"] = (float(cx), float(cut))
    # Sleeves: what is left of the garment once the torso's band is cut away, connected to the
    # shoulder (flared hem corners or skirt panels are not).
    outside = mask.copy()
    band = int(span / 2 + 0.04 * span)
    outside[:, max(cx - band, 0) : cx + band + 1] = 0
    outside[int(hem_y - 0.01 * height) :] = 0
    n_parts, parts = cv2.connectedComponents(outside)
    mask_area = float((mask > 0).sum())
    for side, d in (("left", 1), ("right", -1)):
        sx = float(seam[side] - d * 0.08 * span)  # the joint sits inside the shoulder seam
        sy = float(sh_y + 0.06 * span)
        anchors[f"{side}_shoulder"] = (sx, sy)
        anchors[f"{side}_armpit"] = (float(seam[side] - d * 0.02 * span), sy + 0.45 * span)
        # Hips: a top ends a little below them; a dress's hips sit about 40 % of the way down.
        hip_y = sy + 0.40 * (hem_y - sy) if category == "dress" else min(hem_y - 0.06 * span, sy + 1.45 * span)
        anchors[f"{side}_hip"] = (float(cx + d * 0.33 * span), float(hip_y))
        # The sleeve's part: the one with most pixels just outside the seam, near the shoulder.
        x_lo, x_hi = sorted((cx + d * band, cx + d * (band + int(0.15 * span))))
        window = parts[int(sh_y) : int(sh_y + 0.5 * span), max(x_lo, 0) : x_hi + 1]
        labels, counts = np.unique(window[window > 0], return_counts=True)
        if not len(labels):
            continue  # sleeveless
        # A sleeve lying along the body may be cut in pieces by the torso band: take every piece
        # on this side whose middle is well above the hem (flared hem corners are not sleeves).
        pieces = {int(labels[np.argmax(counts)])}
        for lab in range(1, n_parts):
            pys, pxs = np.nonzero(parts == lab)
            # (slivers of the torso's own sides hug the band; a sleeve's cuff lies well out)
            if (
                len(pys) > 0.01 * mask_area
                and (pxs.mean() - cx) * d > band + 0.08 * span
                and pys.mean() < hem_y - 0.1 * height
            ):
                pieces.add(lab)
        sleeve = np.isin(parts, list(pieces))
        sys_, sxs = np.nonzero(sleeve)
        dist = np.hypot(sxs - sx, sys_ - sy)
        far = int(np.argmax(dist))
        reach = float(dist[far])
        tip = np.array([sxs[far], sys_[far]], np.float64)
        direction = (tip - (sx, sy)) / max(reach, 1e-6)
        # Long sleeves reach about as far as the torso is long (drop shoulders sit low, so the
        # torso's length is the steadier yardstick than the shoulder width).
        if reach > 1.1 * span or reach > 0.75 * (hem_y - sy):  # the far end is the wrist, the elbow half way
            anchors[f"{side}_wrist"] = tuple(float(v) for v in tip - direction * 0.06 * span)
            anchors[f"{side}_elbow"] = tuple(float(v) for v in np.array([sx, sy]) + direction * reach * 0.52)
        elif reach > 0.3 * span:  # a short sleeve: the elbow lies beyond its end
            anchors[f"{side}_elbow"] = tuple(float(v) for v in np.array([sx, sy]) + direction * max(reach * 1.6, span))
    if category == "dress":
        for side in ("left", "right"):
            hx, hy = anchors[f"{side}_hip"]
            anchors[f"{side}_knee"] = (hx, float(hem_y + 0.05 * span))  # a day dress ends near the knee
    anchors["hem"] = (float(cx), hem_y)
    return anchors


def _bottom_anchors(mask: np.ndarray, cx: int, y0: int, y1: int, x0: int, x1: int) -> dict[str, tuple[float, float]]:
    height = y1 - y0 + 1
    width = x1 - x0 + 1
    center = mask[:, max(cx - 2, 0) : cx + 3].any(axis=1)
    rows = np.nonzero(center)[0]
    gap = rows.max() < y1 - 0.1 * height  # the centre line ends well above the bottom: two legs
    hip_y = y0 + 0.12 * height
    hip_half = 0.3 * width
    anchors = {
        "left_hip": (cx + hip_half, hip_y),
        "right_hip": (cx - hip_half, hip_y),
    }
    if gap:
        crotch_y = float(rows.max())
        anchors["crotch"] = (float(cx), crotch_y)
        for side, d in (("left", 1), ("right", -1)):
            leg = mask.copy()
            if d > 0:
                leg[:, :cx] = 0
            else:
                leg[:, cx:] = 0
            lys, lxs = np.nonzero(leg[int(crotch_y) :])
            bottom = lys.max() + int(crotch_y)
            foot = lxs[lys == lys.max()].mean()
            knee_y = crotch_y + 0.45 * (bottom - crotch_y)
            knee_row = np.nonzero(leg[int(knee_y)])[0]
            knee_x = knee_row.mean() if len(knee_row) else foot
            anchors[f"{side}_knee"] = (float(knee_x), float(knee_y))
            anchors[f"{side}_ankle"] = (float(foot), float(bottom - 0.02 * height))
    else:
        knee_y = hip_y + 0.9 * (y1 - hip_y)
        anchors["left_knee"] = (cx + hip_half, knee_y)
        anchors["right_knee"] = (cx - hip_half, knee_y)
        anchors["hem"] = (float(cx), float(y1))
    return {k: (float(v[0]), float(v[1])) for k, v in anchors.items()}


# -- the whole import ----------------------------------------------------------------------------


def _slug(name: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:32]
    return s or "garment"


def import_garment(data: bytes, category: str, name: str | None, closet_dir: str | Path, source: str = "") -> Garment:
    """Turn photo bytes into a garment in ``closet_dir``; returns it. Nothing is written on failure."""
    if category not in CATEGORIES:
        raise GarmentImportError(f"category must be one of {', '.join(CATEGORIES)}, not {category!r}")
    if name is not None and (not name.strip() or len(name) > 120):
        raise GarmentImportError("the name must be 1-120 characters")
    photo = decode_photo(data)
    scale = WORK_SIDE / max(photo.shape[:2])
    work = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else photo
    mask = cut_out(work)
    anchors = find_anchors(mask, category)
    # Crop to the garment with a margin, at most OUT_SIDE px.
    ys, xs = np.nonzero(mask)
    pad = 8
    y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, mask.shape[0])
    x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, mask.shape[1])
    soft = cv2.GaussianBlur(mask, (3, 3), 0)
    rgba = np.dstack([work[y0:y1, x0:x1], soft[y0:y1, x0:x1]])
    out_scale = min(1.0, OUT_SIDE / max(rgba.shape[:2]))
    if out_scale < 1:
        rgba = cv2.resize(rgba, None, fx=out_scale, fy=out_scale, interpolation=cv2.INTER_AREA)
    anchors = {k: [round((x - x0) * out_scale, 2), round((y - y0) * out_scale, 2)] for k, (x, y) in anchors.items()}
    display = name.strip() if name else f"My {category}"
    gid = f"{_slug(display)}-{uuid.uuid4().hex[:8]}"  # generated: never the uploaded file's name
    meta = {
        "id": gid,
        "name": display,
        "category": category,
        "layer": DEFAULT_LAYER[category],
        "anchors": anchors,
        "license": "user photo",
        "source": source or "imported from a photo",
    }
    bad = [k for k, v in anchors.items() if not all(np.isfinite(v))]
    if bad:
        raise GarmentImportError(f"could not place {', '.join(bad)}: is the garment upright, flat and whole?")
    # Validate in a scratch folder first (the same checks as every garment in the closet), then
    # move both files in: a failed import leaves nothing behind.
    closet = Path(closet_dir)
    scratch = closet / f".incoming-{gid}"
    try:
        garment = load_garment(save_garment(meta, rgba, scratch))
        for f in (f"{gid}.png", f"{gid}.json"):
            (scratch / f).replace(closet / f)
    finally:
        for f in scratch.glob("*"):
            f.unlink()
        if scratch.exists():
            scratch.rmdir()
    garment = load_garment(closet / f"{gid}.json")
    log.info("imported garment %s (%s) with %d anchors", gid, category, len(anchors))
    return garment
