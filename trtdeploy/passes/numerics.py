"""Are a 16-bit graph's outputs finite? Run it on ONNX Runtime and, if not, name the first node that made NaN/inf.

The FP16/BF16 graph is judged through its emulation (``to_fp16_body(..., emulate=True)``: FP32
with a 16-bit round trip wherever the real graph converts or computes in 16 bits): ONNX
Runtime's CPU runs that for both formats, and every rounding the engine will do is in it.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import onnx

from ..errors import BuildError, ModelError
from ..utils.random_data import random_array


def with_all_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose every node output in the main graph is also a graph output."""
    from .basic import infer_shapes

    model = infer_shapes(onnx.ModelProto.FromString(model.SerializeToString()))
    typed = {v.name: v for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    present = {o.name for o in model.graph.output}
    extra = []
    for node in model.graph.node:
        for out in node.output:
            if out and out not in present:
                extra.append(typed.get(out) or onnx.helper.make_empty_tensor_value_info(out))
                present.add(out)
    model.graph.output.extend(extra)
    return model


def random_sample(model: onnx.ModelProto, shapes: Mapping[str, tuple]) -> tuple[dict[str, np.ndarray], str]:
    """Seeded input at ``shapes`` of each input's type (``random_array``)."""
    rng = np.random.default_rng(0)
    init = {i.name for i in model.graph.initializer}
    feed = {i.name: random_array(rng, shapes[i.name], onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type))
            for i in model.graph.input if i.name not in init}
    return feed, "random input " + ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in feed.items())


def run_onnx(model: onnx.ModelProto, feed: Mapping[str, np.ndarray], all_tensors: bool = False,
             where: str = "the graph") -> dict[str, np.ndarray]:
    """Outputs (with ``all_tensors``: every intermediate tensor, graph optimisations off) on ONNX Runtime's CPU."""
    import onnxruntime as ort

    from ..utils.onnx_graph import all_nodes
    from .lower_custom_ops import lower_custom_ops

    if any(n.domain not in ("", "ai.onnx") for n in all_nodes(model.graph)):  # custom nodes kept for plugins have no
        # ONNX Runtime kernel here: their plugin-free lowering computes the same tensors under the same names
        model = lower_custom_ops(onnx.ModelProto.FromString(model.SerializeToString()), "plugin-free")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if all_tensors:  # optimisations fuse nodes away; the hunt needs every tensor as the file names it
        model = with_all_outputs(model)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        first = str(e).strip().splitlines()[0]
        raise ModelError(f"ONNX Runtime cannot load {where}{' with its intermediate tensors as outputs' * all_tensors}: "
                         f"{first}") from None
    inputs = [i.name for i in session.get_inputs()]
    missing = [n for n in inputs if n not in feed]
    if missing:
        from ..errors import ShapeError

        raise ShapeError(f"{where} needs inputs {inputs}; missing {missing}")
    names = [o.name for o in session.get_outputs()]
    floats = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
    typed = {i.name: np.asarray(feed[i.name]).astype(floats[i.type], copy=False)  # an FP16 file takes FP16 images
             if i.type in floats and np.asarray(feed[i.name]).dtype.kind == "f" else feed[i.name]
             for i in session.get_inputs()}
    try:
        return dict(zip(names, session.run(names, typed)))
    except Exception as e:  # inputs the graph does not take (e.g. NCHW images for an NHWC file)
        given = ", ".join(f"{k} {list(np.shape(v))} {np.asarray(v).dtype}" for k, v in typed.items())
        raise ModelError(f"ONNX Runtime cannot run {where} on {given}: {str(e).strip().splitlines()[0]}; check that "
                         f"codebase_config (task, preprocess) prepares what the model takes") from None


def nonfinite_count(values: np.ndarray) -> str:
    """``"12 NaN, 3 inf"``, or "" when every element is finite (or not a float)."""
    values = np.asarray(values)
    if values.dtype.kind != "f":
        return ""
    nan, inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
    return ", ".join(f"{k} {kind}" for k, kind in ((nan, "NaN"), (inf, "inf")) if k)


def nonfinite_outputs(outputs: Mapping[str, np.ndarray]) -> list[str]:
    """The outputs holding NaN or inf, each with what it holds, e.g. ``scores (12 NaN)``."""
    return [f"{name} ({count})" for name, value in outputs.items() for count in [nonfinite_count(value)] if count]


def first_nonfinite_node(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> tuple[str, str] | None:
    """(node, what happened) for the first node in graph order whose float output holds NaN/inf."""
    values = run_onnx(model, feed, all_tensors=True)
    producer_of_rounding: dict[str, onnx.NodeProto] = {}
    for node in model.graph.node:
        for out in node.output:
            value = values.get(out)
            if value is None or value.dtype.kind != "f" or np.isfinite(value).all():
                continue
            inputs_finite = all(np.isfinite(values[i]).all() for i in node.input
                                if i in values and values[i].dtype.kind == "f")
            kind = "NaN" if np.isnan(value).any() else "inf"
            if node.op_type == "Cast" and node.name.endswith(("_round", "_back")):
                # an emulation round trip: the 16-bit format could not hold what the node before computed
                origin = producer_of_rounding.get(node.input[0], node)
                return origin.name, f"its output leaves the 16-bit range ({kind} after rounding)"
            what = f"gives {kind} from finite inputs" if inputs_finite else f"gives {kind}"
            return node.name or f"<unnamed {node.op_type}>", f"({node.op_type}) {what}"
        for out in node.output:
            producer_of_rounding[out] = node
    return None


def check_low_precision_finite(fp32: onnx.ModelProto, emulated: onnx.ModelProto, feed: Mapping[str, np.ndarray],
                               precision: str, where: str, origin: str) -> dict[str, np.ndarray]:
    """Refuse (BuildError) a 16-bit graph whose outputs on ``feed`` are NaN/inf where the FP32 graph's are finite.

    ``emulated`` is the FP32 emulation of the graph being written; ``origin`` says where ``feed``
    came from. Returns the emulated outputs.
    """
    from ..utils.logging import logger

    reference = run_onnx(fp32, feed, where=f"the FP32 graph of {where}")
    got = run_onnx(emulated, feed, where=f"the {precision.upper()} emulation of {where}")
    bad = nonfinite_outputs({k: got[k] for k in reference})
    if not bad:
        return got
    if nonfinite_outputs(reference):
        logger.warning("the FP32 graph already gives NaN/inf on %s (%s), so the %s check of %s proves nothing there",
                       origin, ", ".join(nonfinite_outputs(reference)), precision.upper(), where)
        return got
    culprit = first_nonfinite_node(emulated, feed)
    node = f"node {culprit[0]!r} {culprit[1]}" if culprit else "no single node could be named"
    raise BuildError(f"{where} in {precision.upper()} gives non-finite outputs {', '.join(bad)} on {origin} where FP32 "
                     f"is finite; the first {node}: keep it in FP32 with backend_config.common_config.fp32_nodes="
                     f"[{culprit[0] if culprit else '<node>'!r}] (or find the set with `trtdeploy sensitivity WORK_DIR "
                     f"--precision {precision}`)")
