"""Winograd F(4x4, 3x3): 3x3 convolutions with 4x fewer multiplications, in standard ONNX ops.

ONNX Runtime's CPU kernels (MLAS) compute every convolution directly, already at ~90 % of the FP32 peak on
x86, so a graph whose time is in 3x3 convolutions (detector heads, FPNs, ResNet bottlenecks) gets no faster by
scheduling. Winograd's minimal filtering (Lavin & Gray, 2016) computes a 4x4 output tile from a 6x6 input tile
with 36 multiplications per channel pair instead of 144. A Conv(X, W, b) with K x C x 3 x 3 constant weights
becomes:

    input transform   Conv(X, B^T (x) B^T, group=C, 6x6 kernels, stride 4)   [N, C*36, th, tw]
    36 GEMMs          MatMul(U, V), U = G W G^T as [36, K, C]                [N, 36, K, th*tw]
    output transform  MatMul(A^T (x) A^T, .), DepthToSpace                   [N, K, 4*th, 4*tw]

then a Slice back to the Conv's own output size and the bias. The transforms are exact in real arithmetic; in
float32 the result differs from the direct convolution by ~1e-5 of the output's range (measured: 5e-6 to 9e-6 for
64-512 channels). Measured on a 2-core x86 CPU with ONNX Runtime 1.32 (benchmarks/RESULTS.md): 1.8-2.2x for
256 channels in and out, 1.2-1.5x for 128 channels or 36-80 out, a loss below 128 channels in or 32 out,
hence the defaults of ``eligible``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..utils.onnx_build import Emitter
from ..utils.onnx_graph import all_nodes, weightless

M, R = 4, 3      # output tile, kernel
A = M + R - 1    # input tile (6)
# F(4x4, 3x3) with interpolation points 0, 1, -1, 2, -2 and infinity (Lavin & Gray, 2016)
B_T = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], dtype=np.float64)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
               dtype=np.float64)

# Below these the transforms cost more than the GEMMs save (measured, see the module's docstring); tiles: 4x4
# output tiles per image, 64 being a 32x32 output (ResNet-18 at 224x224, whose largest such map is 28x28, ran
# 1.2x slower rewritten; RetinaNet's 25x42 level 1.6x faster).
MIN_IN_CHANNELS, MIN_OUT_CHANNELS, MIN_TILES = 128, 32, 64


@dataclass(frozen=True)
class Candidate:
    """A Conv this pass can rewrite, with what the rewrite needs to know of it."""

    node: onnx.NodeProto
    out_channels: int
    in_channels: int
    pads: tuple[int, int, int, int]    # top, left, bottom, right
    size: tuple[int | None, int | None]  # the input's static H and W, or None each


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _tensor_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None) -> dict:
    """Name -> dims (None where unknown) of every tensor shape inference reaches, with the graph's inputs
    fixed to ``input_shapes`` where given."""
    light = weightless(model)
    for value in light.graph.input:
        if input_shapes and value.name in input_shapes:
            value.type.tensor_type.shape.CopyFrom(
                helper.make_tensor_type_proto(value.type.tensor_type.elem_type, list(input_shapes[value.name])).tensor_type.shape)
    try:
        inferred = onnx.shape_inference.infer_shapes(light, data_prop=True).graph  # through Shape -> Reshape
    except Exception:  # noqa: BLE001  (no shapes: no candidate can be judged)
        return {}
    return {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            for v in [*inferred.value_info, *inferred.input]}


def eligible(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None,
             min_in_channels: int = MIN_IN_CHANNELS, min_out_channels: int = MIN_OUT_CHANNELS,
             min_tiles: int = MIN_TILES) -> list[Candidate]:
    """The top-level 2-D Convs with constant float32 3x3 weights, stride 1, dilation 1, one group, explicit pads,
    at least ``min_in_channels`` in and ``min_out_channels`` out, and at least ``min_tiles`` 4x4 output tiles
    per image at ``input_shapes`` (the shapes the graph runs at, e.g. its export shapes; default: its own
    static shapes). A Conv whose output size is unknown there is left as it is."""
    inits = {i.name: i for i in model.graph.initializer}
    own = _tensor_shapes(model)
    at = _tensor_shapes(model, input_shapes) if input_shapes else own
    found = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
            continue
        w = inits.get(node.input[1])
        if w is None or w.data_type != onnx.TensorProto.FLOAT or len(w.dims) != 4 or list(w.dims[2:]) != [R, R]:
            continue
        k, c = w.dims[0], w.dims[1]
        attrs = _attrs(node)
        if (attrs.get("group", 1) != 1 or list(attrs.get("strides", [1, 1])) != [1, 1]
                or list(attrs.get("dilations", [1, 1])) != [1, 1]
                or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID")
                or c < min_in_channels or k < min_out_channels):
            continue
        out = at.get(node.output[0]) or []
        if len(out) != 4 or None in out[2:] or math.ceil(out[2] / M) * math.ceil(out[3] / M) < min_tiles:
            continue
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        shape = own.get(node.input[0]) or [None] * 4
        found.append(Candidate(node, k, c, (pads[0], pads[1], pads[2], pads[3]), (shape[2], shape[3])))
    return found


def winograd_convs(model: onnx.ModelProto, candidates: list[Candidate] | None = None
                   ) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` with each of ``candidates`` (default: ``eligible(model)``) computed by Winograd
    F(4x4, 3x3), and the rewritten nodes' names. Outputs keep their names; weights only the Convs used are
    dropped."""
    candidates = eligible(model) if candidates is None else candidates
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if not candidates:
        return out, []
    graph = out.graph
    opset = next((o.version for o in out.opset_import if o.domain in ("", "ai.onnx")), 17)
    by_name = {c.node.output[0]: c for c in candidates}
    nodes, inits = [], []
    shared: dict[str, str] = {}  # the transform kernels the rewritten convs share
    for node in graph.node:
        cand = by_name.get(node.output[0]) if node.op_type == "Conv" else None
        if cand is None:
            nodes.append(node)
            continue
        new_nodes, new_inits = _rewrite(cand, shared, opset)
        nodes.extend(new_nodes)
        inits.extend(new_inits)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in all_nodes(graph) for i in n.input}  # a Loop body may read the outer graph's weights
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend([*kept, *inits])
    del graph.value_info[:]  # the rewritten convs' tensors changed; ONNX Runtime infers what it needs
    return out, [c.node.name or c.node.output[0] for c in candidates]


def _rewrite(c: Candidate, shared: dict[str, str], opset: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The nodes (and the new shared initializers) that compute ``c``; ``shared`` maps a transform's key to the
    tensor the whole graph's rewritten convs read (they depend on the channel count only)."""
    node = c.node
    k, ch = c.out_channels, c.in_channels
    e = Emitter(f"{node.name or node.output[0]}/winograd", opset)
    inits: list[onnx.TensorProto] = []

    def transform(key: str, value: np.ndarray) -> str:
        if key not in shared:
            shared[key] = f"winograd/{key}"
            inits.append(numpy_helper.from_array(value.astype(np.float32), shared[key]))
        return shared[key]

    pt, pl, pb, pr = c.pads
    # the transformed weights U = G W G^T as [36, K, C], computed from W when the graph loads (ONNX Runtime folds
    # them): the file keeps W, U holds 4x as many numbers
    g2 = transform("weight_transform", np.einsum("xi,yj->ijxy", G, G).reshape(R * R, A * A))
    u = e.op("MatMul", e.op("Reshape", node.input[1], e.i64([k * ch, R * R])), g2)
    u = e.op("Reshape", e.op("Transpose", u, perm=[1, 0]), e.i64([A * A, k, ch]))
    if f"input_transform_{ch}" not in shared:  # B^T (x) B^T per input channel, tiled when the graph loads
        b_in = transform("input_transform", np.einsum("xi,yj->xyij", B_T, B_T).reshape(A * A, 1, A, A))
        shared[f"input_transform_{ch}"] = e.op("Tile", b_in, e.i64([ch, 1, 1, 1]))
    # pads of M - 1 more at the ends make ceil(out / M) whole tiles for any input size
    tiled = e.op("Conv", node.input[0], shared[f"input_transform_{ch}"], group=ch, kernel_shape=[A, A],
                 strides=[M, M], pads=[pt, pl, pb + M - 1, pr + M - 1])
    # [N, C, 36, T] -> [N, 36, C, T] -> (x U, broadcast over N) -> [N, 36, K, T]: the Transpose moves one axis,
    # which ONNX Runtime does as block copies (two axes at once: ~10x slower)
    v = e.op("Reshape", tiled, e.i64([0, ch, A * A, -1]))
    m = e.op("MatMul", u, e.op("Transpose", v, perm=[0, 2, 1, 3]))
    # the output transform as one GEMM over the 36 (A^T (x) A^T: [16, 36]) -> [N, 16, K*T], whose channels
    # DepthToSpace (DCR) puts back in place; cheaper than a Transpose to [N, K, 36, T] and a grouped
    # ConvTranspose for K > 256 (measured: 46 against 62 ms for 819 channels at 100x168), as fast below
    a_out = transform("output_transform", np.einsum("px,qy->pqxy", A_T, A_T).reshape(M * M, A * A))
    y = e.op("MatMul", a_out, e.op("Reshape", m, e.i64([0, A * A, -1])))
    grouped_shape = e.op("Concat", e.dims(tiled, 0, 1), e.i64([M * M * k]), e.dims(tiled, 2, 4), axis=0)
    y = e.op("DepthToSpace", e.op("Reshape", y, grouped_shape), blocksize=M, mode="DCR")
    h, w = c.size
    if not (h is not None and w is not None and (h + pt + pb - 2) % M == 0 and (w + pl + pr - 2) % M == 0):
        size = e.op("Add", e.dims(node.input[0], 2, 4), e.i64([pt + pb - 2, pl + pr - 2]))
        y = e.op("Slice", y, e.i64([0, 0]), size, e.i64([2, 3]))  # crop to the Conv's output size
    if len(node.input) > 2 and node.input[2]:
        y = e.op("Add", y, e.op("Reshape", node.input[2], e.i64([1, k, 1, 1])))
    e.nodes[-1].output[0] = node.output[0]  # the last node writes the Conv's output (no Identity to remove)
    return e.nodes, inits
