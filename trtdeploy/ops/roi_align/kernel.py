"""Triton RoIAlign (average, torchvision semantics) for one or several feature levels.

Divisions, square root and log2 are the IEEE / libdevice ones torchvision's CUDA code uses
(Triton's defaults are approximate), so sampling grids and FPN levels come out the same.
One program computes one RoI's bins for a block of channels. Up to ``MAX_LEVELS`` feature maps
are passed as element offsets from the first one (an integer select, not a pointer select), and
each RoI's level is picked in the kernel (``level_of``) so that one launch serves all levels.

Two tiles. All bins at once, a [BLOCK_C, bins] tile whose rows are channels and whose columns the
output bins (stores contiguous, neighbouring bins read neighbouring pixels). Or one bin row at a
time, a [BLOCK_C, output width] tile, whose sampling rows are then one y each: their
bilinear rows and weights are scalars, and (adaptive grid) a pixel row's x-interpolated sums are
computed once and reused by the next sampling row that falls on it, as are the pixels of the
previous sampling column (``_row_sums``), so each pixel is read about once instead of four
times. A fixed ``sampling_ratio`` is a compile-time constant: its sample loops unroll, so all of
a bin's loads are in flight at once. The tile (which one, channels per program, warps) is
autotuned per shape key. ``reference.py`` computes the same thing in PyTorch.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from .reference import MAX_LEVELS
# Triton's interpreter (the CPU tests) has no libdevice; its tl.log2 is numpy's, accurate too
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _pick(level, v0, v1, v2, v3, v4):
    return tl.where(level == 0, v0, tl.where(level == 1, v1, tl.where(level == 2, v2, tl.where(level == 3, v3, v4))))


@triton.jit
def _axis(v, size):
    """torchvision's bilinear neighbours along one axis at ``v``: (low, weight of low + 1, low + 1 inside, outside).

    At the far edge torchvision's high neighbour is low itself, with weight 0: its load is skipped instead.
    """
    outside = (v < -1.0) | (v > size)
    c = tl.maximum(v, 0.0)
    low = c.to(tl.int32)
    edge = low >= size - 1
    low = tl.where(edge, size - 1, low)
    c = tl.where(edge, low.to(tl.float32), c)
    return low, c - low, ~edge, outside


@triton.jit
def _sample(start, i, size, grid, SR: tl.constexpr):
    """torchvision's sampling point ``start + (i + .5) * size / grid``, bit for bit (a power-of-two SR: a product)."""
    if (SR > 0) & ((SR & (SR - 1)) == 0):
        return start + (i + 0.5) * size * (1.0 / SR)  # exact: scaling by a power of two
    else:
        return start + tl.div_rn((i + 0.5) * size, grid * 1.0)


@triton.jit
def _bilinear(rows, keep, y, x, height, width):
    """torchvision's bilinear sample at (y, x) [bins] of each channel plane ``rows`` -> [channels, bins]."""
    y_low, ly, y_next, y_out = _axis(y, height)
    x_low, lx, x_next, x_out = _axis(x, width)
    hy = 1.0 - ly
    hx = 1.0 - lx
    m = keep & (~(y_out | x_out))[None, :]
    at = rows[:, None] + (y_low * width + x_low)[None, :]
    v1 = tl.load(at, mask=m, other=0.0)
    v2 = tl.load(at + 1, mask=m & x_next[None, :], other=0.0)
    v3 = tl.load(at + width, mask=m & y_next[None, :], other=0.0)
    v4 = tl.load(at + width + 1, mask=m & (x_next & y_next)[None, :], other=0.0)
    return (hy * hx)[None, :] * v1 + (hy * lx)[None, :] * v2 + (ly * hx)[None, :] * v3 + (ly * lx)[None, :] * v4


@triton.jit
def _row_sums(row, keep, row1, keep1, xs, bin_w, grid_w, inv_w, width, BLOCK_C: tl.constexpr, PWB: tl.constexpr,
              GROUPS: tl.constexpr):
    """Σ over a bin's sampling columns of the x-interpolated pixel row ``row`` [BLOCK_C] -> [BLOCK_C, PWB]
    (and of ``row1``, a second block of channels, when ``GROUPS`` is 2: it shares the columns' arithmetic).

    Neighbouring sampling columns (spaced <= 1 pixel) share pixels: a pixel the previous column
    read is taken from registers (its load masked off) instead of read again.
    """
    total = tl.zeros((BLOCK_C, PWB), dtype=tl.float32)
    v_low = tl.zeros((BLOCK_C, PWB), dtype=tl.float32)
    v_high = tl.zeros((BLOCK_C, PWB), dtype=tl.float32)
    total1 = tl.zeros((BLOCK_C, PWB), dtype=tl.float32)
    v_low1 = tl.zeros((BLOCK_C, PWB), dtype=tl.float32)
    v_high1 = tl.zeros((BLOCK_C, PWB), dtype=tl.float32)
    prev_low = tl.full((PWB,), -2, tl.int32)
    grid_f = grid_w * 1.0
    for ix in range(0, grid_w):
        # torchvision's (ix + .5) * bin_w / grid_w, correctly rounded from the rounded reciprocal (Markstein's
        # correction step), cheaper than an IEEE division at every step
        a = (ix + 0.5) * bin_w
        q = a * inv_w
        x_low, lx, x_next, x_out = _axis(xs + tl.fma(tl.fma(-q, grid_f, a), inv_w, q), width)
        same = (x_low == prev_low)[None, :]  # then the high neighbour is the previous one too
        shift = (x_low == prev_low + 1)[None, :]
        load_low = ~same & ~shift
        load_high = ~same & x_next[None, :]
        w_low = tl.where(x_out, 0.0, 1.0 - lx)[None, :]
        w_high = tl.where(x_out, 0.0, lx)[None, :]
        at = row[:, None] + x_low[None, :]
        v_low = tl.where(same, v_low, tl.where(shift, v_high, tl.load(at, mask=keep & load_low, other=0.0)))
        v_high = tl.where(same, v_high, tl.load(at + 1, mask=keep & load_high, other=0.0))
        total += w_low * v_low + w_high * v_high
        if GROUPS == 2:
            at1 = row1[:, None] + x_low[None, :]
            v_low1 = tl.where(same, v_low1, tl.where(shift, v_high1, tl.load(at1, mask=keep1 & load_low, other=0.0)))
            v_high1 = tl.where(same, v_high1, tl.load(at1 + 1, mask=keep1 & load_high, other=0.0))
            total1 += w_low * v_low1 + w_high * v_high1
        prev_low = x_low
    return total, total1


@triton.jit
def _roi_align_kernel(feat, rois, out, channels,
                      off0, off1, off2, off3, off4, h0, h1, h2, h3, h4, w0, w1, w2, w3, w4,
                      sc0, sc1, sc2, sc3, sc4, num_levels, first_level, canonical_level, canonical_scale,
                      INTERPRETED: tl.constexpr, SR: tl.constexpr, ALIGNED: tl.constexpr, PH: tl.constexpr,
                      PW: tl.constexpr, BINS: tl.constexpr, PWB: tl.constexpr, BLOCK_C: tl.constexpr,
                      ROW_TILE: tl.constexpr):
    GROUPS: tl.constexpr = 2 if ROW_TILE == 2 else 1  # blocks of BLOCK_C channels a program computes
    r = tl.program_id(0)
    cblock = tl.program_id(1)
    batch = tl.load(rois + r * 5).to(tl.int64)
    x1 = tl.load(rois + r * 5 + 1)
    y1 = tl.load(rois + r * 5 + 2)
    x2 = tl.load(rois + r * 5 + 3)
    y2 = tl.load(rois + r * 5 + 4)
    # FPN level (torchvision's LevelMapper): floor(k0 + log2(sqrt(area) / s0) + eps), clamped.
    level = 0
    if num_levels > 1:
        size = tl.sqrt_rn((x2 - x1) * (y2 - y1))
        if INTERPRETED:
            log_ratio = tl.log2(tl.div_rn(size, canonical_scale))
        else:  # CUDA's accurate log2f, as torch uses (tl.log2 is approximate on the GPU)
            log_ratio = libdevice.log2(tl.div_rn(size, canonical_scale))
        k = tl.floor(canonical_level + log_ratio + 1e-6)
        k = tl.minimum(tl.maximum(k, first_level * 1.0), (first_level + num_levels - 1) * 1.0)
        level = k.to(tl.int32) - first_level
    height = _pick(level, h0, h1, h2, h3, h4)
    width = _pick(level, w0, w1, w2, w3, w4)
    scale = _pick(level, sc0, sc1, sc2, sc3, sc4)
    base = _pick(level, off0, off1, off2, off3, off4)

    offset = 0.5 if ALIGNED else 0.0
    start_x = x1 * scale - offset
    start_y = y1 * scale - offset
    roi_w = x2 * scale - offset - start_x
    roi_h = y2 * scale - offset - start_y
    if not ALIGNED:
        roi_w = tl.maximum(roi_w, 1.0)
        roi_h = tl.maximum(roi_h, 1.0)
    bin_h = tl.div_rn(roi_h, PH)
    bin_w = tl.div_rn(roi_w, PW)

    chans = cblock * (BLOCK_C * GROUPS) + tl.arange(0, BLOCK_C)
    chan_ok = chans < channels
    plane = height.to(tl.int64) * width
    rows = feat + base + (batch * channels + chans.to(tl.int64)) * plane  # [BLOCK_C] pointers
    dest = out + (r * channels + chans.to(tl.int64)) * (PH * PW)
    if SR > 0:
        grid_h = SR
        grid_w = SR
        count = SR * SR * 1.0
    else:  # torchvision's adaptive grid, ceil(bin size) samples a side
        grid_h = tl.ceil(bin_h).to(tl.int32)
        grid_w = tl.ceil(bin_w).to(tl.int32)
        count = tl.maximum(grid_h * grid_w, 1).to(tl.float32)
    if ROW_TILE == 0:  # all bins at once (fixed grid only): unrolled, so all of a bin's loads are in flight together
        bins = tl.arange(0, BINS)
        bin_y = (bins // PW).to(tl.float32)
        bin_x = (bins % PW).to(tl.float32)
        keep = chan_ok[:, None] & (bins < PH * PW)[None, :]
        total = tl.zeros((BLOCK_C, BINS), dtype=tl.float32)
        for iy in tl.static_range(SR):
            y = _sample(start_y + bin_y * bin_h, iy, bin_h, grid_h, SR)
            for ix in tl.static_range(SR):
                x = _sample(start_x + bin_x * bin_w, ix, bin_w, grid_w, SR)
                total += _bilinear(rows, keep, y, x, height, width)
        tl.store(dest[:, None] + bins[None, :], tl.div_rn(total, count), mask=keep)
    else:  # one bin row at a time
        pw = tl.arange(0, PWB)
        keep = chan_ok[:, None] & (pw < PW)[None, :]
        keep1 = ((chans + BLOCK_C < channels)[:, None] & (pw < PW)[None, :]) & (GROUPS == 2)
        rows1 = rows + BLOCK_C * plane
        xs = start_x + pw.to(tl.float32) * bin_w  # each bin's left edge
        # adaptive grid: x-interpolated sums of the pixel rows (y_low, y_low + 1) the last sampling row used,
        # kept across bin rows too (they depend on the pixel row alone)
        last_low = -2
        if SR == 0:
            inv_w = tl.div_rn(1.0, grid_w * 1.0)
        sum_low = tl.zeros((BLOCK_C, PWB), dtype=tl.float32)
        sum_high = tl.zeros((BLOCK_C, PWB), dtype=tl.float32)
        sum_low1 = tl.zeros((BLOCK_C, PWB), dtype=tl.float32)
        sum_high1 = tl.zeros((BLOCK_C, PWB), dtype=tl.float32)
        for ph in range(0, PH):
            ys = start_y + ph * bin_h
            total = tl.zeros((BLOCK_C, PWB), dtype=tl.float32)
            total1 = tl.zeros((BLOCK_C, PWB), dtype=tl.float32)
            if SR > 0:
                for iy in tl.static_range(SR):
                    y = _sample(ys, iy, bin_h, grid_h, SR)
                    for ix in tl.static_range(SR):
                        x = _sample(xs, ix, bin_w, grid_w, SR)
                        total += _bilinear(rows, keep, tl.zeros_like(x) + y, x, height, width)
            else:
                for iy in range(0, grid_h):
                    y_low, ly, y_next, y_out = _axis(_sample(ys, iy, bin_h, grid_h, 0), height)
                    if y_low != last_low:
                        if y_low == last_low + 1:
                            sum_low = sum_high
                            sum_low1 = sum_high1
                        else:
                            sum_low, sum_low1 = _row_sums(rows + y_low * width, keep, rows1 + y_low * width, keep1,
                                                          xs, bin_w, grid_w, inv_w, width, BLOCK_C, PWB, GROUPS)
                        if y_next:  # at the last pixel row, its weight ly is 0
                            below = (y_low + 1) * width
                            sum_high, sum_high1 = _row_sums(rows + below, keep, rows1 + below, keep1, xs, bin_w,
                                                            grid_w, inv_w, width, BLOCK_C, PWB, GROUPS)
                        else:
                            sum_high = tl.zeros((BLOCK_C, PWB), dtype=tl.float32)
                            sum_high1 = tl.zeros((BLOCK_C, PWB), dtype=tl.float32)
                    last_low = y_low
                    if not y_out:
                        total += (1.0 - ly) * sum_low + ly * sum_high
                        total1 += (1.0 - ly) * sum_low1 + ly * sum_high1
            tl.store(dest[:, None] + ph * PW + pw[None, :], tl.div_rn(total, count), mask=keep)
            if GROUPS == 2:
                tl.store(dest[:, None] + BLOCK_C * (PH * PW) + ph * PW + pw[None, :], tl.div_rn(total1, count),
                         mask=keep1)


def _per_program(meta: dict) -> int:
    """Channels one program computes: BLOCK_C, twice that for the two-block row tile."""
    return meta["BLOCK_C"] * (2 if meta["ROW_TILE"] == 2 else 1)


def _prune(configs, named_args, **kwargs):
    """Tiles no wider than the channels; all bins at once for a fixed grid only, two channel blocks for the adaptive
    one only; row tiles that fill their warps."""
    wide = triton.next_power_of_2(named_args["channels"])
    fixed = kwargs.get("SR", named_args.get("SR", 0)) > 0
    lanes = kwargs.get("PWB", named_args.get("PWB", 1))
    fits = [c for c in configs
            if _per_program(c.kwargs) <= wide and c.kwargs["ROW_TILE"] in ((0, 1) if fixed else (1, 2))]
    full = [c for c in fits if not c.kwargs["ROW_TILE"] or c.kwargs["BLOCK_C"] * lanes >= 32 * c.num_warps]
    return (full or fits)[:1] if INTERPRETED else full or fits  # the interpreter (CPU tests) times no tiles


# Tiles (channels per block, warps, 0: all bins at once / 1: one bin row at a time / 2: the same for two channel
# blocks sharing the sampling columns' arithmetic). Tuned once per key (channels, levels, sampling
# grid, output size) by timing every tile on the process's first call, and kept for the process. Not on disk:
# the adaptive grid's cost follows the RoI sizes, which the key cannot see (a tile tuned on another workload's
# RoIs ran 1.4x slower than the best one on the H200).
TILES = ([(c, w, 0) for c in (1, 2, 4) for w in (1, 2, 4)] + [(c, w, 1) for c in (1, 2, 4, 8, 16) for w in (1, 2, 4)]
         + [(c, w, 2) for c in (2, 4, 8) for w in (1, 2)])
_tuned_kernel = triton.autotune(
    configs=[triton.Config({"BLOCK_C": c, "ROW_TILE": row}, num_warps=w)
             for c, w, row in ([(1, 1, 0), (4, 1, 2), (1, 1, 1)] if INTERPRETED else TILES)],
    key=["channels", "num_levels", "SR", "PH", "PW", "ALIGNED"], prune_configs_by={"early_config_prune": _prune},
    warmup=25, rep=100)(_roi_align_kernel)


def roi_align_levels(features: list[torch.Tensor], rois: torch.Tensor, output_size: tuple[int, int],
                     spatial_scales: list[float], sampling_ratio: int, aligned: bool,
                     canonical_scale: float = 224.0, canonical_level: int = 4, first_level: int = 2,
                     out: torch.Tensor | None = None, tile: tuple[int, int, int] | None = None) -> torch.Tensor:
    """RoIAlign of ``rois`` [R, 5] over 1..5 float32 feature maps; with several, each RoI takes its FPN level.

    ``tile`` (channels per block, warps, row tile: see ``TILES``; the adaptive grid needs 1 or 2) forces one
    tile; by default the tile is autotuned on the process's first call for each (channels, levels, sampling,
    output size): make that call outside CUDA-graph capture, since tuning times the kernel.
    """
    if not 1 <= len(features) <= MAX_LEVELS:
        raise ValueError(f"roi_align_levels takes 1 to {MAX_LEVELS} feature maps, got {len(features)}")
    pooled_h, pooled_w = output_size
    channels = features[0].shape[1]
    if out is None:
        out = features[0].new_empty((rois.shape[0], channels, pooled_h, pooled_w))
    if rois.shape[0] == 0 or channels == 0:
        return out
    features = [f.contiguous() for f in features]
    rois = rois.contiguous()
    item = features[0].element_size()
    pad = MAX_LEVELS - len(features)
    offsets = [(f.data_ptr() - features[0].data_ptr()) // item for f in features] + [0] * pad
    heights = [f.shape[2] for f in features] + [1] * pad
    widths = [f.shape[3] for f in features] + [1] * pad
    scales = [float(s) for s in spatial_scales] + [1.0] * pad
    args = (features[0], rois, out, channels, *offsets, *heights, *widths, *scales, len(features), first_level,
            canonical_level, float(canonical_scale))
    meta = dict(INTERPRETED=INTERPRETED, SR=max(int(sampling_ratio), 0), ALIGNED=bool(aligned), PH=pooled_h,
                PW=pooled_w, BINS=triton.next_power_of_2(pooled_h * pooled_w), PWB=triton.next_power_of_2(pooled_w))
    if tile is None:
        _tuned_kernel[lambda m: (rois.shape[0], triton.cdiv(channels, _per_program(m)))](*args, **meta)
    else:
        block_c, num_warps, row_tile = tile
        if row_tile not in ((0, 1) if meta["SR"] else (1, 2)):
            raise ValueError(f"tile {tile}: sampling_ratio {sampling_ratio} takes row tiles "
                             f"{'0 or 1' if meta['SR'] else '1 or 2 (adaptive grid)'}")
        _roi_align_kernel[(rois.shape[0], triton.cdiv(channels, _per_program({"BLOCK_C": block_c,
                                                                                 "ROW_TILE": row_tile})))](
            *args, **meta, BLOCK_C=block_c, ROW_TILE=row_tile, num_warps=num_warps)
    return out


def roi_align(feature: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int], spatial_scale: float,
              sampling_ratio: int, aligned: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    """Single-level RoIAlign, as ``torchvision.ops.roi_align``."""
    return roi_align_levels([feature], rois, output_size, [spatial_scale], sampling_ratio, aligned, out=out)
