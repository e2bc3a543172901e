"""Plugin-free ``mmdeploy::MMCVRoIAlign`` (and the core of the multi-level one): Gather in a Loop.

How: every level's feature maps (all images) are laid out channels-last as the rows of one
table [sum N*H*W + 1, C] (the last row is zeros); each RoI reads only its own level and
image, so one set of Gathers serves all RoIs and levels with no wasted work. Sample
positions, the out-of-map rule (a sample beyond [-1, size] adds 0; others are clamped into
the map), the bilinear weights, the summation order and the divisor are torchvision's
float32 expressions, so the result equals ``torchvision.ops.roi_align`` (bit for bit on
ONNX Runtime CPU in our tests).

Sampling grid bound: one Loop trip evaluates sample (iy, ix) of every bin of every RoI
(four row Gathers). With ``sampling_ratio > 0`` the Loop runs sampling_ratio**2 trips. With
adaptive sampling (``<= 0``) a RoI needs ceil(roi_h / out_h) x ceil(roi_w / out_w) samples per
bin; the Loop runs max_gy * max_gx trips (the largest over the RoIs, read from the data, so no
RoI is ever cut short) and masks the samples a smaller RoI does not have. The graph's shapes
never depend on the data; only the trip count does.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto

from ...errors import BuildError
from ...passes.lower_custom_ops import Emitter, attributes, scalar_input, tensor_input

def _table(e: Emitter, features: Sequence[str]) -> tuple[str, str, str, str]:
    """Stack feature maps [N, C, H_l, W_l] as rows [sum_l N*H_l*W_l + 1, C] (channels last, a zero row last).

    Returns the table and per-level int64 tables: map height, map width, first row.
    """
    heights = [e.dim(f, 2) for f in features]
    widths = [e.dim(f, 3) for f in features]
    channels = e.dim(features[0], 1)
    blocks, firsts, row = [], [], e.i64([0])
    for f in features:
        blocks.append(e.op("Reshape", e.op("Transpose", f, perm=[0, 2, 3, 1]),
                           e.op("Concat", e.i64([-1]), channels, axis=0)))
        firsts.append(row)
        row = e.op("Add", row, e.dim(blocks[-1], 0))
    zero_row = e.op("ConstantOfShape", e.op("Concat", e.i64([1]), channels, axis=0),
                    value=onnx.helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))
    table = e.op("Concat", *blocks, zero_row, axis=0)
    levels = (lambda parts: e.op("Concat", *parts, axis=0) if len(parts) > 1 else parts[0])
    return table, levels(heights), levels(widths), levels(firsts)


def emit_roi_align(e: Emitter, features: Sequence[str], scales: Sequence[float], rois: str, level: str | None,
                   out_h: int, out_w: int, sampling_ratio: int, aligned: bool) -> str:
    """Emit RoIAlign of ``rois [R, 5]`` on ``features`` (one per level); ``level [R]`` picks each RoI's map."""
    f = e.const
    table, heights, widths, firsts = _table(e, features)

    def per_roi(values: str) -> str:                      # a per-level table -> [R, 1] (or [1] for one level)
        return values if level is None else e.unsqueeze(e.op("Gather", values, level, axis=0), [1])

    scale = per_roi(f(np.asarray(scales, np.float32)))
    height, width = per_roi(heights), per_roi(widths)                                      # int64
    batch, x1, y1, x2, y2 = e.op("Split", rois, e.i64([1] * 5), axis=1, outputs=5)        # [R, 1] each
    image_row = e.op("Mul", e.op("Cast", batch, to=TensorProto.INT64), height)           # first row of the image
    first = per_roi(firsts) if level is None else e.unsqueeze(per_roi(firsts), [2])      # the level's first row

    offset = f(0.5 if aligned else 0.0)
    start_x, start_y = (e.op("Sub", e.op("Mul", v, scale), offset) for v in (x1, y1))
    size_x, size_y = (e.op("Sub", e.op("Sub", e.op("Mul", v, scale), offset), s)
                      for v, s in ((x2, start_x), (y2, start_y)))
    if not aligned:
        size_x, size_y = (e.op("Max", s, f(1.0)) for s in (size_x, size_y))
    bin_x, bin_y = e.op("Div", size_x, f(float(out_w))), e.op("Div", size_y, f(float(out_h)))
    if sampling_ratio > 0:
        grid_x = grid_y = f([[float(sampling_ratio)]])
        trips_y = trips_x = e.i64(sampling_ratio)
    else:
        grid_x, grid_y = e.op("Ceil", bin_x), e.op("Ceil", bin_y)
        trips_y, trips_x = (e.op("Cast", e.reduce("ReduceMax", e.op("Concat", e.op("Reshape", g, e.i64([-1])),
                                                                      f([0.0]), axis=0), [0], keepdims=0),
                                 to=TensorProto.INT64) for g in (grid_y, grid_x))
    count = e.op("Max", e.op("Mul", grid_y, grid_x), f(1.0))
    bin_origin_y = e.op("Add", start_y, e.op("Mul", f(np.arange(out_h, dtype=np.float32)), bin_y))   # [R, PH]
    bin_origin_x = e.op("Add", start_x, e.op("Mul", f(np.arange(out_w, dtype=np.float32)), bin_x))   # [R, PW]

    # One trip: sample (iy, ix) of every bin, with torchvision's position, validity, clamping and weights.
    body = e.sub()
    step, acc_in = body.name("iter"), body.name("acc_in")
    trips_x_safe = body.op("Max", trips_x, body.i64(1))
    iy = body.op("Cast", body.op("Div", step, trips_x_safe), to=TensorProto.FLOAT)
    ix = body.op("Cast", body.op("Mod", step, trips_x_safe), to=TensorProto.FLOAT)
    one = body.const(1.0)

    def axis_taps(origin, bin_size, grid, index, limit):
        """Along one axis: validity, low/high pixel (int64) and the low/high weights."""
        pos = body.op("Add", origin, body.op("Div", body.op("Mul", body.op("Add", index, body.const(0.5)), bin_size),
                                             grid))
        limit_f = body.op("Cast", limit, to=TensorProto.FLOAT)
        ok = body.op("And", body.op("And", body.op("GreaterOrEqual", pos, body.const(-1.0)),
                                    body.op("LessOrEqual", pos, limit_f)), body.op("Less", index, grid))
        last = body.op("Sub", limit_f, one)
        clamped = body.op("Min", body.op("Max", pos, body.const(0.0)), last)
        low = body.op("Floor", clamped)
        frac = body.op("Sub", clamped, low)
        high = body.op("Min", body.op("Add", low, one), last)
        as_int = (lambda x: body.op("Cast", x, to=TensorProto.INT64))
        return ok, as_int(low), as_int(high), body.op("Sub", one, frac), frac

    ok_y, y_low, y_high, hy, ly = axis_taps(bin_origin_y, bin_y, grid_y, iy, height)       # [R, PH]
    ok_x, x_low, x_high, hx, lx = axis_taps(bin_origin_x, bin_x, grid_x, ix, width)        # [R, PW]
    ok = body.op("And", body.unsqueeze(ok_y, [2]), body.unsqueeze(ok_x, [1]))               # [R, PH, PW]
    zero_row = body.op("Sub", body.dim(table, 0), body.i64(1))
    total = body.const(0.0)
    for y_tap, wy in ((y_low, hy), (y_high, ly)):
        row = body.unsqueeze(body.op("Mul", body.op("Add", image_row, y_tap), width), [2])   # [R, PH, 1]
        for x_tap, wx in ((x_low, hx), (x_high, lx)):
            index = body.op("Where", ok, body.op("Add", body.op("Add", row, body.unsqueeze(x_tap, [1])), first),
                            zero_row)
            weight = body.op("Where", ok, body.op("Mul", body.unsqueeze(wy, [2]), body.unsqueeze(wx, [1])),
                             body.const(0.0))                                  # [R, PH, PW]; 0, never NaN, when out
            tap = body.op("Mul", body.unsqueeze(weight, [3]), body.op("Gather", table, index, axis=0))
            total = body.op("Add", total, tap)                                                  # [R, PH, PW, C]
    acc_out = body.op("Add", acc_in, total)
    graph = body.graph("roi_align_samples", [scalar_input(step, TensorProto.INT64),
                                             scalar_input(body.name("cond"), TensorProto.BOOL),
                                             tensor_input(acc_in)], [body.const(True, np.bool_), acc_out])

    channels = e.dim(features[0], 1)
    acc_shape = e.op("Concat", e.dim(rois, 0), e.i64([out_h, out_w]), channels, axis=0)
    zeros = e.op("ConstantOfShape", acc_shape, value=onnx.helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))
    summed = e.op("Loop", e.op("Mul", trips_y, trips_x), e.const(True, np.bool_), zeros, body=graph)
    pooled = e.op("Transpose", summed, perm=[0, 3, 1, 2])                                   # [R, C, PH, PW]
    return e.op("Div", pooled, e.unsqueeze(count, [2, 3]))


def lower_roi_align(node: onnx.NodeProto, e: Emitter) -> None:
    a = attributes(node)
    if a.get("mode", "avg") != "avg":
        raise BuildError(f"node {node.name or '<unnamed>'} ({node.domain}::{node.op_type}): mode={a['mode']!r} has "
                         f"no plugin-free lowering (torchvision pools with 'avg'); export with mode='avg'")
    out = emit_roi_align(e, [node.input[0]], [float(a.get("spatial_scale", 1.0))], node.input[1], None,
                         int(a["output_height"]), int(a["output_width"]), int(a.get("sampling_ratio", 0)),
                         bool(a.get("aligned", 0)))
    e.output(out, node.output[0])
