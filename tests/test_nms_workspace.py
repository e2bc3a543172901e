"""TRTBatchedNMS's workspace as TensorRT sees it: ``get_workspace_size`` of the IPluginV3 object (CPU only).

The kernel (tests/gpu) carves its scratch arrays out of exactly this many bytes at enqueue, so
the size the plugin reports for the profile's largest shapes must cover the layout of every
shape the profile allows, with each array aligned and none overlapping.
"""
from __future__ import annotations

import types

import pytest

from trtdeploy.ops.batched_nms import OP
from trtdeploy.ops.batched_nms.workspace import DIGIT, SPARE_BITS, Workspace, candidates, workspace_bytes

VALUES = dict(topk=1000, keep_topk=100, score_threshold=0.05, iou_threshold=0.5, background_label_id=-1,
              clip_boxes=0, return_index=1, num_classes=80, is_normalized=0)


def plugin(values: dict):
    from trtdeploy.backends.tensorrt.compat import import_tensorrt
    from trtdeploy.backends.tensorrt.plugins import _make_classes

    plugin_cls, _ = _make_classes(import_tensorrt("tensorrt_rtx").module)
    return plugin_cls(OP.plugin_spec, values, "nms")


def profile(*shapes):
    return [types.SimpleNamespace(max=s) for s in shapes]


@pytest.mark.parametrize("images, boxes, topk", [(1, 10000, 1000), (4, 3000, 5000), (2, 7, 1000), (1, 50, -1)])
def test_reported_workspace_covers_the_kernels_layout(images, boxes, topk):
    values = dict(VALUES, topk=topk)
    reported = plugin(values).get_workspace_size(profile((images, boxes, 1, 4), (images, boxes, 80)),
                                                 profile((images, 100, 5), (images, 100), (images, 100)))
    pairs = boxes * 80
    layout = Workspace(images, pairs, candidates(pairs, topk))
    assert reported == workspace_bytes(images, pairs, layout.k) == layout.nbytes
    at = layout.offsets()
    spans = sorted((at[name], at[name] + size) for name, size in layout._sizes().items())
    assert all(start % 256 == 0 for start, _ in spans) and spans[-1][1] <= reported
    assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:]))  # no two arrays overlap
    assert layout.k == (min(topk, pairs) if topk > 0 else pairs)
    # the radix passes settle every key bit but the low ones, whose boundary bin the key array has room for
    assert layout.num_passes * DIGIT + layout.low_bits == 32 + layout.index_bits
    assert 0 <= layout.low_bits <= SPARE_BITS and layout.slots == layout.k + 2 ** layout.low_bits
    assert layout._sizes()["keys"] == images * layout.slots * 8


def test_smaller_shapes_of_the_profile_fit_the_reported_size():
    reported = workspace_bytes(2, 10000 * 80, 1000)
    assert all(workspace_bytes(n, b * 80, candidates(b * 80, 1000)) <= reported for n in (1, 2) for b in (1, 900, 10000))
    assert workspace_bytes(0, 800, 100) == 0 and workspace_bytes(3, 0, 0) == 0
