"""Graph passes: each takes an ``onnx.ModelProto`` and returns one, with a stated guarantee."""
from .basic import builds_as_read, builds_the_same, check, infer_shapes, name_nodes, simplify
from .fp16 import to_fp16_body
from .lower_custom_ops import lower_custom_ops
from .parser_fixes import fix_for_parser
from .profile_shapes import check_profile_shapes

__all__ = ["builds_as_read", "builds_the_same", "check", "check_profile_shapes", "fix_for_parser", "infer_shapes", "lower_custom_ops", "name_nodes",
           "simplify", "to_fp16_body"]
