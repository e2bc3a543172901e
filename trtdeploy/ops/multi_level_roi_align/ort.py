"""``mmdeploy::MMCVMultiLevelRoiAlign`` on ONNX Runtime: each RoI's level, then torchvision's roi_align."""
from __future__ import annotations

import torch

from ..ort_ops import OrtKernel
from ..roi_align import MAX_LEVELS
from . import consecutive_levels
from .reference import map_levels


def compute(values: dict, rois, *features):
    from torchvision.ops import roi_align

    strides = values["featmap_strides"]
    maps = [torch.from_numpy(f) for f in features[:len(strides)]]  # the rest pad the fixed input count
    rois = torch.from_numpy(rois)
    size = (values["output_height"], values["output_width"])
    levels = map_levels(rois, strides, values["finest_scale"])
    out = maps[0].new_zeros((rois.shape[0], maps[0].shape[1], *size))
    for level, (feature, stride) in enumerate(zip(maps, strides)):
        pick = (levels == level).nonzero().flatten()
        out[pick] = roi_align(feature, rois[pick], size, 1.0 / stride, values["sampling_ratio"],
                              bool(values["aligned"]))
    return [out.numpy()]


KERNEL = OrtKernel(1 + MAX_LEVELS, ("float32",), compute, check=consecutive_levels)
