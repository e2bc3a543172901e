"""RoIAlign (``mmdeploy::MMCVRoIAlign``): torch-level function and plugin-free lowering."""
from .. import CustomOp, register_op
from .function import DOMAIN, OP_TYPE, roi_align
from .lowering import lower_roi_align

OP = register_op(CustomOp(DOMAIN, OP_TYPE, lower=lower_roi_align))

__all__ = ["roi_align", "OP"]
