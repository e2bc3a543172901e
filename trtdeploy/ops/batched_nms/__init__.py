"""Batched multi-class NMS (``mmdeploy::TRTBatchedNMS``): torch-level function and plugin-free lowering."""
from .. import CustomOp, register_op
from .function import DOMAIN, OP_TYPE, multiclass_nms
from .lowering import lower_batched_nms

OP = register_op(CustomOp(DOMAIN, OP_TYPE, lower=lower_batched_nms))

__all__ = ["multiclass_nms", "OP"]
