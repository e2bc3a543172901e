"""TensorRT plugin for ``mmdeploy::MMCVRoIAlign`` (and MMDeploy's own ``mmcv::MMCVRoiAlign`` spelling, ``MMCV_OP``).

Inputs: features [N, C, H, W] float32, rois [R, 5] float32 (batch index, x1, y1, x2, y2).
Output: [R, C, output_height, output_width] float32, average pooling as torchvision.ops.roi_align.
Fields (the op's, in ``__init__.py``) are MMDeploy's: output_height, output_width, spatial_scale,
sampling_ratio, mode, aligned.
"""
from __future__ import annotations

from typing import Mapping

from ..plugins import PluginSpec


class PooledRoIsPlugin(PluginSpec):
    """RoIs [R, 5] pooled from features [N, C, H, W] into [R, C, output_height, output_width], float32 throughout:
    RoIAlign and its multi-level form differ here only in which inputs hold the RoIs and the (first) features."""

    rois_at = 1
    features_at = 0

    def io_types(self, trt, values: Mapping, num_inputs: int) -> list:
        return [trt.DataType.FLOAT] * (num_inputs + 1)

    def output_shapes(self, trt, values: Mapping, inputs: list, exprs) -> list:
        out = trt.DimsExprs(4)
        out[0], out[1] = inputs[self.rois_at][0], inputs[self.features_at][1]
        out[2], out[3] = exprs.constant(values["output_height"]), exprs.constant(values["output_width"])
        return [out]

    def check_rois(self, shapes: list[tuple], where: str) -> None:
        from ...errors import BuildError

        rois = shapes[self.rois_at]
        if len(rois) != 2 or rois[1] not in (-1, 5):
            raise BuildError(f"{where}: input {self.rois_at} (rois) must be [R, 5] (batch index, x1, y1, x2, y2), "
                             f"got {list(rois)}; export the RoIs with their batch index column")


class RoIAlignPlugin(PooledRoIsPlugin):
    def check_inputs(self, values: Mapping, shapes: list[tuple], where: str) -> None:
        from ...errors import BuildError

        if len(shapes) != 2 or len(shapes[0]) != 4:
            raise BuildError(f"{where}: takes features [N, C, H, W] and rois [R, 5], got shapes {shapes}")
        self.check_rois(shapes, where)

    def enqueue(self, values: Mapping, inputs: list, outputs: list, workspace) -> None:
        from .kernel import roi_align

        roi_align(inputs[0], inputs[1], (values["output_height"], values["output_width"]), values["spatial_scale"],
                  values["sampling_ratio"], bool(values["aligned"]), out=outputs[0])

