"""Issue 17 item 4: 3x3 convolutions as Winograd F(4x4, 3x3) for ONNX Runtime's CPU provider."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import trtdeploy
from conftest import CONFIGS
from trtdeploy.backends.onnxruntime.cpu_graph import graph_for_device
from trtdeploy.backends.onnxruntime.runner import signed_qdq
from trtdeploy.passes.winograd import eligible, winograd_convs


def conv_graph(c: int, k: int, shape: list, opset: int = 17, bias: bool = True, **attrs) -> onnx.ModelProto:
    """x -> Conv(3x3 unless kernel_shape says otherwise) -> Relu -> y, seeded weights."""
    rng = np.random.default_rng(0)
    kh, kw = attrs.pop("kernel", (3, 3))
    groups = attrs.get("group", 1)
    w = (rng.standard_normal((k, c // groups, kh, kw)) / np.sqrt(kh * kw * c)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(rng.standard_normal(k).astype(np.float32), "b")]
                                                  if bias else [])
    nodes = [helper.make_node("Conv", ["x", "w", "b"][:2 + bias], ["c"], name="conv", **attrs),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("c, k, shape, pads, bias, opset, inputs", [
    (128, 64, [1, 128, 20, 32], [1, 1, 1, 1], True, 17, [(1, 128, 20, 32)]),        # static, whole tiles
    (128, 40, [1, 128, 17, 23], [0, 1, 2, 0], False, 13, [(1, 128, 17, 23)]),       # uneven pads, cropped
    (130, 33, ["n", 130, "h", "w"], [1, 1, 1, 1], True, 17,
     [(2, 130, 9, 14), (1, 130, 31, 5), (3, 130, 3, 3)]),                            # batch and size dynamic
    (128, 32, [1, 128, "h", "w"], [0, 0, 0, 0], True, 11, [(1, 128, 9, 14), (1, 128, 16, 16)]),  # no pads, opset 11
])
def test_rewritten_conv_computes_the_direct_convolution(c, k, shape, pads, bias, opset, inputs):
    """Same output shape, and values within float32 rounding of Winograd's transforms (~1e-5 of the range),
    at every input size a dynamic graph takes; the 3x3 Conv itself is gone."""
    model = conv_graph(c, k, shape, opset, bias, pads=pads)
    rewritten, names = winograd_convs(model, eligible(model, {"x": list(inputs[0])}, min_tiles=1))
    assert names == ["conv"]
    assert not [n for n in rewritten.graph.node if n.op_type == "Conv" and n.name == "conv"]
    assert {n.op_type for n in rewritten.graph.node} >= {"MatMul", "DepthToSpace"}
    for size in inputs:
        x = np.random.default_rng(1).standard_normal(size).astype(np.float32)
        expected, got = run(model, x), run(rewritten, x)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 5e-5 * np.abs(expected).max()


@pytest.mark.parametrize("c, k, attrs", [
    (128, 64, dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    (128, 64, dict(dilations=[2, 2], pads=[2, 2, 2, 2])),
    (128, 64, dict(group=2, pads=[1, 1, 1, 1])),
    (64, 256, dict(pads=[1, 1, 1, 1])),        # too few channels in: the transforms cost more than they save
    (256, 16, dict(pads=[1, 1, 1, 1])),        # too few out
    (128, 64, dict(kernel=(1, 1))),
    (128, 64, dict(auto_pad="SAME_UPPER")),
])
def test_convs_it_cannot_speed_up_are_left_as_they_are(c, k, attrs):
    assert eligible(conv_graph(c, k, [1, c, 64, 64], **attrs)) == []


def test_a_dynamic_graph_is_judged_at_the_shapes_it_runs_at():
    """Small maps lose (ResNet-18 at 224x224 ran 1.2x slower rewritten): the gate is 64 output tiles per image,
    counted at the export shapes; a dynamic graph without them is left alone."""
    model = conv_graph(128, 64, [1, 128, "h", "w"], pads=[1, 1, 1, 1])
    assert eligible(model) == []                                  # its size is unknown
    assert eligible(model, {"x": [1, 128, 28, 28]}) == []         # 7 x 7 = 49 tiles
    found = eligible(model, {"x": [1, 128, 32, 32]})              # 8 x 8 = 64
    assert [c.node.name for c in found] == ["conv"] and found[0].size == (None, None)


class Tower(torch.nn.Module):
    """A classifier whose middle convolutions have 128 channels on a 112x112 map at 224x224 input."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 128, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(128, 128, 3, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(128, 64, 3, padding=1), torch.nn.ReLU())
        self.head = torch.nn.Linear(64, 5)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


@pytest.mark.slow
def test_onnxruntime_fp32_convert_writes_the_cpu_graph_and_its_source(tmp_path):
    """convert writes end2end_cpu.onnx (the two eligible convolutions rewritten, the file no bigger: U is computed
    from W when it loads) beside the portable end2end.onnx, which the sidecar names as its source; both compute
    the model; backend_config.winograd = False keeps end2end.onnx as the artefact."""
    model = Tower().eval()
    cfg = CONFIGS / "classification/classification_onnxruntime_dynamic.py"
    result = trtdeploy.convert(cfg, model, work_dir=tmp_path / "on")
    assert result.backend_path.name == "end2end_cpu.onnx"
    sidecar = json.loads((tmp_path / "on/end2end_cpu.onnx.json").read_text())
    assert sidecar["built_from"] == "end2end.onnx" and len(sidecar["winograd"]["convs"]) == 2
    assert result.backend_path.stat().st_size < 1.1 * result.onnx_path.stat().st_size
    x = torch.rand(2, 3, 160, 200)
    with torch.no_grad():
        expected = model(x).numpy()
    for path in (result.backend_path, result.onnx_path):
        got = trtdeploy.load(path)(x.numpy())["output"]
        assert np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
    assert graph_for_device(result.backend_path, sidecar, "cuda:0") == result.onnx_path
    assert graph_for_device(result.backend_path, sidecar, "cpu") == result.backend_path
    cfg_off = tmp_path / "off.py"
    cfg_off.write_text(f"_base_ = [{str(cfg)!r}]\nbackend_config = dict(type='onnxruntime', winograd=False)\n")
    assert trtdeploy.convert(cfg_off, model, work_dir=tmp_path / "off").backend_path.name == "end2end.onnx"
    assert not (tmp_path / "off/end2end_cpu.onnx").exists()


def test_signed_qdq_graphs_run_each_pair_as_written(tmp_path):
    """TensorRT-style Q/DQ (int8 activations) runs unfused on ONNX Runtime, so that it computes what the engine
    computes; uint8 activations (trtdeploy's ONNX Runtime INT8) and plain graphs keep the integer kernels."""
    def qdq(zero_dtype) -> onnx.ModelProto:
        scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
        zero = numpy_helper.from_array(np.array(0, zero_dtype), "z")
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
                 helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [scale, zero])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for name, model, signed in (("trt.onnx", qdq(np.int8), True), ("ort.onnx", qdq(np.uint8), False),
                                ("plain.onnx", conv_graph(8, 8, [1, 8, 8, 8]), False)):
        onnx.save(model, tmp_path / name)
        assert signed_qdq(tmp_path / name) is signed, name


def test_sizes_are_followed_through_shape_computations():
    """A GroupNorm-style Reshape(x, Shape(x)) between the input and the Conv (FCOS's head) keeps the size known at
    the export shapes: without following the Shape values, FCOS had 19 of its 40 such convolutions rewritten."""
    model = conv_graph(128, 64, [1, 128, "h", "w"], pads=[1, 1, 1, 1])
    g = model.graph
    g.node[0].input[0] = "x_back"
    g.node.insert(0, helper.make_node("Shape", ["x"], ["x_shape"]))
    g.node.insert(1, helper.make_node("Reshape", ["x", "flat_shape"], ["x_flat"]))
    g.node.insert(2, helper.make_node("Reshape", ["x_flat", "x_shape"], ["x_back"]))
    g.initializer.append(numpy_helper.from_array(np.array([1, 128, -1], np.int64), "flat_shape"))
    assert [c.node.name for c in eligible(model, {"x": [1, 128, 40, 40]})] == ["conv"]
