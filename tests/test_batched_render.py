"""The batched (GPU) renderer against the CPU renderer, on the same geometry.

Both draw from ``GarmentAnnotator.placement`` and ``occlusion.arm_segments``; the per-pixel
work differs (a coarse-grid rasteriser with a centre-inside rule grown by a pixel vs OpenCV's
polygon filler, distance-field capsules vs ``cv2.line``), so the two pictures agree within a
stated tolerance: mean absolute difference under 0.5 of a level, and pixels off by more than 16
levels only along edges (the outline, the arms') - under 0.5 % of the frame. Inside the garment
no camera pixel may show through where the CPU renderer covers it: the seams between a body and
its sleeves once cracked open (400-600 such pixels a look) before the rasteriser grew its
triangles by a pixel.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from smartcloset.closet.store import Closet  # noqa: E402
from smartcloset.pose.simulate import standing_keypoints  # noqa: E402
from smartcloset.pose.timeline import TimedKeypoints  # noqa: E402
from smartcloset.render.annotators import GarmentAnnotator, LookAnnotator  # noqa: E402
from smartcloset.render.batched import BatchRenderer, _gaussian_kernel, frames_to_tensor  # noqa: E402

MEAN_TOLERANCE = 0.5
EDGE_SHARE = 0.005
MAX_CRACK_PIXELS = 25  # camera pixels showing through inside the garment (measured: 0-5)

LOOKS = {
    "tshirt, forearm across the body": (["tshirt-navy"], True),
    "trousers under a hoodie": (["trousers-denim", "hoodie-grey"], False),
    "long sleeves, arms down": (["longsleeve-grey"], False),
}


@pytest.fixture(scope="module")
def closet():
    return Closet(user_dir="/nonexistent")


@pytest.fixture(scope="module")
def frame(video_frames) -> np.ndarray:
    return cv2.resize(video_frames[0], (1280, 720))


def _pose(across: bool) -> TimedKeypoints:
    kp = standing_keypoints(1.2, 30)
    if across:
        kp[9, :2] = (620, 380)  # the left wrist in front of the belly
    return TimedKeypoints(kp, "own")


def _cpu(frame, anns, pose) -> np.ndarray:
    return LookAnnotator(anns).annotate(frame.copy(), pose)


def _batched(device, frames_bgr, poses, looks, renderer: BatchRenderer | None = None) -> list[np.ndarray]:
    rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames_bgr]
    out = (renderer or BatchRenderer(device)).render(frames_to_tensor(rgb, device), poses, looks)
    return [cv2.cvtColor(o.permute(1, 2, 0).cpu().numpy(), cv2.COLOR_RGB2BGR) for o in out]


def _agree(got: np.ndarray, want: np.ndarray, original: np.ndarray) -> None:
    d = np.abs(got.astype(np.int16) - want.astype(np.int16)).max(axis=2)
    drawn = (np.abs(want.astype(np.int16) - original.astype(np.int16)).max(axis=2) > 0).sum()
    assert drawn > 20_000, "the look was not drawn at all"
    assert d.mean() < MEAN_TOLERANCE
    assert (d > 16).mean() < EDGE_SHARE
    # No cracks: where the CPU picture is covered (away from its outline), so is this one.
    covered = (np.abs(want.astype(np.int16) - original.astype(np.int16)).max(axis=2) > 0).astype(np.uint8)
    inner = cv2.erode(covered, np.ones((7, 7), np.uint8)) > 0
    bare = (np.abs(got.astype(np.int16) - original.astype(np.int16)).max(axis=2) <= 2) & inner
    assert bare.sum() <= MAX_CRACK_PIXELS, f"{bare.sum()} camera pixels show through the garment"


@pytest.mark.parametrize("name", list(LOOKS))
def test_batched_renderer_matches_cpu_renderer(closet, frame, name):
    ids, across = LOOKS[name]
    anns = [GarmentAnnotator(closet.get(g)) for g in ids]
    pose = _pose(across)
    (got,) = _batched("cpu", [frame], [pose], [anns])
    _agree(got, _cpu(frame, anns, pose), frame)


def test_batch_equals_single_frames(closet, frame):
    """Frames with different looks and poses in one batch come out as when drawn alone - to the
    level: the float sums run in another order (a shared triangle edge written by either
    triangle, other tensor sizes), so a handful of pixels may round the other way."""
    looks = [[GarmentAnnotator(closet.get(g)) for g in ids] for ids, _ in LOOKS.values()]
    poses = [_pose(across) for _, across in LOOKS.values()]
    frames = [frame, cv2.flip(frame, 1), frame[::-1].copy()]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one order of float sums per op, as on the 2-core machine it was set on
    try:
        together = _batched("cpu", frames, poses, looks)
        alone_all = [_batched("cpu", [f], [p], [look])[0] for f, p, look in zip(frames, poses, looks)]
    finally:
        torch.set_num_threads(threads)
    for got, alone in zip(together, alone_all):
        d = np.abs(got.astype(np.int16) - alone.astype(np.int16))
        assert d.max() <= 1 and (d > 0).mean() < 1e-3, f"max {d.max()}, {(d > 0).sum()} values differ"


@pytest.mark.parametrize("region", [(64, 128, 448, 576), (0, 0, 320, 256), (896, 448, 1280, 720), (0, 0, 1280, 720)])
def test_shading_worked_out_over_a_region_is_the_whole_frames_there(frame, region):
    """The renderer shades only the garments' region (and a margin the blurs reach across):
    the factor there must be what the whole frame's shading gives, at the frame's edges too."""
    frames = frames_to_tensor([cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)], "cpu")
    renderer = BatchRenderer("cpu")
    x0, y0, x1, y1 = region
    whole = renderer._steps.shading(frames, _gaussian_kernel(1.0, frames.device), _gaussian_kernel(4.0, frames.device))
    got = renderer._shading(frames, region)
    assert got.shape == (1, 1, y1 - y0, x1 - x0)
    np.testing.assert_allclose(got.numpy(), whole[:, :, y0:y1, x0:x1].numpy(), atol=1e-5)


def test_no_person_or_no_look_leaves_the_frame_untouched(closet, frame):
    ann = GarmentAnnotator(closet.get("tshirt-navy"))
    nobody = TimedKeypoints(None, "none")
    out = _batched("cpu", [frame, frame], [nobody, _pose(False)], [[ann], []])
    assert np.array_equal(out[0], frame) and np.array_equal(out[1], frame)


def test_compiled_renderer_draws_what_the_eager_one_draws(closet, frame):
    """``BatchRenderer(compile=True)``: the same steps through torch.compile (here its CPU
    backend; Triton on CUDA) - fused, so the float sums may round the other way on a few values.
    Two frames with different looks, one with a forearm in front."""
    looks = [[GarmentAnnotator(closet.get(g)) for g in ids] for ids, _ in LOOKS.values()][:2]
    poses = [_pose(True), _pose(False)]
    frames = [frame, cv2.flip(frame, 1)]
    renderer = BatchRenderer("cpu", compile=True)
    for batch in ([0, 1], [1]):  # a second, smaller batch: dynamic sizes, not a fresh compile per size
        got = _batched(
            "cpu", [frames[i] for i in batch], [poses[i] for i in batch], [looks[i] for i in batch], renderer
        )
        want = _batched("cpu", [frames[i] for i in batch], [poses[i] for i in batch], [looks[i] for i in batch])
        for g, w, i in zip(got, want, batch):
            d = np.abs(g.astype(np.int16) - w.astype(np.int16))
            assert d.max() <= 1 and (d > 0).mean() < 1e-3, f"frame {i}: max {d.max()}, {(d > 0).sum()} values differ"
            assert (np.abs(g.astype(np.int16) - frames[i].astype(np.int16)).max(axis=2) > 0).sum() > 20_000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (runs on the device machine)")
def test_cuda_renderer_matches_cpu_renderer(closet, frame):
    ids, across = LOOKS["tshirt, forearm across the body"]
    anns = [GarmentAnnotator(closet.get(g)) for g in ids]
    pose = _pose(across)
    (got,) = _batched("cuda", [frame], [pose], [anns])
    _agree(got, _cpu(frame, anns, pose), frame)


def test_warm_up_draws_the_starter_looks_at_each_batch_size(monkeypatch):
    """The engine's warm-up (what compiles the compiled steps before clients come): every batch
    size renders, with a T-shirt alone and trousers under a hoodie - their meshes and textures
    are on the device afterwards."""
    renderer = BatchRenderer("cpu")
    sizes = []
    render = renderer.render
    monkeypatch.setattr(renderer, "render", lambda frames, *a: sizes.append(len(frames)) or render(frames, *a))
    renderer.warm_up(batches=(1, 3))
    assert sizes == [1, 1, 3, 3]
    assert len(renderer._meshes) == 3 and len(renderer._textures) >= 3


def test_the_shared_caches_build_each_entry_once_and_never_serve_another_garments(closet, monkeypatch):
    """The engine's in-flight batches share one renderer's caches from several threads: a mesh
    is built once however many batches ask for it at the same time, and a cached texture is
    served only to the garment it was made from (an ``id`` can be reused once a garment is
    gone)."""
    import threading
    import time

    renderer = BatchRenderer("cpu")
    ann = GarmentAnnotator(closet.get("tshirt-navy"))
    built = []
    build = renderer._build_mesh

    def slow_build(a):
        built.append(a)
        time.sleep(0.05)  # long enough for every thread to ask while the first still builds
        return build(a)

    monkeypatch.setattr(renderer, "_build_mesh", slow_build)
    start = threading.Barrier(8)
    meshes = []

    def ask():
        start.wait()
        meshes.append(renderer._mesh(ann))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(built) == 1 and all(m is meshes[0] for m in meshes)

    other = GarmentAnnotator(closet.get("shirt-blue"))
    stale = renderer.texture(ann, 0)
    cached = renderer._textures._entries
    cached[(id(other), 0)] = cached[(id(ann), 0)]  # as if ``other`` reused the id
    fresh = renderer.texture(other, 0)
    assert fresh is not stale and fresh.shape[-2:] == other.pyramid[0].shape[:2]


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.mark.parametrize("chunked", [False, True], ids=["one pass", "in chunks"])
@pytest.mark.parametrize("device", DEVICES)
def test_where_triangles_overlap_the_last_one_wins_every_time(device, chunked, monkeypatch):
    """64 copies of one triangle, each mapping every pixel to its own texture point (its number):
    the rasterised map holds the last one's everywhere it covers, both coordinates from it, as
    the CPU renderer paints them. Why: a bent elbow's sleeve triangles overlap, and a scatter
    with repeated indices keeps any write on CUDA - another one from run to run (two op-by-op
    renders of one batch differed on an H200, stop 17). The same when a big batch is rasterised
    in chunks (here one triangle a chunk): a later chunk's ring once wrote over an earlier
    chunk's inside, and where the chunks split a batch depends on its garments' order."""
    from smartcloset.render import batched
    from smartcloset.render.batched import _coverage

    if chunked:
        monkeypatch.setattr(batched, "MAX_WINDOW_ELEMENTS", 16 * 16)  # one 16 x 16 window a chunk
    renderer = BatchRenderer(device)
    n = 64
    geometry = torch.tensor([2.0, 2.0, 13.0, 3.0, 3.0, 13.0]).repeat(n, 1)  # x0 y0 x1 y1 x2 y2
    uv = torch.arange(n, dtype=torch.float32).repeat_interleave(6).view(n, 6)  # every corner at (i, i)
    corners = torch.cat([geometry, uv, torch.zeros(n, 1)], dim=1).T.contiguous().to(device)
    tri = _coverage(corners, 16, 16)
    for _ in range(3):
        order = torch.arange(n, device=device)  # the painting order: as listed
        maps = renderer._rasterise(1, tri, order, (16, 16), ((16, n),))[0].cpu()  # (2, gh, gw)
        covered = maps[0] > -1000  # _OUTSIDE is far below
        assert 80 < int(covered.sum()) < 256
        assert torch.equal(maps[0][covered], torch.full_like(maps[0][covered], n - 1))
        assert torch.equal(maps[1][covered], torch.full_like(maps[1][covered], n - 1))
    # Two halves of a square, the second drawn last: its one-pixel ring reaches into the first,
    # and a pixel inside the first keeps the first's texture point all the same.
    halves = torch.tensor([[2.0, 2.0, 13.0, 2.0, 2.0, 13.0], [13.0, 2.0, 13.0, 13.0, 2.0, 13.0]])
    uv = torch.tensor([[5.0] * 6, [9.0] * 6])
    corners = torch.cat([halves, uv, torch.zeros(2, 1)], dim=1).T.contiguous().to(device)
    maps = renderer._rasterise(1, _coverage(corners, 16, 16), torch.arange(2, device=device), (16, 16), ((16, 2),))
    maps = maps[0, 0].cpu()
    ys, xs = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    square = (xs >= 2) & (xs <= 13) & (ys >= 2) & (ys <= 13)
    assert (maps[square & (xs + ys <= 14)] == 5).all() and (maps[square & (xs + ys >= 16)] == 9).all()
    assert (maps[square & (xs + ys == 15)] == 9).all()  # on the shared edge, inside both: the last


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (runs on the device machine)")
def test_op_by_op_renders_of_one_batch_are_identical_on_cuda(closet, frame):
    """The same batch drawn twice gives the same bytes: nothing in the render depends on the
    order the GPU's threads run in (the rasteriser's overlaps above were the one thing that did)."""
    looks = [[GarmentAnnotator(closet.get("tshirt-navy"))], [GarmentAnnotator(closet.get("hoodie-grey"))]] * 2
    renderer = BatchRenderer("cuda")
    frames = frames_to_tensor([frame] * 4, "cuda")
    poses = []
    for i in range(4):
        kp = standing_keypoints(1.0 + 0.05 * i, 30)
        kp[9, :2] = (620, 380)  # a forearm across the body
        poses.append(TimedKeypoints(kp, "own"))
    first = renderer.render(frames, poses, looks)
    for _ in range(5):
        assert torch.equal(renderer.render(frames, poses, looks), first)


def test_each_triangle_tests_a_window_of_its_own_size_and_loses_no_pixel(closet):
    """Trousers under a hoodie: a few large triangles need 64 x 64 windows, most fit 16 x 16 -
    so the triangles go by size (once all tested the largest one's window: 59 M triangle-pixels
    for 8 frames, 7.2 of a 7.4 s render on a CPU). Rasterised all in the largest window, the
    same triangles give the same maps, pixel for pixel."""
    renderer = BatchRenderer("cpu")
    look = [GarmentAnnotator(closet.get("trousers-denim")), GarmentAnnotator(closet.get("hoodie-grey"))]
    poses = [TimedKeypoints(standing_keypoints(1.0 + 0.1 * i, 30), "own") for i in range(4)]
    plan = renderer.plan((4, 3, 720, 1280), poses, [look] * 4)
    warp = plan.warp
    sizes = [k for k, _ in warp.windows]
    assert len(sizes) > 1 and sizes == sorted(sizes) and sizes[0] == 16
    assert sum(c for _, c in warp.windows) == warp.n_tri
    corners = torch.from_numpy(plan.data[warp.corners_at : warp.corners_at + 14 * warp.n_tri]).view(14, -1)
    tri = renderer._steps.coverage(corners[:13], *warp.grid)
    order = corners[13].long()
    by_size = renderer._rasterise(warp.n, tri, order, warp.grid, warp.windows)
    all_largest = renderer._rasterise(warp.n, tri, order, warp.grid, ((sizes[-1], warp.n_tri),))
    assert torch.equal(by_size, all_largest)
    assert int((by_size[:, 0] > -1000).sum()) > 10_000  # the garments cover pixels
