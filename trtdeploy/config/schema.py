"""The fields a deploy config may hold, with their types.

Names follow MMDeploy's deploy configs so that an MMDeploy user's file keeps working.
A nested dict is a sub-section; a tuple of types is "any of these"; ``object`` is "anything".
"""
from __future__ import annotations

NoneType = type(None)
NUMBER = (int, float)
SHAPE = (list, tuple)

SHAPE_RANGE = {"min_shape": SHAPE, "opt_shape": SHAPE, "max_shape": SHAPE}

DEPLOY_SCHEMA: dict = {
    "onnx_config": {
        "type": str,
        "export_params": bool,
        "keep_initializers_as_inputs": bool,
        "opset_version": int,
        "save_file": str,
        "input_names": (list, tuple),
        "output_names": (list, tuple),
        "input_shape": (list, tuple, NoneType),
        "input_dtypes": (dict, NoneType),  # name -> dtype of inputs that are not float32 images, e.g. token ids
        "optimize": bool,
        "dynamic_axes": (dict, NoneType),
        "verbose": bool,
        "simplify": bool,
    },
    "codebase_config": {
        "type": str,
        "task": str,
        "model_type": str,
        "post_processing": dict,
        "export_postprocess_mask": bool,
        "preprocess": dict,
        "class_names": (list, tuple, NoneType),
        "topk": int,
        "with_argmax": bool,
    },
    "backend_config": {
        "type": str,
        "precision": str,
        "custom_ops": str,
        "common_config": {
            "fp16_mode": bool,
            "int8_mode": bool,
            "precision": str,  # fp32, fp16, bf16 or int8 (the *_mode flags' counterpart)
            "fp32_nodes": (list, tuple),  # FP16/BF16: node-name patterns kept in FP32 (calib_config.fp32_nodes for INT8)
            "max_workspace_size": int,
            "tactic_sources": (list, tuple, NoneType),
            "builder_optimization_level": (int, NoneType),
            "timing_cache": (str, NoneType),
            "hardware_compatibility_level": (str, NoneType),
            "compute_capabilities": (list, tuple, NoneType),
            "version_compatible": bool,
            "strongly_typed": (bool, NoneType),
            "explicit_quantization": (bool, NoneType),
            "profiling_verbosity": (str, NoneType),
        },
        "model_inputs": (list, tuple),
        "providers": (list, tuple, NoneType),
        "winograd": bool,  # ONNX Runtime FP32: 3x3 convolutions as Winograd F(4x4,3x3) in <stem>_cpu.onnx (default True)
    },
    "calib_config": dict,
    "compare_config": dict,  # tolerances for `trtdeploy compare`: atol, rtol, cosine (number or {output: number})
    "dataset_config": dict,
    "ir_config": dict,
    "partition_config": (dict, NoneType),
    "function_rewriter": object,
}

# onnx_config has defaults for every field (and an ONNX file brings its own names and axes); the backend has none.
TOP_LEVEL_REQUIRED = ("backend_config",)

# onnx_config.input_dtypes values: what an exported input may be.
INPUT_DTYPES = ("float32", "float16", "int64", "int32", "int8", "uint8", "bool")

# Values the builder options may take (checked when the config is loaded, before any export).
# Tactic sources with the TensorRT history a warning quotes when the installed one lacks them.
TACTIC_SOURCES = {
    "CUBLAS": "deprecated in TensorRT 10.0 and absent from TensorRT-RTX",
    "CUBLAS_LT": "deprecated in TensorRT 9.0 and absent from TensorRT-RTX",
    "CUDNN": "deprecated in TensorRT 10.0 and absent from TensorRT-RTX",
    "EDGE_MASK_CONVOLUTIONS": "added in TensorRT 8.0",
    "JIT_CONVOLUTIONS": "added in TensorRT 8.5",
}
HARDWARE_COMPATIBILITY_LEVELS = ("NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY")
# LAYER_NAMES_ONLY/DETAILED/NONE since TensorRT 8.2; DEFAULT/VERBOSE are their older names.
PROFILING_VERBOSITIES = ("LAYER_NAMES_ONLY", "DETAILED", "NONE", "DEFAULT", "VERBOSE")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
