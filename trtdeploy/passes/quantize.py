"""Explicit INT8 quantization: activation ranges from calibration data, then Q/DQ nodes where the backend fuses them.

Each backend that runs Q/DQ graphs registers its scheme in ``SCHEMES`` (``backends/<name>/qdq_scheme.py``):
- ``tensorrt`` (TensorRT 11, TensorRT-RTX, 8.6-10 in explicit mode): weights of Conv / Gemm / MatMul as INT8
  with one symmetric scale per output channel, reached through DequantizeLinear; symmetric per-tensor
  QuantizeLinear -> DequantizeLinear (zero point 0) on the inputs TensorRT's fusions want in INT8: those
  layers' activations, both inputs of activation x activation MatMul (attention), pooling inputs, the
  residual input of an Add that follows a Conv, and Concat inputs, which share one scale. Biases stay
  float; Softmax, LayerNorm and everything else run in the graph's float type.
- ``onnxruntime``: the same weights, plus output Q/DQ after each quantized layer (after its Relu), uint8
  activations (zero point 0 after Relu, else 128) and int32 biases: the QDQ patterns ONNX Runtime's CPU
  provider fuses into QLinearConv / QGemm / MatMulInteger / QLinearAdd kernels.
Ranges come from a method in ``RANGE_METHODS`` (mse, entropy, minmax, percentile).
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
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
                         exclude_op_types: Iterable[str] = (), output_layers: bool = True) -> list[QuantTarget]:
    """Conv/Gemm/MatMul nodes with a constant float weight, minus the excluded names (fnmatch) and op types, and,
    with ``output_layers=False``, minus the layers that write a graph output (a classifier's logits: INT8 there
    adds error straight to the result for a layer that costs little time)."""
    exclude_nodes, exclude_op_types = list(exclude_nodes), set(exclude_op_types)
    inits = {i.name: i for i in model.graph.initializer}
    graph_outputs = {o.name for o in model.graph.output}
    targets = []
    for node in model.graph.node:
        if node.op_type not in WEIGHT_AXIS or node.op_type in exclude_op_types or len(node.input) < 2:
            continue
        if not output_layers and node.output[0] in graph_outputs:
            continue
        weight = inits.get(node.input[1])
        if weight is None or weight.data_type != onnx.TensorProto.FLOAT or node.input[0] in inits:
            continue
        if matches_any(node.name, exclude_nodes):
            continue
        axis = WEIGHT_AXIS.get(node.op_type)(node, len(weight.dims))
        targets.append(QuantTarget(node.name, node.op_type, node.input[0], node.input[1], axis))
    return targets


@dataclass
class Placement:
    """Where activation Q/DQ pairs go: tensor -> the nodes that read its dequantized copy; tensors sharing a scale."""

    edges: dict[str, set[str]] = field(default_factory=dict)
    groups: list[set[str]] = field(default_factory=list)

    def add(self, tensor: str, node: str) -> None:
        self.edges.setdefault(tensor, set()).add(node)

    @property
    def tensors(self) -> list[str]:
        return sorted(self.edges)

    def bounded(self, ranges: Mapping[str, float]) -> "Placement":
        """This placement less the tensors whose range is not finite (calibration saw inf or NaN, e.g. the -inf
        padding of NMS scores: no INT8 scale holds it) and every tensor sharing a scale with one of them."""
        gone = {t for t in self.edges if not math.isfinite(ranges.get(t, 0.0))}
        grown = bool(gone)
        while grown:
            grown = False
            for group in self.groups:
                if group & gone and not group <= gone:
                    gone |= group
                    grown = True
        if not gone:
            return self
        return Placement({t: set(r) for t, r in self.edges.items() if t not in gone},
                         [set(g) for g in self.groups if not g & gone])


def weight_placement(targets: Iterable[QuantTarget]) -> Placement:
    """Only the activation inputs of the weighted layers (what one layer's sensitivity measures)."""
    placement = Placement()
    for t in targets:
        placement.add(t.activation, t.node)
    return placement


class GraphView:
    """Producers, consumers, float tensors and constants of a graph's top level."""

    def __init__(self, model: onnx.ModelProto):
        graph = model.graph
        self.consts = {i.name for i in graph.initializer}
        self.consts |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for n in graph.node:
            for i in dict.fromkeys(n.input):
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}
        try:
            typed = onnx.shape_inference.infer_shapes(model).graph
        except Exception:  # noqa: BLE001  (shape inference gives up on some custom ops: fall back to what is stored)
            typed = graph
        self.floats = {v.name for v in (*typed.input, *typed.value_info, *typed.output)
                       if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}

    def activations(self, node: onnx.NodeProto) -> list[str]:
        """The node's float inputs that are computed at run time (not weights or constants)."""
        return [i for i in node.input if i and i in self.floats and i not in self.consts]

    def op_of(self, tensor: str) -> str:
        return self.producer[tensor].op_type if tensor in self.producer else ""

    def branch_length(self, start: str, limit: int = 64) -> dict[str, int]:
        """Tensors upstream of ``start`` with their distance in nodes (breadth first, at most ``limit`` deep)."""
        dist, frontier = {start: 0}, [start]
        for d in range(1, limit + 1):
            nxt = []
            for t in frontier:
                for i in self.activations(self.producer[t]) if t in self.producer else ():
                    if i not in dist:
                        dist[i] = d
                        nxt.append(i)
            if not nxt:
                break
            frontier = nxt
        return dist


POOLING_OPS = ("MaxPool", "AveragePool", "GlobalAveragePool")


def excluded(node: onnx.NodeProto, exclude_nodes: Iterable[str], exclude_op_types: Iterable[str]) -> bool:
    return node.op_type in set(exclude_op_types) or matches_any(node.name, exclude_nodes)


def place(model: onnx.ModelProto, targets: list[QuantTarget], scheme: str, exclude_nodes: Iterable[str] = (),
          exclude_op_types: Iterable[str] = ()) -> Placement:
    """Where ``scheme``'s backend wants Q/DQ on ``model`` beside ``targets``."""
    return SCHEMES.get(scheme, field="quantization scheme").place(model, targets, exclude_nodes, exclude_op_types)


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
    bins, levels = len(hist), int(opts.get("levels", INT8_MAX)) + 1
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


def _mse(hist: np.ndarray, amax: float, opts: Mapping) -> float:
    """The threshold whose quantization (rounding inside, clipping outside) has the least mean squared error over
    the histogram; candidates are the bin edges from 1/16 of max |x| to max |x| (every percentile in between)."""
    levels = int(opts.get("levels", INT8_MAX))
    bins = len(hist)
    width = amax / bins
    centres = (np.arange(bins) + 0.5) * width
    counts = hist.astype(np.float64)
    candidates = np.arange(max(1, bins // 16), bins + 1, max(1, bins // 512)) * width
    errors = np.empty(len(candidates))
    for start in range(0, len(candidates), 64):  # 64 candidates at a time keeps memory at a few MB
        step = candidates[start:start + 64, None] / levels
        quantized = np.minimum(np.round(centres / step), levels) * step
        errors[start:start + 64] = ((quantized - centres) ** 2 * counts).sum(axis=1)
    return float(candidates[int(np.argmin(errors))])


RANGE_METHODS.register("minmax")(RangeMethod(False, _minmax))
RANGE_METHODS.register("percentile")(RangeMethod(True, _percentile))
RANGE_METHODS.register("entropy")(RangeMethod(True, _entropy))
RANGE_METHODS.register("mse")(RangeMethod(True, _mse))
DEFAULT_METHOD = "mse"  # least mean |logit error| on benchmarks/bench_int8_trained.py (RESULTS.md, issue 15)


def _session_with_outputs(model: onnx.ModelProto, tensors: list[str]):
    """An ONNX Runtime session that also returns ``tensors`` (intermediate activations). Custom nodes kept for
    plugins (``custom_ops='plugin'``) have no ONNX Runtime kernel here: the session runs their plugin-free lowering,
    which computes the same tensors under the same names."""
    import onnxruntime as ort

    from .lower_custom_ops import lower_custom_ops

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe = lower_custom_ops(probe, "plugin-free")
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


def collect_ranges(model: onnx.ModelProto, tensors: list[str], samples: Samples, method: str = DEFAULT_METHOD,
                   options: Mapping | None = None, num_bins: int = NUM_BINS, count: int | None = None,
                   levels: Mapping[str, int] | None = None) -> dict[str, float]:
    """Per-tensor clipping thresholds (amax) over the calibration samples.

    One pass finds max |x|; methods that need a histogram of |x| make a second pass. ``levels`` gives the
    positive quantization levels of a tensor (127 for symmetric INT8, the default; 255 for uint8 after Relu).
    """
    chosen = RANGE_METHODS.get(method, field="calib_config.method")
    session = _session_with_outputs(model, tensors)
    amax = dict.fromkeys(tensors, 0.0)
    for values in progress(_activations(session, samples(), tensors), desc="activation ranges", unit="sample",
                           total=count):
        for t, v in values.items():
            top = float(np.max(np.abs(v))) if v.size else 0.0
            amax[t] = max(amax[t], top) if math.isfinite(top) else math.inf  # inf: not quantizable (Placement.bounded)
    if not chosen.needs_histogram:
        return amax
    hists = {t: np.zeros(num_bins, np.int64) for t in tensors}
    for values in progress(_activations(session, samples(), tensors), desc=f"{method} histograms", unit="sample",
                           total=count):
        for t, v in values.items():
            if 0 < amax[t] < math.inf:
                hists[t] += np.histogram(np.abs(v), bins=num_bins, range=(0.0, amax[t]))[0]
    levels = levels or {}
    return {t: chosen.threshold(hists[t], amax[t], {**(options or {}), "levels": levels.get(t, INT8_MAX)})
            if 0 < amax[t] < math.inf else amax[t] for t in tensors}


# -- Q/DQ insertion ----------------------------------------------------------------------
def _inputs_used(graph: onnx.GraphProto) -> Iterator[str]:
    """Every tensor name a node reads, subgraphs (If/Loop bodies read outer names) included."""
    for node in all_nodes(graph):
        yield from node.input


# A zero range (a dead channel or activation) still needs a positive scale, one FP16 can hold too.
MIN_AMAX = 1e-4


@dataclass(frozen=True)
class Scheme:
    """How a backend wants its Q/DQ graph; each backend with a Q/DQ route registers its own in ``SCHEMES``
    (``backends/<name>/qdq_scheme.py``, imported by its INT8 build: a build without INT8 never loads this module)."""

    place: Callable[..., Placement]  # (model, targets, exclude_nodes, exclude_op_types) -> where Q/DQ go
    unsigned_activations: bool = False  # uint8 activations (zero point 0 or 128) instead of symmetric int8
    int32_bias: bool = False            # biases as int32 through DequantizeLinear (ONNX Runtime fuses only those)
    unsigned_weights: bool = False      # weights as uint8 around zero point 128 (ONNX Runtime's U8U8 kernels)


SCHEMES: Registry[Scheme] = Registry("quantization scheme")
# What one layer's sensitivity measures: symmetric int8 on the weighted layers' inputs, float biases.
WEIGHTS_ONLY = Scheme(place=lambda model, targets, *exclude: weight_placement(targets))

# Ops whose output is never negative, and ops that pass their input's sign through.
NONNEGATIVE_OPS = ("Relu", "Sigmoid", "Softmax")
SIGN_KEEPING_OPS = POOLING_OPS + ("Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Resize")


def nonnegative_tensors(model: onnx.ModelProto) -> set[str]:
    """Tensors that can never be negative (after Relu, Sigmoid, Softmax, through pooling and reshapes)."""
    found: set[str] = set()
    for node in model.graph.node:
        if node.op_type in NONNEGATIVE_OPS or (node.op_type in SIGN_KEEPING_OPS and node.input[0] in found):
            found.update(node.output[:1])
    return found


def _scheme(scheme: str | None) -> Scheme:
    return WEIGHTS_ONLY if scheme is None else SCHEMES.get(scheme, field="quantization scheme")


def activation_levels(model: onnx.ModelProto, placement: Placement, scheme: str | None) -> dict[str, int]:
    """Positive quantization levels per placed tensor: 255 for uint8 tensors that are never negative, else 127."""
    if not _scheme(scheme).unsigned_activations:
        return {t: INT8_MAX for t in placement.edges}
    nonneg = nonnegative_tensors(model)
    unsigned = {t for t in placement.edges if t in nonneg}
    for group in placement.groups:  # one scale and zero point for the whole group
        if not group <= nonneg:
            unsigned -= group
    return {t: 2 * INT8_MAX + 1 if t in unsigned else INT8_MAX for t in placement.edges}


def _shared(ranges: Mapping[str, float], groups: list[set[str]]) -> dict[str, float]:
    """Ranges with each group of tensors (merged where they overlap) given the largest range among them."""
    out = dict(ranges)
    merged: list[set[str]] = []
    for group in groups:
        group = set(group)
        for other in [m for m in merged if m & group]:
            group |= other
            merged.remove(other)
        merged.append(group)
    for group in merged:
        amax = max(out.get(t, 0.0) for t in group)
        out.update({t: amax for t in group if t in out})
    return out


def _weight_int8(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    reduce_axes = tuple(a for a in range(w.ndim) if a != axis)
    scales = (np.maximum(np.abs(w).max(axis=reduce_axes), MIN_AMAX) / INT8_MAX).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    return np.clip(np.round(w / scales.reshape(shape)), -INT8_MAX, INT8_MAX).astype(np.int8), scales


def insert_qdq(model: onnx.ModelProto, targets: list[QuantTarget], ranges: Mapping[str, float],
               placement: Placement | None = None, scheme: str | None = None) -> onnx.ModelProto:
    """A copy of ``model`` with ``targets``' weights and ``placement``'s activations (by default the targets'
    inputs only) quantized as ``scheme`` wants (see the module docstring; None: symmetric, float biases)."""
    chosen = _scheme(scheme)
    placement = (placement or weight_placement(targets)).bounded(ranges)
    missing = [t for t in placement.edges if t not in ranges]
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
    position = {n.name: i for i, n in enumerate(graph.node)}
    new_nodes: dict[str, list[onnx.NodeProto]] = {}  # inserted before the named node
    amax = _shared(ranges, placement.groups)
    levels = activation_levels(model, placement, scheme)
    act_scale: dict[str, np.float32] = {}
    for tensor in sorted(placement.edges, key=lambda t: min(position[n] for n in placement.edges[t])):
        readers = sorted(placement.edges[tensor], key=position.get)
        scale, zero = f"{tensor}_scale", f"{tensor}_zero_point"
        act_scale[tensor] = np.float32(max(float(amax[tensor]), MIN_AMAX) / levels[tensor])
        if not chosen.unsigned_activations:
            zero_point = np.array(0, np.int8)
        else:
            zero_point = np.array(0 if levels[tensor] > INT8_MAX else INT8_MAX + 1, np.uint8)
        graph.initializer.extend([numpy_helper.from_array(np.array(act_scale[tensor]), scale),
                                  numpy_helper.from_array(zero_point, zero)])
        q, dq = f"{tensor}_quantized", f"{tensor}_dequantized"
        new_nodes.setdefault(readers[0], []).extend([
            helper.make_node("QuantizeLinear", [tensor, scale, zero], [q], name=f"{tensor}_QuantizeLinear"),
            helper.make_node("DequantizeLinear", [q, scale, zero], [dq], name=f"{tensor}_DequantizeLinear")])
        for name in readers:
            node = nodes_by_name[name]
            for k, i in enumerate(node.input):
                if i == tensor:
                    node.input[k] = dq
    for t in targets:
        node = nodes_by_name[t.node]
        before = new_nodes.setdefault(t.node, [])
        w_int8, scales = _weight_int8(numpy_helper.to_array(inits[t.weight]).astype(np.float32), t.axis)
        base = f"{t.node}_{t.weight}"
        zero = np.zeros(len(scales), np.int8)
        if chosen.unsigned_weights:  # the same levels, shifted: w = (q - 128) * scale
            w_int8 = (w_int8.astype(np.int16) + INT8_MAX + 1).astype(np.uint8)
            zero = np.full(len(scales), INT8_MAX + 1, np.uint8)
        graph.initializer.extend([numpy_helper.from_array(w_int8, f"{base}_int8"),
                                  numpy_helper.from_array(scales, f"{base}_scale"),
                                  numpy_helper.from_array(zero, f"{base}_zero_point")])
        before.append(helper.make_node("DequantizeLinear", [f"{base}_int8", f"{base}_scale", f"{base}_zero_point"],
                                       [f"{base}_dequantized"], name=f"{base}_DequantizeLinear", axis=t.axis))
        node.input[1] = f"{base}_dequantized"
        bias = inits.get(node.input[2]) if chosen.int32_bias and len(node.input) > 2 else None
        if bias is not None and t.activation in act_scale and tuple(bias.dims) == scales.shape:
            bias_scale = (act_scale[t.activation] * scales).astype(np.float32)
            b = numpy_helper.to_array(bias).astype(np.float64)
            steps = np.round(b / bias_scale)
            # A bias beyond 2^31 steps of input scale x weight scale (a near-silent input) would be clipped in int32
            # (a random-init YOLOv8n's class bias -11.5 became -1.5): it stays float, which ONNX Runtime still runs.
            if np.abs(steps).max(initial=0) > 2 ** 31 - 1:
                continue
            b_int32 = steps.astype(np.int32)
            bname = f"{t.node}_{bias.name}"
            graph.initializer.extend([numpy_helper.from_array(b_int32, f"{bname}_int32"),
                                      numpy_helper.from_array(bias_scale, f"{bname}_scale"),
                                      numpy_helper.from_array(np.zeros(len(scales), np.int32), f"{bname}_zero_point")])
            before.append(helper.make_node("DequantizeLinear", [f"{bname}_int32", f"{bname}_scale",
                                                                f"{bname}_zero_point"],
                                           [f"{bname}_dequantized"], name=f"{bname}_DequantizeLinear", axis=0))
            node.input[2] = f"{bname}_dequantized"
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
    # each Q/DQ pair as written, in float: the error of the quantization, not of this CPU's integer kernels
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
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
