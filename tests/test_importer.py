"""Adding garments from photos: the CC0 flat-lay fixtures, the CLI, the upload API, bad uploads."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest

from conftest import torso_box
from smartcloset.closet.importer import GarmentImportError, cut_out, decode_photo, import_garment, sniff
from smartcloset.pose.timeline import TimedKeypoints
from smartcloset.render.annotators import GarmentAnnotator

# fixture file stem -> category, and whether its sleeves are long
PHOTOS = {
    "dress": ("dress", None),
    "hoodie": ("top", True),
    "outwear": ("outerwear", True),
    "shirt": ("top", True),
    "t-shirt": ("top", False),
}


def photo(fixtures_dir, stem: str) -> bytes:
    (path,) = (fixtures_dir / "garments").glob(f"{stem}-*.jpg")
    return path.read_bytes()


@pytest.fixture(scope="module")
def imported(fixtures_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("imported")
    return {stem: import_garment(photo(fixtures_dir, stem), cat, stem, folder) for stem, (cat, _) in PHOTOS.items()}


@pytest.mark.parametrize("stem", list(PHOTOS))
def test_cut_out_covers_the_garment_not_the_background(fixtures_dir, stem):
    img = decode_photo(photo(fixtures_dir, stem))
    img = cv2.resize(img, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    mask = cut_out(img) > 0
    lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB).astype(np.float32)
    band = np.zeros(mask.shape, bool)
    band[:8], band[-8:], band[:, :8], band[:, -8:] = True, True, True, True
    bg = np.median(lab[band & ~mask], axis=0)  # the cloth it lies on
    dist = np.linalg.norm(lab - bg, axis=2)
    border_spread = np.median(dist[band & ~mask])  # how much the cloth's colour varies at the edge
    assert 0.2 < mask.mean() < 0.9
    assert np.median(dist[~mask]) < 1.5 * border_spread + 5  # what is left out looks like the background ...
    assert np.median(dist[mask]) > 2 * np.median(dist[~mask])  # ... and what is kept does not


@pytest.mark.parametrize("stem", list(PHOTOS))
def test_anchors_are_inside_the_garment_and_in_order(imported, stem):
    g = imported[stem]
    a = {k: np.array(v) for k, v in g.anchors.items()}
    alpha = g.rgba[..., 3]

    def inside(p, r=6):
        x, y = int(round(p[0])), int(round(p[1]))
        return alpha[max(y - r, 0) : y + r + 1, max(x - r, 0) : x + r + 1].max() > 128

    for name in ("left_shoulder", "right_shoulder", "left_armpit", "right_armpit", "left_hip", "right_hip"):
        assert inside(a[name]), name
    assert a["left_shoulder"][0] > a["neck"][0] > a["right_shoulder"][0]  # the wearer's left on the right
    for side in ("left", "right"):
        assert a["neck"][1] < a[f"{side}_shoulder"][1] < a[f"{side}_armpit"][1] < a[f"{side}_hip"][1] <= a["hem"][1]
    long = PHOTOS[stem][1]
    if long is None:
        assert "left_elbow" not in a and "right_elbow" not in a  # sleeveless
    else:
        assert "left_elbow" in a or "right_elbow" in a
    if long:
        wrists = [a[k] for k in ("left_wrist", "right_wrist") if k in a]
        assert wrists and all(inside(w, 12) for w in wrists)
        assert all(w[1] > a["left_armpit"][1] for w in wrists)
    if long is False:
        assert "left_wrist" not in a and "right_wrist" not in a


@pytest.mark.parametrize("stem", list(PHOTOS))
def test_imported_garments_render_on_the_person_video(imported, video_frames, video_truth, stem):
    ann = GarmentAnnotator(imported[stem])
    for i in (0, 20, 50):
        frame = video_frames[i]
        out = ann.annotate(frame.copy(), TimedKeypoints(video_truth[i], "own"))
        x1, y1, x2, y2 = torso_box(video_truth[i])
        changed = (np.abs(out.astype(int) - frame).sum(axis=2) > 40)[y1:y2, x1:x2].mean()
        assert changed > 0.8, (stem, i, changed)
        assert np.array_equal(out[:, :300], frame[:, :300])  # nowhere near the person: untouched


def test_cli_add_prints_the_id_and_lists_it(fixtures_dir, tmp_path):
    (path,) = (fixtures_dir / "garments").glob("t-shirt-*.jpg")
    cli = [sys.executable, "-m", "smartcloset"]
    out = subprocess.run(
        [*cli, "garments", "add", str(path), "--category", "top", "--name", "Blue tee", "--closet", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    gid = out.stdout.strip().splitlines()[-1]
    assert gid.startswith("blue-tee-") and (tmp_path / f"{gid}.json").is_file() and (tmp_path / f"{gid}.png").is_file()
    listed = json.loads(
        subprocess.run(
            [*cli, "garments", "list", "--json", "--closet", str(tmp_path)], capture_output=True, text=True, timeout=60
        ).stdout
    )
    assert gid in [g["id"] for g in listed]
    detail = subprocess.run(
        [*cli, "garments", "add", str(path), "--category", "top", "--closet", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = detail.stdout.strip().splitlines()
    assert json.loads("\n".join(lines[:-1]))["id"] == lines[-1]
    bad = subprocess.run(
        [*cli, "garments", "add", str(tmp_path / f"{gid}.json"), "--category", "top", "--closet", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "not a JPEG or PNG" in bad.stderr


# -- uploads -----------------------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def test_sniff_judges_by_content_and_limits_pixels_before_decoding():
    with pytest.raises(GarmentImportError, match="empty"):
        sniff(b"")
    with pytest.raises(GarmentImportError, match="not a JPEG or PNG"):
        sniff(b"GIF89a" + bytes(100))
    with pytest.raises(GarmentImportError, match="limit"):
        sniff(png_header(100_000, 100_000))  # a decompression bomb's header
    assert sniff(png_header(640, 480)) == ("png", 640, 480)


def upload(client, data: bytes, filename: str = "photo.jpg", **form):
    body = {"photo": (io.BytesIO(data), filename), **form}
    return client.post("/api/garments", data=body, content_type="multipart/form-data")


def test_upload_adds_a_garment_to_the_closet(client, closet_dir, fixtures_dir):
    resp = upload(
        client, photo(fixtures_dir, "t-shirt"), filename="../../../etc/passwd.jpg", category="top", name="My blue tee"
    )
    assert resp.status_code == 201, resp.get_json()
    g = resp.get_json()
    assert g["id"].startswith("my-blue-tee-") and "passwd" not in g["id"] and g["anchors"]["left_shoulder"]
    assert (closet_dir / f"{g['id']}.png").is_file()
    ids = [x["id"] for x in client.get("/api/garments").get_json()["garments"]]
    assert g["id"] in ids
    assert client.get(g["thumbnail"]).status_code == 200


@pytest.mark.parametrize(
    "data, form, status, message",
    [
        (None, {"category": "top"}, 400, "multipart"),
        (b"not an image at all", {"category": "top"}, 400, "not a JPEG or PNG"),
        (png_header(60_000, 60_000) + bytes(64), {"category": "top"}, 400, "limit"),
        (b"\xff\xd8\xff\xe0" + bytes(200), {"category": "top"}, 400, "JPEG"),
        ("tee", {"category": "hat"}, 400, "category"),
        ("tee", {"category": "top", "name": "x" * 200}, 400, "name"),
        (bytes(17 * 1024 * 1024), {"category": "top"}, 413, ""),
        (cv2.imencode(".png", np.full((300, 300, 3), 120, np.uint8))[1].tobytes(), {"category": "top"}, 400, "garment"),
    ],
)
def test_bad_uploads_are_refused_and_leave_nothing(client, closet_dir, fixtures_dir, data, form, status, message):
    before = sorted(p.name for p in closet_dir.iterdir())
    if data == "tee":
        data = photo(fixtures_dir, "t-shirt")
    if data is None:
        resp = client.post("/api/garments", data=form, content_type="multipart/form-data")
    else:
        resp = upload(client, data, **form)
    assert resp.status_code == status
    if message:
        assert message in resp.get_json()["error"]
    assert sorted(p.name for p in closet_dir.iterdir()) == before


def test_anchors_can_be_corrected_and_a_garment_discarded(client, closet_dir, fixtures_dir):
    g = upload(client, photo(fixtures_dir, "shirt"), category="top", name="Denim shirt").get_json()
    image = client.get(f"/api/garments/{g['id']}/image.png")
    assert image.status_code == 200 and image.data[:4] == b"\x89PNG"
    anchors = dict(g["anchors"], left_shoulder=[g["anchors"]["left_shoulder"][0] + 5, g["anchors"]["left_shoulder"][1]])
    resp = client.put(f"/api/garments/{g['id']}/anchors", json={"anchors": anchors})
    assert resp.status_code == 200 and resp.get_json()["anchors"]["left_shoulder"][0] == anchors["left_shoulder"][0]
    bad = client.put(f"/api/garments/{g['id']}/anchors", json={"anchors": {"left_shoulder": [1, 2]}})
    assert bad.status_code == 400 and "needs" in bad.get_json()["error"]  # the same validation as a file
    assert (
        client.put(f"/api/garments/{g['id']}/anchors", json={"anchors": {"left_shoulder": ["x", 1]}}).status_code == 400
    )
    assert client.put("/api/garments/tshirt-navy/anchors", json={"anchors": anchors}).status_code == 403  # starter
    assert client.delete(f"/api/garments/{g['id']}").status_code == 204
    assert (
        not (closet_dir / f"{g['id']}.json").exists()
        and client.get(f"/api/garments/{g['id']}/image.png").status_code == 404
    )
