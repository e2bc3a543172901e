"""Multi-level (FPN) RoIAlign as one graph node, ``mmdeploy::MMCVMultiLevelRoiAlign``.

Inputs (MMDeploy's order): ``rois [R, 5]`` then one feature map per level, finest first.
Each RoI is pooled from the level torchvision's ``MultiScaleRoIAlign`` picks (its
``LevelMapper``): ``floor(canonical_level + log2(sqrt(area) / canonical_scale) + 1e-6)``
clamped to the levels. The node stores that as MMDeploy's ``finest_scale`` =
canonical_scale * 2**(k_min - canonical_level) (56 for torchvision's 224 / 4 and strides 4..32),
with featmap_strides, output_height, output_width, sampling_ratio, aligned, pool_mode=1
(avg) and roi_scale_factor=1. Output ``[R, C, output_height, output_width]``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor
from torchvision.ops import roi_align as tv_roi_align  # imported before any trace: its import fails inside one
from torchvision.ops.poolers import LevelMapper

from ...errors import ConfigError
from ..roi_align.function import pair, pooled_type
from . import CANONICAL_LEVEL, OP



def finest_scale(featmap_strides: Sequence[float], canonical_scale: float, canonical_level: int) -> int:
    """MMDeploy's finest_scale for torchvision's level mapping; it must be a whole number."""
    value = canonical_scale * 2.0 ** (math.log2(featmap_strides[0]) - canonical_level)
    if value != int(value) or value <= 0:
        raise ConfigError(f"canonical_scale={canonical_scale} with canonical_level={canonical_level} and the finest "
                          f"stride {featmap_strides[0]} gives finest_scale={value}, which must be a positive integer")
    return int(value)


def multi_level_roi_align_reference(features: Sequence[Tensor], rois: Tensor, output_size: tuple[int, int],
                                    featmap_strides: Sequence[float], sampling_ratio: int, aligned: bool,
                                    canonical_scale: float, canonical_level: int) -> Tensor:
    """torchvision's MultiScaleRoIAlign pooling for ``rois [R, 5]`` with known strides."""
    k_min, k_max = (int(round(math.log2(s))) for s in (featmap_strides[0], featmap_strides[-1]))
    levels = LevelMapper(k_min, k_max, canonical_scale, canonical_level)([rois[:, 1:]])
    out = features[0].new_zeros((rois.shape[0], features[0].shape[1], *output_size))
    for level, (feature, stride) in enumerate(zip(features, featmap_strides)):
        idx = torch.where(levels == level)[0]
        out[idx] = tv_roi_align(feature, rois[idx], output_size, 1.0 / stride, sampling_ratio, aligned)
    return out


class MMCVMultiLevelRoiAlign(torch.autograd.Function):
    """Eager: the torchvision reference. Export: the single ``mmdeploy::MMCVMultiLevelRoiAlign`` node."""

    @staticmethod
    def forward(ctx, rois, output_size, featmap_strides, sampling_ratio, aligned, canonical_scale, canonical_level,
                *features):
        return multi_level_roi_align_reference(features, rois, output_size, featmap_strides, sampling_ratio, aligned,
                                               canonical_scale, canonical_level)

    @staticmethod
    def symbolic(g, rois, output_size, featmap_strides, sampling_ratio, aligned, canonical_scale, canonical_level,
                 *features):
        out = OP.emit(g, rois, *features, output_height=output_size[0], output_width=output_size[1], pool_mode=1,
                      sampling_ratio=sampling_ratio, roi_scale_factor=1.0,
                      finest_scale=finest_scale(featmap_strides, canonical_scale, canonical_level),
                      featmap_strides=[float(s) for s in featmap_strides], aligned=int(aligned))
        out.setType(pooled_type(features[0], rois, output_size))
        return out


def multi_level_roi_align(features: Sequence[Tensor], rois: Tensor, output_size: int | tuple[int, int],
                          featmap_strides: Sequence[float], sampling_ratio: int = 2, aligned: bool = False, *,
                          canonical_scale: float = 224, canonical_level: int = CANONICAL_LEVEL) -> Tensor:
    """torchvision's ``MultiScaleRoIAlign`` on ``rois [R, 5]``; exported as one MMDeploy node.

    ``featmap_strides`` are the feature maps' strides, finest first, powers of two (4, 8, 16, 32).
    """
    size = pair(output_size)
    strides = [float(s) for s in featmap_strides]
    if len(strides) != len(features) or not strides:
        raise ConfigError(f"multi_level_roi_align got {len(features)} feature maps but {len(strides)} featmap_strides")
    if any(s <= 0 or 2 ** round(math.log2(s)) != s for s in strides) or strides != sorted(strides):
        raise ConfigError(f"featmap_strides must be non-decreasing powers of two (e.g. [4, 8, 16, 32]), got {strides}")
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ConfigError(f"multi_level_roi_align needs rois [R, 5] (batch index, x1, y1, x2, y2), "
                          f"got {list(rois.shape)}")
    finest_scale(strides, canonical_scale, canonical_level)
    return MMCVMultiLevelRoiAlign.apply(rois, size, strides, int(sampling_ratio), bool(aligned),
                                        float(canonical_scale), int(canonical_level), *features)
