"""Graph passes: each takes an ``onnx.ModelProto`` and returns one, with a stated guarantee."""
from .basic import check, infer_shapes, simplify, to_fp16

__all__ = ["check", "infer_shapes", "simplify", "to_fp16"]
