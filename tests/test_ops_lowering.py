"""The plugin-free lowerings, run by ONNX Runtime, against torchvision.ops on randomized inputs.

Each op is exported once (as its single mmdeploy:: node, dynamic shapes), lowered to standard
ONNX and checked: no custom node, no NonZero. Hypothesis then feeds it box sets with ties,
empty inputs, everything below the score threshold, everything suppressed, boxes off the
image and several images per batch. NMS keep sets must be identical; RoIAlign within 1e-5.
"""
from __future__ import annotations

import functools
import io
from unittest import mock

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from hypothesis import HealthCheck, given, settings, strategies as st

from trtdeploy.errors import BuildError, ConfigError
from trtdeploy.ops.batched_nms import multiclass_nms
from trtdeploy.ops.batched_nms import lowering as nms_lowering
from trtdeploy.ops.batched_nms.lowering import BLOCK, torchvision_iou_threshold
from trtdeploy.ops.multi_level_roi_align import multi_level_roi_align
from trtdeploy.ops.roi_align import lowering as roi_lowering, roi_align
from trtdeploy.passes import lower_custom_ops

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def lowered_session(module: torch.nn.Module, args: tuple, names: list[str], dynamic: dict) -> ort.InferenceSession:
    return ort.InferenceSession(lowered_model(module, args, names, dynamic).SerializeToString(),
                                providers=["CPUExecutionProvider"])


def lowered_model(module: torch.nn.Module, args: tuple, names: list[str], dynamic: dict) -> onnx.ModelProto:
    buffer = io.BytesIO()
    torch.onnx.export(module, args, buffer, dynamo=False, opset_version=17, input_names=names,
                      dynamic_axes=dynamic)
    model = onnx.load_from_string(buffer.getvalue())
    assert [n.domain for n in model.graph.node if n.domain] == ["mmdeploy"]  # one custom node before lowering
    model = lower_custom_ops(model, "plugin-free")
    onnx.checker.check_model(model, full_check=True)
    assert not [n for n in model.graph.node if n.domain not in ("", "ai.onnx")]
    assert "NonZero" not in {n.op_type for n in model.graph.node}
    return model


# ---------------------------------------------------------------- batched NMS

NMS_GRAPHS = {
    # name: (per-class boxes, settings, candidates per block of the lowering's Loop)
    "shared": (False, dict(iou_threshold=0.5, score_threshold=0.3, pre_top_k=40, keep_top_k=25), BLOCK),
    # 0.6 is not a float32: exercises the double-precision comparison torchvision makes.
    "per_class": (True, dict(iou_threshold=0.6, score_threshold=0.0, pre_top_k=-1, keep_top_k=12,
                             background_label_id=0, return_index=True), BLOCK),
    # Blocks of 4 candidates and TopK pages of 12: many blocks, carried over, the early stop once keep_top_k
    # are found, and the paged candidate selection TensorRT needs for topk > 3840.
    "small_blocks": (False, dict(iou_threshold=0.5, score_threshold=0.3, pre_top_k=50, keep_top_k=6), 4),
}
SMALL_TOPK_PAGE = 12


class NMSModule(torch.nn.Module):
    def __init__(self, kwargs: dict):
        super().__init__()
        self.kwargs = kwargs

    def forward(self, boxes, scores):
        return multiclass_nms(boxes, scores, **self.kwargs)


@functools.lru_cache(maxsize=None)
def nms_session(name: str) -> ort.InferenceSession:
    per_class, kwargs, block = NMS_GRAPHS[name]
    boxes = torch.rand(1, 6, 3, 4) if per_class else torch.rand(1, 6, 4)
    dyn = {"boxes": {0: "n", 1: "b", **({2: "c"} if per_class else {})}, "scores": {0: "n", 1: "b", 2: "c"}}
    page = SMALL_TOPK_PAGE if block < BLOCK else nms_lowering.MAX_TOPK
    with mock.patch.object(nms_lowering, "BLOCK", block), mock.patch.object(nms_lowering, "MAX_TOPK", page):
        return lowered_session(NMSModule(kwargs), (boxes, torch.rand(1, 6, 3)), ["boxes", "scores"], dyn)


def torchvision_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, score_threshold: float,
                    pre_top_k: int, keep_top_k: int, background_label_id: int = -1, **_) -> list[list[tuple]]:
    """Per image: the kept (box, class) pairs, in output order, by torchvision.ops.batched_nms."""
    result = []
    for i in range(scores.shape[0]):
        n_boxes, n_classes = scores.shape[1:]
        box_ids = torch.arange(n_boxes).repeat_interleave(n_classes)
        cls = torch.arange(n_classes).repeat(n_boxes)
        flat = scores[i].reshape(-1)
        pick = torch.where((flat > score_threshold) & (cls != background_label_id))[0]
        pick = pick[torch.sort(flat[pick], descending=True, stable=True).indices]
        if pre_top_k > 0:
            pick = pick[:pre_top_k]
        cand_boxes = boxes[i, box_ids[pick], cls[pick]] if boxes.dim() == 4 else boxes[i, box_ids[pick]]
        keep = torchvision.ops.batched_nms(cand_boxes, flat[pick], cls[pick], iou_threshold)[:keep_top_k]
        result.append([(int(box_ids[pick][k]), int(cls[pick][k])) for k in keep])
    return result


@st.composite
def box_sets(draw, per_class: bool):
    """Boxes on a coarse grid (exact IoU ties), some far off the image, with tied or spread scores."""
    n_images = draw(st.integers(1, 3))
    n_boxes = draw(st.integers(0, 30))
    n_classes = draw(st.integers(1, 4))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    box_shape = (n_images, n_boxes, n_classes if per_class else 1)
    grid = draw(st.sampled_from([2.0, 5.0, 0.0]))  # 0: continuous coordinates
    xy = rng.uniform(-20, 60, box_shape + (2,))
    wh = rng.uniform(0, 40, box_shape + (2,))
    if grid:
        xy, wh = np.round(xy / grid) * grid, np.round(wh / grid) * grid
    boxes = np.concatenate([xy, xy + wh], -1).astype(np.float32)
    if draw(st.booleans()):  # some boxes way off the image
        boxes[..., :2, :] += np.float32(1e4)
    if draw(st.booleans()):  # duplicates: all but the best of each class suppressed
        boxes[:] = boxes[:, :1]
    if not per_class:
        boxes = boxes[:, :, 0]
    score_mode = draw(st.sampled_from(["uniform", "ties", "below"]))
    scores = rng.uniform(0, 1, (n_images, n_boxes, n_classes))
    if score_mode == "ties":
        scores = np.round(scores * 4) / 4
    elif score_mode == "below":
        scores = scores * 0.25  # all at or below the 0.3 threshold of the 'shared' graph
    return boxes, scores.astype(np.float32)


def check_nms(name: str, boxes: np.ndarray, scores: np.ndarray) -> None:
    per_class, kwargs, _ = NMS_GRAPHS[name]
    outputs = nms_session(name).run(None, {"boxes": boxes, "scores": scores})
    dets, labels = outputs[0], outputs[1]
    expected = torchvision_nms(torch.from_numpy(boxes), torch.from_numpy(scores), **kwargs)
    eager = multiclass_nms(torch.from_numpy(boxes), torch.from_numpy(scores), **kwargs)
    keep_top_k = kwargs["keep_top_k"]
    assert dets.shape == (scores.shape[0], keep_top_k, 5) and labels.shape == (scores.shape[0], keep_top_k)
    for i, kept in enumerate(expected):
        k = len(kept)
        assert (labels[i] >= 0).sum() == k
        assert [int(c) for c in labels[i, :k]] == [c for _, c in kept]
        want_boxes = [boxes[i, b, c] if per_class else boxes[i, b] for b, c in kept]
        np.testing.assert_array_equal(dets[i, :k, :4], np.reshape(want_boxes, (k, 4)))
        np.testing.assert_array_equal(dets[i, :k, 4], [scores[i, b, c] for b, c in kept])
        assert (dets[i, k:] == 0).all() and (labels[i, k:] == -1).all()
        if kwargs.get("return_index"):
            assert list(outputs[2][i, :k]) == [b for b, _ in kept] and (outputs[2][i, k:] == -1).all()
    for ours, theirs in zip(outputs, eager):
        np.testing.assert_array_equal(ours, theirs.numpy())


@SETTINGS
@given(box_sets(per_class=False))
def test_nms_shared_boxes_matches_torchvision(case):
    check_nms("shared", *case)


@SETTINGS
@given(box_sets(per_class=True))
def test_nms_per_class_boxes_matches_torchvision(case):
    check_nms("per_class", *case)


@SETTINGS
@given(box_sets(per_class=False))
def test_nms_in_many_blocks_matches_torchvision(case):
    check_nms("small_blocks", *case)


def test_nms_long_suppression_chain_is_exact():
    """A chain where each box overlaps the next: greedy keeps every other box, needing many sweeps."""
    n = 30
    x = np.arange(n, dtype=np.float32) * 2
    boxes = np.stack([x, np.zeros(n), x + 10, np.full(n, 10)], -1)[None].astype(np.float32)
    scores = np.linspace(0.9, 0.4, n, dtype=np.float32)[None, :, None]
    check_nms("shared", boxes, scores)
    check_nms("small_blocks", boxes, scores)
    labels = nms_session("shared").run(None, {"boxes": boxes, "scores": scores})[1]
    # 10 px wide boxes 2 px apart: IoU(i, i+1) = 8/12 > 0.5, IoU(i, i+2) = 6/14 < 0.5, so greedy keeps 0, 2, 4, ...
    assert (labels >= 0).sum() == 15


def test_custom_node_inside_a_subgraph_is_lowered():
    """A custom node in an If branch (as scripted exports make) is lowered like a top-level one."""
    buffer = io.BytesIO()
    _, kwargs, _ = NMS_GRAPHS["shared"]
    torch.onnx.export(NMSModule(kwargs), (torch.rand(1, 6, 4), torch.rand(1, 6, 3)), buffer, dynamo=False,
                      opset_version=17, input_names=["boxes", "scores"], dynamic_axes={"boxes": {1: "b"},
                                                                                       "scores": {1: "b"}})
    flat = onnx.load_from_string(buffer.getvalue())
    outputs = [o.name for o in flat.graph.output]
    branch = onnx.helper.make_graph(list(flat.graph.node), "branch", [], list(flat.graph.output),
                                    initializer=list(flat.graph.initializer))
    cond = onnx.helper.make_node("Constant", [], ["cond"], value=onnx.helper.make_tensor("c", onnx.TensorProto.BOOL,
                                                                                          [], [True]))
    branched = onnx.helper.make_node("If", ["cond"], outputs, then_branch=branch, else_branch=branch)
    model = onnx.helper.make_model(onnx.helper.make_graph([cond, branched], "g", list(flat.graph.input),
                                                          list(flat.graph.output)), opset_imports=flat.opset_import)
    model = lower_custom_ops(model)
    onnx.checker.check_model(model)
    assert not [o for o in model.opset_import if o.domain == "mmdeploy"]
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 50, (1, 40, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 30, (1, 40, 2))], -1).astype(np.float32)
    scores = rng.uniform(0, 1, (1, 40, 3)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"boxes": boxes, "scores": scores})
    theirs = multiclass_nms(torch.from_numpy(boxes), torch.from_numpy(scores), **kwargs)
    assert (ours[1] >= 0).sum() > 5  # something survived, so the comparison means something
    for mine, reference in zip(ours, theirs):
        np.testing.assert_array_equal(mine, reference.numpy())


def test_iou_threshold_compares_like_torchvision_in_double():
    t = torchvision_iou_threshold(np.float32(0.6))
    assert float(np.float32(0.6)) > 0.6  # the float32 attribute alone would move the cut
    assert float(t) < 0.6 < float(np.nextafter(t, np.float32(1)))  # t: the last float32 below 0.6
    assert torchvision_iou_threshold(np.float32(0.5)) == np.float32(0.5)


def test_nms_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="keep_top_k must be > 0"):
        multiclass_nms(torch.rand(1, 3, 4), torch.rand(1, 3, 2), iou_threshold=0.5, score_threshold=0.1,
                       pre_top_k=10, keep_top_k=0)
    with pytest.raises(ConfigError, match="boxes"):
        multiclass_nms(torch.rand(1, 3, 5), torch.rand(1, 3, 2), iou_threshold=0.5, score_threshold=0.1,
                       pre_top_k=10, keep_top_k=5)


def test_lowering_refuses_unsupported_attributes_and_routes():
    node = onnx.helper.make_node("TRTBatchedNMS", ["b", "s"], ["d", "l"], domain="mmdeploy", keep_topk=5, topk=5,
                                 iou_threshold=0.5, score_threshold=0.1, clip_boxes=1)
    graph = onnx.helper.make_graph([node], "g", [], [])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    with pytest.raises(BuildError, match="clip_boxes=1"):
        lower_custom_ops(model)
    with pytest.raises(ConfigError, match="custom_ops"):
        lower_custom_ops(model, "plugins")
    model.opset_import[0].version = 11
    with pytest.raises(BuildError, match="opset"):
        lower_custom_ops(model)
    pooling = onnx.helper.make_node("MMCVMultiLevelRoiAlign", ["r", "p2", "p4"], ["y"], domain="mmdeploy",
                                    output_height=7, output_width=7, featmap_strides=[4.0, 12.0], finest_scale=56)
    model = onnx.helper.make_model(onnx.helper.make_graph([pooling], "g", [], []),
                                   opset_imports=[onnx.helper.make_opsetid("", 17)])
    with pytest.raises(BuildError, match="powers of two"):
        lower_custom_ops(model)


# ---------------------------------------------------------------- RoIAlign

class RoIAlignModule(torch.nn.Module):
    def __init__(self, sampling_ratio: int, aligned: bool):
        super().__init__()
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def forward(self, features, rois):
        return roi_align(features, rois, (5, 4), 0.5, self.sampling_ratio, self.aligned)


@functools.lru_cache(maxsize=None)
def roi_align_session(sampling_ratio: int, aligned: bool) -> ort.InferenceSession:
    return ort.InferenceSession(roi_align_model(sampling_ratio, aligned).SerializeToString(),
                                providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=None)
def roi_align_model(sampling_ratio: int, aligned: bool) -> onnx.ModelProto:
    """Chunks of 3 RoIs (not 64), so that sorting RoIs by sample count and restoring their order is exercised;
    a fixed grid pools one RoI per chunk (the chunk Loop's many trips)."""
    args = (torch.randn(1, 2, 8, 8), torch.tensor([[0, 1, 1, 6, 6.0]]))
    with mock.patch.object(roi_lowering, "CHUNK", 3), mock.patch.object(roi_lowering, "SEPARABLE_ROWS", 1):
        return lowered_model(RoIAlignModule(sampling_ratio, aligned), args, ["features", "rois"],
                             {"features": {0: "n", 1: "c", 2: "h", 3: "w"}, "rois": {0: "r"}})


@st.composite
def rois_on(draw, n_images: int, height: int, width: int, scale: float, max_rois: int = 12):
    """RoIs in image coordinates: inside, partly or fully off the map, tiny, huge, reversed."""
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    n = draw(st.integers(0, max_rois))
    extent = np.array([width, height], np.float32) / scale
    xy = rng.uniform(-0.3, 1.1, (n, 2)) * extent
    wh = rng.uniform(-0.1, 1.0, (n, 2)) * extent * draw(st.sampled_from([0.05, 0.5, 2.0]))
    if draw(st.booleans()):
        xy, wh = np.round(xy), np.round(wh)
    batch = rng.integers(0, n_images, (n, 1))
    return np.concatenate([batch, xy, xy + wh], 1).astype(np.float32)


@st.composite
def roi_align_cases(draw):
    n_images, channels = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    height, width = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    features = rng.standard_normal((n_images, channels, height, width)).astype(np.float32)
    return features, draw(rois_on(n_images, height, width, 0.5))


@SETTINGS
@given(roi_align_cases(), st.sampled_from([2, 1, 0, -1]), st.booleans())
def test_roi_align_matches_torchvision(case, sampling_ratio, aligned):
    features, rois = case
    ours = roi_align_session(sampling_ratio, aligned).run(None, {"features": features, "rois": rois})[0]
    theirs = torchvision.ops.roi_align(torch.from_numpy(features), torch.from_numpy(rois), (5, 4), 0.5,
                                       sampling_ratio, aligned).numpy()
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_roi_align_fixed_grid_has_no_sample_loop():
    """A fixed grid pools each chunk with one Gather and two MatMuls: no Loop over samples inside the chunk Loop
    (the adaptive grid keeps it)."""
    def loops(graph: onnx.GraphProto) -> list[int]:
        return [1 + max(loops(a.g) or [0]) for n in graph.node if n.op_type == "Loop" for a in n.attribute if a.g]

    for ratio, depth in ((2, 1), (0, 2)):
        graph = roi_align_model(ratio, False).graph
        assert loops(graph) == [depth], ratio


# ---------------------------------------------------------------- multi-level RoIAlign

STRIDES = (4, 8, 16, 32)


class MultiLevelModule(torch.nn.Module):
    def __init__(self, sampling_ratio: int, aligned: bool):
        super().__init__()
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def forward(self, rois, *features):
        return multi_level_roi_align(list(features), rois, 3, STRIDES, self.sampling_ratio, self.aligned)


@functools.lru_cache(maxsize=None)
def multi_level_session(sampling_ratio: int, aligned: bool) -> ort.InferenceSession:
    features = [torch.randn(1, 2, 64 // s, 64 // s) for s in STRIDES]
    names = ["rois"] + [f"p{i}" for i in range(len(STRIDES))]
    dyn = {"rois": {0: "r"}, **{n: {0: "n", 2: f"h{i}", 3: f"w{i}"} for i, n in enumerate(names[1:])}}
    return lowered_session(MultiLevelModule(sampling_ratio, aligned), (torch.tensor([[0, 1, 1, 30, 30.0]]), *features),
                           names, dyn)


@SETTINGS
@given(st.integers(1, 2), st.sampled_from([(256, 192), (96, 160)]), st.integers(0, 2 ** 32 - 1),
       st.sampled_from([2, 0]), st.data())
def test_multi_level_roi_align_matches_multiscale_roi_align(n_images, image_size, seed, sampling_ratio, data):
    height, width = image_size
    rng = np.random.default_rng(seed)
    features = [rng.standard_normal((n_images, 2, height // s, width // s)).astype(np.float32) for s in STRIDES]
    rois = data.draw(rois_on(n_images, height, width, 1.0, max_rois=20))
    rois = rois[np.argsort(rois[:, 0], kind="stable")]  # torchvision lists boxes image by image
    ours = multi_level_session(sampling_ratio, False).run(
        None, {"rois": rois, **{f"p{i}": f for i, f in enumerate(features)}})[0]
    pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 3, sampling_ratio)
    boxes = [torch.from_numpy(rois[rois[:, 0] == i, 1:]) for i in range(n_images)]
    theirs = pooler({str(i): torch.from_numpy(f) for i, f in enumerate(features)}, boxes,
                    [image_size] * n_images).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_multi_level_aligned_matches_eager_reference():
    features = [torch.randn(2, 2, 64 // s, 48 // s) for s in STRIDES]
    rois = torch.tensor([[0, 2, 3, 20, 30], [1, 0, 0, 63, 47], [1, 10, 5, 11, 6], [0, -5, -5, 200, 100.0]])
    ours = multi_level_session(0, True).run(None, {"rois": rois.numpy(),
                                                   **{f"p{i}": f.numpy() for i, f in enumerate(features)}})[0]
    eager = multi_level_roi_align(features, rois, 3, STRIDES, 0, True)
    np.testing.assert_allclose(ours, eager.numpy(), rtol=0, atol=1e-5)


class IrregularLevels(torch.nn.Module):
    def __init__(self, strides: tuple[int, ...]):
        super().__init__()
        self.strides = strides

    def forward(self, rois, *features):
        return multi_level_roi_align(list(features), rois, 3, self.strides, 2, False)


@pytest.mark.parametrize("strides", [(32, 32), (4, 16)], ids=["same-stride", "missing-level"])
def test_multi_level_irregular_strides_match_multiscale_roi_align(strides):
    """Equal strides (MobileNet FPN: every RoI on the first map) and a gap (RoIs of the missing level get 0)."""
    height = width = 512
    rng = np.random.default_rng(7)
    features = [rng.standard_normal((1, 2, height // s, width // s)).astype(np.float32) for s in strides]
    rois = rng.uniform(0, 256, (40, 5)).astype(np.float32)  # inside the image: only a missing level gives 0
    rois[:, 0] = 0
    rois[:, 3:] = rois[:, 1:3] + rng.uniform(2, 250, (40, 2)).astype(np.float32)
    names = ["rois", "p0", "p1"]
    ours = lowered_session(IrregularLevels(strides), (torch.from_numpy(rois), *map(torch.from_numpy, features)),
                           names, {"rois": {0: "r"}}).run(None, dict(zip(names, [rois, *features])))[0]
    pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1"], 3, 2)
    theirs = pooler({str(i): torch.from_numpy(f) for i, f in enumerate(features)}, [torch.from_numpy(rois[:, 1:])],
                    [(height, width)]).numpy()
    assert (np.abs(theirs).sum((1, 2, 3)) == 0).any() == (strides == (4, 16))  # the gap really zeroes some RoIs
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_multi_level_rejects_bad_strides():
    features = [torch.randn(1, 2, 8, 8), torch.randn(1, 2, 4, 4)]
    for strides in ([4, 12], [8, 4]):
        with pytest.raises(ConfigError, match="powers of two"):
            multi_level_roi_align(features, torch.zeros(1, 5), 3, strides)
    with pytest.raises(ConfigError, match="featmap_strides"):
        multi_level_roi_align(features, torch.zeros(1, 5), 3, [4])
