"""Explicit INT8 quantization: activation ranges from calibration data, then Q/DQ nodes where TensorRT fuses them.

What the result guarantees, so that TensorRT (11, TensorRT-RTX, and 8.6-10 in explicit mode) builds it:
- weights of Conv / Gemm / MatMul are stored as INT8 with one symmetric scale per output channel
  (zero point 0) and reach the node through DequantizeLinear;
- the activation input of those nodes goes through QuantizeLinear -> DequantizeLinear with one
  symmetric scale per tensor (zero point 0);
- biases stay float, and no other node is touched: everything else runs in the graph's float type.
Ranges come from a method in ``RANGE_METHODS`` (entropy, minmax, percentile).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import BuildError, ConfigError
from ..registry import Registry
from ..utils.onnx_graph import all_nodes
from ..utils.logging import progress

INT8_MAX = 127
NUM_BINS = 2048
Samples = Callable[[], Iterable[Mapping[str, np.ndarray]]]  # called once per pass over the data


# -- where quantization goes -------------------------------------------------------------
WEIGHT_AXIS: Registry[Callable[[onnx.NodeProto, int], int]] = Registry("quantizable op type")


@WEIGHT_AXIS.register("Conv")
def _conv_axis(node: onnx.NodeProto, ndim: int) -> int:
    return 0  # (out_channels, in_channels/groups, kH, kW)


@WEIGHT_AXIS.register("Gemm")
def _gemm_axis(node: onnx.NodeProto, ndim: int) -> int:
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return 0 if trans_b else 1


@WEIGHT_AXIS.register("MatMul")
def _matmul_axis(node: onnx.NodeProto, ndim: int) -> int:
    return ndim - 1  # (..., K, N): N is the output channel


@dataclass(frozen=True)
class QuantTarget:
    """One node to run in INT8: its activation input and its weight initializer."""

    node: str
    op_type: str
    activation: str
    weight: str
    axis: int


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    """Does ``name`` match one of the fnmatch ``patterns`` (how configs name nodes)?"""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def quantization_targets(model: onnx.ModelProto, exclude_nodes: Iterable[str] = (),
                         exclude_op_types: Iterable[str] = ()) -> list[QuantTarget]:
    """Conv/Gemm/MatMul nodes with a constant float weight, minus the excluded names (fnmatch) and op types."""
    exclude_nodes, exclude_op_types = list(exclude_nodes), set(exclude_op_types)
    inits = {i.name: i for i in model.graph.initializer}
    targets = []
    for node in model.graph.node:
        if node.op_type not in WEIGHT_AXIS or node.op_type in exclude_op_types or len(node.input) < 2:
            continue
        weight = inits.get(node.input[1])
        if weight is None or weight.data_type != onnx.TensorProto.FLOAT or node.input[0] in inits:
            continue
        if matches_any(node.name, exclude_nodes):
            continue
        axis = WEIGHT_AXIS.get(node.op_type)(node, len(weight.dims))
        targets.append(QuantTarget(node.name, node.op_type, node.input[0], node.input[1], axis))
    return targets


# -- ranges ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RangeMethod:
    """Turns a histogram of |x| over [0, amax] into the clipping threshold."""

    needs_histogram: bool
    threshold: Callable[[np.ndarray, float, Mapping], float]


RANGE_METHODS: Registry[RangeMethod] = Registry("calibration method")


def _minmax(hist: np.ndarray, amax: float, opts: Mapping) -> float:
    return amax


def _percentile(hist: np.ndarray, amax: float, opts: Mapping) -> float:
    pct = float(opts.get("percentile", 99.99))
    if not 0 < pct <= 100:
        raise ConfigError(f"calib_config.percentile must be in (0, 100], got {pct}")
    cdf = np.cumsum(hist, dtype=np.float64)
    idx = int(np.searchsorted(cdf, cdf[-1] * pct / 100.0))
    return (min(idx, len(hist) - 1) + 1) * amax / len(hist)


def _entropy(hist: np.ndarray, amax: float, opts: Mapping) -> float:
    """The threshold whose 128-level quantized histogram is closest (KL divergence) to the clipped original."""
    hist = hist.astype(np.float64)
    if len(hist) > 1:
        # Exact zeros (after ReLU, padding) pile up in bin 0 and would pull the threshold down; weigh
        # that bin like its neighbour.
        hist[0] = hist[1]
    bins, levels = len(hist), INT8_MAX + 1
    tail = np.cumsum(hist[::-1])[::-1]  # tail[i] = sum(hist[i:])
    best_kl, best_i = np.inf, bins
    for i in range(levels, bins + 1, max(1, bins // 512)):
        ref = hist[:i]
        p = ref.copy()
        if i < bins:
            p[-1] += tail[i]  # clipped values land in the last kept bin
        group = (np.arange(i) * levels) // i
        used = ref > 0
        sums = np.bincount(group, weights=ref, minlength=levels)
        counts = np.bincount(group, weights=used, minlength=levels)
        q = np.where(used, sums[group] / np.maximum(counts[group], 1), 0.0)
        if p.sum() == 0 or q.sum() == 0:
            continue
        p, q = p / p.sum(), q / q.sum()
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return best_i * amax / bins


RANGE_METHODS.register("minmax")(RangeMethod(False, _minmax))
RANGE_METHODS.register("percentile")(RangeMethod(True, _percentile))
RANGE_METHODS.register("entropy")(RangeMethod(True, _entropy))


def _session_with_outputs(model: onnx.ModelProto, tensors: list[str]):
    """An ONNX Runtime session that also returns ``tensors`` (intermediate activations)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    graph_inputs = {i.name for i in probe.graph.input}
    for name in tensors:
        if name not in have and name not in graph_inputs:
            probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _activations(session, samples: Iterable[Mapping[str, np.ndarray]], tensors: list[str]) -> Iterator[dict]:
    outputs = [t for t in tensors if t in {o.name for o in session.get_outputs()}]
    for feed in samples:
        values = dict(zip(outputs, session.run(outputs, dict(feed)))) if outputs else {}
        values.update({t: feed[t] for t in tensors if t in feed})
        yield values


def collect_ranges(model: onnx.ModelProto, tensors: list[str], samples: Samples, method: str = "entropy",
                   options: Mapping | None = None, num_bins: int = NUM_BINS, count: int | None = None) -> dict[str, float]:
    """Per-tensor clipping thresholds (amax) over the calibration samples.

    One pass finds max |x|; methods that need a histogram of |x| make a second pass.
    """
    chosen = RANGE_METHODS.get(method, field="calib_config.method")
    session = _session_with_outputs(model, tensors)
    amax = dict.fromkeys(tensors, 0.0)
    for values in progress(_activations(session, samples(), tensors), desc="activation ranges", unit="sample",
                           total=count):
        for t, v in values.items():
            amax[t] = max(amax[t], float(np.max(np.abs(v))) if v.size else 0.0)
    if not chosen.needs_histogram:
        return amax
    hists = {t: np.zeros(num_bins, np.int64) for t in tensors}
    for values in progress(_activations(session, samples(), tensors), desc=f"{method} histograms", unit="sample",
                           total=count):
        for t, v in values.items():
            if amax[t] > 0:
                hists[t] += np.histogram(np.abs(v), bins=num_bins, range=(0.0, amax[t]))[0]
    return {t: chosen.threshold(hists[t], amax[t], dict(options or {})) if amax[t] > 0 else 0.0 for t in tensors}


# -- Q/DQ insertion ----------------------------------------------------------------------
def _inputs_used(graph: onnx.GraphProto) -> Iterator[str]:
    """Every tensor name a node reads, subgraphs (If/Loop bodies read outer names) included."""
    for node in all_nodes(graph):
        yield from node.input


# A zero range (a dead channel or activation) still needs a positive scale, one FP16 can hold too.
MIN_AMAX = 1e-4


def _scale(amax: float) -> np.float32:
    return np.float32(max(float(amax), MIN_AMAX) / INT8_MAX)


def insert_qdq(model: onnx.ModelProto, targets: list[QuantTarget], ranges: Mapping[str, float]) -> onnx.ModelProto:
    """A copy of ``model`` with ``targets`` quantized (see the module docstring for the guarantees)."""
    missing = [t.activation for t in targets if t.activation not in ranges]
    if missing:
        raise BuildError(f"no calibration range for {missing[:3]}; the ranges were computed for another graph: "
                         f"delete the ranges cache in the work dir and convert again")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    if max((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")), default=0) < 13:
        raise BuildError("per-channel Q/DQ needs ONNX opset >= 13; set onnx_config.opset_version=17")
    inits = {i.name: i for i in graph.initializer}
    nodes_by_name = {n.name: n for n in graph.node}
    new_nodes: dict[str, list[onnx.NodeProto]] = {}  # inserted before the named node
    dq_of: dict[str, str] = {}
    for t in targets:
        node = nodes_by_name[t.node]
        before = new_nodes.setdefault(t.node, [])
        if t.activation not in dq_of:
            scale, zero = f"{t.activation}_scale", f"{t.activation}_zero_point"
            graph.initializer.extend([numpy_helper.from_array(np.array(_scale(ranges[t.activation])), scale),
                                      numpy_helper.from_array(np.array(0, np.int8), zero)])
            q, dq = f"{t.activation}_quantized", f"{t.activation}_dequantized"
            before += [helper.make_node("QuantizeLinear", [t.activation, scale, zero], [q], name=f"{t.activation}_QuantizeLinear"),
                       helper.make_node("DequantizeLinear", [q, scale, zero], [dq], name=f"{t.activation}_DequantizeLinear")]
            dq_of[t.activation] = dq
        node.input[0] = dq_of[t.activation]
        w = numpy_helper.to_array(inits[t.weight]).astype(np.float32)
        reduce_axes = tuple(a for a in range(w.ndim) if a != t.axis)
        scales = (np.maximum(np.abs(w).max(axis=reduce_axes), MIN_AMAX) / INT8_MAX).astype(np.float32)
        shape = [1] * w.ndim
        shape[t.axis] = -1
        w_int8 = np.clip(np.round(w / scales.reshape(shape)), -INT8_MAX, INT8_MAX).astype(np.int8)
        base = f"{t.node}_{t.weight}"
        graph.initializer.extend([numpy_helper.from_array(w_int8, f"{base}_int8"),
                                  numpy_helper.from_array(scales, f"{base}_scale"),
                                  numpy_helper.from_array(np.zeros(len(scales), np.int8), f"{base}_zero_point")])
        before.append(helper.make_node("DequantizeLinear", [f"{base}_int8", f"{base}_scale", f"{base}_zero_point"],
                                       [f"{base}_dequantized"], name=f"{base}_DequantizeLinear", axis=t.axis))
        node.input[1] = f"{base}_dequantized"
    ordered = []
    for node in graph.node:
        ordered += new_nodes.get(node.name, [])
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    used = set(_inputs_used(graph))
    kept = [i for i in graph.initializer if i.name in used]  # drops the float weights now stored as INT8
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return out


def to_fp16_keeping_qdq(model: onnx.ModelProto, keep_fp32_nodes: Iterable[str] = ()) -> onnx.ModelProto:
    """FP16 everywhere outside the INT8 nodes, for strongly typed TensorRT; graph I/O stays FP32.

    Q/DQ nodes take FP16 inputs and scales from opset 19 on, so the graph is moved to opset 19
    first: DequantizeLinear then feeds the FP16 Conv directly, the pattern TensorRT fuses.
    What follows the last INT8 layer (box decoding, NMS, score thresholds) stays in FP32, as do
    ``keep_fp32_nodes`` (fnmatch patterns of node names).
    """
    from onnx import version_converter

    from .fp16 import to_fp16_body

    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 19:
        try:
            model = version_converter.convert_version(model, 19)
        except Exception as e:  # the converter has no adapter for some op
            raise BuildError(f"cannot move the INT8 graph to ONNX opset 19 for FP16 Q/DQ ({e}); "
                             f"set onnx_config.opset_version=19 or common_config.fp16_mode=False") from None
    int8_layers = {n.name for n in model.graph.node if n.op_type in WEIGHT_AXIS
                   and any(i.endswith("_dequantized") for i in n.input[1:2])}
    keep = [n.name for n in model.graph.node if matches_any(n.name, keep_fp32_nodes)]
    return to_fp16_body(model, body_targets=int8_layers, keep_fp32=keep)










# -- sensitivity ---------------------------------------------------------------------------
def _run_all(model: onnx.ModelProto, feeds: list[Mapping[str, np.ndarray]]) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return [session.run(None, dict(feed)) for feed in feeds]


def output_error(reference: list[list[np.ndarray]], outputs: list[list[np.ndarray]]) -> float:
    """Mean over samples of the relative L2 error of all outputs together (0 = identical)."""
    errors = []
    for ref, out in zip(reference, outputs):
        r = np.concatenate([np.ravel(a).astype(np.float64) for a in ref])
        o = np.concatenate([np.ravel(a).astype(np.float64) for a in out])
        errors.append(np.linalg.norm(o - r) / max(np.linalg.norm(r), 1e-12))
    return float(np.mean(errors))


def layer_sensitivity(model: onnx.ModelProto, targets: list[QuantTarget], ranges: Mapping[str, float],
                      feeds: list[Mapping[str, np.ndarray]]) -> list[tuple[QuantTarget, float]]:
    """The output error when only one layer is INT8, for each target, most sensitive first (FP32 elsewhere)."""
    reference = _run_all(model, feeds)
    scores = [(t, output_error(reference, _run_all(insert_qdq(model, [t], ranges), feeds)))
              for t in progress(targets, desc="layer sensitivity", unit="layer")]
    return sorted(scores, key=lambda item: -item[1])


def propose_high_precision(scores: list[tuple[QuantTarget, float]], share: float = 0.5,
                           max_fraction: float = 0.1) -> list[QuantTarget]:
    """The fewest most-sensitive layers carrying ``share`` of the summed single-layer error (at most ``max_fraction`` of them)."""
    total = sum(err for _, err in scores)
    limit = max(1, int(len(scores) * max_fraction))
    chosen, carried = [], 0.0
    for target, err in scores[:limit]:
        if total <= 0 or carried >= share * total:
            break
        chosen.append(target)
        carried += err
    return chosen


def quantized_error(model: onnx.ModelProto, targets: list[QuantTarget], ranges: Mapping[str, float],
                    feeds: list[Mapping[str, np.ndarray]]) -> float:
    """The output error of the graph with ``targets`` INT8 (FP32 elsewhere) against the FP32 graph."""
    return output_error(_run_all(model, feeds), _run_all(insert_qdq(model, targets, ranges), feeds))
