"""INT8 for ONNX Runtime: a Q/DQ graph whose patterns the CPU provider fuses into integer kernels.

Same dataset config, calibration file and ranges as the TensorRT route (``calib_config``); the graph
differs in placement (output Q/DQ after each quantized layer), uint8 activations and int32 biases
(``qdq_scheme.py``). The artefact is ``end2end_int8.onnx``, which run, test,
profile and serving load like any ONNX file.
"""
from __future__ import annotations

from pathlib import Path

import onnx

from ...calibration import CalibrationFile, calibration_file_path
from ...calibration.qdq import RANGES_FILE, calib_method, check_calibration_shapes, model_inputs, quantized_graph
from ...config import DeployConfig, ShapeRange
from ...errors import DatasetError
from ...utils.fileio import atomic_write_bytes
from ...utils.logging import logger
from ..base import BuildResult
from .qdq_scheme import SCHEME


def _io(model: onnx.ModelProto) -> dict[str, list[dict]]:
    def spec(v) -> dict:
        t = v.type.tensor_type
        return {"name": v.name, "dtype": str(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)),
                "shape": [d.dim_value if d.HasField("dim_value") else (d.dim_param or -1) for d in t.shape.dim]}
    inits = {i.name for i in model.graph.initializer}
    return {"inputs": [spec(v) for v in model.graph.input if v.name not in inits],
            "outputs": [spec(v) for v in model.graph.output]}


def build_int8(onnx_path: Path, work_dir: Path, cfg: DeployConfig) -> BuildResult:
    """Quantize ``onnx_path`` with the work dir's calibration data; writes ``<stem>_int8.onnx`` beside it."""
    calib_path = calibration_file_path(cfg, work_dir)
    if not calib_path.is_file():
        raise DatasetError(f"{calib_path} does not exist; run `trtdeploy convert` with --calib-dataset-cfg to collect it")
    inputs = model_inputs(onnx.load(str(onnx_path), load_external_data=False))
    with CalibrationFile(calib_path) as calib:  # the graph's own dims: ONNX Runtime has no profiles
        check_calibration_shapes(calib, inputs, {n: ShapeRange(s, s, s) for n, s in inputs.items() if -1 not in s})
    qdq, targets, placement = quantized_graph(onnx_path, work_dir, cfg, calib_path, SCHEME)
    path = work_dir / f"{onnx_path.stem}_int8.onnx"
    atomic_write_bytes(path, qdq.SerializeToString())
    logger.info("quantized %d layers and %d activations to INT8 for ONNX Runtime (%s ranges): %s", len(targets),
                len(placement.edges), calib_method(cfg), path.name)
    return BuildResult(path, {"precision": "int8", **_io(qdq), "profiles": [], "built_from": onnx_path.name,
                              "int8": {"route": "qdq", "scheme": SCHEME, "method": calib_method(cfg),
                                       "quantized_layers": [t.node for t in targets],
                                       "quantized_tensors": placement.tensors,
                                       "calib_file": calib_path.name, "ranges_file": RANGES_FILE}})
