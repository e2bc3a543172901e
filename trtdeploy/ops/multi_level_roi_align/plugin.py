"""TensorRT plugin for ``mmdeploy::MMCVMultiLevelRoiAlign``.

Inputs: rois [R, 5] float32 (batch index, x1, y1, x2, y2), then one feature map [N, C, H_l, W_l]
per entry of ``featmap_strides`` (finest first). Output: [R, C, output_height, output_width],
each RoI pooled (average, torchvision's sampling) on its FPN level (``reference.map_levels``).
Fields are MMDeploy's: output_height, output_width, pool_mode, sampling_ratio, roi_scale_factor,
finest_scale, featmap_strides, aligned.
"""
from __future__ import annotations

from typing import Mapping

from ..roi_align.plugin import PooledRoIsPlugin
from . import consecutive_levels


class MultiLevelRoiAlignPlugin(PooledRoIsPlugin):
    rois_at = 0
    features_at = 1

    def check_values(self, values: Mapping, where: str) -> None:
        consecutive_levels(values, where)

    def check_inputs(self, values: Mapping, shapes: list[tuple], where: str) -> None:
        from ...errors import BuildError

        levels = len(values["featmap_strides"])
        if len(shapes) != levels + 1 or any(len(s) != 4 for s in shapes[1:]):
            raise BuildError(f"{where}: takes rois [R, 5] then {levels} feature maps [N, C, H, W] (one per "
                             f"featmap_strides entry), got shapes {shapes}; make featmap_strides match the inputs")
        self.check_rois(shapes, where)

    def enqueue(self, values: Mapping, inputs: list, outputs: list, workspace) -> None:
        from .kernel import multi_level_roi_align

        multi_level_roi_align(inputs[0], inputs[1:], output_size=(values["output_height"], values["output_width"]),
                              featmap_strides=values["featmap_strides"], finest_scale=values["finest_scale"],
                              sampling_ratio=values["sampling_ratio"], aligned=bool(values["aligned"]),
                              out=outputs[0])

