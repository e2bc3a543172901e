"""Triton multi-level RoIAlign: the RoIAlign kernel picks each RoI's FPN level itself (one launch)."""
from __future__ import annotations

import torch

from ..roi_align.kernel import roi_align_levels
from .function import CANONICAL_LEVEL
from .reference import canonical_scale, first_level


def multi_level_roi_align(rois: torch.Tensor, features: list[torch.Tensor], *, output_size: tuple[int, int],
                          featmap_strides: list[float], finest_scale: float, sampling_ratio: int, aligned: bool,
                          out: torch.Tensor | None = None) -> torch.Tensor:
    """MMCVMultiLevelRoiAlign on the GPU, the level rule of ``reference.map_levels``."""
    return roi_align_levels(features, rois, output_size, [1.0 / s for s in featmap_strides], sampling_ratio,
                            aligned, canonical_scale=canonical_scale(featmap_strides, finest_scale),
                            canonical_level=CANONICAL_LEVEL, first_level=first_level(featmap_strides),
                            out=out)

