"""``trtdeploy sensitivity``: which nodes a lower precision hurts, judged on ONNX Runtime against FP32.

- ``--precision fp16|bf16`` (``precision_sensitivity``): bisect over the emulated 16-bit graph
  (``passes.fp16``) which nodes must stay FP32, judging outputs with ``compare_outputs``;
- ``--precision int8`` (``int8_sensitivity``): quantize one layer at a time with the calibration ranges of
  an INT8 conversion (``passes.quantize``) and rank the layers by the output error each one causes.

Both judge a conversion's graphs rather than build anything, so they sit in evaluation, above the
backends whose builds they inform.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import onnx

from ..backends.sidecar import read_sidecar, sidecars_in
from ..calibration import CalibrationFile, calibration_file_path
from ..calibration.qdq import activation_ranges, calib_method, model_inputs, name_map
from ..config import DeployConfig
from ..errors import ConfigError, DatasetError, ModelError
from ..passes import quantize
from ..passes.fp16 import to_fp16_body
from ..passes.numerics import random_sample, run_onnx
from ..utils.fileio import atomic_write_json
from .compare import compare_outputs

PRUNE_LIMIT = 32  # nodes of the bisected prefix tried one by one for removal (one graph run each)
SENSITIVITY_FILE = "int8_sensitivity.json"


def work_dir_feeds(work_dir: Path, samples: int) -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]], str]:
    """The FP32 graph of a conversion and inputs for it: calibration samples if the work dir has them, else
    seeded random input at the export shape."""
    onnx_path = Path(work_dir) / "end2end.onnx"
    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path} does not exist; pass the --work-dir of a `trtdeploy convert`")
    model = onnx.load(str(onnx_path))
    calib = Path(work_dir) / "calib_data.h5"
    if calib.is_file():
        with CalibrationFile(calib) as data:
            name = data.input_names[0]
            feeds = [{model.graph.input[0].name: data.sample(i)[name]} for i in range(min(samples, len(data)))]
        return model, feeds, f"{len(feeds)} samples of {calib.name}"
    shapes = (read_sidecar(onnx_path) or {}).get("export_shapes") or {
        i.name: [d.dim_value or 1 for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    feeds = [random_sample(model, {k: tuple(v) for k, v in shapes.items()})[0]]
    return model, feeds, f"random input ({', '.join(f'{k} {v}' for k, v in shapes.items())}; no calib_data.h5)"


def body_nodes(model: onnx.ModelProto, precision: str) -> list[str]:
    """The nodes the 16-bit pass computes in 16 bits (guards applied), in graph order."""
    low = to_fp16_body(model, precision=precision, emulate=True)
    computed = {n.name for n in low.graph.node if any(o.endswith("_computed") for o in n.output)}
    return [n.name for n in model.graph.node if n.name in computed]


def precision_sensitivity(model: onnx.ModelProto, feeds: list[Mapping[str, np.ndarray]], tol, precision: str = "fp16",
                          keep: list[str] | None = None) -> dict:
    """Bisect (Polygraphy's ``debug precision`` on ONNX Runtime) the shortest graph-order prefix of the 16-bit
    nodes that, kept in FP32 beside ``keep``, brings every output of the emulated graph within ``tol`` on every
    feed; then drop from it each node that is not needed. Returns the nodes to keep and the runs it took."""
    keep = list(keep or [])
    refs = [run_onnx(model, feed, where="the FP32 graph") for feed in feeds]
    runs = 0

    def passes(kept: list[str]) -> bool:
        nonlocal runs
        runs += 1
        emulated = to_fp16_body(model, keep_fp32=keep + kept, precision=precision, emulate=True)
        return all(r.passed for ref, feed in zip(refs, feeds)
                   for r in compare_outputs(ref, run_onnx(emulated, feed, where="the emulated graph"), tol))

    candidates = body_nodes(model, precision)
    if passes([]):
        return {"fp32_nodes": [], "candidates": len(candidates), "runs": runs}
    low, high = 0, len(candidates)  # the first `high` candidates kept in FP32 pass (all of them: FP32)
    while low < high:
        mid = (low + high) // 2
        if passes(candidates[:mid]):
            high = mid
        else:
            low = mid + 1
    needed = candidates[:high]
    for name in list(needed[:-1])[::-1][:PRUNE_LIMIT]:  # the last one is needed by construction
        trial = [n for n in needed if n != name]
        if passes(trial):
            needed = trial
    return {"fp32_nodes": needed, "candidates": len(candidates), "runs": runs}

def _int8_sidecar(work_dir: Path) -> tuple[Path, dict]:
    for engine, sidecar in sidecars_in(work_dir, "of an INT8 `trtdeploy convert`"):
        if sidecar.get("precision") == "int8":
            return engine, sidecar
    raise ModelError(f"{work_dir} holds no INT8 engine with a sidecar; convert with a *_tensorrt-int8_* config "
                     f"and --work-dir {work_dir} first")


def int8_sensitivity(work_dir: str | Path, num_samples: int = 32) -> dict:
    """Per quantizable layer, the output error when only it is INT8 (ONNX Runtime, FP32 elsewhere), most
    sensitive first, and a proposed set to keep in higher precision with the error it leaves.

    Reads what an INT8 ``trtdeploy convert`` left in ``work_dir``; writes int8_sensitivity.json there.
    """
    work_dir = Path(work_dir)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"--samples must be an integer >= 1, got {num_samples!r}")
    engine, sidecar = _int8_sidecar(work_dir)
    # Only the calibration settings matter here (they are recorded in the engine's sidecar), not its backend.
    recorded = (sidecar.get("deploy_config") or {}).get("calib_config") or {}
    cfg = DeployConfig({"onnx_config": {}, "backend_config": {}, "calib_config": recorded}, source=f"{engine}.json")
    onnx_path = work_dir / sidecar.get("onnx_file", "end2end.onnx")
    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path} (the FP32 graph of {engine.name}) is missing; convert again")
    calib_path = calibration_file_path(cfg, work_dir)
    if not calib_path.is_file():
        raise DatasetError(f"{calib_path} is missing; convert again with --calib-dataset-cfg to collect it")
    model = onnx.load(str(onnx_path))
    targets = quantize.quantization_targets(model)
    ranges = activation_ranges(model, targets, calib_path, work_dir, cfg)
    inputs = model_inputs(model)
    with CalibrationFile(calib_path) as calib:
        picks = np.unique(np.linspace(0, len(calib) - 1, min(num_samples, len(calib))).round().astype(int))
        names = name_map(calib, inputs)
        feeds = [{m: calib.sample(int(i))[f] for m, f in names.items()} for i in picks]
    scores = quantize.layer_sensitivity(model, targets, ranges, feeds)
    keep = quantize.propose_high_precision(scores)
    report = {
        "engine": engine.name, "method": calib_method(cfg), "samples": len(feeds),
        "metric": "relative L2 error of the outputs against FP32, mean over samples",
        "layers": [{"node": t.node, "op_type": t.op_type, "error": err} for t, err in scores],
        "all_int8_error": quantize.quantized_error(model, targets, ranges, feeds),
        "proposed_exclude_nodes": [t.node for t in keep],
        "error_with_proposal": quantize.quantized_error(model, [t for t in targets if t not in keep], ranges, feeds),
    }
    atomic_write_json(work_dir / SENSITIVITY_FILE, report)
    return report
