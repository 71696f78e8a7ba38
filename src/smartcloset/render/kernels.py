"""The batched renderer's per-pixel steps as Triton kernels: the rasteriser, the arms' capsules
and the composite, one launch each where the PyTorch steps are dozens of small operations.

Why: on the GPU the render is bound by its host, not its kernels - a T-shirt batch of 8 is
~250 launches for ~1.2 ms of GPU work (NVIDIA H200, docs/performance.md "Stop 19"), and under
64 clients each engine's render stage took 7-8 ms of host time a batch. CUDA graphs replay
those launches, but only for a plan seen before (``replay.py``), and a busy server's batches
rarely repeat; these kernels take any plan - their sizes are arguments, not shapes to capture.

The same arithmetic as the PyTorch steps in ``batched.py`` (``_coverage`` + ``_writes`` +
``_scatter``, ``_capsules``, ``_restore`` + ``_over`` + ``_to_uint8``); they stay the reference
and the CPU path. Float results may differ in the last bit (fused multiply-adds), so a pixel
on a triangle's edge can fall the other way - the tests bound how many. On a CPU these run
through Triton's interpreter (``TRITON_INTERPRET=1``), which the tests use.

Every integer argument is left unspecialised (``do_not_specialize``), and every pointer's
alignment (the plan's data is one array, its parts at any offset): Triton otherwise compiles a
kernel again for each new combination of sizes divisible by 16 and addresses aligned to 16
bytes - a second's stall in a busy engine the first time a person steps into a new box.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

DILATE = 1.0  # batched.DILATE (asserted equal there)
_DILATE = tl.constexpr(DILATE)  # as a kernel reads it
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
    x0 = tl.load(corners + 0 * stride + t, mask=live, other=0.0)
    y0 = tl.load(corners + 1 * stride + t, mask=live, other=0.0)
    x1 = tl.load(corners + 2 * stride + t, mask=live, other=0.0)
    y1 = tl.load(corners + 3 * stride + t, mask=live, other=0.0)
    x2 = tl.load(corners + 4 * stride + t, mask=live, other=0.0)
    y2 = tl.load(corners + 5 * stride + t, mask=live, other=0.0)
    u0 = tl.load(corners + 6 * stride + t, mask=live, other=0.0)
    v0 = tl.load(corners + 7 * stride + t, mask=live, other=0.0)
    u1 = tl.load(corners + 8 * stride + t, mask=live, other=0.0)
    v1 = tl.load(corners + 9 * stride + t, mask=live, other=0.0)
    u2 = tl.load(corners + 10 * stride + t, mask=live, other=0.0)
    v2 = tl.load(corners + 11 * stride + t, mask=live, other=0.0)
    owner = tl.load(corners + 12 * stride + t, mask=live, other=0.0).to(tl.int64)
    order = tl.load(corners + 13 * stride + t, mask=live, other=0.0).to(tl.int32)
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
    import torch

    seg = seg.contiguous()
    b, n_seg = seg.shape[:2]
    out = torch.empty((b, 1, bh, bw), dtype=torch.float32, device=seg.device)
    _capsules[(triton.cdiv(bh * bw, BLOCK), b)](seg, out, n_seg, bh, bw, BLOCK=BLOCK)
    return out


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
        "p_j", "p_c", "p_y", "p_x", "bx0", "by0", "bw", "bh", "s_b", "s_y", "s_x",
        "m_b", "m_y", "m_x", "ax0", "ay0", "aw", "ah", "n_steps", "batch",
    ],
    do_not_specialize_on_alignment=["out", "frames", "patches", "factor", "mask", "table", "flags"],
)  # fmt: skip
def _composite(
    out, f_b, f_c, f_y, f_x, o_b, o_c, o_y, o_x,  # strides of frames (f_*) and out (o_*)
    frames, rx0, ry0, rw, rh,
    patches, p_j, p_c, p_y, p_x, bx0, by0, bw, bh,
    factor, s_b, s_y, s_x,
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
    if SHADE:
        shade = tl.load(factor + f * s_b + ly * s_y + lx * s_x, mask=here, other=1.0)
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
            if SHADE:
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


def composite(out, frames, region, drawn, factor, arms, table, flags) -> None:
    """Every step of every frame over ``region`` (x0, y0, x1, y1) of ``out`` (a copy of
    ``frames``, (B, 3, H, W) uint8), in one pass a pixel: the arms drawn back at the steps
    ``flags`` (n_steps, B) marks, the patches ``table`` (n_steps, B; -1 none) names composited
    "over" - shaded by ``factor`` (B, 1, rh, rw over the region) where given - and rounded once.
    ``drawn``: (patches (J, 4, bh, bw), their box) or None; ``arms``: (mask (B, 1, ah, aw),
    (x0, y0)) or None. As ``batched._restore``, ``_over`` and ``_to_uint8`` do it step by step."""
    import torch

    rx0, ry0, rx1, ry1 = region
    rw, rh = rx1 - rx0, ry1 - ry0
    b = frames.shape[0]
    dummy = torch.zeros(1, dtype=torch.float32, device=frames.device)
    if drawn is not None:
        patches, (bx0, by0, bx1, by1) = drawn
        pj, pc, py, px = patches.stride()
    else:
        patches, (bx0, by0, bx1, by1), (pj, pc, py, px) = dummy, (0, 0, 0, 0), (0, 0, 0, 0)
    shade = factor is not None
    sb, _, sy, sx = factor.stride() if shade else (0, 0, 0, 0)
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
        factor if shade else dummy, sb, sy, sx,
        mask, mb, my, mx, ax0, ay0, aw, ah,
        table, flags, table.shape[0], b,
        SHADE=shade, ARMS=arms is not None, BLOCK=BLOCK,
    )  # fmt: skip


def warm_up(device) -> None:
    """Compile every kernel variant a server meets - the rasteriser's window sizes (8 to 512
    pixels a side, rank and write passes), the arms, the composite with and without shading and
    arms - on tiny inputs, before clients come: a first compile takes ~1 s, which a busy
    engine's batch would wait for. Triton keeps them on disk for the next process."""
    import torch

    corners = torch.zeros((14, 1), dtype=torch.float32, device=device)  # one triangle of no area
    maps = torch.zeros((4, 2), dtype=torch.float32, device=device)
    last = torch.full((4,), -1, dtype=torch.int32, device=device)
    rasterise(maps, last, corners, [(k, 1) for k in (8, 16, 32, 64, 128, 256, 512)], (2, 2))
    seg = torch.zeros((1, 1, 5), dtype=torch.float32, device=device)
    mask = capsules(seg, 2, 2)
    frames = torch.zeros((1, 3, 2, 2), dtype=torch.uint8, device=device)
    patches = torch.zeros((1, 4, 2, 2), dtype=torch.float32, device=device)
    table = torch.zeros((1, 1), dtype=torch.float32, device=device)
    for shade in (None, torch.ones((1, 1, 2, 2), dtype=torch.float32, device=device)):
        for arms in (None, (mask, (0, 0))):
            composite(frames.clone(), frames, (0, 0, 2, 2), (patches, (0, 0, 2, 2)), shade, arms, table, table)
