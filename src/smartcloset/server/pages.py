"""The page: ``/`` serves the React mirror page built from ``web/`` into ``webapp/``.

The build output ships inside the package (package data), so an installed wheel serves the page
with no Node. A source checkout that was never built answers with how to build it.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

WEBAPP_DIR = Path(__file__).resolve().parent.parent / "webapp"

bp = Blueprint("pages", __name__)

NOT_BUILT = """<!doctype html><meta charset="utf-8"><title>Smart Closet</title>
<h1>The mirror page is not built</h1>
<p>Run <code>make run</code> from the project folder (or <code>cd web &amp;&amp; npm ci &amp;&amp; npm run build</code>),
then reload. The server, its API and the WebSocket are running.</p>"""


@bp.get("/")
def index():
    if not (WEBAPP_DIR / "index.html").is_file():
        return Response(NOT_BUILT, status=503, mimetype="text/html")
    return send_from_directory(WEBAPP_DIR, "index.html", max_age=0)


@bp.get("/assets/<path:name>")
def assets(name: str):
    # Vite names assets by content hash, so they can be cached for good.
    return send_from_directory(WEBAPP_DIR / "assets", name, max_age=31536000)  # safe_join: no traversal
