"""JSON API: garments and thumbnails, live stats, health and Prometheus metrics."""

from __future__ import annotations

import cv2
import numpy as np
from flask import Blueprint, Response, abort, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.exceptions import HTTPException

from .. import metrics

bp = Blueprint("api", __name__)


@bp.app_errorhandler(HTTPException)
def _api_errors_as_json(exc: HTTPException):
    """Under /api/, errors (404, 403, 413 body too large, ...) are JSON like the API's own."""
    if not request.path.startswith("/api/"):
        return exc
    return jsonify(error=exc.description, status=exc.code), exc.code


def _pipeline():
    return current_app.extensions["smartcloset"]


@bp.get("/healthz")
def healthz():
    worker = _pipeline().worker
    ok = worker.alive
    return jsonify(status="ok" if ok else "pose worker down", backend=worker.backend.name), (200 if ok else 503)


@bp.get("/metrics")
def metrics_endpoint():
    return Response(metrics.exposition(), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/api/stats")
def stats():
    p = _pipeline()
    return jsonify(dict(p.worker.snapshot(), sessions=p.clients))


@bp.get("/api/garments")
def garments():
    closet = _pipeline().closet
    items = [dict(g.to_json(), thumbnail=f"/api/garments/{g.id}/thumbnail.png") for g in closet.list()]
    return jsonify(garments=items, default=_pipeline().config.default_garments)


@bp.get("/api/garments/<garment_id>/thumbnail.png")
def thumbnail(garment_id: str):
    try:
        garment = _pipeline().closet.get(garment_id)
    except KeyError:
        abort(404)
    rgba = garment.rgba
    scale = 160 / max(rgba.shape[:2])
    small = cv2.resize(rgba, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgba
    ok, png = cv2.imencode(".png", np.ascontiguousarray(small))
    if not ok:
        abort(500)
    resp = Response(png.tobytes(), mimetype="image/png")
    resp.cache_control.max_age = 300
    return resp


@bp.post("/api/garments")
def add_garment():
    """Upload a photo (multipart: ``photo``, ``category``, optional ``name``) -> a new garment."""
    from ..closet.importer import GarmentImportError, import_garment

    closet = _pipeline().closet
    photo = request.files.get("photo")
    if photo is None:
        return jsonify(error='send the photo as multipart form field "photo"'), 400
    data = photo.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        return jsonify(error=f"the photo is over {MAX_UPLOAD} bytes"), 413
    try:
        garment = import_garment(
            data, request.form.get("category", ""), request.form.get("name") or None, closet.user_dir, source="upload"
        )
    except GarmentImportError as exc:
        return jsonify(error=str(exc)), 400
    closet.reload()
    return jsonify(dict(garment.to_json(), thumbnail=f"/api/garments/{garment.id}/thumbnail.png")), 201


MAX_UPLOAD = 15 * 1024 * 1024
MAX_ANCHORS_BODY = 64 * 1024


def _user_garment(garment_id: str):
    """A garment from the user's own closet folder (starter garments are read-only)."""
    closet = _pipeline().closet
    try:
        garment = closet.get(garment_id)
    except KeyError:
        abort(404)
    if garment.sidecar_path.parent.resolve() != closet.user_dir.resolve():
        abort(403, description="starter garments cannot be changed")
    return closet, garment


@bp.get("/api/garments/<garment_id>/image.png")
def garment_image(garment_id: str):
    """The full garment image, for the anchor editor."""
    try:
        garment = _pipeline().closet.get(garment_id)
    except KeyError:
        abort(404)
    ok, png = cv2.imencode(".png", garment.rgba)
    if not ok:
        abort(500)
    return Response(png.tobytes(), mimetype="image/png")


@bp.put("/api/garments/<garment_id>/anchors")
def update_anchors(garment_id: str):
    """Replace a user garment's anchors (``{"anchors": {name: [x, y]}}``), validated like a file."""
    import json

    from ..closet.garment import KNOWN_ANCHORS, GarmentError, load_garment

    closet, garment = _user_garment(garment_id)
    # A real body is under 2 kB. Parsing is what costs (5 MB of JSON: ~0.8 s holding the GIL,
    # stalling every stream), so a big one is refused unread.
    if (request.content_length or 0) > MAX_ANCHORS_BODY:
        return jsonify(error=f"the anchors body is over {MAX_ANCHORS_BODY} bytes"), 413
    raw = request.get_data(cache=False)
    if len(raw) > MAX_ANCHORS_BODY:
        return jsonify(error=f"the anchors body is over {MAX_ANCHORS_BODY} bytes"), 413
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("anchors"), dict):
        return jsonify(error='send JSON {"anchors": {"left_shoulder": [x, y], ...}}'), 400
    if len(body["anchors"]) > len(KNOWN_ANCHORS):
        return jsonify(error=f"at most {len(KNOWN_ANCHORS)} anchors, one per known name"), 400
    data = json.loads(garment.sidecar_path.read_text())
    data["anchors"] = body["anchors"]
    h, w = garment.rgba.shape[:2]
    for name, value in body["anchors"].items():
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            if not (-w <= value[0] <= 2 * w and -h <= value[1] <= 2 * h):
                return jsonify(error=f"anchor {name} is far outside the garment image"), 400
    tmp = garment.sidecar_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    try:
        load_garment(tmp)  # the image name inside is unchanged, so it validates in place
    except GarmentError as exc:
        tmp.unlink(missing_ok=True)
        return jsonify(error=str(exc).replace(str(tmp), garment.sidecar_path.name)), 400
    tmp.replace(garment.sidecar_path)
    closet.reload()
    return jsonify(closet.get(garment_id).to_json())


@bp.delete("/api/garments/<garment_id>")
def delete_garment(garment_id: str):
    closet, garment = _user_garment(garment_id)
    garment.sidecar_path.unlink(missing_ok=True)
    garment.image_path.unlink(missing_ok=True)
    closet.reload()
    return "", 204
