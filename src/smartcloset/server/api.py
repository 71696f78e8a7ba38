"""JSON API: garments and thumbnails, live stats, health and Prometheus metrics."""

from __future__ import annotations

import cv2
import numpy as np
from flask import Blueprint, Response, abort, current_app, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

bp = Blueprint("api", __name__)


def _pipeline():
    return current_app.extensions["smartcloset"]


@bp.get("/healthz")
def healthz():
    worker = _pipeline().worker
    ok = worker.alive
    return jsonify(status="ok" if ok else "pose worker down", backend=worker.backend.name), (200 if ok else 503)


@bp.get("/metrics")
def metrics_endpoint():
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


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
