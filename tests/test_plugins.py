"""Issue 5: MMDeploy's custom ops as Python TensorRT plugins, ONNX Runtime ops and Triton kernels.

What runs here (no GPU): the plugins' shape, type, format, configure and serialization logic
inside real tensorrt_rtx builds (child processes), the ONNX Runtime implementations, the
PyTorch references of the kernels against torchvision, the Triton kernels themselves in
Triton's interpreter, and every bad-input message. The kernels on a GPU: tests/gpu/.
"""
from __future__ import annotations

import io
import json
import sys
import textwrap

import numpy as np
import onnx
import pytest
import torch
import torchvision
from onnx import TensorProto, helper

from conftest import REPO, run_python
from trtdeploy.errors import BackendUnavailableError, BuildError, ModelError, UnsupportedOpError
from trtdeploy.backends.tensorrt import plugins as trt_plugins
from trtdeploy.ops import plugins
from trtdeploy.ops.fields import REQUIRED
from trtdeploy.ops.batched_nms import multiclass_nms
from trtdeploy.ops.batched_nms.function import multiclass_nms_reference
from trtdeploy.ops.batched_nms.ort import compute as nms_on_ort
from trtdeploy.ops.batched_nms.reference import batched_nms_reference
from trtdeploy.ops.multi_level_roi_align import multi_level_roi_align
from trtdeploy.ops.multi_level_roi_align.reference import multi_level_roi_align_reference
from trtdeploy.ops.roi_align import roi_align
from trtdeploy.ops.roi_align.reference import roi_align_reference
from trtdeploy.passes import lower_custom_ops

STRIDES = [4.0, 8.0, 16.0, 32.0]
NMS_ATTRS = dict(background_label_id=-1, num_classes=6, topk=400, keep_topk=60, score_threshold=0.05,
                 iou_threshold=0.5, is_normalized=0, clip_boxes=0, return_index=1)


def random_boxes(gen: torch.Generator, n: int, b: int, per_class: int = 1, extent: float = 200.0) -> torch.Tensor:
    xy = torch.rand(n, b, per_class, 2, generator=gen) * extent - extent * 0.1  # some off the image
    return torch.cat([xy, xy + torch.rand(n, b, per_class, 2, generator=gen) * extent * 0.4], -1)


def random_rois(gen: torch.Generator, r: int, batch: int = 1, extent: float = 300.0) -> torch.Tensor:
    xy = torch.rand(r, 2, generator=gen) * extent
    wh = torch.rand(r, 2, generator=gen) ** 2 * extent
    return torch.cat([torch.randint(0, batch, (r, 1), generator=gen).float(), xy, xy + wh], 1)


# -- the graph MMDeploy's exporter writes, built by hand ------------------------------------------------
def mmdeploy_graph() -> onnx.ModelProto:
    """TRTBatchedNMS with MMDeploy's attribute names and output order, both RoIAlign spellings, multi-level."""
    nodes = [
        helper.make_node("TRTBatchedNMS", ["boxes", "scores"], ["dets", "labels", "index"], domain="mmdeploy",
                         name="nms", **NMS_ATTRS),
        helper.make_node("MMCVRoIAlign", ["feat", "rois"], ["pooled"], domain="mmdeploy", name="roi",
                         output_height=7, output_width=7, spatial_scale=0.25, sampling_ratio=0, mode="avg",
                         aligned=1),
        helper.make_node("MMCVRoiAlign", ["feat", "rois"], ["pooled_mmcv"], domain="mmcv", name="roi_mmcv",
                         output_height=5, output_width=4, spatial_scale=0.25, sampling_ratio=2, mode="avg",
                         aligned=0),
        helper.make_node("MMCVMultiLevelRoiAlign", ["rois", "p2", "p3", "p4", "p5"], ["pooled_fpn"],
                         domain="mmdeploy", name="fpn", output_height=7, output_width=7, pool_mode=1,
                         sampling_ratio=2, roi_scale_factor=1.0, finest_scale=56, featmap_strides=STRIDES,
                         aligned=0),
    ]
    levels = [helper.make_tensor_value_info(f"p{i + 2}", TensorProto.FLOAT, [1, 8, 128 // s, 128 // s])
              for i, s in enumerate((4, 8, 16, 32))]
    graph = helper.make_graph(nodes, "mmdeploy_ops", [
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["n", 300, 1, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 300, 6]),
        helper.make_tensor_value_info("feat", TensorProto.FLOAT, [1, 8, 32, 32]),
        helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["r", 5]), *levels], [
        helper.make_tensor_value_info("dets", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("labels", TensorProto.INT64, None),
        helper.make_tensor_value_info("index", TensorProto.INT64, None),
        helper.make_tensor_value_info("pooled", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("pooled_mmcv", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("pooled_fpn", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("mmdeploy", 1),
                                                   helper.make_opsetid("mmcv", 1)])


def mmdeploy_feed(seed: int = 0) -> dict[str, np.ndarray]:
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(2, 300, 6, generator=gen)
    scores[..., ::2] = (scores[..., ::2] * 8).round() / 8  # ties
    return {"boxes": random_boxes(gen, 2, 300).numpy(), "scores": scores.numpy(),
            "feat": torch.randn(1, 8, 32, 32, generator=gen).numpy(), "rois": random_rois(gen, 40, 1, 120).numpy(),
            **{f"p{i + 2}": torch.randn(1, 8, 128 // s, 128 // s, generator=gen).numpy()
               for i, s in enumerate((4, 8, 16, 32))}}


def test_mmdeploy_graph_runs_on_onnxruntime(tmp_path):
    from trtdeploy.backends.onnxruntime import OnnxRuntimeRunner

    path = tmp_path / "mmdeploy.onnx"
    onnx.save(mmdeploy_graph(), str(path))
    feed = mmdeploy_feed()
    out = OnnxRuntimeRunner(path)(feed)
    t = {k: torch.from_numpy(v) for k, v in feed.items()}
    want = multiclass_nms_reference(t["boxes"][:, :, 0], t["scores"], iou_threshold=0.5, score_threshold=0.05,
                                    pre_top_k=400, keep_top_k=60, return_index=True)
    for name, ref in zip(("dets", "labels", "index"), want):
        assert np.array_equal(out[name], ref.numpy()), name
    assert out["labels"].dtype == np.int64 and (out["labels"] >= 0).sum() > 0
    assert np.allclose(out["pooled"], torchvision.ops.roi_align(t["feat"], t["rois"], 7, 0.25, 0, True), atol=1e-5)
    assert np.allclose(out["pooled_mmcv"], torchvision.ops.roi_align(t["feat"], t["rois"], (5, 4), 0.25, 2, False),
                       atol=1e-5)
    levels = [t[f"p{i}"] for i in range(2, 6)]
    fpn = multi_level_roi_align(levels, t["rois"], 7, STRIDES, 2, False)
    assert np.allclose(out["pooled_fpn"], fpn, atol=1e-5)


BUILD = """
import json, sys
import onnx
from trtdeploy.backends.tensorrt.builder import build_engine, network_io, parse_onnx, make_logger
from trtdeploy.backends.tensorrt.compat import import_tensorrt
from trtdeploy.backends.tensorrt.plugins import prepare_plugin_build, read_plugin_fields

trt = import_tensorrt("tensorrt_rtx")
mod = trt.module
path, profile = sys.argv[1], json.loads(sys.argv[2])
used = prepare_plugin_build(trt, onnx.load(path))
logger = make_logger(trt)
builder = mod.Builder(logger)
network = builder.create_network(trt.network_flags(True))
parse_onnx(trt, __import__("pathlib").Path(path), network, logger)
config = builder.create_builder_config()
p = builder.create_optimization_profile()
for name, (lo, opt, hi) in profile.items():
    p.set_shape(name, lo, opt, hi)
config.add_optimization_profile(p)
engine = builder.build_serialized_network(network, config)
assert engine is not None, logger.errors
# the RUNTIME phase: what an engine load does with the fields the engine stored
registry = mod.get_plugin_registry()
roundtrip = {}
for i in range(network.num_layers):
    layer = network.get_layer(i)
    if layer.type == mod.LayerType.PLUGIN_V3:
        layer.__class__ = mod.IPluginV3Layer
        plugin = layer.plugin
        creator = registry.get_creator(plugin.plugin_name, plugin.plugin_version, plugin.plugin_namespace)
        again = creator.create_plugin(layer.name, plugin.get_fields_to_serialize(), mod.TensorRTPhase.RUNTIME)
        roundtrip[plugin.plugin_namespace + "::" + plugin.plugin_name] = again.values == plugin.values
inputs, outputs = network_io(network)
print(json.dumps({"used": used, "bytes": engine.nbytes, "roundtrip": roundtrip,
                  "outputs": {s.name: [s.dtype, s.shape] for s in outputs}}))
"""


def build_with_plugins(path, profile: dict) -> dict:
    proc = run_python(BUILD.replace("sys.argv[1]", repr(str(path))).replace("sys.argv[2]", repr(json.dumps(profile))))
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_mmdeploy_graph_builds_with_our_plugins(tmp_path):
    path = tmp_path / "mmdeploy.onnx"
    onnx.save(mmdeploy_graph(), str(path))
    facts = build_with_plugins(path, {"boxes": [[1, 300, 1, 4], [2, 300, 1, 4], [4, 300, 1, 4]],
                                      "scores": [[1, 300, 6], [2, 300, 6], [4, 300, 6]],
                                      "rois": [[1, 5], [40, 5], [500, 5]]})
    assert facts["used"] == ["mmcv::MMCVRoiAlign", "mmdeploy::MMCVMultiLevelRoiAlign", "mmdeploy::MMCVRoIAlign",
                             "mmdeploy::TRTBatchedNMS"]
    assert facts["bytes"] > 0
    assert facts["roundtrip"] == {k: True for k in facts["used"]}
    outputs = facts["outputs"]
    assert outputs["dets"] == ["float32", [-1, 60, 5]] and outputs["labels"] == ["int64", [-1, 60]]
    assert outputs["index"] == ["int64", [-1, 60]]
    assert outputs["pooled"] == ["float32", [-1, 8, 7, 7]] and outputs["pooled_mmcv"] == ["float32", [-1, 8, 5, 4]]
    assert outputs["pooled_fpn"] == ["float32", [-1, 8, 7, 7]]


# -- the plugin route and the plugin-free route compute the same ------------------------------------------
class OpsAlone(torch.nn.Module):
    """The three ops as a detector uses them, exported by our torch-level functions."""

    def forward(self, boxes, scores, rois, p2, p3, p4, p5):
        dets, labels, index = multiclass_nms(boxes, scores, iou_threshold=0.5, score_threshold=0.05, pre_top_k=300,
                                             keep_top_k=50, return_index=True)
        single = roi_align(p2, rois, 7, 0.25, 0, True)
        multi = multi_level_roi_align([p2, p3, p4, p5], rois, 7, STRIDES, 2, False)
        return dets, labels, index, single, multi


@pytest.fixture(scope="module")
def ops_alone_routes(tmp_path_factory):
    """(plugin-route path, plugin-free path, feed) of OpsAlone, exported once."""
    gen = torch.Generator().manual_seed(3)
    scores = torch.rand(1, 400, 5, generator=gen)
    scores[..., 1] = (scores[..., 1] * 4).round() / 4
    args = (random_boxes(gen, 1, 400)[:, :, 0], scores, random_rois(gen, 60, 1, 250),
            *[torch.randn(1, 8, 256 // s, 256 // s, generator=gen) for s in (4, 8, 16, 32)])
    names = ["boxes", "scores", "rois", "p2", "p3", "p4", "p5"]
    buf = io.BytesIO()
    torch.onnx.export(OpsAlone(), args, buf, input_names=names,
                      output_names=["dets", "labels", "index", "single", "multi"], opset_version=17, dynamo=False,
                      dynamic_axes={"rois": {0: "r"}})
    work = tmp_path_factory.mktemp("routes")
    paths = {}
    for route in ("plugin", "plugin-free"):
        paths[route] = work / f"{route}.onnx"
        onnx.save(lower_custom_ops(onnx.load_from_string(buf.getvalue()), route), str(paths[route]))
    return paths, dict(zip(names, (a.numpy() for a in args)))


def test_plugin_route_keeps_mmdeploy_nodes_and_equals_plugin_free_route(ops_alone_routes):
    from trtdeploy.backends.onnxruntime import OnnxRuntimeRunner

    paths, feed = ops_alone_routes
    kept = {f"{n.domain}::{n.op_type}" for n in onnx.load(str(paths["plugin"])).graph.node if n.domain}
    assert kept == {"mmdeploy::TRTBatchedNMS", "mmdeploy::MMCVRoIAlign", "mmdeploy::MMCVMultiLevelRoiAlign"}
    assert not any(n.domain for n in onnx.load(str(paths["plugin-free"])).graph.node)
    plugin = OnnxRuntimeRunner(paths["plugin"])(feed)
    free = OnnxRuntimeRunner(paths["plugin-free"])(feed)
    assert (plugin["labels"] >= 0).sum() > 5
    for name in ("dets", "labels", "index"):
        assert np.array_equal(plugin[name], free[name]), name
    for name in ("single", "multi"):
        assert np.abs(plugin[name] - free[name]).max() <= 1e-4, name


@pytest.mark.slow
def test_plugin_route_graph_builds_with_tensorrt_rtx(ops_alone_routes):
    facts = build_with_plugins(ops_alone_routes[0]["plugin"], {"rois": [[1, 5], [60, 5], [300, 5]]})
    assert facts["used"] == ["mmdeploy::MMCVMultiLevelRoiAlign", "mmdeploy::MMCVRoIAlign", "mmdeploy::TRTBatchedNMS"]
    assert facts["outputs"]["dets"][1] == [1, 50, 5]


# -- kernels: the PyTorch references against torchvision, the Triton kernels in Triton's interpreter -------
@pytest.mark.parametrize("seed", range(4))
def test_batched_nms_reference_equals_torchvision_route_and_function(seed):
    gen = torch.Generator().manual_seed(seed)
    per_class = 1 if seed % 2 else 4
    boxes = random_boxes(gen, 2, 120, per_class)
    scores = torch.rand(2, 120, 4, generator=gen)
    scores[..., ::2] = (scores[..., ::2] * 5).round() / 5  # ties between classes and boxes
    if seed == 3:
        boxes[:, :60] = boxes[:, :1]  # many identical boxes: all but one suppressed
    values = dict(NMS_ATTRS, num_classes=4, topk=250, keep_topk=70, background_label_id=seed - 1)
    ours = batched_nms_reference(boxes, scores, topk=250, keep_topk=70, score_threshold=0.05, iou_threshold=0.5,
                                 background_label_id=seed - 1)
    on_ort = nms_on_ort(values, boxes.numpy(), scores.numpy())
    theirs = multiclass_nms_reference(boxes, scores, iou_threshold=0.5, score_threshold=0.05, pre_top_k=250,
                                      keep_top_k=70, background_label_id=seed - 1, return_index=True)
    for a, b, c in zip(ours, on_ort, theirs):
        assert np.array_equal(a.numpy(), b) and torch.equal(a, c)
    empty = batched_nms_reference(boxes[:, :0], scores[:, :0], topk=10, keep_topk=5, score_threshold=0.0,
                                  iou_threshold=0.5)
    assert empty[0].shape == (2, 5, 5) and (empty[1] == -1).all()


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_reference_equals_torchvision(aligned, sampling_ratio):
    gen = torch.Generator().manual_seed(int(aligned) * 2 + sampling_ratio)
    features = torch.randn(2, 5, 23, 31, generator=gen)
    rois = random_rois(gen, 50, 2, 140)
    rois[0, 3:] = rois[0, 1:3]  # degenerate
    rois[1, 1:] = torch.tensor([-40.0, -30.0, -5.0, -2.0])  # outside the map
    got = roi_align_reference(features, rois, (6, 4), 0.25, sampling_ratio, aligned)
    assert torch.equal(got, torchvision.ops.roi_align(features, rois, (6, 4), 0.25, sampling_ratio, aligned))


def test_multi_level_reference_equals_torchvision_multiscale():
    from collections import OrderedDict

    gen = torch.Generator().manual_seed(7)
    features = [torch.randn(1, 4, 320 // s, 384 // s, generator=gen) for s in (4, 8, 16, 32)]
    rois = random_rois(gen, 80, 1, 400)
    pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    want = pooler(OrderedDict((str(i), f) for i, f in enumerate(features)), [rois[:, 1:]], [(320, 384)])
    got = multi_level_roi_align_reference(rois, features, output_size=(7, 7), featmap_strides=STRIDES,
                                          finest_scale=56, sampling_ratio=2, aligned=False)
    assert torch.equal(got, want)


INTERPRETED_KERNELS = """
import torch, torchvision
from collections import OrderedDict
from trtdeploy.ops.batched_nms.kernel import batched_nms
from trtdeploy.ops.batched_nms.reference import batched_nms_reference
from trtdeploy.ops.roi_align.kernel import roi_align
from trtdeploy.ops.multi_level_roi_align.kernel import multi_level_roi_align

g = torch.Generator().manual_seed(0)
for n, b, c, per_class in ((2, 60, 4, 1), (1, 50, 3, 3), (2, 0, 3, 1)):
    xy = torch.rand(n, b, per_class, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(n, b, per_class, 2, generator=g) * 50], -1)
    scores = (torch.rand(n, b, c, generator=g) * 6).round() / 6  # ties everywhere
    kw = dict(topk=150, keep_topk=40, score_threshold=0.1, iou_threshold=0.45, background_label_id=c - 2)
    assert all(torch.equal(a, r) for a, r in zip(batched_nms(boxes, scores, **kw), batched_nms_reference(boxes, scores, **kw)))
f = torch.randn(2, 6, 20, 25, generator=g)
xy = torch.rand(30, 2, generator=g) * 100 - 10
rois = torch.cat([torch.randint(0, 2, (30, 1), generator=g).float(), xy, xy + torch.rand(30, 2, generator=g) * 60], 1)
for sr, aligned in ((0, True), (2, False)):
    err = (roi_align(f, rois, (7, 6), 0.25, sr, aligned) - torchvision.ops.roi_align(f, rois, (7, 6), 0.25, sr, aligned)).abs().max()
    assert err <= 1e-5, err
feats = [torch.randn(1, 3, 256 // s, 320 // s, generator=g) for s in (4, 8, 16, 32)]
pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
xy = torch.rand(30, 2, generator=g) * 200
boxes = torch.cat([xy, xy + torch.rand(30, 2, generator=g) ** 2 * 300 + 1], 1)
want = pooler(OrderedDict((str(i), t) for i, t in enumerate(feats)), [boxes], [(256, 320)])
got = multi_level_roi_align(torch.cat([torch.zeros(30, 1), boxes], 1), feats, output_size=(7, 7),
                            featmap_strides=[4, 8, 16, 32], finest_scale=56, sampling_ratio=2, aligned=False)
assert (got - want).abs().max() <= 1e-5
print("kernels ok")
"""


@pytest.mark.slow
def test_triton_kernels_in_the_interpreter_equal_references():
    """The very kernel code that runs on the GPU, executed by Triton's CPU interpreter on small inputs."""
    proc = run_python(INTERPRETED_KERNELS, env={"TRITON_INTERPRET": "1"}, timeout=600)
    assert "kernels ok" in proc.stdout


# -- plugin fields: types, ranges, defaults, serialization -------------------------------------------------
def nms_node(**overrides) -> onnx.NodeProto:
    attrs = {k: v for k, v in {**NMS_ATTRS, **overrides}.items() if v is not None}
    return helper.make_node("TRTBatchedNMS", ["boxes", "scores"], ["dets", "labels"], domain="mmdeploy",
                            name="nms", **attrs)


def graph_of(node: onnx.NodeProto) -> onnx.ModelProto:
    return helper.make_model(helper.make_graph([node], "g", [], []))


def test_attributes_read_with_defaults():
    spec = plugins.plugin_specs()["mmdeploy::TRTBatchedNMS"]
    values = spec.op.read(nms_node(return_index=None, clip_boxes=None))
    assert values["return_index"] == 0 and values["clip_boxes"] == 0 and values["topk"] == 400
    assert isinstance(values["iou_threshold"], float)


@pytest.mark.parametrize("overrides, named, says", [
    (dict(topk=1.5), "topk", "must be of ONNX type INT, got FLOAT"),
    (dict(iou_threshold=1.5), "iou_threshold", "must be a number in [0, 1]"),
    (dict(keep_topk=0), "keep_topk", "must be an integer >= 1"),
    (dict(num_classes=None), "num_classes", "required attribute"),
    (dict(return_index=2), "return_index", "must be 0 or 1"),
])
def test_bad_attribute_names_the_attribute(overrides, named, says):
    with pytest.raises(BuildError) as err:
        plugins.check_plugin_nodes(graph_of(nms_node(**overrides)))
    assert f"'{named}'" in str(err.value) and says in str(err.value) and "node nms" in str(err.value)


def test_multi_level_strides_out_of_range_are_refused():
    node = helper.make_node("MMCVMultiLevelRoiAlign", ["rois", "a", "b"], ["out"], domain="mmdeploy", name="fpn",
                            featmap_strides=[4.0, 12.0])
    with pytest.raises(BuildError, match="'featmap_strides' is \\[4.0, 12.0\\] but must be 1 to 5 powers of two"):
        plugins.check_plugin_nodes(graph_of(node))


def test_unknown_custom_op_names_op_domain_and_our_plugins():
    node = helper.make_node("DeformConv2d", ["x"], ["y"], domain="mmcv", name="dcn")
    with pytest.raises(UnsupportedOpError) as err:
        plugins.check_plugin_nodes(graph_of(node))
    text = str(err.value)
    assert "DeformConv2d" in text and "'mmcv'" in text and "dcn" in text
    assert "mmdeploy::TRTBatchedNMS v1" in text and "mmdeploy::MMCVMultiLevelRoiAlign v1" in text


def test_unknown_custom_op_is_listed_before_a_tensorrt_build():
    from trtdeploy.backends.tensorrt.backend import TensorRTBackend

    model = graph_of(helper.make_node("DeformConv2d", ["x"], ["y"], domain="mmcv", name="dcn"))
    (bad,) = TensorRTBackend().unsupported_nodes(model)
    assert bad["op_type"] == "DeformConv2d" and bad["domain"] == "mmcv" and "TRTBatchedNMS" in bad["hint"]


def test_serialized_fields_round_trip_through_tensorrt_field_objects():
    from trtdeploy.backends.tensorrt.compat import import_tensorrt

    module = import_tensorrt("tensorrt_rtx").module
    for key, spec in plugins.plugin_specs().items():
        values = {f.name: (f.default if f.default is not REQUIRED else
                           [4.0, 8.0] if f.kind == "floats" else 3 if f.kind == "int" else 0.5) for f in spec.fields}
        collection, arrays = trt_plugins.to_plugin_fields(module, values, spec.fields)
        assert trt_plugins.read_plugin_fields(collection, spec.fields, key) == values, key


# -- engine load, the library-name bridge, ONNX Runtime without the extensions ---------------------------
def test_engine_whose_plugin_is_not_registered_says_how_to_register(tmp_path):
    from trtdeploy.backends.tensorrt.compat import import_tensorrt

    trt = import_tensorrt("tensorrt_rtx")
    trt_plugins.check_engine_plugins(trt, {"plugins": ["mmdeploy::TRTBatchedNMS"]}, tmp_path / "ok.engine")
    with pytest.raises(ModelError) as err:
        trt_plugins.check_engine_plugins(trt, {"plugins": ["mmdeploy::TRTFancyNMS"]}, tmp_path / "x.engine")
    assert "x.engine needs the TensorRT plugin(s) mmdeploy::TRTFancyNMS" in str(err.value)
    assert "register_plugins()" in str(err.value)


@pytest.fixture
def fake_libs(tmp_path, monkeypatch):
    """A stand-in for the tensorrt_rtx_libs package: a folder holding only libtensorrt_rtx.so.1."""
    libs = tmp_path / "tensorrt_rtx_libs"
    libs.mkdir()
    (libs / "__init__.py").write_text("")
    (libs / "libtensorrt_rtx.so.1").write_bytes(b"\x7fELF")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "tensorrt_rtx_libs", raising=False)
    return libs


def test_library_link_is_made_once_and_relative(fake_libs):
    link = trt_plugins.ensure_loader_link("tensorrt_rtx")
    assert link == fake_libs / "libtensorrt_rtx.so" and link.is_symlink()
    assert str(link.readlink()) == "libtensorrt_rtx.so.1"
    assert trt_plugins.ensure_loader_link("tensorrt_rtx") == link  # idempotent
    assert sorted(p.name for p in fake_libs.iterdir()) == ["__init__.py", "libtensorrt_rtx.so", "libtensorrt_rtx.so.1"]


def test_read_only_library_folder_says_what_to_export(fake_libs, tmp_path, monkeypatch):
    fallback = tmp_path / "links"
    monkeypatch.setenv(trt_plugins.LINK_DIR_ENV, str(fallback))
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    make_link = trt_plugins._make_link  # the wheel's folder refuses the link, as a read-only one does
    monkeypatch.setattr(trt_plugins, "_make_link",
                        lambda folder, name, target: None if folder == fake_libs else make_link(folder, name, target))
    with pytest.raises(BackendUnavailableError) as err:
        trt_plugins.ensure_loader_link("tensorrt_rtx")
    assert f"export LD_LIBRARY_PATH={fallback}:$LD_LIBRARY_PATH" in str(err.value)
    assert (fallback / "libtensorrt_rtx.so").is_symlink()
    monkeypatch.setenv("LD_LIBRARY_PATH", str(fallback))
    assert trt_plugins.ensure_loader_link("tensorrt_rtx") == fallback / "libtensorrt_rtx.so"


def test_onnxruntime_without_extensions_says_how_to_install(tmp_path, monkeypatch):
    from trtdeploy.backends.onnxruntime import OnnxRuntimeRunner

    path = tmp_path / "mmdeploy.onnx"
    onnx.save(mmdeploy_graph(), str(path))
    monkeypatch.setitem(sys.modules, "onnxruntime_extensions", None)  # import fails as if not installed
    with pytest.raises(ModelError) as err:
        OnnxRuntimeRunner(path)
    assert "pip install onnxruntime-extensions" in str(err.value) and "mmdeploy::TRTBatchedNMS" in str(err.value)


def test_onnxruntime_names_a_custom_op_it_cannot_run(tmp_path):
    from trtdeploy.backends.onnxruntime import OnnxRuntimeRunner

    node = helper.make_node("DeformConv2d", ["x"], ["y"], domain="mmcv", name="dcn")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "dcn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("mmcv", 1)]),
              str(path))
    with pytest.raises(ModelError, match="DeformConv2d of domain 'mmcv'.*implementations for mmdeploy::TRTBatchedNMS"):
        OnnxRuntimeRunner(path)


def test_import_trtdeploy_does_not_import_tensorrt():
    proc = run_python(textwrap.dedent("""
        import sys, trtdeploy
        print(sorted(m for m in ("tensorrt", "tensorrt_rtx", "triton") if m in sys.modules))
    """))
    assert proc.stdout.strip() == "[]"


@pytest.mark.slow
def test_detector_in_plugin_route_builds_and_equals_plugin_free(tmp_path):
    """SSDlite end to end in the plugin route (all five detectors: benchmarks/prove_plugin_route_detectors.py)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from prove_plugin_route_detectors import build_with_tensorrt_rtx, compare_on_onnxruntime, custom_ops_in, plugin_route

    plugin, free = plugin_route("ssdlite320_mobilenet_v3_large", tmp_path)
    assert custom_ops_in(plugin) == ["mmdeploy::TRTBatchedNMS"] and custom_ops_in(free) == []
    assert compare_on_onnxruntime(plugin, free) > 0
    built = build_with_tensorrt_rtx("ssdlite320_mobilenet_v3_large", plugin, tmp_path)
    assert built["plugins"] == ["mmdeploy::TRTBatchedNMS"] and built["bytes"] > 0
