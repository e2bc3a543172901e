"""Multi-level RoIAlign (``mmdeploy::MMCVMultiLevelRoiAlign``): torch-level function and plugin-free lowering."""
from .. import CustomOp, register_op
from .function import DOMAIN, OP_TYPE, multi_level_roi_align
from .lowering import lower_multi_level_roi_align

OP = register_op(CustomOp(DOMAIN, OP_TYPE, lower=lower_multi_level_roi_align))

__all__ = ["multi_level_roi_align", "OP"]
