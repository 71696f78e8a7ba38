"""The look drawn for a whole batch of frames at once, in PyTorch - the server's GPU renderer.

The same picture as the CPU renderer (``LookAnnotator``), from the same geometry
(``GarmentAnnotator.placement``, ``occlusion.arm_capsules``), with every per-pixel step done on
the frames' device for all frames of the batch together:

* **warp**: each mesh layer is rasterised on a grid ``map_step`` times coarser than the frame,
  every triangle of every frame in one go - each triangle tests the coarse pixels of a small
  window over its bounding box (barycentric inside test) and scatters its inverse-affine source
  coordinates into the layer's map; the map is upsampled bilinearly (coarse point j at full
  pixel j * step, as the CPU warp does) and the garment texture is sampled with ``grid_sample``
  - one call per texture for every frame that wears it;
* **shading**: the frame's fine luminance detail at quarter resolution (area downscale, two
  Gaussian blurs with OpenCV's kernel sizes and border), upsampled;
* **arms in front**: the forearm capsules as distance fields with a one-pixel soft edge, the
  camera pixels blended back between a garment's body and its sleeves;
* **composite**: premultiplied "over", in float, rounded once at the end.

Layers are drawn in the CPU renderer's order per frame; frames advance through their steps in
lockstep, so step k of every frame is one batched operation. Everything works on any torch
device; the CPU build runs it in the tests, which compare it with the CPU renderer. On CUDA the
rasteriser, shading, arms and composite run as Triton kernels instead (``render/kernels.py``,
``kernels="auto"``): the same arithmetic in 19 launches a batch, where these steps are 254.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..pose.timeline import TimedKeypoints
from .annotators import GarmentAnnotator
from .occlusion import arm_capsules
from .replay import GraphReplay
from .shading import LIMITS, STRENGTH
from .warp import _OUTSIDE

MAX_WINDOW_ELEMENTS = 1 << 24  # triangles x window pixels per rasterisation chunk (memory bound)
# Rows past the maps (and ranks) that take the writes no pixel keeps, spread by their would-be
# pixel: sent to one spare row, a batch's ~1 M misses were ~1 M atomic rank updates of one address
# - the render's GPU time 1.23 -> 2.63 ms at batch 8, 2.31 -> 8.27 at 16 (NVIDIA H200, stop 19).
SPARE_ROWS = 1 << 14
MAX_SEGMENTS = 4  # forearm + hand, per side
# Coarse pixels within this distance of a triangle take its (extrapolated) affine too, as
# OpenCV's polygon filler takes the pixels an edge passes through: neighbouring layers (a body
# and its sleeves) then overlap by a pixel, and the map's bilinear upsampling never mixes a
# seam's coordinates with "outside" - which showed as stair-stepped cracks along the seams.
DILATE = 1.0


@dataclass
class _Warp:
    """One mesh layer of one garment on one frame: skinned from its rig."""

    frame: int
    annotator: GarmentAnnotator
    level: int
    rig: int  # row of this garment's skinned vertices (``_Skinned``)
    layer: int


class _GarmentCache:
    """What is made once per garment (host meshes, device textures), shared by the engine's
    in-flight batches (each on a CUDA stream of its own): built once under a lock - ``build``
    returns device tensors ready for any stream (``shared``) - and served only to the garment
    they were made from (an ``id`` is
    reused once a garment is gone). Bounded: a full cache is set aside, not freed, since a batch
    on another stream may still read its tensors and a block freed there could be handed out
    again on the stream that made it; the next eviction, ``limit`` garments later, frees it."""

    def __init__(self, limit: int = 256) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._entries: dict = {}  # key -> (garment, value)
        self._retired: dict = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, annotator: GarmentAnnotator, key, build):
        hit = self._entries.get(key)
        if hit is None or hit[0] is not annotator:
            with self._lock:
                hit = self._entries.get(key)
                if hit is None or hit[0] is not annotator:
                    hit = (annotator, build())
                    if len(self._entries) > self._limit:
                        self._retired, self._entries = self._entries, {}
                    self._entries[key] = hit
        return hit[1]


@dataclass
class _Mesh:
    """A garment's mesh as the host skins it, made once: the skinning and the triangles' corners
    are a few hundred vertices a body, cheap in NumPy - and on the host their bounds (the box and
    window the rasteriser needs) are known without waiting for the GPU. Its triangles are kept
    as one array over every layer (``triangles``, ``layer``, ``texture``), so that a batch's
    bodies wearing it are one block of array operations, whatever its layers."""

    vertices: np.ndarray  # (3, N) float32 homogeneous garment pixels, one column a vertex
    weights: np.ndarray  # (P, N) float32 part weights
    body: tuple[int, ...]  # the layers drawn under the arms
    sleeves: tuple[int, ...]  # and over them
    triangles: np.ndarray  # (3, T) vertex indices of every layer's triangles, layer by layer
    layer: np.ndarray  # (T,) int64 the layer of each
    texture: np.ndarray  # (6, T) float32 their corners in garment pixels (level 0): u0 v0 u1 v1 u2 v2


_RESTORE = "restore"
_NOBODY = TimedKeypoints(None, "none")  # a frame that pads a batch: nothing drawn on it


class _Packer:
    """A plan's data, gathered as float32 arrays and packed into one for one upload."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._size = 0

    def add(self, a: np.ndarray) -> int:
        """Adds ``a`` (as float32) and returns its offset."""
        a = np.ascontiguousarray(a, dtype=np.float32).reshape(-1)
        at = self._size
        self._parts.append(a)
        self._size += a.size
        return at

    def array(self) -> np.ndarray:
        return np.concatenate(self._parts) if self._parts else np.zeros(1, np.float32)


@dataclass
class _WarpPlan:
    """The batch's rasterisation: ``n`` warps, ``n_tri`` triangles (their corners at
    ``corners_at`` in the data, in 14 rows: ``_coverage``'s 13 and each triangle's place in the
    painting order), the coarse grid (gw, gh), the windows (k, triangles) the triangles test,
    smallest first, the box and each texture's warps."""

    n: int
    corners_at: int
    n_tri: int
    grid: tuple[int, int]
    windows: tuple[tuple[int, int], ...]
    box: tuple[int, int, int, int]
    textures: list[tuple[GarmentAnnotator, int, int, int]]  # (garment, level, first warp, end)

    @property
    def key(self) -> tuple:
        tex = tuple((id(a), level, start, end) for a, level, start, end in self.textures)
        return (self.n, self.n_tri, self.grid, self.windows, self.box, tex)


@dataclass
class _Plan:
    """A batch as the host works it out before the device draws it (``BatchRenderer.plan``):
    its structure and one float32 array of data (``data``: the arms' segments, the triangles'
    corners, each step's flags and patch indices). Two plans with one ``key`` issue
    the same device operations in the same shapes, only on other data; None where a plan
    cannot be replayed so (a person mask to upload)."""

    key: tuple | None
    shape: tuple[int, ...]
    data: np.ndarray
    arms: tuple | None  # (x0, y0, x1, y1, segments a frame, offset in data)
    masks: list  # a person mask per frame, where the arms are cut to it
    warp: _WarpPlan | None
    steps: list[tuple[bool, int, int, bool]]  # (restore, start, count, every) per step
    flags_at: int
    index_at: int
    n_index: int
    table_at: int  # (steps, B): each step's patch of each frame, -1 for none (the Triton composite)
    region: tuple[int, int, int, int]  # (x0, y0, x1, y1): what the draw touches, the boxes' union


# Per triangle, what the rasteriser needs (``_coverage``), in these float32 columns.
# Columns 0-11: the (l1, l2) rows, then the texture (x, y) rows - a (4, 3) map of (x, y, 1);
# 12-14 the window's origin (x, y, 0); 15-17 the tolerances of l0, l1, l2; 18-21 the grown box;
# 22 the window origin's index into the maps, an int32 in a float32's bits (exact past 2 ** 24).
_MAP, _LO, _TOL, _REACH, _BASE = slice(0, 12), slice(12, 15), slice(15, 18), slice(18, 22), 22


def _coverage(corners: torch.Tensor, gw: int, gh: int) -> torch.Tensor:
    """Per triangle (``corners``: (13, T) rows x0 y0 x1 y1 x2 y2 on the coarse grid, u0 v0 u1 v1
    u2 v2 in the texture, and its warp): its barycentric map (coarse pixel -> l1, l2) and affine
    (coarse pixel -> texture pixel), the origin of the window it tests (far off the grid for a
    triangle that draws nothing), its edge tolerance (the dilation), its grown box and where its
    window starts in the maps of its warp (rows: warp, y, x): (T, 23) float32, columns as
    ``_MAP`` ... ``_BASE``. On the device, elementwise over every triangle of the batch - a
    fixed number of operations whatever the batch (as NumPy on the host, it cost 4 ms of a
    batch of 32 on its own)."""
    x0, y0, x1, y1, x2, y2, u0, v0, u1, v1, u2, v2, owner = corners.unbind(0)
    e1x, e1y, e2x, e2y = x1 - x0, y1 - y0, x2 - x0, y2 - y0
    det = e1x * e2y - e2x * e1y  # twice the signed area
    valid = det.abs() > 1e-6  # a collapsed triangle maps nothing
    inv = torch.where(valid, 1.0 / torch.where(valid, det, torch.ones_like(det)), torch.zeros_like(det))
    # The inverse of [e1 e2]: destination pixel - d0 -> (l1, l2).
    a, b, c, d = e2y * inv, -e2x * inv, -e1y * inv, e1x * inv
    # source = s0 + [u1 - u0, u2 - u0] @ (l1, l2)
    s1x, s2x, s1y, s2y = u1 - u0, u2 - u0, v1 - v0, v2 - v0
    l00, l01, l10, l11 = s1x * a + s2x * c, s1x * b + s2x * d, s1y * a + s2y * c, s1y * b + s2y * d
    # The grown box, and the window's origin on the grid.
    rx0 = torch.minimum(torch.minimum(x0, x1), x2) - DILATE
    ry0 = torch.minimum(torch.minimum(y0, y1), y2) - DILATE
    rx1 = torch.maximum(torch.maximum(x0, x1), x2) + DILATE
    ry1 = torch.maximum(torch.maximum(y0, y1), y2) + DILATE
    lox, loy = rx0.floor().clamp_(min=0), ry0.floor().clamp_(min=0)
    keep = valid & (rx1.ceil().clamp_(max=gw - 1.0) >= lox) & (ry1.ceil().clamp_(max=gh - 1.0) >= loy)
    far = torch.full_like(lox, -1e6)  # dropped: all misses (off the grid)
    # The dilation in barycentric terms: a point at distance DILATE outside the edge facing
    # vertex i has lambda_i = -DILATE * |that edge| / (2 * area). At most lambda_i >= -1: a
    # sliver (its height under a pixel) grows by its own height only, where its
    # ill-conditioned affine would send a whole pixel far across the texture.
    grow = DILATE / det.abs().clamp_min(1e-6)
    base = (owner.long() * gh + loy.long()) * gw + lox.long()
    columns = [
        a, b, -(a * x0 + b * y0), c, d, -(c * x0 + d * y0),
        l00, l01, u0 - (l00 * x0 + l01 * y0), l10, l11, v0 - (l10 * x0 + l11 * y0),
        torch.where(keep, lox, far), torch.where(keep, loy, far), torch.zeros_like(lox),
        (torch.hypot(x1 - x2, y1 - y2) * grow).clamp_(max=1.0),
        (torch.hypot(x2 - x0, y2 - y0) * grow).clamp_(max=1.0),
        (torch.hypot(x0 - x1, y0 - y1) * grow).clamp_(max=1.0),
        rx0, ry0, rx1, ry1,
        torch.where(keep, base, torch.zeros_like(base)).to(torch.int32).view(torch.float32),
    ]  # fmt: skip
    return torch.stack(columns, dim=1)


@functools.lru_cache(maxsize=16)
def _window(k: int, device) -> torch.Tensor:
    """(3, k * k) float32: the x, y offsets of a k x k window's pixels (x fastest) and a row of
    ones - made once per size, added to each triangle's origin (x, y, 0)."""
    r = torch.arange(k, dtype=torch.float32)
    w = torch.stack([r.repeat(k), r.repeat_interleave(k), torch.ones(k * k)])
    return shared(w.to(device))


def shared(t: torch.Tensor) -> torch.Tensor:
    """A tensor made on this thread's stream, ready for any stream: it waits here until the
    stream has finished making it.

    Why: the engine renders its in-flight batches on one CUDA stream each, and the renderer's
    caches (textures, blur kernels) are shared by them. A cached tensor is built by the
    thread that first needs it - its upload and kernels queued on that thread's stream - and
    another thread may read it at once on its own stream, which does not wait for those:
    it would read memory not yet written (on an H200 under 64 clients, index tensors read
    that way set off device-side asserts, and such an error ends the CUDA context). Once per
    cached tensor; nothing on the CPU.
    """
    if t.device.type == "cuda":
        torch.cuda.current_stream(t.device).synchronize()
    return t


@functools.lru_cache(maxsize=16)
def _gaussian_kernel(sigma: float, device) -> torch.Tensor:
    """OpenCV's kernel for float images: size round(8 sigma + 1) | 1, normalised (made once)."""
    k = int(round(sigma * 8 + 1)) | 1
    x = torch.arange(k, dtype=torch.float32, device=device) - (k - 1) / 2
    w = torch.exp(-(x * x) / (2 * sigma * sigma))
    return shared(w / w.sum())


def _blur(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian (kernel ``k``) of (B, 1, H, W) with a mirrored border (OpenCV's
    BORDER_REFLECT_101)."""
    p = len(k) // 2
    h, w = x.shape[-2:]
    mode = "reflect" if p < min(h, w) else "replicate"
    x = F.conv2d(F.pad(x, (p, p, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, p, p), mode=mode), k.view(1, 1, -1, 1))


# -- the per-pixel steps: pure tensor functions, so that torch.compile can fuse each into a few
# kernels (``BatchRenderer(compile=...)``); eager they are the same operations.


def _shading_factor(frames: torch.Tensor, k_fine: torch.Tensor, k_coarse: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) factor multiplying the garment's colour, from the frame's fine detail."""
    _, _, h, w = frames.shape
    small = F.interpolate(frames.float(), size=(max(1, h // 4), max(1, w // 4)), mode="area")
    lum = (0.299 * small[:, 0:1] + 0.587 * small[:, 1:2] + 0.114 * small[:, 2:3]) + 8.0
    detail = _blur(lum, k_fine) / _blur(lum, k_coarse)
    factor = (1.0 + STRENGTH * (detail - 1.0)).clamp_(*LIMITS)
    return F.interpolate(factor, size=(h, w), mode="bilinear", align_corners=False)


def _capsules(s: torch.Tensor, bh: int, bw: int) -> torch.Tensor:
    """(B, 1, bh, bw) arm masks in [0, 1] from (B, S, 5) segments (ax, ay, bx, by, radius; 0:
    none) in box pixels: every segment of every frame at once, a one-pixel soft edge."""
    ys = torch.arange(bh, device=s.device, dtype=torch.float32).view(1, 1, bh, 1)
    xs = torch.arange(bw, device=s.device, dtype=torch.float32).view(1, 1, 1, bw)
    ax, ay, ex, ey, r = (c[..., None, None] for c in s.unbind(2))  # each (B, S, 1, 1)
    dx, dy = ex - ax, ey - ay
    t = (((xs - ax) * dx + (ys - ay) * dy) / (dx * dx + dy * dy).clamp_min(1e-6)).clamp_(0, 1)
    dist = torch.hypot(xs - ax - t * dx, ys - ay - t * dy)
    return ((r + 0.5 - dist).clamp_(0, 1) * (r > 0)).amax(dim=1, keepdim=True)


def _writes(
    tri: torch.Tensor, order: torch.Tensor, window: torch.Tensor, gw: int, gh: int, spare: int, total: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What each triangle (a row of ``tri``, from ``_coverage``) would write into the coarse
    pixels of its window (offsets ``window``, from ``_window``): for every (triangle, window
    pixel) its map row (rows: warp, y, x; from ``spare`` on where it writes nothing), the spare
    row it takes where its write is not kept, its rank and its texture point. The rank makes one writer per pixel, the way the CPU renderer paints: a pixel
    inside a triangle keeps that triangle's affine, not a neighbour's dilated extrapolation,
    and among equals the later triangle wins (a bent elbow's sleeve triangles overlap) -
    ``order``: each triangle's place in the painting order among the batch's ``total``. Why
    ranked: a scatter with repeated indices keeps any of the writes on CUDA, another one from
    run to run (two renders of one batch differed there, stop 17), x and y possibly from two
    triangles; and on the CPU the winner changed with the thread count."""
    n = tri.shape[0]
    xy1 = tri[:, _LO, None] + window  # (T, 3, k*k): x, y, 1
    # One batched product gives the barycentrics (rows 0-1) and the texture point (rows 2-3).
    lam_uv = torch.bmm(tri[:, _MAP].view(n, 4, 3), xy1)
    lam = lam_uv[:, :2]
    l0 = 1 - lam.sum(dim=1)
    # Dropped triangles' windows are off the grid (their origin is far below it).
    x, y = xy1[:, 0], xy1[:, 1]
    on_grid = (x >= 0) & (x < gw) & (y < gh)
    inside = (lam >= -1e-4).all(dim=1) & (l0 >= -1e-4) & on_grid
    # Within DILATE of the triangle: edge offsets, cut to its grown box (no spikes at sharp corners).
    tol = tri[:, _TOL, None]
    box = tri[:, _REACH, None]
    near = (
        (lam >= -tol[:, 1:]).all(dim=1)
        & (l0 >= -tol[:, 0])
        & ((xy1[:, :2] >= box[:, :2]) & (xy1[:, :2] <= box[:, 2:])).all(dim=1)
        & on_grid
        & ~inside
    )
    lin = tri[:, _BASE].view(torch.int32).long()[:, None] + (window[1] * gw + window[0]).long()
    # A miss goes to a spare row of its own window pixel and triangle (``SPARE_ROWS``).
    miss = spare + ((lin + order[:, None] * window.shape[1]) & (SPARE_ROWS - 1))
    at = torch.where(near | inside, lin, miss).reshape(-1)
    rank = (order.int()[:, None] + inside.int() * total).reshape(-1)  # a pixel once a triangle; int32 (native atomics)
    return at, miss.reshape(-1), rank, lam_uv[:, 2:].transpose(1, 2).reshape(-1, 2)


def _rank(
    last: torch.Tensor, tri: torch.Tensor, order: torch.Tensor, window: torch.Tensor, gw: int, gh: int, total: int
) -> None:
    """Each pixel's winning rank (``last``, -1 for none) over one piece of a batch's triangles."""
    at, _, rank, _ = _writes(tri, order, window, gw, gh, last.shape[0] - SPARE_ROWS, total)
    last.scatter_reduce_(0, at, rank, reduce="amax")


def _scatter(
    maps: torch.Tensor,
    tri: torch.Tensor,
    order: torch.Tensor,
    window: torch.Tensor,
    gw: int,
    gh: int,
    total: int,
    last: torch.Tensor | None = None,
) -> None:
    """The triangles write their texture points into ``maps``, one writer per pixel (``_writes``):
    the winners' ranks in ``last`` where a batch is rasterised in pieces (``_rank`` over every
    piece first), else found here. Writes no pixel keeps go to the spare rows past the maps
    (``SPARE_ROWS``): no compaction, no host sync."""
    spare = maps.shape[0] - SPARE_ROWS
    at, miss, rank, uv = _writes(tri, order, window, gw, gh, spare, total)
    if last is None:
        last = torch.full((maps.shape[0],), -1, dtype=torch.int32, device=at.device)
        last.scatter_reduce_(0, at, rank, reduce="amax")
    maps.index_put_((torch.where(last[at] == rank, at, miss),), uv)


def _sample(tex: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Premultiplied RGBA (J, 4, bh, bw) of one texture (1, 4, th, tw) at the texture points of
    ``maps`` (J, 2, bh, bw): every frame wearing it in one call, their grids stacked in height."""
    th, tw = tex.shape[-2:]
    j, _, bh, bw = maps.shape
    grid = torch.stack([maps[:, 0] * (2.0 / max(tw - 1, 1)) - 1, maps[:, 1] * (2.0 / max(th - 1, 1)) - 1], dim=-1)
    out = F.grid_sample(tex, grid.reshape(1, j * bh, bw, 2), mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.view(4, j, bh, bw).transpose(0, 1)


def _restore(roi: torch.Tensor, original: torch.Tensor, mask: torch.Tensor, flags: torch.Tensor) -> None:
    """The camera's arm pixels back over ``roi`` (in place) for the frames whose flag is 1."""
    m = mask * flags.view(-1, 1, 1, 1)  # frames restoring at another step: unchanged
    roi.mul_(1 - m).add_(original.float() * m)


def _over(
    roi: torch.Tensor, patches: torch.Tensor, pos: torch.Tensor, dest: torch.Tensor | None, factor: torch.Tensor | None
) -> None:
    """Patches ``pos`` (one per frame at most; onto frames ``dest``, or onto every frame in
    order when None) composited "over" ``roi`` (in place), shaded by ``factor``."""
    if dest is None:
        full = patches.index_select(0, pos)
    else:
        # A patch for every frame of the batch (transparent where a frame has no layer at
        # this step), so the composite is one in-place op on a view - no scatter.
        full = patches.new_zeros((roi.shape[0], *patches.shape[1:]))
        full.index_copy_(0, dest, patches.index_select(0, pos))
    rgb, alpha = full[:, :3], full[:, 3:4]
    if factor is not None:
        rgb = torch.minimum(rgb * factor, alpha)
    roi.mul_(1.0 - alpha / 255.0).add_(rgb)


def _to_uint8(canvas: torch.Tensor) -> torch.Tensor:
    return canvas.round_().clamp_(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class _Steps:
    """The per-pixel steps a renderer calls: as they are, or compiled."""

    shading: object = _shading_factor
    capsules: object = _capsules
    coverage: object = _coverage
    scatter: object = _scatter
    rank: object = _rank
    sample: object = _sample
    restore: object = _restore
    over: object = _over
    to_uint8: object = _to_uint8


_EAGER = _Steps()
_compiled: _Steps | None = None
_compile_lock = threading.Lock()


def compiled_steps() -> _Steps:
    """The steps through ``torch.compile`` (dynamic shapes: a batch's box, triangle count and
    window vary), made once per process; each fuses its chain of small operations into a few
    kernels. Why: the render is bound by its host - ~370 small operations a batch, each a launch
    and a release and retake of the GIL that the engine's other threads contend for."""
    global _compiled
    with _compile_lock:
        if _compiled is None:
            # Every size dynamic from the start: a batch's size, box, triangle count and window
            # change from batch to batch. The shading stays as it is: Inductor cannot lower its
            # "area" resize of a symbolic size, and compiled per batch size it recompiled in
            # every new batch size of a busy server up to torch.compile's limit (8) - stalls of
            # seconds (H200, stop 13).
            # A step compiles once more for each kind of call a size-free graph does not cover
            # (a batch of one, a step some frames skip, no shading): the composite had 7 such
            # graphs after the warm-up, one short of torch.compile's default limit, past which a
            # step runs eager again.
            limits = torch._dynamo.config
            limits.recompile_limit = max(limits.recompile_limit, 32)
            _compiled = _Steps(
                **{
                    f.name: torch.compile(getattr(_EAGER, f.name), dynamic=True)
                    for f in dataclasses.fields(_Steps)
                    if f.name != "shading"
                }
            )
        return _compiled


def _triton():
    """The Triton kernels (render/kernels.py), imported when first used: Triton is optional."""
    from . import kernels

    return kernels


def triton_unavailable(device: torch.device) -> str | None:
    """Why the Triton kernels cannot run on ``device``, or None where they can: on CUDA with
    Triton installed, or anywhere through Triton's interpreter (``TRITON_INTERPRET=1``)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return "Triton is not installed (it comes with PyTorch's CUDA builds)"
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return f"Triton's kernels run on CUDA, not on {device} (or through its interpreter: TRITON_INTERPRET=1)"
    return None


def resolve_kernels(kernels: str, device: torch.device, compile: bool = False) -> str:
    """Which steps draw - "triton" or "torch" - for ``kernels`` ("auto", "triton" or "torch"):
    "auto" takes Triton where it runs natively (CUDA, Triton installed) and the steps are not
    compiled; "triton" asked for where it cannot run is an error, said at start."""
    if kernels not in ("auto", "triton", "torch"):
        raise ValueError(f"render kernels must be auto, triton or torch, not {kernels!r}")
    if kernels == "torch" or (kernels == "auto" and (compile or device.type != "cuda")):
        return "torch"
    if compile:
        raise ValueError("the Triton kernels replace the compiled steps: ask for one of them")
    reason = triton_unavailable(device)
    if reason is not None:
        if kernels == "triton":
            raise RuntimeError(f"render kernels: {reason}")
        return "torch"
    return "triton"


class BatchRenderer:
    """Renders looks onto a batch of RGB frames on one torch device; with ``compile``, its
    per-pixel steps run through torch.compile (``compiled_steps``; call ``warm_up`` first); with
    ``graphs`` (CUDA only), batches whose plan was seen before replay a CUDA graph
    (``replay.GraphReplay``). ``kernels``: the rasteriser, shading, arms and composite as
    Triton kernels (render/kernels.py: 19 launches a batch where the PyTorch steps are 254) or
    as the PyTorch steps, the reference; "auto" takes Triton on CUDA (``resolve_kernels``)."""

    def __init__(
        self,
        device: str | torch.device = "cpu",
        map_step: int = 2,
        occlusion=True,
        shading=True,
        compile: bool = False,
        graphs: bool = False,
        kernels: str = "auto",
    ) -> None:
        self.device = torch.device(device)
        self.kernels = resolve_kernels(kernels, self.device, compile)
        self._k = _triton() if self.kernels == "triton" else None  # render/kernels.py, where drawn with it
        self.map_step = max(1, int(map_step))
        self.occlusion = occlusion
        self.shading = shading
        self.compiled = compile
        self._steps = compiled_steps() if compile else _EAGER
        # CUDA graphs of the draws (render/replay.py): on CUDA, eager steps only; off by default
        # (ServerConfig.render_graphs says why).
        if graphs and (self.device.type != "cuda" or compile):
            raise ValueError("render graphs need a CUDA device and the eager (not compiled) steps")
        self.replay = GraphReplay(self) if graphs else None
        # Boxes are rounded out to multiples of this (a multiple of the step, ~64 px): the same
        # pictures, and batches that differ by small moves have one plan key.
        self._lattice = self.map_step * max(1, round(64 / self.map_step))
        self._meshes = _GarmentCache()  # id(garment) -> _Mesh
        self._textures = _GarmentCache()  # (id(garment), level) -> (1, 4, h, w) RGBA

    def _round_out(self, box: tuple, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """``box`` (x0, y0, x1, y1) rounded out to the box lattice, inside the frame (w, h)."""
        q = self._lattice
        x0, y0, x1, y1 = (int(v) for v in box)
        return x0 // q * q, y0 // q * q, min(-(-x1 // q) * q, size[0]), min(-(-y1 // q) * q, size[1])

    def _mesh(self, annotator: GarmentAnnotator) -> _Mesh:
        return self._meshes.get(annotator, id(annotator), lambda: self._build_mesh(annotator))

    def _build_mesh(self, annotator: GarmentAnnotator) -> _Mesh:
        mesh = annotator.mesh
        v = np.concatenate([mesh.vertices, np.ones((len(mesh.vertices), 1))], axis=1)
        kinds = [kind for kind, _ in annotator.layers]
        tris = np.concatenate([np.asarray(t, np.int64) for _, t in annotator.layers])  # (T, 3)
        layer = np.concatenate([np.full(len(t), i, np.int64) for i, (_, t) in enumerate(annotator.layers)])
        return _Mesh(
            np.ascontiguousarray(v.T, dtype=np.float32),
            np.stack(list(mesh.weights.values())).astype(np.float32),
            tuple(i for i, k in enumerate(kinds) if k == "body"),
            tuple(i for i, k in enumerate(kinds) if k == "sleeve"),
            np.ascontiguousarray(tris.T),
            layer,
            np.ascontiguousarray(mesh.vertices[tris].astype(np.float32).reshape(-1, 6).T),
        )

    def _skin(self, rigs: list[tuple[GarmentAnnotator, np.ndarray]]) -> dict[int, np.ndarray]:
        """Frame-pixel vertices of every rig, blended from its part transforms, on the host:
        {id(annotator): (R, 2, N) float32 - x and y planes}, rows in the order the rigs of that
        garment were listed. Why not on the GPU: its upload and the bounds read back were two
        waits for the device in every render (``_warp_all``). Planes, not (N, 2) points: NumPy
        is slow on arrays whose last axis is that short."""
        by_garment: dict[int, list] = {}
        for ann, matrices in rigs:
            by_garment.setdefault(id(ann), [ann, []])[1].append(matrices)
        out = {}
        for key, (ann, mats) in by_garment.items():
            m = self._mesh(ann)
            hv = np.stack(mats).astype(np.float32) @ m.vertices  # (R, P, 3, N)
            pos = hv[:, :, :2] / hv[:, :, 2:3]  # (R, P, 2, N)
            out[key] = np.einsum("pn,rpkn->rkn", m.weights, pos)
        return out

    def warm_up(self, shape: tuple[int, int] = (720, 1280), batches: Sequence[int] = (1, 2, 3, 4)) -> None:
        """Render a few batches of blank frames with the starter garments (a T-shirt alone, and
        trousers under a hoodie) on stand-in people of several sizes, one frame with nobody:
        compiled steps compile here, not in the first clients' batches - for each kind of call
        (a batch of one, a step some frames skip, ...) that a size-free graph does not cover."""
        from ..closet.garment import load_garment
        from ..closet.store import STARTER_DIR
        from ..pose.simulate import standing_keypoints

        def look(*ids: str) -> list[GarmentAnnotator]:
            return [GarmentAnnotator(load_garment(STARTER_DIR / f"{i}.json")) for i in ids]

        looks = [look("tshirt-navy"), look("trousers-denim", "hoodie-grey")]
        h, w = shape
        for n in batches:
            frames = torch.zeros((n, 3, h, w), dtype=torch.uint8, device=self.device)
            poses = [TimedKeypoints(standing_keypoints(0.8 + 0.1 * ((i + n) % 5), 30), "own") for i in range(n)]
            for kp in poses[::2]:
                kp.keypoints[9, :2] = (620, 380)  # a forearm across the body: arms in front
            self.render(frames, poses, [looks[0]] * n)
            if n > 2:
                poses[-1] = TimedKeypoints(None, "none")  # nobody in one frame
            self.render(frames, poses, [looks[i % 2] for i in range(n)])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # -- textures ---------------------------------------------------------------------------
    def texture(self, annotator: GarmentAnnotator, level: int) -> torch.Tensor:
        """(1, 4, h, w) float32 premultiplied RGBA of a pyramid level, uploaded once."""

        def upload() -> torch.Tensor:
            rgba = np.ascontiguousarray(annotator.pyramid[level][..., [2, 1, 0, 3]])
            return shared(torch.from_numpy(rgba).to(self.device).permute(2, 0, 1)[None].float())

        return self._textures.get(annotator, (id(annotator), level), upload)

    # -- the batch ------------------------------------------------------------------------------
    @torch.inference_mode()
    def render(
        self,
        frames: torch.Tensor,
        poses: Sequence[TimedKeypoints],
        looks: Sequence[Sequence[GarmentAnnotator]],
    ) -> torch.Tensor:
        """``frames`` (B, 3, H, W) uint8 RGB on this device; a look per frame, bottom layer first.
        Returns the rendered frames, (B, 3, H, W) uint8."""
        b = frames.shape[0]
        replay = self.replay if self.replay is not None and self.replay.enabled else None
        # Graphs replay per batch size: sizes go up to a power of two with frames of nobody
        # (drawn as they are, then dropped), so a busy server's batches of 9-16 share keys.
        n = 1 << (b - 1).bit_length() if replay is not None else b
        plan = self.plan((n, *frames.shape[1:]), [*poses, *[_NOBODY] * (n - b)], [*looks, *[()] * (n - b)])
        if plan is None:
            return frames
        if replay is not None:
            out = replay.draw(frames, plan)
            if out is not None:
                return out
        if n > b:
            frames = torch.cat([frames, frames.new_zeros((n - b, *frames.shape[1:]))])
        return self._draw(frames, plan, torch.from_numpy(plan.data).to(self.device, non_blocking=True))[:b]

    def plan(
        self, shape: tuple[int, ...], poses: Sequence[TimedKeypoints], looks: Sequence[Sequence[GarmentAnnotator]]
    ) -> _Plan | None:
        """What the host works out before the device draws a batch of ``shape`` (B, 3, H, W):
        None when nothing is drawn on any frame."""
        b, _, h, w = shape
        steps: list[list] = []
        rigs: list[tuple[GarmentAnnotator, np.ndarray]] = []
        rows: dict[int, int] = {}  # next rig row per garment
        # Every garment bound to all the bodies wearing it in one go (array operations), and
        # every body's arms.
        wearers: dict[int, tuple[GarmentAnnotator, list[int]]] = {}
        dressed = [f for f in range(b) if poses[f].keypoints is not None and looks[f]]
        for f in dressed:
            for g in looks[f]:
                wearers.setdefault(id(g), (g, []))[1].append(f)
        bound = {
            (key, f): rig
            for key, (g, fs) in wearers.items()
            for f, rig in zip(fs, g.rigs([poses[f].keypoints for f in fs]))
        }
        capsules, n_caps = np.zeros((b, MAX_SEGMENTS, 5)), np.zeros(b, np.int64)
        if self.occlusion and dressed:
            capsules[dressed], n_caps[dressed] = arm_capsules(np.stack([poses[f].keypoints for f in dressed]))
        restores = np.zeros(b, bool)  # frames that draw their arms back over a garment's body
        for f in range(b):
            plan: list = []
            for g in looks[f] if poses[f].keypoints is not None else ():
                rig = bound[(id(g), f)]
                if rig is None:
                    continue
                m = self._mesh(g)
                row = rows.get(id(g), 0)
                rows[id(g)] = row + 1
                rigs.append((g, rig.matrices))
                plan += [_Warp(f, g, rig.level, row, i) for i in m.body]
                if n_caps[f]:
                    plan.append(_RESTORE)
                    restores[f] = True
                plan += [_Warp(f, g, rig.level, row, i) for i in m.sleeves]
            steps.append(plan)
        if not any(steps):
            return None
        data = _Packer()
        n_caps[~restores] = 0  # the arms of frames that draw nothing under them are not needed
        arms = self._plan_arms(capsules, n_caps, (h, w), data) if restores.any() else None
        masks = [p.mask if r else None for p, r in zip(poses, restores)]
        # Every layer of every frame warped at once (one rasterisation, one texture sample per
        # garment level); the steps only composite them, in each frame's order.
        warps = [j for p in steps for j in p if isinstance(j, _Warp)]
        warps.sort(key=lambda j: (id(j.annotator), j.level))  # each texture's warps side by side
        warp = self._plan_warps(warps, self._skin(rigs), (h, w), data)
        position = {id(j): i for i, j in enumerate(warps)}
        # What each step does: the frames that restore their arms, and (patch, frame) pairs to
        # composite - uploaded with the rest.
        n_steps = max(len(p) for p in steps)
        flags = np.zeros((n_steps, b), np.float32)
        table = np.full((n_steps, b), -1.0, np.float32)
        layout: list[tuple[bool, int, int, bool]] = []  # (restore, start, count, every) per step
        index: list[int] = []
        for k in range(n_steps):
            here = [(position[id(p[k])], f) for f, p in enumerate(steps) if k < len(p) and isinstance(p[k], _Warp)]
            flags[k, [f for f, p in enumerate(steps) if k < len(p) and p[k] is _RESTORE]] = 1.0
            for i, f in here:
                table[k, f] = i
            start, count = len(index), len(here)
            index += [i for i, _ in here] + [f for _, f in here]
            every = count == b and index[start + count : start + 2 * count] == list(range(b))
            layout.append((arms is not None and bool(flags[k].any()), start, count, every))
        flags_at = data.add(flags)
        index_at = data.add(np.asarray(index, np.float32))  # exact: a batch has far fewer than 2 ** 24
        table_at = data.add(table)
        # Two plans with one key issue the same device operations in the same shapes: what
        # each frame draws, in order, and every size the host chose.
        looks_key = tuple(
            tuple(_RESTORE if j is _RESTORE else (id(j.annotator), j.level, j.layer) for j in p) for p in steps
        )
        key = (
            (shape, self.shading, looks_key, arms, warp and warp.key, tuple(layout))
            if not any(m is not None for m in masks)
            else None  # a person mask is an upload of its own: not replayed
        )
        boxes = np.array([bx for bx in (warp and warp.box, arms and arms[:4]) if bx]).reshape(-1, 4)
        region = (
            (*boxes[:, :2].min(axis=0).tolist(), *boxes[:, 2:].max(axis=0).tolist()) if len(boxes) else (0, 0, 0, 0)
        )
        return _Plan(
            key, shape, data.array(), arms, masks, warp, layout, flags_at, index_at, len(index), table_at, region
        )

    # -- the device's part ---------------------------------------------------------------------
    def _draw(self, frames: torch.Tensor, plan: _Plan, data: torch.Tensor) -> torch.Tensor:
        """The batch drawn on the device from its ``plan`` and the plan's ``data`` there: only
        device operations, their shapes fixed by ``plan.key``. Only the plan's region (the
        garments' and arms' boxes) is worked in float - a person's torso is a fifth of a frame,
        and the whole frame's conversions were the render's largest kernels."""
        b, _, h, w = plan.shape
        out = frames.clone()
        rx0, ry0, rx1, ry1 = plan.region
        if rx1 <= rx0 or ry1 <= ry0:
            return out
        arms = self._arms(plan, data, (h, w)) if plan.arms is not None else None
        drawn = self._warp_all(plan.warp, data) if plan.warp is not None else None
        flags_d = data[plan.flags_at : plan.flags_at + len(plan.steps) * b].view(len(plan.steps), b)
        if self.kernels == "triton":  # every step in one pass a pixel (render/kernels.py)
            factor, quarter = None, None
            if self.shading:
                k_fine, k_coarse = _gaussian_kernel(1.0, frames.device), _gaussian_kernel(4.0, frames.device)
                crop = self._shading_crop((h, w), plan.region, len(k_coarse))
                if crop is not None and min(crop[2] - crop[0], crop[3] - crop[1]) // 4 > len(k_coarse) // 2:
                    factor, quarter = self._k.shading(frames, crop, k_fine, k_coarse), crop[:2]
                else:  # a frame size off the quarter grid, or too small for the blurs' mirrored border
                    factor = self._shading(frames, plan.region)
            table_d = data[plan.table_at : plan.table_at + len(plan.steps) * b].view(len(plan.steps), b)
            self._k.composite(out, frames, plan.region, drawn, factor, arms, table_d, flags_d, quarter)
            return out
        factor = self._shading(frames, plan.region) if self.shading else None
        canvas = frames[:, :, ry0:ry1, rx0:rx1].float()
        index_d = data[plan.index_at : plan.index_at + plan.n_index].long()
        for k, (restore, start, count, every) in enumerate(plan.steps):
            if restore:  # only where the plan has arms
                mask, (x0, y0) = arms
                mh, mw = mask.shape[2:]
                y, x = slice(y0, y0 + mh), slice(x0, x0 + mw)
                here = (slice(None), slice(None), slice(y0 - ry0, y0 - ry0 + mh), slice(x0 - rx0, x0 - rx0 + mw))
                self._steps.restore(canvas[here], frames[:, :, y, x], mask, flags_d[k])
            if count and drawn is not None:
                pos = index_d[start : start + count]
                dest = None if every else index_d[start + count : start + 2 * count]
                self._composite(canvas, drawn, pos, dest, factor, (rx0, ry0))
        out[:, :, ry0:ry1, rx0:rx1] = self._steps.to_uint8(canvas)
        return out

    # -- shading -------------------------------------------------------------------------------
    def _shading(self, frames: torch.Tensor, region: tuple[int, int, int, int]) -> torch.Tensor:
        """(B, 1, rh, rw) factor multiplying the garment's colour over ``region``, from the
        frame's fine detail: worked out on the region and a margin the blurs cannot see across
        (frame sizes in multiples of 4 - the quarter-size grid lines up), the same values as
        over the whole frame."""
        k_fine, k_coarse = _gaussian_kernel(1.0, frames.device), _gaussian_kernel(4.0, frames.device)
        x0, y0, x1, y1 = region
        crop = self._shading_crop(frames.shape[-2:], region, len(k_coarse))
        if crop is None:
            return self._steps.shading(frames, k_fine, k_coarse)[:, :, y0:y1, x0:x1]
        cx0, cy0, cx1, cy1 = crop
        factor = self._steps.shading(frames[:, :, cy0:cy1, cx0:cx1], k_fine, k_coarse)
        return factor[:, :, y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0]

    @staticmethod
    def _shading_crop(size: tuple[int, int], region: tuple[int, int, int, int], k: int) -> tuple | None:
        """The part of frames of ``size`` (h, w) whose shading gives the whole frame's over
        ``region``: the region and the margin a blur of ``k`` taps reaches across, on the
        quarter-size grid; None where the frame or region is off that grid."""
        h, w = size
        x0, y0, x1, y1 = region
        if h % 4 or w % 4 or x0 % 4 or y0 % 4:
            return None
        # Quarter-size pixels the coarse blur reaches, + 1 for the upsampling, + 1 spare.
        m = 4 * (k // 2 + 2)
        return max(x0 - m, 0), max(y0 - m, 0), min(-(-(x1 + m) // 4) * 4, w), min(-(-(y1 + m) // 4) * 4, h)

    # -- arms ----------------------------------------------------------------------------------
    def _plan_arms(
        self, capsules: np.ndarray, count: np.ndarray, shape: tuple[int, int], data: _Packer
    ) -> tuple | None:
        """The batch's arms box (x0, y0, x1, y1) on the box lattice (``_lattice``), how many
        segments a frame has at most, and where their (B, S, 5) segments (ax, ay, bx, by, radius;
        0: none; box pixels) are in the data; None when the box is empty. ``capsules`` and
        ``count``: each frame's, as ``occlusion.arm_capsules`` gives them."""
        h, w = shape
        seg = np.zeros(capsules.shape, np.float32)
        present = np.arange(capsules.shape[1])[None] < count[:, None]
        seg[:, :, :4] = capsules[:, :, :4]
        # The CPU mask's line thickness, max(2, int(width)), as a radius.
        seg[:, :, 4] = np.where(present, np.maximum(2.0, np.floor(capsules[:, :, 4])) / 2, 0.0)
        used = seg[present]
        pad = float(used[:, 4].max()) + 2
        pts = np.concatenate([used[:, 0:2], used[:, 2:4]])
        x0, y0 = np.floor(np.maximum(pts.min(axis=0) - pad, 0)).astype(int)
        x1, y1 = np.ceil(np.minimum(pts.max(axis=0) + pad, (w, h))).astype(int)
        if x1 <= x0 or y1 <= y0:
            return None
        x0, y0, x1, y1 = self._round_out((x0, y0, x1, y1), (w, h))
        seg[:, :, [0, 2]] -= x0
        seg[:, :, [1, 3]] -= y0
        seg[~present] = 0.0
        used_segments = max(1, int(count.max()))  # only as many as used
        at = data.add(seg[:, :used_segments])
        return (int(x0), int(y0), int(x1), int(y1), used_segments, at)

    def _arms(self, plan: _Plan, data: torch.Tensor, shape: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Arm masks in [0, 1] over the batch's arms box, ``((B, 1, bh, bw), (x0, y0))``:
        capsules with a one-pixel soft edge, cut to the person's silhouette where the backend
        gave one."""
        x0, y0, x1, y1, n_seg, at = plan.arms
        b = plan.shape[0]
        s = data[at : at + b * n_seg * 5].view(b, n_seg, 5)
        if self.kernels == "triton":
            mask = self._k.capsules(s, y1 - y0, x1 - x0)
        else:
            mask = self._steps.capsules(s, y1 - y0, x1 - x0)  # (B, 1, bh, bw)
        h, w = shape
        for f, pm in enumerate(plan.masks):
            if pm is not None:
                m = torch.from_numpy(np.asarray(pm, np.float32)).to(self.device, non_blocking=True)[None, None]
                full = F.interpolate(m, size=(h, w), mode="bilinear")[0]
                mask[f] = torch.minimum(mask[f], full[:, y0:y1, x0:x1])
        return mask, (x0, y0)

    # -- warp + composite --------------------------------------------------------------------------
    def _plan_warps(self, warps: list[_Warp], skinned: dict, shape: tuple[int, int], data: _Packer) -> _WarpPlan | None:
        """Every warp's triangles in one box of the frame (on the box lattice), their rasteriser
        terms added to the data; None when nothing lands in the frame."""
        h, w = shape
        s = self.map_step
        # Per garment, one block over every body wearing it (rows of its rigs) and every
        # triangle of its mesh (all layers): the corners in frame pixels as x and y planes
        # (R, 2, 3, T), and the warp each triangle belongs to - its body's warp of its layer. Every
        # body wearing a garment has a warp for each of its layers (``plan``).
        blocks = []  # [garment, mesh, each rig's warp of each layer (R, L), each rig's texture scale (R,)]
        for i, j in enumerate(warps):
            if not blocks or blocks[-1][0] is not j.annotator:
                m = self._mesh(j.annotator)
                n_rigs = skinned[id(j.annotator)].shape[0]
                blocks.append([j.annotator, m, np.zeros((n_rigs, m.layer.max() + 1), np.int64), np.ones(n_rigs)])
            _, _, owner, scale = blocks[-1]
            owner[j.rig, j.layer] = i
            scale[j.rig] = 2.0**-j.level
        planes = []  # per block: its corners (R, 2, 3, T), and their least and greatest (R, 2, T)
        for ann, m, _, _ in blocks:
            v = skinned[id(ann)]  # (R, 2, N)
            p = np.take(v, m.triangles.reshape(-1), axis=2).reshape(*v.shape[:2], *m.triangles.shape)
            if not np.isfinite(p).all():
                return None
            planes.append(
                (
                    p,
                    np.minimum(np.minimum(p[:, :, 0], p[:, :, 1]), p[:, :, 2]),
                    np.maximum(np.maximum(p[:, :, 0], p[:, :, 1]), p[:, :, 2]),
                )
            )
        # Each triangle's extent on the coarse grid bounds the window it tests: the grid's origin
        # is a multiple of the step, so floor/ceil of p / step give it without knowing the box.
        inv = np.float32(1.0 / s)
        extent = [np.ceil(hi * inv) - np.floor(lo * inv) for _, lo, hi in planes]  # (R, 2, T) each
        span = np.concatenate([np.maximum(e[:, 0], e[:, 1]).reshape(-1) for e in extent])
        lo = np.min([a.min(axis=(0, 2)) for _, a, _ in planes], axis=0)  # (2,) x, y
        hi = np.max([a.max(axis=(0, 2)) for _, _, a in planes], axis=0)
        # The coarse grid sits on the frame's lattice (multiples of the step), whatever the batch's
        # box: a frame renders the same alone or in any batch - and in a larger box, so the box
        # is rounded out to the box lattice (batches alike in all but small moves share a key).
        x0, y0 = max(int(np.floor(lo[0])), 0), max(int(np.floor(lo[1])), 0)
        x1, y1 = min(int(np.ceil(hi[0])) + 1, w), min(int(np.ceil(hi[1])) + 1, h)
        if x1 <= x0 or y1 <= y0:
            return None
        x0, y0, x1, y1 = self._round_out((x0, y0, x1, y1), (w, h))
        bw, bh = x1 - x0, y1 - y0
        gw, gh = (bw + s - 1) // s + 1, (bh + s - 1) // s + 1
        # The triangles' corners as 13 rows over every triangle (warp by warp within a body): x0
        # y0 x1 y1 x2 y2 on the coarse grid, u0 v0 u1 v1 u2 v2 in the texture, the warp. Their
        # rasteriser terms are worked out on the device (``_coverage``).
        origin = np.array([x0, y0], np.float32).reshape(1, 2, 1, 1)
        columns = []
        for (_, m, owner, scale), (p, _, _) in zip(blocks, planes):
            r, t = owner.shape[0], m.layer.size
            block = np.empty((13, r, t), np.float32)
            corners = block[0:6].reshape(3, 2, r, t)  # rows x0 y0 x1 y1 x2 y2
            np.subtract(p.transpose(2, 1, 0, 3), origin, out=corners)
            corners *= inv
            np.multiply(m.texture[:, None, :], scale.astype(np.float32)[None, :, None], out=block[6:12])
            block[12] = np.take(owner, m.layer, axis=1)
            columns.append(block.reshape(13, r * t))
        rows = np.concatenate(columns, axis=1) if len(columns) > 1 else columns[0]
        n_tri = rows.shape[1]
        # Each triangle tests a window of a power of two pixels a side, at least 8: + 1 for the
        # end pixel, + 1 for rounding at a cell border, and the dilation both ways.
        window = np.minimum(span + 2 + 2 * math.ceil(DILATE), max(gw, gh))
        largest = 1 << max(3, (int(window.max()) - 1).bit_length())
        windows: tuple[tuple[int, int], ...]
        if largest <= 16:  # one window for all (a T-shirt's triangles), in the painting order
            corners_at = data.add(rows)
            data.add(np.arange(n_tri, dtype=np.float32))  # row 13, right after; exact below 2 ** 24
            windows = ((largest, n_tri),)
        else:
            # Past 16, the triangles go by window size (16, 32, ...), each keeping its place in
            # the painting order (row 13). Why: one window for all, the largest triangle's, made
            # every small one of a layered look test 64 x 64 pixels where 16 x 16 cover it -
            # trousers under a hoodie, 8 frames: 59 M triangle-pixels, 7.2 of a 7.4 s render on
            # a CPU. Each size's count is rounded up (at most 65,536 window pixels more) with
            # triangles of no area, which draw nothing: how the triangles split between sizes
            # changes with small moves, and the plan's key - the shapes a CUDA graph replays -
            # should not.
            step = np.maximum(4, np.ceil(np.log2(window))).astype(np.int64) - 4  # 0: 16, 1: 32, ...
            sizes = 16 << np.arange(int(step.max()) + 1)
            bucket = np.maximum(16, (1 << 16) // (sizes * sizes))
            counts = -(-np.bincount(step, minlength=len(sizes)) // bucket) * bucket
            block = np.zeros((14, int(counts.sum())), np.float32)
            at = 0
            for i, count in enumerate(counts):
                mine = np.flatnonzero(step == i)  # in the painting order
                block[:13, at : at + len(mine)] = rows[:, mine]
                block[13, at : at + len(mine)] = mine
                at += int(count)
            n_tri = block.shape[1]
            corners_at = data.add(block)
            windows = tuple((int(a), int(c)) for a, c in zip(sizes, counts) if c)
        # The warps come sorted by texture (``render``): each texture's are one slice of the maps.
        textures: list[tuple[GarmentAnnotator, int, int, int]] = []
        for i, j in enumerate(warps):
            if textures and textures[-1][0] is j.annotator and textures[-1][1] == j.level:
                textures[-1] = (j.annotator, j.level, textures[-1][2], i + 1)
            else:
                textures.append((j.annotator, j.level, i, i + 1))
        return _WarpPlan(len(warps), corners_at, n_tri, (gw, gh), windows, (x0, y0, x1, y1), textures)

    def _warp_all(self, plan: _WarpPlan, data: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        """Premultiplied RGBA patches (J, 4, bh, bw) of every warp over the plan's box, and the
        box (x0, y0, x1, y1)."""
        s = self.map_step
        gw, gh = plan.grid
        x0, y0, x1, y1 = plan.box
        corners = data[plan.corners_at : plan.corners_at + 14 * plan.n_tri].view(14, plan.n_tri)
        if self.kernels == "triton":  # the set-up, ranks and writes in two launches a window size
            size = plan.n * gh * gw
            maps = torch.full((size, 2), _OUTSIDE, device=self.device)
            last = torch.full((size,), -1, dtype=torch.int32, device=self.device)
            self._k.rasterise(maps, last, corners, plan.windows, plan.grid)
            maps = maps.view(plan.n, gh, gw, 2).permute(0, 3, 1, 2)
        else:
            tri = self._steps.coverage(corners[:13], gw, gh)
            maps = self._rasterise(plan.n, tri, corners[13].int(), plan.grid, plan.windows)
        if s > 1:  # coarse point j sits at full pixel j * s: align_corners on a grid of (g-1)*s+1
            maps = F.interpolate(maps, size=((gh - 1) * s + 1, (gw - 1) * s + 1), mode="bilinear", align_corners=True)
        maps = maps[:, :, : y1 - y0, : x1 - x0]
        # Each texture's warps are one slice of the maps, sampled in one call - no index tensors
        # and no scatter.
        patches = [
            self._steps.sample(self.texture(ann, level), maps[start:end]) for ann, level, start, end in plan.textures
        ]
        return torch.cat(patches) if len(patches) > 1 else patches[0], plan.box

    def _composite(
        self,
        canvas: torch.Tensor,
        drawn: tuple,
        pos: torch.Tensor,
        dest: torch.Tensor | None,
        factor: torch.Tensor | None,
        origin: tuple[int, int],
    ) -> None:
        """Composite one step's patches ``pos`` (one per frame at most; onto frames ``dest``, or
        onto every frame in order when None) over the canvas (and the shading factor), which
        start at frame pixel ``origin``."""
        patches, (x0, y0, x1, y1) = drawn
        ox, oy = origin
        here = (slice(None), slice(None), slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox))
        self._steps.over(canvas[here], patches, pos, dest, None if factor is None else factor[here])

    def _rasterise(
        self,
        n: int,
        tri: torch.Tensor,
        order: torch.Tensor,
        grid: tuple[int, int],
        windows: tuple[tuple[int, int], ...],
    ) -> torch.Tensor:
        """Per warp, the coarse map (2, gh, gw) of source texture coordinates (``_OUTSIDE`` off
        the mesh): every triangle (a row of ``tri``, from ``_coverage``; ``order``, its place in
        the painting order) tests a window of coarse pixels over its box and writes the pixels
        inside it - ``windows``: (k, triangles) for each window size, in the rows' order."""
        gw, gh = grid
        size = n * gh * gw
        maps = torch.full((size + SPARE_ROWS, 2), _OUTSIDE, device=self.device)  # + spare rows for misses
        pieces, start = [], 0  # (window, first triangle, end): a size's triangles in chunks (memory)
        for k, count in windows:
            chunk = max(1, MAX_WINDOW_ELEMENTS // (k * k))
            pieces += [
                (_window(k, self.device), c, min(c + chunk, start + count)) for c in range(start, start + count, chunk)
            ]
            start += count
        total = len(tri)
        if len(pieces) == 1:
            offsets, a, b = pieces[0]
            self._steps.scatter(maps, tri[a:b], order[a:b], offsets, gw, gh, total)
        elif pieces:  # the winners over every piece first, then their writes
            last = torch.full((size + SPARE_ROWS,), -1, dtype=torch.int32, device=self.device)
            for offsets, a, b in pieces:
                self._steps.rank(last, tri[a:b], order[a:b], offsets, gw, gh, total)
            for offsets, a, b in pieces:
                self._steps.scatter(maps, tri[a:b], order[a:b], offsets, gw, gh, total, last)
        return maps[:size].view(n, gh, gw, 2).permute(0, 3, 1, 2)


def frames_to_tensor(images: Sequence[np.ndarray], device) -> torch.Tensor:
    """HxWx3 uint8 RGB arrays of one size -> (B, 3, H, W) on ``device``."""
    return torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).contiguous()
