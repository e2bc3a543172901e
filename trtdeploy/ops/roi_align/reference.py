"""Pure-PyTorch RoIAlign that computes what ``kernel.py`` computes, step for step.

It walks the same sampling grid (torchvision's: ``sampling_ratio`` points per bin, or
``ceil(roi_size / bins)`` when it is 0), with the same bilinear rule and accumulation
order, so the Triton kernel can be checked against it anywhere and it can be checked
against ``torchvision.ops.roi_align`` on the CPU. Several feature levels are handled by
picking each RoI's level first (``levels``), as the kernel does.
"""
from __future__ import annotations

import torch

from . import MAX_LEVELS  # noqa: F401  (the kernel reads it here)


def _bilinear(feature: torch.Tensor, batch: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """torchvision's bilinear sample of ``feature[batch]`` at (y, x) [R, bins] -> [R, C, bins]."""
    height, width = feature.shape[-2:]
    outside = (y < -1.0) | (y > height) | (x < -1.0) | (x > width)
    y = y.clamp(min=0)
    x = x.clamp(min=0)
    y_low = y.floor().long()
    x_low = x.floor().long()
    y_edge = y_low >= height - 1
    x_edge = x_low >= width - 1
    y_low = torch.where(y_edge, height - 1, y_low)
    x_low = torch.where(x_edge, width - 1, x_low)
    y = torch.where(y_edge, y_low.to(y.dtype), y)
    x = torch.where(x_edge, x_low.to(x.dtype), x)
    y_high = torch.where(y_edge, y_low, y_low + 1)
    x_high = torch.where(x_edge, x_low, x_low + 1)
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    flat = feature.flatten(2)[batch]  # [R, C, H*W]

    def at(yy, xx):
        return flat.gather(2, (yy * width + xx)[:, None, :].expand(-1, flat.shape[1], -1))

    value = ((hy * hx)[:, None] * at(y_low, x_low) + (hy * lx)[:, None] * at(y_low, x_high)
             + (ly * hx)[:, None] * at(y_high, x_low) + (ly * lx)[:, None] * at(y_high, x_high))
    return torch.where(outside[:, None], 0.0, value)


def roi_align_levels(features: list[torch.Tensor], rois: torch.Tensor, levels: torch.Tensor,
                     output_size: tuple[int, int], spatial_scales: list[float], sampling_ratio: int,
                     aligned: bool) -> torch.Tensor:
    """Average RoIAlign of ``rois`` [R, 5] (batch, x1, y1, x2, y2), each on ``features[levels[r]]``."""
    pooled_h, pooled_w = output_size
    channels = features[0].shape[1]
    out = features[0].new_zeros((rois.shape[0], channels, pooled_h * pooled_w))
    bins = torch.arange(pooled_h * pooled_w, device=rois.device)
    bin_y, bin_x = (bins // pooled_w).to(rois.dtype), (bins % pooled_w).to(rois.dtype)
    offset = 0.5 if aligned else 0.0
    for level, (feature, scale) in enumerate(zip(features, spatial_scales)):
        pick = (levels == level).nonzero().flatten()
        if pick.numel() == 0:
            continue
        r = rois[pick]
        batch = r[:, 0].long()
        start_x, start_y = r[:, 1] * scale - offset, r[:, 2] * scale - offset
        roi_w, roi_h = r[:, 3] * scale - offset - start_x, r[:, 4] * scale - offset - start_y
        if not aligned:
            roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
        bin_h, bin_w = roi_h / pooled_h, roi_w / pooled_w
        grid_h = torch.full_like(batch, sampling_ratio) if sampling_ratio > 0 else torch.ceil(roi_h / pooled_h).long()
        grid_w = torch.full_like(batch, sampling_ratio) if sampling_ratio > 0 else torch.ceil(roi_w / pooled_w).long()
        total = torch.zeros((pick.numel(), channels, pooled_h * pooled_w), dtype=feature.dtype, device=feature.device)
        for iy in range(int(grid_h.max()) if grid_h.numel() else 0):
            y = start_y[:, None] + bin_y[None] * bin_h[:, None] + (iy + 0.5) * bin_h[:, None] / grid_h[:, None]
            for ix in range(int(grid_w.max())):
                x = start_x[:, None] + bin_x[None] * bin_w[:, None] + (ix + 0.5) * bin_w[:, None] / grid_w[:, None]
                inside = ((iy < grid_h) & (ix < grid_w))[:, None, None]
                total += torch.where(inside, _bilinear(feature, batch, y, x), 0.0)
        count = (grid_h * grid_w).clamp(min=1).to(feature.dtype)
        out[pick] = total / count[:, None, None]
    return out.view(rois.shape[0], channels, pooled_h, pooled_w)


def roi_align_reference(feature: torch.Tensor, rois: torch.Tensor, output_size: tuple[int, int],
                        spatial_scale: float, sampling_ratio: int, aligned: bool) -> torch.Tensor:
    """Single-level RoIAlign (average), equal to ``torchvision.ops.roi_align``."""
    levels = torch.zeros(rois.shape[0], dtype=torch.long, device=rois.device)
    return roi_align_levels([feature], rois, levels, output_size, [spatial_scale], sampling_ratio, aligned)
