"""Graph passes: each takes an ``onnx.ModelProto`` and returns one, with a stated guarantee."""
from .basic import check, infer_shapes, simplify, to_fp16
from .lower_custom_ops import lower_custom_ops

__all__ = ["check", "infer_shapes", "lower_custom_ops", "simplify", "to_fp16"]
