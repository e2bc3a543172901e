"""``mmdeploy::MMCVRoIAlign`` (and MMDeploy's ``mmcv::MMCVRoiAlign``) on ONNX Runtime: torchvision's roi_align."""
from __future__ import annotations

import torch

from ..ort_ops import OrtKernel


def compute(values: dict, features, rois):
    from torchvision.ops import roi_align

    size = (values["output_height"], values["output_width"])
    out = roi_align(torch.from_numpy(features), torch.from_numpy(rois), size, values["spatial_scale"],
                    values["sampling_ratio"], bool(values["aligned"]))
    return [out.numpy()]


KERNEL = OrtKernel(2, ("float32",), compute)
