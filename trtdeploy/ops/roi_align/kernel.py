"""Triton RoIAlign (average, torchvision semantics) for one or several feature levels.

Divisions, square root and log2 are the IEEE / libdevice ones torchvision's CUDA code uses
(Triton's defaults are approximate), so sampling grids and FPN levels come out the same.
One program computes one RoI's bins for a block of channels: a [BLOCK_C, bins] tile whose
rows are channels and whose columns are the output bins, so the stores are contiguous and
neighbouring bins read neighbouring pixels. Up to ``MAX_LEVELS`` feature maps are passed as
element offsets from the first one (an integer select, not a pointer select), and each
RoI's level is picked in the kernel (``level_of``) so that one launch serves all levels.
A fixed ``sampling_ratio`` is a compile-time constant: its sample loops unroll, so all of a
bin's loads are in flight at once; the adaptive grid steps ``UNROLL`` columns at a time for the
same reason. The tile (channels per program, warps, ``UNROLL``) is autotuned per shape key.
``reference.py`` computes the same thing in PyTorch.
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
def _bilinear(rows, keep, y, x, height, width):
    """torchvision's bilinear sample at (y, x) [bins] of each channel plane ``rows`` -> [channels, bins]."""
    outside = (y < -1.0) | (y > height) | (x < -1.0) | (x > width)
    yc = tl.maximum(y, 0.0)
    xc = tl.maximum(x, 0.0)
    y_low = yc.to(tl.int32)
    x_low = xc.to(tl.int32)
    y_edge = y_low >= height - 1
    x_edge = x_low >= width - 1
    y_low = tl.where(y_edge, height - 1, y_low)
    x_low = tl.where(x_edge, width - 1, x_low)
    yc = tl.where(y_edge, y_low.to(tl.float32), yc)
    xc = tl.where(x_edge, x_low.to(tl.float32), xc)
    y_high = tl.where(y_edge, y_low, y_low + 1)
    x_high = tl.where(x_edge, x_low, x_low + 1)
    ly = yc - y_low
    lx = xc - x_low
    hy = 1.0 - ly
    hx = 1.0 - lx
    m = keep & (~outside)[None, :]
    v1 = tl.load(rows[:, None] + (y_low * width + x_low)[None, :], mask=m, other=0.0)
    v2 = tl.load(rows[:, None] + (y_low * width + x_high)[None, :], mask=m, other=0.0)
    v3 = tl.load(rows[:, None] + (y_high * width + x_low)[None, :], mask=m, other=0.0)
    v4 = tl.load(rows[:, None] + (y_high * width + x_high)[None, :], mask=m, other=0.0)
    return (hy * hx)[None, :] * v1 + (hy * lx)[None, :] * v2 + (ly * hx)[None, :] * v3 + (ly * lx)[None, :] * v4


@triton.jit
def _roi_align_kernel(feat, rois, out, channels,
                      off0, off1, off2, off3, off4, h0, h1, h2, h3, h4, w0, w1, w2, w3, w4,
                      sc0, sc1, sc2, sc3, sc4, num_levels, first_level, canonical_level, canonical_scale,
                      INTERPRETED: tl.constexpr, SR: tl.constexpr, ALIGNED: tl.constexpr, PH: tl.constexpr,
                      PW: tl.constexpr, BINS: tl.constexpr, BLOCK_C: tl.constexpr, UNROLL: tl.constexpr):
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

    bins = tl.arange(0, BINS)
    bin_y = (bins // PW).to(tl.float32)
    bin_x = (bins % PW).to(tl.float32)
    chans = cblock * BLOCK_C + tl.arange(0, BLOCK_C)
    chan_ok = chans < channels
    plane = height.to(tl.int64) * width
    rows = feat + base + (batch * channels + chans.to(tl.int64)) * plane  # [BLOCK_C] pointers
    keep = chan_ok[:, None] & (bins < PH * PW)[None, :]
    total = tl.zeros((BLOCK_C, BINS), dtype=tl.float32)
    if SR > 0:  # a fixed grid: unrolled, so all its loads are in flight together
        for iy in tl.static_range(SR):
            y = start_y + bin_y * bin_h + tl.div_rn((iy + 0.5) * bin_h, SR * 1.0)
            for ix in tl.static_range(SR):
                x = start_x + bin_x * bin_w + tl.div_rn((ix + 0.5) * bin_w, SR * 1.0)
                total += _bilinear(rows, keep, y, x, height, width)
        count = SR * SR * 1.0
    else:  # torchvision's adaptive grid, ceil(bin size) samples a side; UNROLL columns at a time
        grid_h = tl.ceil(bin_h).to(tl.int32)
        grid_w = tl.ceil(bin_w).to(tl.int32)
        for iy in range(0, grid_h):
            y = start_y + bin_y * bin_h + tl.div_rn((iy + 0.5) * bin_h, grid_h.to(tl.float32))
            for ix0 in range(0, grid_w, UNROLL):
                for u in tl.static_range(UNROLL):
                    ix = ix0 + u
                    x = start_x + bin_x * bin_w + tl.div_rn((ix + 0.5) * bin_w, grid_w.to(tl.float32))
                    total += _bilinear(rows, keep & (ix < grid_w), y, x, height, width)
        count = tl.maximum(grid_h * grid_w, 1).to(tl.float32)
    dest = out + (r * channels + chans.to(tl.int64))[:, None] * (PH * PW) + bins[None, :]
    tl.store(dest, tl.div_rn(total, count), mask=keep)


def _prune(configs, named_args, **kwargs):
    """Drop tiles wider than the channels, and column unrolling where the grid is fixed (it changes nothing)."""
    wide = triton.next_power_of_2(named_args["channels"])
    fixed = kwargs.get("SR", named_args.get("SR", 0)) > 0
    return [c for c in configs if c.kwargs["BLOCK_C"] <= wide and not (fixed and c.kwargs["UNROLL"] > 1)]


# Tiles: channels per program, warps and (adaptive sampling) grid columns per step. Tuned once per key
# (channels, levels, sampling grid, output size) by timing every tile on the process's first call, and kept
# for the process. Not on disk: the adaptive grid's cost follows the RoI sizes, which the key cannot see
# (a tile tuned on another workload's RoIs ran 1.4x slower than the best one on the H200).
TILES = [(c, w, u) for c in (1, 2, 4) for w in (1, 2, 4) for u in (1, 2)]
_tuned_kernel = triton.autotune(
    configs=[triton.Config({"BLOCK_C": c, "UNROLL": u}, num_warps=w) for c, w, u in (TILES[:1] if INTERPRETED
                                                                                    else TILES)],
    key=["channels", "num_levels", "SR", "PH", "PW", "ALIGNED"], prune_configs_by={"early_config_prune": _prune},
    warmup=25, rep=100)(_roi_align_kernel)


def roi_align_levels(features: list[torch.Tensor], rois: torch.Tensor, output_size: tuple[int, int],
                     spatial_scales: list[float], sampling_ratio: int, aligned: bool,
                     canonical_scale: float = 224.0, canonical_level: int = 4, first_level: int = 2,
                     out: torch.Tensor | None = None, tile: tuple[int, int, int] | None = None) -> torch.Tensor:
    """RoIAlign of ``rois`` [R, 5] over 1..5 float32 feature maps; with several, each RoI takes its FPN level.

    ``tile`` (channels per program, warps, adaptive-grid columns per step) forces one tile; by default
    the tile is autotuned on the process's first call for each (channels, levels, sampling, output size):
    make that call outside CUDA-graph capture, since tuning times the kernel.
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
                PW=pooled_w, BINS=triton.next_power_of_2(pooled_h * pooled_w))
    if tile is None:
        _tuned_kernel[lambda m: (rois.shape[0], triton.cdiv(channels, m["BLOCK_C"]))](*args, **meta)
    else:
        block_c, num_warps, unroll = tile
        _roi_align_kernel[(rois.shape[0], triton.cdiv(channels, block_c))](
            *args, **meta, BLOCK_C=block_c, UNROLL=unroll, num_warps=num_warps)
    return out


def roi_align(feature: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int], spatial_scale: float,
              sampling_ratio: int, aligned: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    """Single-level RoIAlign, as ``torchvision.ops.roi_align``."""
    return roi_align_levels([feature], rois, output_size, [spatial_scale], sampling_ratio, aligned, out=out)
