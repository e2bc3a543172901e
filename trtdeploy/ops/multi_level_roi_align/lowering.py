"""Plugin-free ``mmdeploy::MMCVMultiLevelRoiAlign``: per-RoI level by threshold tests, then one RoIAlign.

The level is torchvision's LevelMapper, ``floor(4 + log2(sqrt(area) / s0) + 1e-6)`` clamped,
with s0 = finest_scale * 2**(4 - k_min). ONNX has no log2, so instead of taking a logarithm
the lowering compares ``sqrt(area) / s0`` with per-level thresholds found with torch's own
float32 ``log2`` at lowering time: the same level as torchvision for every float32 input.
All levels are then pooled by a single RoIAlign over one table of all maps (``roi_align.lowering``).
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto

from ...errors import BuildError
from ...utils.onnx_build import Emitter
from ..roi_align.lowering import emit_roi_align
from . import CANONICAL_LEVEL, OP

EPS = 1e-6


def level_thresholds(k_min: int, k_max: int, canonical_level: int = CANONICAL_LEVEL) -> np.ndarray:
    """For k in k_min+1..k_max: the least float32 ``a`` with floor(level0 + log2(a) + eps) >= k in torch float32."""
    import torch

    def level(a: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(a)
        return torch.floor(canonical_level + torch.log2(t) + torch.tensor(EPS, dtype=t.dtype)).numpy()

    found = []
    for k in range(k_min + 1, k_max + 1):
        guess = np.float32(2.0 ** (k - canonical_level - EPS))
        window = guess.view(np.int32) + np.arange(-256, 257, dtype=np.int32)   # float32 neighbours of the guess
        candidates = window.view(np.float32)
        reached = np.nonzero(level(candidates) >= k)[0]
        if not len(reached) or reached[0] == 0:
            raise AssertionError(f"no float32 level threshold near {guess} for level {k}")
        found.append(candidates[reached[0]])
    return np.asarray(found, np.float32)


def lower_multi_level_roi_align(values: dict, node: onnx.NodeProto, e: Emitter) -> None:
    """``values``: the node's fields (``OP.fields``: pooling is average and RoIs are not rescaled; strides are
    non-decreasing powers of two, gaps and repeats included, as torchvision's MultiScaleRoIAlign takes them)."""
    strides = values["featmap_strides"]
    features = list(node.input[1:])
    if len(strides) != len(features):
        raise BuildError(f"{OP.where(node)}: {len(features)} feature inputs but {len(strides)} featmap_strides; "
                         f"export one stride per feature map")
    rois = node.input[0]
    k_min, k_max = (int(round(math.log2(s))) for s in (strides[0], strides[-1]))
    s0 = float(values["finest_scale"]) * 2.0 ** (CANONICAL_LEVEL - k_min)
    _, x1, y1, x2, y2 = e.op("Split", rois, e.i64([1] * 5), axis=1, outputs=5)
    area = e.op("Mul", e.op("Sub", x2, x1), e.op("Sub", y2, y1))
    ratio = e.op("Div", e.op("Sqrt", area), e.const(np.float32(s0)))                     # [R, 1]
    # Level k_min + l reads map l; torchvision pools a RoI whose level has no map (strides such as 4, 16) to 0,
    # and so a RoI whose level is undefined (sqrt of a negative area is NaN).
    mapped = e.op("Not", e.op("IsNaN", ratio))                                              # [R, 1]
    if k_max > k_min:
        above = e.op("GreaterOrEqual", ratio, e.const(level_thresholds(k_min, k_max)))     # [R, levels - 1]
        level = e.reduce("ReduceSum", e.op("Cast", above, to=TensorProto.INT64), [1], keepdims=0)
        mapped = e.op("And", mapped, e.unsqueeze(e.op("Less", level, e.i64(len(features))), [1]))
        level = e.op("Min", level, e.i64(len(features) - 1))
    else:
        level = None
    out = emit_roi_align(e, features, [1.0 / s for s in strides], rois, level, values["output_height"],
                         values["output_width"], values["sampling_ratio"], bool(values["aligned"]))
    e.output(e.op("Where", e.op("Reshape", mapped, e.i64([-1, 1, 1, 1])), out, e.const(0.0)), node.output[0])
