"""The mirror page in real headless Chromium, with a fake camera playing the person video,
against a real `smart-closet serve`. Screenshots and measured figures go to test-artifacts/."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import FIXTURES as FIXTURES_DIR
from smartcloset import bench
from smartcloset.bench import free_port, stop_server
from smartcloset.server.pages import WEBAPP_DIR

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

pytestmark = [
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it as root)"
    ),
    pytest.mark.skipif(not (WEBAPP_DIR / "index.html").is_file(), reason="web page not built (make test builds it)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (the test extra)")


def write_y4m(frames: list[np.ndarray], path: Path) -> None:
    """A 1280x720 30 FPS fake camera (the 5 FPS video plays 6x faster - fine for a camera)."""
    with path.open("wb") as f:
        f.write(b"YUV4MPEG2 W1280 H720 F30:1 Ip A1:1 C420jpeg\n")
        for frame in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())


def start_server(port: int, closet: Path):
    return bench.start_server(port, "--closet", str(closet))


def wait_for(page, js: str, timeout_s: float = 30.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = page.evaluate(js)
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for: {js}")


def canvas_image(page) -> np.ndarray:
    """The mirror canvas as BGR, flipped back to camera orientation."""
    data_url = page.evaluate("document.querySelector('canvas').toDataURL('image/png')")
    import base64

    png = np.frombuffer(base64.b64decode(data_url.split(",", 1)[1]), np.uint8)
    return cv2.flip(cv2.imdecode(png, cv2.IMREAD_COLOR), 1)


def colour_share(img: np.ndarray, colour: str) -> float:
    """Share of the torso zone (the person stays in the centre of the frame) in a colour."""
    zone = img[150:450, 500:780].astype(int)
    b, g, r = zone[..., 0], zone[..., 1], zone[..., 2]
    if colour == "navy":
        mask = (b > r + 40) & (b > g + 10) & (b > 50)
    else:  # white cloth, shaded
        mask = (r > 170) & (g > 170) & (b > 170) & (np.abs(r - b) < 30)
    return float(mask.mean())


CSP_WATCH = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


def white_replaced_navy(page, timeout_s: float) -> bool:
    """Whether the mirror came to show the white T-shirt and no navy one within the time."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        img = canvas_image(page)
        if colour_share(img, "navy") < 0.01 and colour_share(img, "white") > 0.05:
            return True
        time.sleep(0.3)
    return False


def watch_csp(page) -> list[str]:
    """CSP violations seen by the page: its own events plus Chromium's console reports."""
    console: list[str] = []
    page.add_init_script(CSP_WATCH)
    page.on("console", lambda m: console.append(m.text) if "Content Security Policy" in m.text else None)
    return console


def csp_violations(page, console: list[str]) -> list[str]:
    return list(page.evaluate("window.__cspViolations || []")) + console


@pytest.fixture(scope="module")
def camera_file(tmp_path_factory, video_frames) -> Path:
    path = tmp_path_factory.mktemp("camera") / "camera.y4m"
    write_y4m(video_frames, path)
    return path


@pytest.fixture(scope="module")
def playwright():
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright, camera_file):
    b = playwright.chromium.launch(
        executable_path=CHROMIUM,
        args=[
            "--no-sandbox",
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={camera_file}",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    )
    yield b
    b.close()


def test_mirror_page_end_to_end(browser, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    server = start_server(port, tmp_path)
    try:
        context = browser.new_context(viewport={"width": 1600, "height": 900}, accept_downloads=True)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        csp_console = watch_csp(page)
        page.goto(f"http://127.0.0.1:{port}/")
        assert page.title() == "Smart Closet"
        assert "script-src 'self'" in page.evaluate("fetch('/').then(r => r.headers.get('content-security-policy'))")
        page.get_by_role("button", name="Navy T-shirt").wait_for()
        page.get_by_role("button", name="Start camera").click()

        # Rendered frames arrive and the HUD counts them.
        wait_for(page, "window.smartcloset.figures().receiveFps > 0")
        time.sleep(2.0)  # warm-up: first poses, graphs created
        page.wait_for_function("document.querySelector('[data-hud=\"receive-fps\"]').textContent !== '0.0'")

        # The garment is on the person (navy in the torso zone; the source has none).
        navy = max(colour_share(canvas_image(page), "navy") for _ in range(3))
        page.screenshot(path=str(ARTIFACTS / "e2e-mirror-navy.png"))
        assert navy > 0.05, navy

        # Measure the page's own figures over a steady window.
        time.sleep(8.0)
        figures = page.evaluate("window.smartcloset.figures()")
        (ARTIFACTS / "e2e-figures.json").write_text(json.dumps(figures, indent=2))
        assert figures["sendFps"] > 0 and figures["receiveFps"] > 0 and figures["poseFps"] > 0

        # Another garment changes the output.
        white_button = page.get_by_role("button", name="White T-shirt")
        white_button.click()
        assert white_button.get_attribute("aria-pressed") == "true"
        assert page.get_by_role("button", name="Navy T-shirt").get_attribute("aria-pressed") == "false"
        assert white_replaced_navy(page, 10.0), "the white T-shirt never replaced the navy one"
        page.screenshot(path=str(ARTIFACTS / "e2e-mirror-white.png"))

        # Snapshot downloads a PNG of the mirror.
        with page.expect_download() as dl:
            page.get_by_role("button", name="Snapshot").click()
        png = Path(dl.value.path()).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and dl.value.suggested_filename.endswith(".png")
        assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape == (720, 1280, 3)

        # A clip downloads a WebM (EBML header).
        with page.expect_download(timeout=30_000) as dl:
            page.get_by_role("button", name="Clip (6 s)").click()
        webm = Path(dl.value.path()).read_bytes()
        assert webm[:4] == b"\x1a\x45\xdf\xa3" and len(webm) > 10_000

        # A garment added from a photo on the page: anchors shown, kept, worn.
        (tee_photo,) = (FIXTURES_DIR / "garments").glob("t-shirt-*.jpg")
        page.get_by_label("Photo (laid flat on a plain background)").set_input_files(str(tee_photo))
        page.get_by_label("Name").fill("Blue tee")
        page.get_by_role("button", name="Add garment").click()
        page.wait_for_selector("[data-anchor=left_shoulder]", timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "e2e-anchor-editor.png"))
        page.get_by_role("button", name="Keep garment").click()
        page.get_by_role("button", name="Blue tee").click()
        assert page.get_by_role("button", name="Blue tee").get_attribute("aria-pressed") == "true"
        time.sleep(2.0)
        page.screenshot(path=str(ARTIFACTS / "e2e-mirror-imported.png"))
        # Streaming, the encoder worker, thumbnails, the anchor editor, snapshot and clip all ran
        # under the server's Content-Security-Policy without breaking it.
        assert not csp_violations(page, csp_console), csp_violations(page, csp_console)

        # The server restarts: the page says so, reconnects by itself and streams again.
        stop_server(server)
        page.wait_for_selector("[data-message=server]:has-text('unreachable')", timeout=15_000)
        server = start_server(port, tmp_path)
        page.wait_for_selector("[data-message=server]", state="detached", timeout=30_000)
        wait_for(page, "window.smartcloset.figures().receiveFps > 0")
        page.screenshot(path=str(ARTIFACTS / "e2e-after-restart.png"))
        assert not errors, errors

        # A portrait mirror screen and a 1080p one lay out without scrolling the picture away.
        for name, size in (("portrait", {"width": 1080, "height": 1920}), ("1080p", {"width": 1920, "height": 1080})):
            page.set_viewport_size(size)
            time.sleep(0.5)
            box = page.locator("canvas").bounding_box()
            assert box["width"] > 0.5 * size["width"] or box["height"] > 0.5 * size["height"]
            assert box["y"] + box["height"] <= size["height"] + 1
            page.screenshot(path=str(ARTIFACTS / f"e2e-{name}.png"))
        context.close()
    finally:
        stop_server(server)


def test_token_page_streams_under_its_csp_and_shows_a_refusal(browser, tmp_path):
    """A server with an access token: the page works only when opened with it (socket and API
    carry it, thumbnails the cookie), breaks no CSP rule, and a second page past the
    per-address limit says why it was refused instead of "unreachable"."""
    port = free_port()
    server = bench.start_server(
        port, "--closet", str(tmp_path), "--token", "e2e-token", "--max-clients-per-address", "1"
    )
    try:
        context = browser.new_context(viewport={"width": 1600, "height": 900})
        page = context.new_page()
        csp_console = watch_csp(page)
        assert page.goto(f"http://127.0.0.1:{port}/").status == 401
        assert "access token" in page.content()
        assert page.goto(f"http://127.0.0.1:{port}/?token=e2e-token").status == 200
        page.get_by_role("button", name="Navy T-shirt").wait_for()
        wait_for(page, "[...document.querySelectorAll('.card img')].every(i => i.complete && i.naturalWidth > 0)")
        page.get_by_role("button", name="Start camera").click()
        wait_for(page, "window.smartcloset.figures().receiveFps > 0")
        time.sleep(2.0)
        assert page.evaluate("window.smartcloset.figures().sendFps") > 0
        assert not csp_violations(page, csp_console), csp_violations(page, csp_console)
        # The watch sees a real violation (an image from another origin), so silence means none.
        page.evaluate("document.body.append(Object.assign(new Image(), {src: 'http://198.51.100.1/x.png'}))")
        wait_for(page, "window.__cspViolations.some(v => v.startsWith('img-src'))", 10)

        second = context.new_page()
        second.goto(f"http://127.0.0.1:{port}/?token=e2e-token")
        notice = second.wait_for_selector("[data-message=server]:has-text('refused')", timeout=15_000)
        assert "too many connections from your address" in notice.text_content()
        ARTIFACTS.mkdir(exist_ok=True)
        second.screenshot(path=str(ARTIFACTS / "e2e-refused.png"))
        assert wait_for(page, "window.smartcloset.figures().receiveFps > 0")  # the first goes on
        context.close()
    finally:
        stop_server(server)


def test_denied_camera_is_explained(playwright, tmp_path):
    # No fake-UI flag: the permission prompt is refused, as when a user says no.
    b = playwright.chromium.launch(
        executable_path=CHROMIUM, args=["--no-sandbox", "--use-fake-device-for-media-stream"]
    )
    port = free_port()
    server = start_server(port, tmp_path)
    try:
        page = b.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.get_by_role("button", name="Start camera").click()
        alert = page.wait_for_selector("[data-message=camera]", timeout=15_000)
        assert "permission was denied" in alert.text_content()
    finally:
        stop_server(server)
        b.close()


@pytest.mark.parametrize(
    "serve_args, frame_path",
    [
        (["--render", "batched"], "batched on cpu"),
        (["--render", "batched", "--engines", "2"], "2 engine processes"),
    ],
    ids=["engine-in-process", "two-engine-processes"],
)
def test_mirror_page_on_the_batched_frame_path(browser, tmp_path, serve_args, frame_path):
    """The page against the GPU path's code (``FrameEngine``, ``BatchRenderer`` - here on CPU
    torch - and the engine processes): frames come back dressed, and a garment picked on the
    page changes what the engine draws (the look travels with the frames)."""
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    server = bench.start_server(port, "--closet", str(tmp_path), *serve_args)
    try:
        context = browser.new_context(viewport={"width": 1600, "height": 900})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{port}/")
        page.get_by_role("button", name="Navy T-shirt").wait_for()
        page.get_by_role("button", name="Start camera").click()
        wait_for(page, "window.smartcloset.figures().receiveFps > 0", timeout_s=60.0)
        stats = page.evaluate("fetch('/api/stats').then(r => r.json())")
        assert frame_path in stats["frame_path"], stats

        end = time.monotonic() + 30
        navy = 0.0
        while time.monotonic() < end and navy <= 0.05:
            navy = colour_share(canvas_image(page), "navy")
            time.sleep(0.3)
        assert navy > 0.05, navy

        page.get_by_role("button", name="White T-shirt").click()
        assert white_replaced_navy(page, 30.0), "the engine kept drawing the navy T-shirt"
        page.screenshot(path=str(ARTIFACTS / f"e2e-batched-{frame_path.split()[0]}.png"))
        # The HUD shows the engines' pose rate (a 2 s window: on a loaded 2-core machine an
        # engine can pause longer than that, so wait for it rather than read it once).
        wait_for(page, "window.smartcloset.figures().poseFps > 0", timeout_s=30.0)
        assert page.evaluate("window.smartcloset.figures().receiveFps") > 0
        assert not errors, errors
        context.close()
    finally:
        stop_server(server)
