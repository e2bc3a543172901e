"""Pure-PyTorch multi-level RoIAlign: each RoI's FPN level, then RoIAlign on that level.

The level rule is torchvision's ``LevelMapper`` (FPN paper, eq. 1) read back from MMDeploy's
fields as ``function.py`` writes them: the finest level is ``k_min = log2(featmap_strides[0])``
and the canonical box size ``finest_scale * 2**(CANONICAL_LEVEL - k_min)`` maps to
``CANONICAL_LEVEL`` (strides 4..32 and finest_scale 56: torchvision's 224 at level 4). The
kernel computes the same level with the same float32 operations.
"""
from __future__ import annotations

import math

import torch

from ..roi_align.reference import roi_align_levels
from . import CANONICAL_LEVEL


def first_level(featmap_strides: list[float]) -> int:
    return int(round(math.log2(featmap_strides[0])))


def canonical_scale(featmap_strides: list[float], finest_scale: float) -> float:
    return float(finest_scale) * 2.0 ** (CANONICAL_LEVEL - first_level(featmap_strides))


def map_levels(rois: torch.Tensor, featmap_strides: list[float], finest_scale: float) -> torch.Tensor:
    """FPN level index (0 = finest) of each RoI [R, 5]."""
    k_min = first_level(featmap_strides)
    size = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    level = torch.floor(CANONICAL_LEVEL + torch.log2(size / canonical_scale(featmap_strides, finest_scale))
                        + torch.tensor(1e-6, dtype=size.dtype))
    return level.clamp(k_min, k_min + len(featmap_strides) - 1).long() - k_min


def multi_level_roi_align_reference(rois: torch.Tensor, features: list[torch.Tensor], *, output_size: tuple[int, int],
                                    featmap_strides: list[float], finest_scale: float, sampling_ratio: int,
                                    aligned: bool) -> torch.Tensor:
    """MMCVMultiLevelRoiAlign (average pooling) -> [R, C, output_h, output_w]."""
    levels = map_levels(rois, featmap_strides, finest_scale)
    return roi_align_levels(features, rois, levels, output_size, [1.0 / s for s in featmap_strides],
                            sampling_ratio, aligned)
