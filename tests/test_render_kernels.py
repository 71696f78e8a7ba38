"""The renderer's Triton kernels (render/kernels.py) against its PyTorch steps, the reference.

Here they run through Triton's interpreter (conftest sets TRITON_INTERPRET=1 without a GPU);
on the device machine the same tests run them compiled, on CUDA. The arithmetic is the same,
but fused multiply-adds can move a float's last bit, so a pixel on a triangle's edge may fall
the other way and a value round the other way: the pictures must agree to a level but for a
handful of values.
"""

from __future__ import annotations

import cv2
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton", reason="the Triton kernels need Triton (the test extra installs it)")

from smartcloset.closet.store import Closet  # noqa: E402
from smartcloset.pose.simulate import standing_keypoints  # noqa: E402
from smartcloset.pose.timeline import TimedKeypoints  # noqa: E402
from smartcloset.render import batched  # noqa: E402
from smartcloset.render.annotators import GarmentAnnotator  # noqa: E402
from smartcloset.render.batched import BatchRenderer, _coverage, frames_to_tensor, resolve_kernels  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
OFF_BY_ONE_SHARE = 1e-3  # values a level apart (measured: ~1e-6 in the interpreter, 1.4e-4 on an H200)
FURTHER = 50  # values further apart, of the millions a batch has (measured: 0)


@pytest.fixture(scope="module")
def closet():
    return Closet(user_dir="/nonexistent")


@pytest.fixture(scope="module")
def frames(video_frames) -> torch.Tensor:
    rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in video_frames[:4]]
    return frames_to_tensor(rgb, DEVICE)


def _poses(n: int, across=(0, 2)) -> list[TimedKeypoints]:
    poses = []
    for i in range(n):
        kp = standing_keypoints(0.8 + 0.15 * i, 30)
        if i in across:
            kp[9, :2] = (620, 380)  # a forearm in front of the belly: the arms drawn back
        poses.append(TimedKeypoints(kp, "own"))
    return poses


def _agree(got: torch.Tensor, want: torch.Tensor, original: torch.Tensor) -> None:
    d = (got.int() - want.int()).abs()
    assert int((want != original).any(dim=1).sum()) > 20_000 * len(want), "the looks were not drawn"
    assert (d > 0).float().mean() < OFF_BY_ONE_SHARE, f"{int((d > 0).sum())} values differ"
    assert int((d > 1).sum()) <= FURTHER, f"{int((d > 1).sum())} values differ by more than a level"


CASES = {
    "T-shirts, two forearms in front": (["tshirt-navy"] * 4, {}),
    "layered and single looks, one frame nobody": (
        [["trousers-denim", "hoodie-grey"], ["tshirt-navy"], ["longsleeve-grey"], ["tshirt-navy"]],
        {"nobody": 3},
    ),
    "no shading, no arms in front": (["shirt-blue"] * 2, {"shading": False, "occlusion": False}),
    # 1270 pixels wide: off the quarter-size grid, so the shading is worked out at full size
    "a frame size off the quarter grid": (["tshirt-navy"] * 2, {"width": 1270}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_triton_kernels_draw_what_the_pytorch_steps_draw(closet, frames, name):
    ids, options = CASES[name]
    looks = [[GarmentAnnotator(closet.get(g)) for g in ([i] if isinstance(i, str) else i)] for i in ids]
    n = len(looks)
    poses = _poses(n)
    if "nobody" in options:
        poses[options["nobody"]] = TimedKeypoints(None, "none")
    kw = {k: v for k, v in options.items() if k in ("shading", "occlusion")}
    triton_r = BatchRenderer(DEVICE, kernels="triton", **kw)
    torch_r = BatchRenderer(DEVICE, kernels="torch", **kw)
    assert (triton_r.kernels, torch_r.kernels) == ("triton", "torch")
    batch = frames[:n, :, :, : options.get("width", frames.shape[-1])].contiguous()
    got = triton_r.render(batch, poses, looks)
    _agree(got, torch_r.render(batch, poses, looks), batch)
    if "nobody" in options:
        assert torch.equal(got[options["nobody"]], batch[options["nobody"]])


def test_the_triton_rasteriser_keeps_the_last_of_overlapping_triangles(monkeypatch):
    """64 copies of one triangle, each mapping every pixel to its own texture point: the map
    holds the last one's everywhere it covers (a bent elbow's sleeve triangles overlap, and the
    CPU renderer paints the last on top); and a pixel inside one triangle keeps its texture
    point even where a later neighbour's one-pixel ring reaches it (batched._writes's rank)."""
    from smartcloset.render import kernels

    def raster(geometry: torch.Tensor, uv: torch.Tensor, k: int = 16) -> torch.Tensor:
        n = len(geometry)
        order = torch.arange(n, dtype=torch.float32)[:, None]
        corners = torch.cat([geometry, uv, torch.zeros(n, 1), order], dim=1).T.contiguous().to(DEVICE)
        maps = torch.full((16 * 16, 2), batched._OUTSIDE, device=DEVICE)
        last = torch.full((16 * 16,), -1, dtype=torch.int32, device=DEVICE)
        kernels.rasterise(maps, last, corners, ((k, n),), (16, 16))
        return maps.view(16, 16, 2).permute(2, 0, 1).cpu()

    n = 64
    maps = raster(
        torch.tensor([2.0, 2.0, 13.0, 3.0, 3.0, 13.0]).repeat(n, 1),
        torch.arange(n).repeat_interleave(6).view(n, 6).float(),
    )
    covered = maps[0] > -1000
    assert 80 < int(covered.sum()) < 256
    assert (maps[0][covered] == n - 1).all() and (maps[1][covered] == n - 1).all()
    halves = torch.tensor([[2.0, 2.0, 13.0, 2.0, 2.0, 13.0], [13.0, 2.0, 13.0, 13.0, 2.0, 13.0]])
    for k in (16, 32):  # a window of the triangles' own size, and a larger one (the same map)
        maps = raster(halves, torch.tensor([[5.0] * 6, [9.0] * 6]), k)[0]
        ys, xs = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
        square = (xs >= 2) & (xs <= 13) & (ys >= 2) & (ys <= 13)
        assert (maps[square & (xs + ys <= 14)] == 5).all() and (maps[square & (xs + ys >= 16)] == 9).all()
        assert (maps[square & (xs + ys == 15)] == 9).all()


def test_the_triton_rasteriser_gives_the_pytorch_maps_for_every_window_size(closet):
    """Trousers under a hoodie: windows of 16, 32 and 64 pixels a side (the largest split over
    several programs) - the same coarse maps as the PyTorch rasteriser, but for pixels whose
    barycentric test falls the other way in the last bit."""
    from smartcloset.render import kernels

    renderer = BatchRenderer(DEVICE, kernels="torch")
    look = [GarmentAnnotator(closet.get("trousers-denim")), GarmentAnnotator(closet.get("hoodie-grey"))]
    plan = renderer.plan((4, 3, 720, 1280), _poses(4), [look] * 4)
    warp = plan.warp
    assert len(warp.windows) > 1 and max(k for k, _ in warp.windows) >= 64
    corners = torch.from_numpy(plan.data[warp.corners_at : warp.corners_at + 14 * warp.n_tri]).view(14, -1).to(DEVICE)
    want = renderer._rasterise(warp.n, _coverage(corners[:13], *warp.grid), corners[13].int(), warp.grid, warp.windows)
    gw, gh = warp.grid
    maps = torch.full((warp.n * gh * gw, 2), batched._OUTSIDE, device=DEVICE)
    last = torch.full((warp.n * gh * gw,), -1, dtype=torch.int32, device=DEVICE)
    kernels.rasterise(maps, last, corners, warp.windows, warp.grid)
    got = maps.view(warp.n, gh, gw, 2).permute(0, 3, 1, 2)
    covered = want[:, 0] > -1000
    assert int(covered.sum()) > 10_000
    differ = ~torch.isclose(got, want, rtol=0, atol=1e-3).all(dim=1)
    assert int(differ.sum()) <= 1e-3 * int(covered.sum()), f"{int(differ.sum())} coarse pixels differ"


def test_kernels_are_chosen_where_they_run(monkeypatch):
    """ "auto" takes Triton on CUDA only; asked for by name where it cannot run, it is an error
    at start (not a fall-back that hides what runs), as is a name that is not one."""
    cpu = torch.device("cpu")
    assert resolve_kernels("auto", cpu) == "torch"
    assert resolve_kernels("torch", cpu) == "torch"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_kernels("triton", cpu) == "triton"  # through the interpreter
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="run on CUDA"):
        resolve_kernels("triton", cpu)
    with pytest.raises(ValueError, match="replace the compiled steps"):
        resolve_kernels("triton", torch.device("cuda"), compile=True)
    assert resolve_kernels("auto", torch.device("cuda"), compile=True) == "torch"
    with pytest.raises(ValueError, match="auto, triton or torch"):
        resolve_kernels("cuda", cpu)


_COMPILE = """
import inspect
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from smartcloset.render import kernels

FLOATS = ("corners", "maps", "seg", "patches", "factor", "mask", "table", "flags")

def compile_(fn, pointers, **constexprs):
    signature = {}
    for name in inspect.signature(fn.fn).parameters:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name in pointers:
            signature[name] = pointers[name]
        else:
            signature[name] = "*fp32" if name in FLOATS else "i32"
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32))
    assert len(compiled.asm["cubin"]) > 1000
    return 1

n = 0
for k, tile, block_t in ((8, 64, 32), (16, 256, 8), (64, 1024, 2)):
    for write in (False, True):
        n += compile_(kernels._raster, {"last": "*i32"}, WRITE=write, K=k, TILE=tile, BLOCK_T=block_t)
n += compile_(kernels._capsules, {"out": "*fp32"}, BLOCK=1024)
for shade in (0, 1, 2):
    for arms in (False, True):
        n += compile_(kernels._composite, {"out": "*u8", "frames": "*u8"}, SHADE=shade, ARMS=arms, BLOCK=1024)
n += compile_(kernels._luminance, {"frames": "*u8", "lum": "*fp32"}, BLOCK=1024)
for vertical in (False, True):
    names = ("src_fine", "src_coarse", "k_fine", "k_coarse", "dst_fine", "dst_coarse")
    n += compile_(kernels._blur, dict.fromkeys(names, "*fp32"), VERTICAL=vertical, FINE=9, COARSE=33,
                  STRENGTH_=0.6, LO=0.75, HI=1.2, BLOCK=1024)
print("compiled", n)
"""


def test_the_kernels_compile_for_a_hopper_gpu():
    """Every kernel variant the server launches, compiled for an H100/H200 (sm_90) down to its
    machine code with Triton's own compiler - no GPU needed, and not through the interpreter
    (another process). Why: the interpreter runs the kernels as Python and accepts what the
    compiler refuses (a global that was not a constexpr passed the tests above and stopped
    every engine on the GPU)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _COMPILE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["compiled", "16"]
