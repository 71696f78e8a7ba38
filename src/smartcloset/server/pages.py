"""The page: ``/`` serves the mirror (plain HTML + JS for now) and its static files."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, send_from_directory

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    return send_from_directory(STATIC_DIR, "index.html", max_age=0)


@bp.get("/static/<path:name>")
def static_file(name: str):
    return send_from_directory(STATIC_DIR, name)  # safe_join inside: no traversal
