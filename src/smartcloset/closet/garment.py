"""The garment format: an RGBA PNG plus a JSON sidecar of anchor points.

Anchors are garment-image pixels named after the COCO keypoint they bind to (``left_shoulder``
is the wearer's left, which is on the image's right for a garment seen from the front), plus
``left_armpit``/``right_armpit`` (where the sleeve seam meets the side seam) and ``neck``.
An elbow anchor is where the sleeve's axis would meet the elbow: short sleeves place it
outside the cloth, which is fine - it only fixes the sleeve's direction and length scale.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

SCHEMA_VERSION = 1
CATEGORIES = ("top", "outerwear", "dress", "bottom")
DEFAULT_LAYER = {"bottom": 10, "dress": 15, "top": 20, "outerwear": 30}
REQUIRED_ANCHORS = {
    "top": ("left_shoulder", "right_shoulder", "left_hip", "right_hip"),
    "outerwear": ("left_shoulder", "right_shoulder", "left_hip", "right_hip"),
    "dress": ("left_shoulder", "right_shoulder", "left_hip", "right_hip"),
    "bottom": ("left_hip", "right_hip"),
}
KNOWN_ANCHORS = {
    "neck",
    "left_shoulder",
    "right_shoulder",
    "left_armpit",
    "right_armpit",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "hem",
    "crotch",
    "left_ankle",
    "right_ankle",
}
MAX_SIDE = 4096


class GarmentError(ValueError):
    """A garment file that cannot be used; the message names the file and the field."""


@dataclass
class Garment:
    id: str
    name: str
    category: str
    layer: int
    anchors: dict[str, tuple[float, float]]
    image_path: Path
    sidecar_path: Path
    license: str = ""
    source: str = ""
    variants: list[dict] = field(default_factory=list)
    tucked: bool = False  # a top tucked into the bottom: drawn under the bottom's waistband
    _rgba: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def rgba(self) -> np.ndarray:
        """The garment image, BGRA uint8, loaded once."""
        if self._rgba is None:
            img = cv2.imread(str(self.image_path), cv2.IMREAD_UNCHANGED)
            if img is None or img.ndim != 3 or img.shape[2] != 4:
                raise GarmentError(f"{self.image_path}: not a readable RGBA PNG")
            self._rgba = img
        return self._rgba

    def anchor(self, name: str) -> np.ndarray | None:
        a = self.anchors.get(name)
        return None if a is None else np.array(a, dtype=np.float32)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "category": self.category,
            "layer": self.layer,
            "anchors": {k: [round(v[0], 2), round(v[1], 2)] for k, v in self.anchors.items()},
            "license": self.license,
            "source": self.source,
        }


def draw_order(garments: list[Garment]) -> list[Garment]:
    """Bottom layer first: by ``layer``, except that a tucked top goes under the bottoms."""
    bottoms = [g.layer for g in garments if g.category == "bottom"]
    tuck_under = min(bottoms) - 1 if bottoms else None

    def key(g: Garment) -> tuple[int, str]:
        if g.tucked and g.category == "top" and tuck_under is not None:
            return tuck_under, g.id
        return g.layer, g.id

    return sorted(garments, key=key)


def _fail(path: Path, field_name: str, why: str) -> GarmentError:
    return GarmentError(f"{path}: field {field_name!r}: {why}")


def load_garment(sidecar: str | Path) -> Garment:
    """Read and validate a sidecar (and that its image exists); errors name file and field."""
    path = Path(sidecar)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GarmentError(f"{path}: cannot read garment sidecar: {exc}") from None
    if not isinstance(data, dict):
        raise GarmentError(f"{path}: sidecar must be a JSON object")
    if data.get("schema") != SCHEMA_VERSION:
        raise _fail(path, "schema", f"must be {SCHEMA_VERSION}, got {data.get('schema')!r}")
    gid = data.get("id")
    if not isinstance(gid, str) or not gid or len(gid) > 64 or not all(c.isalnum() or c in "-_" for c in gid):
        raise _fail(path, "id", "must be 1-64 characters of letters, digits, '-' or '_'")
    name = data.get("name", gid)
    if not isinstance(name, str) or len(name) > 120:
        raise _fail(path, "name", "must be a string of at most 120 characters")
    category = data.get("category")
    if category not in CATEGORIES:
        raise _fail(path, "category", f"must be one of {', '.join(CATEGORIES)}, got {category!r}")
    layer = data.get("layer", DEFAULT_LAYER[category])
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise _fail(path, "layer", "must be an integer")
    image_name = data.get("image")
    if not isinstance(image_name, str) or Path(image_name).name != image_name or not image_name.endswith(".png"):
        raise _fail(path, "image", "must be the file name of a PNG beside the sidecar")
    image_path = path.parent / image_name
    if not image_path.is_file():
        raise _fail(path, "image", f"{image_path} does not exist")
    raw = data.get("anchors")
    if not isinstance(raw, dict):
        raise _fail(path, "anchors", "must be an object of name -> [x, y]")
    anchors: dict[str, tuple[float, float]] = {}
    for key, value in raw.items():
        if key not in KNOWN_ANCHORS:
            raise _fail(path, f"anchors.{key}", f"unknown anchor; known: {', '.join(sorted(KNOWN_ANCHORS))}")
        if (
            not isinstance(value, list)
            or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
            or not all(-MAX_SIDE <= v <= 2 * MAX_SIDE for v in value)
        ):
            raise _fail(path, f"anchors.{key}", "must be [x, y], two finite numbers in garment pixels")
        anchors[key] = (float(value[0]), float(value[1]))
    missing = [a for a in REQUIRED_ANCHORS[category] if a not in anchors]
    if missing:
        raise _fail(path, "anchors", f"a {category} needs {', '.join(missing)}")
    ls, rs = anchors.get("left_shoulder"), anchors.get("right_shoulder")
    if ls and rs and math.dist(ls, rs) < 4:
        raise _fail(path, "anchors", "left_shoulder and right_shoulder coincide")
    variants = data.get("variants", [])
    if not isinstance(variants, list) or not all(isinstance(v, dict) for v in variants):
        raise _fail(path, "variants", "must be a list of objects")
    for key in ("license", "source"):
        if not isinstance(data.get(key, ""), str):
            raise _fail(path, key, "must be a string")
    tucked = data.get("tucked", False)
    if not isinstance(tucked, bool):
        raise _fail(path, "tucked", "must be true or false")
    if category in ("top", "outerwear", "dress"):
        for side in ("left", "right"):
            if f"{side}_wrist" in anchors and f"{side}_elbow" not in anchors:
                raise _fail(path, "anchors", f"{side}_wrist needs {side}_elbow (a sleeve bends at the elbow)")
    if category == "bottom" and "crotch" in anchors and not all(f"{s}_knee" in anchors for s in ("left", "right")):
        raise _fail(path, "anchors", "trousers (a crotch anchor) need left_knee and right_knee")
    return Garment(
        gid,
        name,
        category,
        layer,
        anchors,
        image_path,
        path,
        data.get("license", ""),
        data.get("source", ""),
        variants,
        tucked,
    )


def save_garment(garment_json: dict, rgba: np.ndarray, folder: Path) -> Path:
    """Write PNG + sidecar atomically (temp files, then rename): never a half-written garment."""
    folder.mkdir(parents=True, exist_ok=True)
    gid = garment_json["id"]
    png, sidecar = folder / f"{gid}.png", folder / f"{gid}.json"
    ok, buf = cv2.imencode(".png", rgba, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise GarmentError(f"{png}: PNG encoding failed")
    tmp_png, tmp_json = png.with_suffix(".png.tmp"), sidecar.with_suffix(".json.tmp")
    tmp_png.write_bytes(buf.tobytes())
    tmp_json.write_text(json.dumps(dict(garment_json, image=png.name, schema=SCHEMA_VERSION), indent=2) + "\n")
    tmp_png.replace(png)
    tmp_json.replace(sidecar)
    return sidecar
