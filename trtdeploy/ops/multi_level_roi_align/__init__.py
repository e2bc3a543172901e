"""Multi-level RoIAlign (``mmdeploy::MMCVMultiLevelRoiAlign``), described once: MMDeploy's node and its fields.

Parts: the torch-level function ``multi_level_roi_align`` (``function.py``), the plugin-free lowering
(``lowering.py``), the TensorRT plugin (``plugin.py``) and the ONNX Runtime implementation (``ort.py``);
each is imported when first used.
"""
import math

from .. import CustomOp, Field, lazy_function, register_op
from ..roi_align import MAX_LEVELS

CANONICAL_LEVEL = 4  # torchvision's default; the lowering reads the mapping back with it


def _powers_of_two(strides: list) -> bool:
    return (1 <= len(strides) <= MAX_LEVELS and all(s > 0 and math.log2(s).is_integer() for s in strides)
            and strides == sorted(strides))


FIELDS = (
    Field("output_height", "int", 7, lambda v: v >= 1, "an integer >= 1"),
    Field("output_width", "int", 7, lambda v: v >= 1, "an integer >= 1"),
    Field("pool_mode", "int", 1, lambda v: v == 1, "1 (average; max pooling has no torchvision equivalent here)"),
    Field("sampling_ratio", "int", 2),  # samples per bin side; <= 0: adaptive, as torchvision
    Field("roi_scale_factor", "float", -1.0, lambda v: v <= 0 or v == 1.0,
          "1.0 or <= 0 (RoI rescaling is not supported)"),
    Field("finest_scale", "int", 56, lambda v: v > 0, "an integer > 0"),
    Field("featmap_strides", "floats", valid=_powers_of_two,
          expected=f"1 to {MAX_LEVELS} powers of two, non-decreasing (finest first, e.g. [4, 8, 16, 32])"),
    Field("aligned", "int", 0, lambda v: v in (0, 1), "0 or 1"),
)


def consecutive_levels(values: dict, where: str) -> None:
    """The plugin and the ONNX Runtime kernel map RoIs onto consecutive FPN levels only (the lowering takes any)."""
    from ...errors import BuildError

    strides = values["featmap_strides"]
    if any(b != 2 * a for a, b in zip(strides, strides[1:])):
        raise BuildError(f"{where}: featmap_strides {strides} must each be twice the one before (e.g. [4, 8, 16, 32]) "
                         f"for the plugin and the ONNX Runtime kernel; use the plugin-free route "
                         f"(backend_config.custom_ops='plugin-free') for other strides")


OP = register_op(CustomOp("mmdeploy", "MMCVMultiLevelRoiAlign", FIELDS,
                          lowering=f"{__name__}.lowering:lower_multi_level_roi_align",
                          plugin=f"{__name__}.plugin:MultiLevelRoiAlignPlugin", ort=f"{__name__}.ort:KERNEL"))

__getattr__ = lazy_function(f"{__name__}.function", ("multi_level_roi_align",))
__all__ = ["OP", "FIELDS", "CANONICAL_LEVEL", "multi_level_roi_align"]
