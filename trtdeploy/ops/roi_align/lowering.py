"""Plugin-free ``mmdeploy::MMCVRoIAlign`` (and the core of the multi-level one): Gathers in Loops.

How: every level's feature maps (all images) are laid out channels-last as the rows of one
table [sum N*H*W + 1, C] (the last row is zeros); each RoI reads only its own level and
image, so one set of Gathers serves all RoIs and levels with no wasted work. Sample
positions, the out-of-map rule (a sample beyond [-1, size] adds 0; others are clamped into
the map), the bilinear weights and the divisor are torchvision's float32 expressions.

Fixed sampling grid (``sampling_ratio > 0``, what torchvision's detectors use): a sample's
validity and weight are a product of a y and an x factor, so a bin's sum is ``Ay . patch . Ax``
with the RoI's patch = the table rows of its y taps (2 * ratio per bin) by its x taps. Every
RoI's patch rows and block-diagonal weight matrices are computed at once (an invalid sample
weighs 0); a Loop over chunks of RoIs (as many as fill about SEPARABLE_ROWS table rows) then
only gathers a chunk's patches in one Gather and contracts them with two MatMuls. Same taps and
weights as torchvision, summed in another order: equal to ``torchvision.ops.roi_align`` within
float32 rounding (about 1e-7 relative). On ONNX Runtime's CPU this moves far fewer bytes than a
Gather, Mul and Add per tap and sample (benchmarks/RESULTS.md, issue 17 item 4). A non-finite
feature value (inf, NaN) reaches every bin whose patch holds it, not only those that sample it.

Adaptive sampling grid (``sampling_ratio <= 0``): a RoI needs gy x gx = ceil(roi_h / out_h) x
ceil(roi_w / out_w) samples per bin, known only from the data. RoIs are sorted by gy*gx and cut
into chunks of CHUNK; an outer Loop runs over the chunks, an inner Loop over sample
s = iy * gx + ix of every bin of the chunk's RoIs, bounded by the chunk's largest gy*gx (read
from the data, so no RoI is ever cut short); a RoI with fewer samples masks the rest. Sorting
keeps that waste small: the work is about the sum of the RoIs' own sample counts, as in
torchvision, not R times the largest. Taps are added in torchvision's order, so the result
equals ``torchvision.ops.roi_align`` (bit for bit on ONNX Runtime CPU in our tests).
The graph's shapes never depend on the data; only trip counts do.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import onnx
from onnx import TensorProto

from ...utils.onnx_build import Emitter, scalar_input, tensor_input

CHUNK = 64  # RoIs per chunk: they share a trip count, so sorting by sample count keeps the waste small
SEPARABLE_ROWS = 4096  # fixed grid: table rows one chunk's patches gather (4 MB at 256 channels: cache-sized)

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
    zero_row = e.full(e.op("Concat", e.i64([1]), channels, axis=0), 0.0)
    table = e.op("Concat", *blocks, zero_row, axis=0)
    levels = (lambda parts: e.op("Concat", *parts, axis=0) if len(parts) > 1 else parts[0])
    return table, levels(heights), levels(widths), levels(firsts)


def emit_roi_align(e: Emitter, features: Sequence[str], scales: Sequence[float], rois: str, level: str | None,
                   out_h: int, out_w: int, sampling_ratio: int, aligned: bool) -> str:
    """Emit RoIAlign of ``rois [R, 5]`` on ``features`` (one per level); ``level [R]`` picks each RoI's map."""
    f = e.const
    table, heights, widths, firsts = _table(e, features)
    n_rois = e.dim(rois, 0)
    if level is None:
        level = e.full(n_rois, 0, TensorProto.INT64)

    def per_roi(values: str) -> str:                      # a per-level table -> [R, 1]
        return e.unsqueeze(e.op("Gather", values, level, axis=0), [1])

    scale = per_roi(f(np.asarray(scales, np.float32)))
    height, width = per_roi(heights), per_roi(widths)                                      # int64
    batch, x1, y1, x2, y2 = e.op("Split", rois, e.i64([1] * 5), axis=1, outputs=5)        # [R, 1] each
    image_row = e.op("Mul", e.op("Cast", batch, to=TensorProto.INT64), height)           # first row of the image

    offset = f(0.5 if aligned else 0.0)
    start_x, start_y = (e.op("Sub", e.op("Mul", v, scale), offset) for v in (x1, y1))
    size_x, size_y = (e.op("Sub", e.op("Sub", e.op("Mul", v, scale), offset), s)
                      for v, s in ((x2, start_x), (y2, start_y)))
    if not aligned:
        size_x, size_y = (e.op("Max", s, f(1.0)) for s in (size_x, size_y))
    bin_x, bin_y = e.op("Div", size_x, f(float(out_w))), e.op("Div", size_y, f(float(out_h)))
    if sampling_ratio > 0:
        grid_x = grid_y = e.op("Expand", f([[float(sampling_ratio)]]), e.op("Shape", bin_x))
    else:
        grid_x, grid_y = e.op("Ceil", bin_x), e.op("Ceil", bin_y)
    count = e.op("Max", e.op("Mul", grid_y, grid_x), f(1.0))
    bin_origin_y = e.op("Add", start_y, e.op("Mul", f(np.arange(out_h, dtype=np.float32)), bin_y))   # [R, PH]
    bin_origin_x = e.op("Add", start_x, e.op("Mul", f(np.arange(out_w, dtype=np.float32)), bin_x))   # [R, PW]

    # RoIs sorted by samples per bin, in chunks: a chunk loops over its own largest sample count (adaptive
    # grid), or (fixed grid) pools its RoIs with no inner Loop, in chunks small enough for the cache.
    size = CHUNK if sampling_ratio <= 0 else max(1, SEPARABLE_ROWS // (4 * sampling_ratio ** 2 * out_h * out_w))
    samples = e.op("Mul", e.op("Max", grid_y, f(0.0)), e.op("Max", grid_x, f(0.0)))       # [R, 1]
    floats = e.op("Concat", bin_origin_y, bin_origin_x, bin_y, bin_x, grid_y, grid_x, samples, axis=1)
    ints = e.op("Concat", height, width, image_row, per_roi(firsts), axis=1)
    n_chunks = e.op("Max", e.op("Div", e.op("Add", n_rois, e.i64([size - 1])), e.i64([size])), e.i64([1]))
    n_padded = e.op("Mul", n_chunks, e.i64([size]))

    def padded(x: str, dtype: int) -> str:                # a chunk of zero rows after the RoIs: no samples
        return e.op("Concat", x, e.full(e.op("Concat", e.i64([size]), e.dim(x, 1), axis=0), 0, dtype), axis=0)

    floats, ints = padded(floats, TensorProto.FLOAT), padded(ints, TensorProto.INT64)
    most, order = e.op("TopK", e.op("Gather", floats, e.i64(out_h + out_w + 4), axis=1), n_padded, axis=0, outputs=2)
    floats, ints = e.op("Gather", floats, order, axis=0), e.op("Gather", ints, order, axis=0)  # [n_padded, .]
    chunked = (lambda x, dims: e.op("Reshape", x, e.op("Concat", n_chunks, e.i64([size, *dims]), axis=0)))
    outer = e.sub()
    chunk = outer.name("chunk")
    if sampling_ratio > 0:  # every RoI's taps and weights at once; the chunk Loop only gathers and contracts
        index, rows_w, cols_w = _separable_taps(e, _roi_columns(e, floats, ints, out_h, out_w), sampling_ratio,
                                                out_h, out_w, table)
        ny, nx = 2 * sampling_ratio * out_h, 2 * sampling_ratio * out_w
        this = (lambda x, dims: outer.op("Gather", chunked(x, dims), chunk, axis=0))
        summed = _separable_sums(outer, table, this(index, [ny, nx]), this(rows_w, [out_h, ny]),
                                 this(cols_w, [out_w, nx]), size, out_h, out_w)
    else:
        chunk_trips = e.op("Cast", e.op("Gather", most, e.op("Range", e.i64(0), e.squeeze(n_padded, [0]),
                                                             e.i64(size)), axis=0),
                           to=TensorProto.INT64)                               # each chunk's first (largest) count
        this = (lambda x: outer.op("Gather", chunked(x, [-1]), chunk, axis=0))              # [size, .]
        roi = _roi_columns(outer, this(floats), this(ints), out_h, out_w)
        summed = _sampled_sums(outer, table, roi, outer.op("Gather", chunk_trips, chunk, axis=0), out_h, out_w)
    outer_graph = outer.graph("roi_align_chunks", [scalar_input(chunk, TensorProto.INT64),
                                                   scalar_input(outer.name("cond"), TensorProto.BOOL)],
                              [outer.const(True, np.bool_), summed])
    stacked = e.op("Loop", e.squeeze(n_chunks, [0]), e.const(True, np.bool_), body=outer_graph)  # [chunks, size, ...]

    # Back to the RoIs' order, then torchvision's divisor.
    sorted_sums = e.op("Reshape", stacked, e.op("Concat", e.i64([-1, out_h, out_w]), e.dim(table, 1), axis=0))
    positions = e.op("ScatterElements", order, order, e.op("Range", e.i64(0), e.squeeze(n_padded, [0]), e.i64(1)),
                     axis=0)                                                                 # inverse permutation
    sums = e.op("Gather", sorted_sums, e.op("Slice", positions, e.i64([0]), n_rois), axis=0)   # [R, PH, PW, C]
    pooled = e.op("Transpose", sums, perm=[0, 3, 1, 2])                                     # [R, C, PH, PW]
    return e.op("Div", pooled, e.unsqueeze(count, [2, 3]))


class _RoIs(NamedTuple):
    """RoI parameters, [n, .] each: bin origins [n, PH] / [n, PW], the rest [n, 1]."""

    origin_y: str
    origin_x: str
    bin_y: str
    bin_x: str
    grid_y: str
    grid_x: str
    height: str      # int64: the RoI's map height, width, first row of its image in the table, first row of its map
    width: str
    image_row: str
    first: str


def _axis_taps(b: Emitter, origin: str, bin_size: str, grid: str, index: str, limit: str):
    """Along one axis, torchvision's float32 expressions: validity, low/high pixel (int64), low/high weights."""
    one = b.const(1.0)
    pos = b.op("Add", origin, b.op("Div", b.op("Mul", b.op("Add", index, b.const(0.5)), bin_size), grid))
    limit_f = b.op("Cast", limit, to=TensorProto.FLOAT)
    ok = b.op("And", b.op("And", b.op("GreaterOrEqual", pos, b.const(-1.0)), b.op("LessOrEqual", pos, limit_f)),
              b.op("Less", index, grid))
    last = b.op("Sub", limit_f, one)
    clamped = b.op("Min", b.op("Max", pos, b.const(0.0)), last)
    low = b.op("Floor", clamped)
    frac = b.op("Sub", clamped, low)
    high = b.op("Min", b.op("Add", low, one), last)
    as_int = (lambda x: b.op("Cast", x, to=TensorProto.INT64))
    return ok, as_int(low), as_int(high), b.op("Sub", one, frac), frac


def _sampled_sums(outer: Emitter, table: str, roi: _RoIs, trips: str, out_h: int, out_w: int) -> str:
    """Adaptive grid: an inner Loop of ``trips``; trip s adds sample s (row-major in each RoI's own grid) of every
    bin, its 4 taps in torchvision's order. Returns the chunk's sums [size, PH, PW, C]."""
    b = outer.sub()
    step, acc_in = b.name("sample"), b.name("acc_in")
    step_f = b.op("Cast", step, to=TensorProto.FLOAT)
    per_row = b.op("Max", roi.grid_x, b.const(1.0))
    iy = b.op("Floor", b.op("Div", step_f, per_row))                                        # [size, 1]
    ix = b.op("Sub", step_f, b.op("Mul", iy, per_row))
    ok_y, y_low, y_high, hy, ly = _axis_taps(b, roi.origin_y, roi.bin_y, roi.grid_y, iy, roi.height)   # [size, PH]
    ok_x, x_low, x_high, hx, lx = _axis_taps(b, roi.origin_x, roi.bin_x, roi.grid_x, ix, roi.width)    # [size, PW]
    ok = b.op("And", b.unsqueeze(ok_y, [2]), b.unsqueeze(ok_x, [1]))                         # [size, PH, PW]
    zero_row = b.op("Sub", b.dim(table, 0), b.i64(1))
    first3 = b.unsqueeze(roi.first, [2])
    total = b.const(0.0)
    for y_tap, wy in ((y_low, hy), (y_high, ly)):
        row = b.unsqueeze(b.op("Mul", b.op("Add", roi.image_row, y_tap), roi.width), [2])  # [size, PH, 1]
        for x_tap, wx in ((x_low, hx), (x_high, lx)):
            index = b.op("Where", ok, b.op("Add", b.op("Add", row, b.unsqueeze(x_tap, [1])), first3), zero_row)
            weight = b.op("Where", ok, b.op("Mul", b.unsqueeze(wy, [2]), b.unsqueeze(wx, [1])),
                          b.const(0.0))                                        # [size, PH, PW]; 0, never NaN
            tap = b.op("Mul", b.unsqueeze(weight, [3]), b.op("Gather", table, index, axis=0))
            total = b.op("Add", total, tap)                                                  # [size, PH, PW, C]
    inner = b.graph("roi_align_samples", [scalar_input(step, TensorProto.INT64),
                                          scalar_input(b.name("cond"), TensorProto.BOOL),
                                          tensor_input(acc_in)], [b.const(True, np.bool_), b.op("Add", acc_in, total)])
    size = outer.dim(roi.height, 0)
    zeros = outer.full(outer.op("Concat", size, outer.i64([out_h, out_w]), outer.dim(table, 1), axis=0), 0.0)
    return outer.op("Loop", trips, outer.const(True, np.bool_), zeros, body=inner)


def _roi_columns(b: Emitter, floats: str, ints: str, out_h: int, out_w: int) -> _RoIs:
    """The RoI parameters from their packed rows (floats [., PH + PW + 5], ints [., 4])."""
    return _RoIs(*b.op("Split", floats, b.i64([out_h, out_w, 1, 1, 1, 1, 1]), axis=1, outputs=7)[:6],
                      *b.op("Split", ints, b.i64([1, 1, 1, 1]), axis=1, outputs=4))


def _separable_taps(e: Emitter, roi: _RoIs, ratio: int, out_h: int, out_w: int, table: str
                    ) -> tuple[str, str, str]:
    """Fixed grid (``ratio`` samples per bin and axis): a sample's validity and weight are products of a y and an x
    factor, so a bin's sum is ``Ay . patch . Ax`` with the RoI's patch = the table rows of its y taps (ratio samples
    x low/high pixel per bin) by its x taps. Returns, per RoI: the patch's table rows [R, NY, NX] (NY = 2 * ratio *
    PH, NX = 2 * ratio * PW; the zero row where a sample is invalid) and the block-diagonal weight matrices
    Ay [R, PH, NY] and Ax [R, PW, NX] (an invalid sample weighs 0)."""
    grid = e.const(np.arange(ratio, dtype=np.float32).reshape(1, 1, ratio))                 # sample index

    def axis(origin, bin_size, limit, bins):
        """Taps along one axis, in the order (bin, sample, low/high): weights [R, bins, taps], pixels, validity."""
        ok, low, high, w_low, w_high = _axis_taps(e, e.unsqueeze(origin, [2]), e.unsqueeze(bin_size, [2]),
                                                  e.const(np.float32(ratio)), grid, e.unsqueeze(limit, [2]))
        stack = (lambda lo, hi: e.op("Concat", e.unsqueeze(lo, [3]), e.unsqueeze(hi, [3]), axis=3))
        taps = 2 * ratio * bins
        weights = e.op("Where", e.unsqueeze(ok, [3]), stack(w_low, w_high), e.const(0.0))  # [R, bins, ratio, 2]
        diagonal = e.const(np.eye(bins, dtype=np.float32).reshape(1, bins, bins, 1, 1))
        matrix = e.op("Reshape", e.op("Mul", diagonal, e.unsqueeze(weights, [1])), e.i64([0, bins, taps]))
        ok_taps = e.op("Reshape", e.op("Expand", e.unsqueeze(ok, [3]), e.i64([1, 1, 1, 2])), e.i64([0, taps]))
        return matrix, e.op("Reshape", stack(low, high), e.i64([0, taps])), ok_taps

    rows_w, y_pix, ok_y = axis(roi.origin_y, roi.bin_y, roi.height, out_h)
    cols_w, x_pix, ok_x = axis(roi.origin_x, roi.bin_x, roi.width, out_w)
    rows = e.unsqueeze(e.op("Mul", e.op("Add", roi.image_row, y_pix), roi.width), [2])     # [R, NY, 1]
    cols = e.unsqueeze(e.op("Add", x_pix, roi.first), [1])                                  # [R, 1, NX]
    ok = e.op("And", e.unsqueeze(ok_y, [2]), e.unsqueeze(ok_x, [1]))
    index = e.op("Where", ok, e.op("Add", rows, cols), e.op("Sub", e.dim(table, 0), e.i64(1)))  # [R, NY, NX]
    return index, rows_w, cols_w


def _separable_sums(b: Emitter, table: str, index: str, rows_w: str, cols_w: str, size: int, out_h: int,
                    out_w: int) -> str:
    """One chunk of a fixed grid: one Gather of its RoIs' patches, then Ax and Ay by two MatMuls.
    Returns the chunk's sums [size, PH, PW, C]."""
    patch = b.op("Gather", table, index, axis=0)                                            # [size, NY, NX, C]
    by_cols = b.op("MatMul", b.unsqueeze(cols_w, [1]), patch)                               # [size, NY, PW, C]
    by_rows = b.op("MatMul", rows_w, b.op("Reshape", by_cols, b.i64([size, 0, -1])))        # [size, PH, PW * C]
    return b.op("Reshape", by_rows, b.op("Concat", b.i64([size, out_h, out_w]), b.dim(table, 1), axis=0))


def lower_roi_align(values: dict, node: onnx.NodeProto, e: Emitter) -> None:
    """``values``: the node's fields (``OP.fields``; mode is 'avg', the only pooling torchvision has)."""
    out = emit_roi_align(e, [node.input[0]], [values["spatial_scale"]], node.input[1], None, values["output_height"],
                         values["output_width"], values["sampling_ratio"], bool(values["aligned"]))
    e.output(out, node.output[0])
