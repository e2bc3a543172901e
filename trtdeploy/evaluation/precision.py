"""The precision debugger (``trtdeploy sensitivity --precision fp16|bf16``): which nodes must stay FP32.

It bisects on ONNX Runtime over the emulated 16-bit graph (``passes.fp16``) and judges outputs with
``compare_outputs``, so it sits in evaluation, above the backends whose builds it informs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
import onnx

from ..backends.sidecar import read_sidecar
from ..backends.tensorrt.low_precision import random_sample
from ..calibration import CalibrationFile
from ..errors import ModelError
from ..passes.fp16 import to_fp16_body
from ..passes.numerics import run_onnx
from .compare import compare_outputs

PRUNE_LIMIT = 32  # nodes of the bisected prefix tried one by one for removal (one graph run each)


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
