"""TensorRT plugin for ``mmdeploy::MMCVMultiLevelRoiAlign``.

Inputs: rois [R, 5] float32 (batch index, x1, y1, x2, y2), then one feature map [N, C, H_l, W_l]
per entry of ``featmap_strides`` (finest first). Output: [R, C, output_height, output_width],
each RoI pooled (average, torchvision's sampling) on its FPN level (``reference.map_levels``).
Fields are MMDeploy's: output_height, output_width, pool_mode, sampling_ratio, roi_scale_factor,
finest_scale, featmap_strides, aligned.
"""
from __future__ import annotations

import math
from typing import Mapping

from ..plugins import Field, PluginSpec, register_spec
from ..roi_align.reference import MAX_LEVELS
from ..roi_align.plugin import check_rois


def _strides_ok(strides: list) -> bool:
    return (1 <= len(strides) <= MAX_LEVELS and all(s > 0 and math.log2(s).is_integer() for s in strides)
            and all(b == 2 * a for a, b in zip(strides, strides[1:])))


MULTI_LEVEL_FIELDS = (
    Field("output_height", "int", 7, lambda v: v >= 1, "an integer >= 1"),
    Field("output_width", "int", 7, lambda v: v >= 1, "an integer >= 1"),
    Field("pool_mode", "int", 1, lambda v: v == 1, "1 (average; max pooling has no torchvision equivalent here)"),
    Field("sampling_ratio", "int", 2, lambda v: v >= 0, "an integer >= 0 (0: adaptive)"),
    Field("roi_scale_factor", "float", -1.0, lambda v: v <= 0 or v == 1.0,
          "1.0 or <= 0 (RoI rescaling is not supported)"),
    Field("finest_scale", "int", 56, lambda v: v > 0, "an integer > 0"),
    Field("featmap_strides", "floats", valid=_strides_ok,
          expected=f"1 to {MAX_LEVELS} powers of two, each twice the one before (e.g. [4, 8, 16, 32])"),
    Field("aligned", "int", 0, lambda v: v in (0, 1), "0 or 1"),
)


class MultiLevelRoiAlignPlugin(PluginSpec):
    name = "MMCVMultiLevelRoiAlign"
    fields = MULTI_LEVEL_FIELDS

    def io_types(self, trt, values: Mapping, num_inputs: int) -> list:
        return [trt.DataType.FLOAT] * (num_inputs + 1)

    def output_shapes(self, trt, values: Mapping, inputs: list, exprs) -> list:
        out = trt.DimsExprs(4)
        out[0], out[1] = inputs[0][0], inputs[1][1]
        out[2], out[3] = exprs.constant(values["output_height"]), exprs.constant(values["output_width"])
        return [out]

    def check_inputs(self, values: Mapping, shapes: list[tuple], where: str) -> None:
        from ...errors import BuildError

        levels = len(values["featmap_strides"])
        if len(shapes) != levels + 1 or any(len(s) != 4 for s in shapes[1:]):
            raise BuildError(f"{where}: takes rois [R, 5] then {levels} feature maps [N, C, H, W] (one per "
                             f"featmap_strides entry), got shapes {shapes}; make featmap_strides match the inputs")
        check_rois(shapes, 0, where)

    def enqueue(self, values: Mapping, inputs: list, outputs: list, workspace) -> None:
        from .kernel import multi_level_roi_align

        multi_level_roi_align(inputs[0], inputs[1:], output_size=(values["output_height"], values["output_width"]),
                              featmap_strides=values["featmap_strides"], finest_scale=values["finest_scale"],
                              sampling_ratio=values["sampling_ratio"], aligned=bool(values["aligned"]),
                              out=outputs[0])


PLUGIN = register_spec(MultiLevelRoiAlignPlugin())
