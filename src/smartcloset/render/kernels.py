"""The batched renderer's per-pixel steps as Triton kernels: the rasteriser, the shading, the
arms' capsules and the composite, a launch or three each where the PyTorch steps are dozens of
small operations.

Why: on the GPU the render is bound by its host, not its kernels - a T-shirt batch of 8 is
~250 launches for ~1.2 ms of GPU work (NVIDIA H200, docs/performance.md "Stop 19"), and under
64 clients each engine's render stage took 7-8 ms of host time a batch. CUDA graphs replay
those launches, but only for a plan seen before (``replay.py``), and a busy server's batches
rarely repeat; these kernels take any plan - their sizes are arguments, not shapes to capture.
Measured on an H200 (stop 20): a batch of 8 in 19 launches and 2.1 ms against 254 and 5.3 ms
(GPU time 0.23 against 1.19 ms); 64 clients at p95 23.6-26.0 ms against 39-45 ms.

The same arithmetic as the PyTorch steps in ``batched.py`` (``_coverage`` + ``_writes`` +
``_scatter``, ``_shading_factor``, ``_capsules``, ``_restore`` + ``_over`` + ``_to_uint8``); they stay the reference
and the CPU path. Float results may differ in the last bit (fused multiply-adds), so a pixel
on a triangle's edge can fall the other way - the tests bound how many. On a CPU these run
through Triton's interpreter (``TRITON_INTERPRET=1``), which the tests use.

Every integer argument is left unspecialised (``do_not_specialize``), and every pointer's
alignment (the plan's data is one array, its parts at any offset): Triton otherwise compiles a
kernel again for each new combination of sizes divisible by 16 and addresses aligned to 16
bytes - a second's stall in a busy engine the first time a person steps into a new box.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

from .batched import DILATE, _gaussian_kernel
from .shading import LIMITS, STRENGTH

_DILATE = tl.constexpr(DILATE)  # as a kernel reads it (a plain global does not compile)
# Work a program: pixels (composite, capsules) and (triangle, window pixel) pairs (rasteriser).
# Triton's interpreter (the CPU tests) runs a program at a time in NumPy, so there the blocks
# are larger: its cost is per program.
_INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
BLOCK = 16384 if _INTERPRETED else 1024
PAIRS = 65536 if _INTERPRETED else 2048


@triton.jit(
    do_not_specialize=["stride", "first", "count", "gw", "gh", "total"],
    do_not_specialize_on_alignment=["corners", "last", "maps"],
)
def _raster(
    corners,  # (14, stride) float32: x0 y0 x1 y1 x2 y2 (coarse grid), u0 v0 u1 v1 u2 v2, warp, order
    stride,
    first,
    count,
    last,  # (warps * gh * gw,) int32: each coarse pixel's winning rank, -1 for none
    maps,  # (warps * gh * gw, 2) float32 texture points
    gw,
    gh,
    total,  # triangles in the batch: the rank of a pixel inside one is its order + total
    WRITE: tl.constexpr,  # False: the rank pass (atomic max); True: the winners write
    K: tl.constexpr,  # the window's side
    TILE: tl.constexpr,  # window pixels a program (K * K, or a share of a large window)
    BLOCK_T: tl.constexpr,  # triangles a program
):
    t = first + tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    live = t < first + count
    row = corners + t  # row i of the triangles at row + i * stride
    x0, y0 = tl.load(row, mask=live, other=0.0), tl.load(row + stride, mask=live, other=0.0)
    x1, y1 = tl.load(row + 2 * stride, mask=live, other=0.0), tl.load(row + 3 * stride, mask=live, other=0.0)
    x2, y2 = tl.load(row + 4 * stride, mask=live, other=0.0), tl.load(row + 5 * stride, mask=live, other=0.0)
    u0, v0 = tl.load(row + 6 * stride, mask=live, other=0.0), tl.load(row + 7 * stride, mask=live, other=0.0)
    u1, v1 = tl.load(row + 8 * stride, mask=live, other=0.0), tl.load(row + 9 * stride, mask=live, other=0.0)
    u2, v2 = tl.load(row + 10 * stride, mask=live, other=0.0), tl.load(row + 11 * stride, mask=live, other=0.0)
    owner = tl.load(row + 12 * stride, mask=live, other=0.0).to(tl.int64)
    order = tl.load(row + 13 * stride, mask=live, other=0.0).to(tl.int32)
    # The triangle's set-up (batched._coverage): barycentric and texture maps, grown box, window.
    e1x, e1y, e2x, e2y = x1 - x0, y1 - y0, x2 - x0, y2 - y0
    det = e1x * e2y - e2x * e1y
    valid = tl.abs(det) > 1e-6
    inv = tl.where(valid, 1.0 / tl.where(valid, det, 1.0), 0.0)
    a, b, c, d = e2y * inv, -e2x * inv, -e1y * inv, e1x * inv
    s1x, s2x, s1y, s2y = u1 - u0, u2 - u0, v1 - v0, v2 - v0
    l00, l01 = s1x * a + s2x * c, s1x * b + s2x * d
    l10, l11 = s1y * a + s2y * c, s1y * b + s2y * d
    rx0 = tl.minimum(tl.minimum(x0, x1), x2) - _DILATE
    ry0 = tl.minimum(tl.minimum(y0, y1), y2) - _DILATE
    rx1 = tl.maximum(tl.maximum(x0, x1), x2) + _DILATE
    ry1 = tl.maximum(tl.maximum(y0, y1), y2) + _DILATE
    lox = tl.maximum(tl.floor(rx0), 0.0)
    loy = tl.maximum(tl.floor(ry0), 0.0)
    keep = live & valid & (tl.minimum(tl.ceil(rx1), gw - 1.0) >= lox) & (tl.minimum(tl.ceil(ry1), gh - 1.0) >= loy)
    grow = _DILATE / tl.maximum(tl.abs(det), 1e-6)
    tol0 = tl.minimum(tl.sqrt((x1 - x2) * (x1 - x2) + (y1 - y2) * (y1 - y2)) * grow, 1.0)
    tol1 = tl.minimum(tl.sqrt((x2 - x0) * (x2 - x0) + (y2 - y0) * (y2 - y0)) * grow, 1.0)
    tol2 = tl.minimum(tl.sqrt((x0 - x1) * (x0 - x1) + (y0 - y1) * (y0 - y1)) * grow, 1.0)
    # Every (triangle, window pixel): [BLOCK_T, TILE], x fastest (batched._writes).
    j = tl.program_id(1) * TILE + tl.arange(0, TILE)
    wx = (j % K).to(tl.float32)[None, :]
    wy = (j // K).to(tl.float32)[None, :]
    x = lox[:, None] + wx
    y = loy[:, None] + wy
    l1 = a[:, None] * x + b[:, None] * y + (-(a * x0 + b * y0))[:, None]
    l2 = c[:, None] * x + d[:, None] * y + (-(c * x0 + d * y0))[:, None]
    l0 = 1 - (l1 + l2)
    on_grid = keep[:, None] & (x < gw) & (y < gh)
    inside = (l1 >= -1e-4) & (l2 >= -1e-4) & (l0 >= -1e-4) & on_grid
    near = (
        (l1 >= -tol1[:, None])
        & (l2 >= -tol2[:, None])
        & (l0 >= -tol0[:, None])
        & (x >= rx0[:, None])
        & (y >= ry0[:, None])
        & (x <= rx1[:, None])
        & (y <= ry1[:, None])
        & on_grid
    )
    writes = inside | near
    lin = (owner[:, None] * gh + y.to(tl.int64)) * gw + x.to(tl.int64)
    rank = order[:, None] + inside.to(tl.int32) * total
    if WRITE:
        won = writes & (tl.load(last + lin, mask=writes, other=-1) == rank)
        u = l00[:, None] * x + l01[:, None] * y + (u0 - (l00 * x0 + l01 * y0))[:, None]
        v = l10[:, None] * x + l11[:, None] * y + (v0 - (l10 * x0 + l11 * y0))[:, None]
        tl.store(maps + lin * 2, u, mask=won)
        tl.store(maps + lin * 2 + 1, v, mask=won)
    else:
        tl.atomic_max(last + lin, rank, mask=writes)


def rasterise(maps, last, corners, windows, grid: tuple[int, int]) -> None:
    """Every triangle of ``corners`` (a (14, T) float32 view: ``_coverage``'s 13 rows and the
    painting order) writes its texture points into ``maps`` ((warps * gh * gw, 2), filled with
    "outside"), one writer per coarse pixel as ``batched._scatter`` chooses it: the winners'
    ranks first (``last``, (warps * gh * gw,) int32 filled with -1), then their writes.
    ``windows``: (k, triangles) for each window size, in the rows' order."""
    gw, gh = grid
    total, stride = corners.shape[1], corners.stride(0)
    for write in (False, True):
        first = 0
        for k, count in windows:
            tile = min(k * k, 1024)
            block_t = max(2, PAIRS // tile)
            _raster[(triton.cdiv(count, block_t), k * k // tile)](
                corners, stride, first, count, last, maps, gw, gh, total, WRITE=write, K=k, TILE=tile, BLOCK_T=block_t
            )
            first += count


@triton.jit(do_not_specialize=["n_seg", "bh", "bw"], do_not_specialize_on_alignment=["seg", "out"])
def _capsules(seg, out, n_seg, bh, bw, BLOCK: tl.constexpr):
    f = tl.program_id(1)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    here = p < bh * bw
    y = (p // bw).to(tl.float32)
    x = (p % bw).to(tl.float32)
    best = tl.zeros([BLOCK], dtype=tl.float32)
    for s in range(n_seg):
        at = seg + (f * n_seg + s) * 5
        ax = tl.load(at)
        ay = tl.load(at + 1)
        dx = tl.load(at + 2) - ax
        dy = tl.load(at + 3) - ay
        r = tl.load(at + 4)
        t = ((x - ax) * dx + (y - ay) * dy) / tl.maximum(dx * dx + dy * dy, 1e-6)
        t = tl.minimum(tl.maximum(t, 0.0), 1.0)
        px = x - ax - t * dx
        py = y - ay - t * dy
        near = tl.minimum(tl.maximum(r + 0.5 - tl.sqrt(px * px + py * py), 0.0), 1.0)
        best = tl.maximum(best, tl.where(r > 0, near, 0.0))
    tl.store(out + f * bh * bw + p, best, mask=here)


def capsules(seg, bh: int, bw: int):
    """(B, 1, bh, bw) arm masks from (B, S, 5) segments, as ``batched._capsules``."""
    seg = seg.contiguous()
    b, n_seg = seg.shape[:2]
    out = torch.empty((b, 1, bh, bw), dtype=torch.float32, device=seg.device)
    _capsules[(triton.cdiv(bh * bw, BLOCK), b)](seg, out, n_seg, bh, bw, BLOCK=BLOCK)
    return out


@triton.jit(do_not_specialize=["f_b", "f_c", "f_y", "f_x", "cx0", "cy0", "qw", "qh"])
def _luminance(frames, f_b, f_c, f_y, f_x, cx0, cy0, qw, qh, lum, BLOCK: tl.constexpr):
    """Each 4 x 4 block of the crop at (cx0, cy0) averaged ("area"), as luminance + 8."""
    f = tl.program_id(1)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    here = p < qw * qh
    qy, qx = p // qw, p % qw
    r = tl.zeros([BLOCK], dtype=tl.float32)
    g = tl.zeros([BLOCK], dtype=tl.float32)
    b = tl.zeros([BLOCK], dtype=tl.float32)
    for dy in tl.static_range(4):
        for dx in tl.static_range(4):
            at = frames + f * f_b + (cy0 + 4 * qy + dy) * f_y + (cx0 + 4 * qx + dx) * f_x
            r += tl.load(at, mask=here, other=0).to(tl.float32)
            g += tl.load(at + f_c, mask=here, other=0).to(tl.float32)
            b += tl.load(at + 2 * f_c, mask=here, other=0).to(tl.float32)
    value = 0.299 * (r / 16.0) + 0.587 * (g / 16.0) + 0.114 * (b / 16.0) + 8.0
    tl.store(lum + f * qw * qh + p, value, mask=here)


@triton.jit
def _reflect(i, n):
    """OpenCV's BORDER_REFLECT_101 index (the kernel's reach is under n)."""
    i = tl.where(i < 0, -i, i)
    return tl.where(i >= n, 2 * n - 2 - i, i)


@triton.jit
def _taps(src, k, qy, qx, qw, qh, here, TAPS: tl.constexpr, VERTICAL: tl.constexpr, BLOCK: tl.constexpr):
    """One Gaussian of ``TAPS`` weights ``k`` along y or x of a (qh, qw) plane, mirrored border."""
    total = tl.zeros([BLOCK], dtype=tl.float32)
    for i in tl.static_range(TAPS):
        if VERTICAL:
            at = _reflect(qy + (i - TAPS // 2), qh) * qw + qx
        else:
            at = qy * qw + _reflect(qx + (i - TAPS // 2), qw)
        total += tl.load(k + i) * tl.load(src + at, mask=here, other=0.0)
    return total


@triton.jit(do_not_specialize=["qw", "qh"])
def _blur(src_fine, src_coarse, k_fine, k_coarse, dst_fine, dst_coarse, qw, qh, VERTICAL: tl.constexpr,
          FINE: tl.constexpr, COARSE: tl.constexpr, STRENGTH_: tl.constexpr, LO: tl.constexpr, HI: tl.constexpr,
          BLOCK: tl.constexpr):  # fmt: skip
    """One pass of both separable Gaussians (batched._blur), along x or then y; the y pass ends
    in the shading factor (batched._shading_factor), written to ``dst_fine``."""
    f = tl.program_id(1)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    here = p < qw * qh
    qy, qx = p // qw, p % qw
    base = f * qw * qh
    fine = _taps(src_fine + base, k_fine, qy, qx, qw, qh, here, FINE, VERTICAL, BLOCK)
    coarse = _taps(src_coarse + base, k_coarse, qy, qx, qw, qh, here, COARSE, VERTICAL, BLOCK)
    if VERTICAL:
        factor = 1.0 + STRENGTH_ * (fine / tl.where(here, coarse, 1.0) - 1.0)
        tl.store(dst_fine + base + p, tl.minimum(tl.maximum(factor, LO), HI), mask=here)
    else:
        tl.store(dst_fine + base + p, fine, mask=here)
        tl.store(dst_coarse + base + p, coarse, mask=here)


def shading(frames, crop, k_fine, k_coarse):
    """The shading factor at quarter size over ``crop`` (x0, y0, x1, y1: multiples of 4; at
    quarter size wider and taller than the coarse kernel's reach), (B, qh, qw) float32 - as ``batched._shading_factor`` before its
    upsampling, which the composite does as it reads it. Three launches where the PyTorch
    steps are ~20."""
    x0, y0, x1, y1 = crop
    qw, qh = (x1 - x0) // 4, (y1 - y0) // 4
    b = frames.shape[0]
    grid = (triton.cdiv(qw * qh, BLOCK), b)
    lum = torch.empty((b, qh, qw), dtype=torch.float32, device=frames.device)
    fb, fc, fy, fx = frames.stride()
    _luminance[grid](frames, fb, fc, fy, fx, x0, y0, qw, qh, lum, BLOCK=BLOCK)
    fine, coarse = torch.empty_like(lum), torch.empty_like(lum)
    consts = dict(FINE=len(k_fine), COARSE=len(k_coarse), STRENGTH_=STRENGTH, LO=LIMITS[0], HI=LIMITS[1], BLOCK=BLOCK)
    _blur[grid](lum, lum, k_fine, k_coarse, fine, coarse, qw, qh, VERTICAL=False, **consts)
    _blur[grid](fine, coarse, k_fine, k_coarse, lum, lum, qw, qh, VERTICAL=True, **consts)
    return lum


@triton.jit
def _to_uint8(v):
    """Rounded half to even, as torch.round (a shaded garment's opaque pixels land on .5 often:
    its factor clamps to a quarter step), clamped to 0-255."""
    f = tl.floor(v)
    rest = v - f
    odd = (f - 2.0 * tl.floor(f * 0.5)) == 1.0
    up = (rest > 0.5) | ((rest == 0.5) & odd)
    return tl.minimum(tl.maximum(f + up.to(tl.float32), 0.0), 255.0).to(tl.uint8)


@triton.jit(
    do_not_specialize=[
        "f_b", "f_c", "f_y", "f_x", "o_b", "o_c", "o_y", "o_x", "rx0", "ry0", "rw", "rh",
        "p_j", "p_c", "p_y", "p_x", "bx0", "by0", "bw", "bh", "s_b", "s_y", "s_x", "qx0", "qy0", "qw", "qh",
        "m_b", "m_y", "m_x", "ax0", "ay0", "aw", "ah", "n_steps", "batch",
    ],
    do_not_specialize_on_alignment=["out", "frames", "patches", "factor", "mask", "table", "flags"],
)  # fmt: skip
def _composite(
    out, f_b, f_c, f_y, f_x, o_b, o_c, o_y, o_x,  # strides of frames (f_*) and out (o_*)
    frames, rx0, ry0, rw, rh,
    patches, p_j, p_c, p_y, p_x, bx0, by0, bw, bh,
    factor, s_b, s_y, s_x, qx0, qy0, qw, qh,  # SHADE 2: (B, qh, qw) at quarter size from (qx0, qy0)
    mask, m_b, m_y, m_x, ax0, ay0, aw, ah,
    table,  # (n_steps, batch) float32: each step's patch of each frame, -1 for none
    flags,  # (n_steps, batch) float32: 1 where the frame draws its arms back at that step
    n_steps, batch,
    SHADE: tl.constexpr, ARMS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    f = tl.program_id(1)
    p = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    here = p < rw * rh
    ly = p // rw
    lx = p % rw
    y = ry0 + ly
    x = rx0 + lx
    src = frames + f * f_b + y * f_y + x * f_x
    r0 = tl.load(src, mask=here, other=0).to(tl.float32)
    g0 = tl.load(src + f_c, mask=here, other=0).to(tl.float32)
    b0 = tl.load(src + 2 * f_c, mask=here, other=0).to(tl.float32)
    r, g, b = r0, g0, b0
    py, px = y - by0, x - bx0
    in_box = here & (py >= 0) & (py < bh) & (px >= 0) & (px < bw)
    if SHADE == 1:  # over the region, full size
        shade = tl.load(factor + f * s_b + ly * s_y + lx * s_x, mask=here, other=1.0)
    if SHADE == 2:  # at quarter size, upsampled here: bilinear, half-pixel centres (F.interpolate's)
        sy = tl.maximum((y - qy0 + 0.5) * 0.25 - 0.5, 0.0)
        sx = tl.maximum((x - qx0 + 0.5) * 0.25 - 0.5, 0.0)
        iy0, ix0 = sy.to(tl.int32), sx.to(tl.int32)  # floor: both are >= 0
        iy1, ix1 = tl.minimum(iy0 + 1, qh - 1), tl.minimum(ix0 + 1, qw - 1)
        wy, wx = sy - iy0, sx - ix0
        q = factor + f * s_b
        top = (1 - wx) * tl.load(q + iy0 * s_y + ix0 * s_x, mask=here, other=1.0) + wx * tl.load(
            q + iy0 * s_y + ix1 * s_x, mask=here, other=1.0
        )
        bottom = (1 - wx) * tl.load(q + iy1 * s_y + ix0 * s_x, mask=here, other=1.0) + wx * tl.load(
            q + iy1 * s_y + ix1 * s_x, mask=here, other=1.0
        )
        shade = (1 - wy) * top + wy * bottom
    if ARMS:
        my, mx = y - ay0, x - ax0
        in_arms = here & (my >= 0) & (my < ah) & (mx >= 0) & (mx < aw)
        arm = tl.load(mask + f * m_b + my * m_y + mx * m_x, mask=in_arms, other=0.0)
    for k in range(n_steps):
        if ARMS:
            flag = tl.load(flags + k * batch + f)
            if flag != 0:
                m = arm * flag
                r = r * (1 - m) + r0 * m
                g = g * (1 - m) + g0 * m
                b = b * (1 - m) + b0 * m
        pos = tl.load(table + k * batch + f).to(tl.int32)
        if pos >= 0:
            at = patches + pos * p_j + py * p_y + px * p_x
            alpha = tl.load(at + 3 * p_c, mask=in_box, other=0.0)
            pr = tl.load(at, mask=in_box, other=0.0)
            pg = tl.load(at + p_c, mask=in_box, other=0.0)
            pb = tl.load(at + 2 * p_c, mask=in_box, other=0.0)
            if SHADE != 0:
                pr = tl.minimum(pr * shade, alpha)
                pg = tl.minimum(pg * shade, alpha)
                pb = tl.minimum(pb * shade, alpha)
            keep = 1.0 - alpha / 255.0
            r = r * keep + pr
            g = g * keep + pg
            b = b * keep + pb
    dst = out + f * o_b + y * o_y + x * o_x
    tl.store(dst, _to_uint8(r), mask=here)
    tl.store(dst + o_c, _to_uint8(g), mask=here)
    tl.store(dst + 2 * o_c, _to_uint8(b), mask=here)


@functools.lru_cache(maxsize=8)
def _unused(device) -> torch.Tensor:
    """What the composite is given for an input it does not read (no patches, shading or arms:
    its flags say so) - made once, not a fill kernel every batch."""
    return torch.empty(1, dtype=torch.float32, device=device)


def composite(out, frames, region, drawn, factor, arms, table, flags, quarter=None) -> None:
    """Every step of every frame over ``region`` (x0, y0, x1, y1) of ``out`` (a copy of
    ``frames``, (B, 3, H, W) uint8), in one pass a pixel: the arms drawn back at the steps
    ``flags`` (n_steps, B) marks, the patches ``table`` (n_steps, B; -1 none) names composited
    "over" - shaded by ``factor`` where given - and rounded once. ``factor``: (B, 1, rh, rw)
    over the region, or with ``quarter`` = (x0, y0) the (B, qh, qw) quarter-size factor of
    ``shading`` from that corner, upsampled here.
    ``drawn``: (patches (J, 4, bh, bw), their box) or None; ``arms``: (mask (B, 1, ah, aw),
    (x0, y0)) or None. As ``batched._restore``, ``_over`` and ``_to_uint8`` do it step by step."""
    rx0, ry0, rx1, ry1 = region
    rw, rh = rx1 - rx0, ry1 - ry0
    b = frames.shape[0]
    dummy = _unused(frames.device)
    if drawn is not None:
        patches, (bx0, by0, bx1, by1) = drawn
        pj, pc, py, px = patches.stride()
    else:
        patches, (bx0, by0, bx1, by1), (pj, pc, py, px) = dummy, (0, 0, 0, 0), (0, 0, 0, 0)
    shade = 0 if factor is None else 1 if quarter is None else 2
    qx0, qy0, qh, qw = 0, 0, 0, 0
    if shade == 1:
        sb, _, sy, sx = factor.stride()
    elif shade == 2:
        (qx0, qy0), (qh, qw) = quarter, factor.shape[1:]
        sb, sy, sx = factor.stride()
    else:
        sb, sy, sx = 0, 0, 0
    if arms is not None:
        mask, (ax0, ay0) = arms
        mb, _, my, mx = mask.stride()
        ah, aw = mask.shape[2:]
    else:
        mask, ax0, ay0, mb, my, mx, ah, aw = dummy, 0, 0, 0, 0, 0, 0, 0
    fb, fc, fy, fx = frames.stride()
    ob, oc, oy, ox = out.stride()
    _composite[(triton.cdiv(rw * rh, BLOCK), b)](
        out, fb, fc, fy, fx, ob, oc, oy, ox,
        frames, rx0, ry0, rw, rh,
        patches, pj, pc, py, px, bx0, by0, bx1 - bx0, by1 - by0,
        factor if shade else dummy, sb, sy, sx, qx0, qy0, qw, qh,
        mask, mb, my, mx, ax0, ay0, aw, ah,
        table, flags, table.shape[0], b,
        SHADE=shade, ARMS=arms is not None, BLOCK=BLOCK,
    )  # fmt: skip


def warm_up(device) -> None:
    """Compile every kernel variant a server meets - the rasteriser's window sizes (8 to 512
    pixels a side, rank and write passes), the arms, the composite with and without shading and
    arms - on tiny inputs, before clients come: a first compile takes ~1 s, which a busy
    engine's batch would wait for. Triton keeps them on disk for the next process."""
    corners = torch.zeros((14, 1), dtype=torch.float32, device=device)  # one triangle of no area
    maps = torch.zeros((4, 2), dtype=torch.float32, device=device)
    last = torch.full((4,), -1, dtype=torch.int32, device=device)
    rasterise(maps, last, corners, [(k, 1) for k in (8, 16, 32, 64, 128, 256, 512)], (2, 2))
    seg = torch.zeros((1, 1, 5), dtype=torch.float32, device=device)
    mask = capsules(seg, 2, 2)
    frames = torch.zeros((1, 3, 2, 2), dtype=torch.uint8, device=device)
    patches = torch.zeros((1, 4, 2, 2), dtype=torch.float32, device=device)
    table = torch.zeros((1, 1), dtype=torch.float32, device=device)
    full = torch.ones((1, 1, 2, 2), dtype=torch.float32, device=device)
    big = torch.zeros((1, 3, 80, 80), dtype=torch.uint8, device=device)  # 20 x 20 at quarter size: the blurs fit
    quarter = shading(big, (0, 0, 80, 80), _gaussian_kernel(1.0, device), _gaussian_kernel(4.0, device))
    for shade, at in ((None, None), (full, None), (quarter, (0, 0))):
        for arms in (None, (mask, (0, 0))):
            composite(frames.clone(), frames, (0, 0, 2, 2), (patches, (0, 0, 2, 2)), shade, arms, table, table, at)
