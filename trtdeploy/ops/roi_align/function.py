"""RoIAlign as one graph node, ``mmdeploy::MMCVRoIAlign`` (average pooling, torchvision semantics).

Inputs: ``features [N, C, H, W]``, ``rois [R, 5]`` (batch index, x1, y1, x2, y2 in image
coordinates). Attributes (MMDeploy's): output_height, output_width, spatial_scale,
sampling_ratio (<= 0: adaptive, ceil(roi size / output size) samples per bin), mode ('avg')
and aligned (shift by -0.5 pixel). Output ``[R, C, output_height, output_width]``, equal to
``torchvision.ops.roi_align``.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import roi_align as tv_roi_align  # imported before any trace: its import fails inside one

from ...errors import ConfigError
from . import OP


def pair(output_size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(int(s) for s in output_size)
    if len(size) != 2 or min(size) <= 0:
        raise ConfigError(f"RoIAlign output_size must be a positive int or (height, width), got {output_size!r}")
    return size


class MMCVRoIAlign(torch.autograd.Function):
    """Eager: torchvision's roi_align. Export: the single ``mmdeploy::MMCVRoIAlign`` node."""

    @staticmethod
    def forward(ctx, features, rois, output_size, spatial_scale, sampling_ratio, aligned):
        return tv_roi_align(features, rois, output_size, spatial_scale, sampling_ratio, aligned)

    @staticmethod
    def symbolic(g, features, rois, output_size, spatial_scale, sampling_ratio, aligned):
        out = OP.emit(g, features, rois, output_height=output_size[0], output_width=output_size[1],
                      spatial_scale=spatial_scale, sampling_ratio=sampling_ratio, mode="avg", aligned=int(aligned))
        out.setType(pooled_type(features, rois, output_size))
        return out


def pooled_type(features, rois, output_size: tuple[int, int]):
    """The exported node's output type, [R, C, out_h, out_w] (unknown sizes left open), for shape inference."""
    channels = features.type().sizes()[1] if features.type().sizes() else None
    n_rois = rois.type().sizes()[0] if rois.type().sizes() else None
    return features.type().with_sizes([n_rois, channels, *output_size])


def roi_align(features: Tensor, rois: Tensor, output_size: int | tuple[int, int], spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False) -> Tensor:
    """``torchvision.ops.roi_align`` on ``rois [R, 5]``; exported as one ``mmdeploy::MMCVRoIAlign`` node."""
    size = pair(output_size)
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ConfigError(f"roi_align needs rois [R, 5] (batch index, x1, y1, x2, y2), got {list(rois.shape)}")
    return MMCVRoIAlign.apply(features, rois, size, float(spatial_scale), int(sampling_ratio), bool(aligned))
