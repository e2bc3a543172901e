"""TensorRT plugin for ``mmdeploy::MMCVMultiLevelRoiAlign``.

Inputs: rois [R, 5] float32 (batch index, x1, y1, x2, y2), then one feature map [N, C, H_l, W_l]
per entry of ``featmap_strides`` (finest first). Output: [R, C, output_height, output_width],
each RoI pooled (average, torchvision's sampling) on its FPN level (``reference.map_levels``).
Fields are MMDeploy's: output_height, output_width, pool_mode, sampling_ratio, roi_scale_factor,
finest_scale, featmap_strides, aligned.
"""
from __future__ import annotations

from typing import Mapping

from ..plugins import PluginSpec
from ..roi_align.plugin import check_rois
from . import consecutive_levels


class MultiLevelRoiAlignPlugin(PluginSpec):
    def check_values(self, values: Mapping, where: str) -> None:
        consecutive_levels(values, where)

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

