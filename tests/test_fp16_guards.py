"""Issue 15.1: FP16 safe by construction. Each guard on a tiny graph that goes wrong without it, the refusal
that names the first node giving NaN/inf, and the weakly typed route's precision constraints (a fake TensorRT)."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import trtdeploy
from conftest import CONFIGS, DEMO_IMG, run_cli
from trtdeploy.backends.tensorrt.low_precision import fp32_node_names, pin_fp32
from trtdeploy.errors import BuildError
from trtdeploy.passes.fp16 import fragile_nodes, to_fp16_body
from trtdeploy.passes.numerics import check_low_precision_finite
from trtdeploy.tasks.detection import match_detections

RNG = np.random.default_rng(0)


def _model(nodes, inits, x_shape, y_shape=None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def normalize_then_conv() -> onnx.ModelProto:
    """F.normalize(relu(x), dim=1) then a 1x1 Conv: ReduceL2, Clip(min=eps=1e-12), Div (SSD300's L2Norm)."""
    return _model([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                   helper.make_node("ReduceL2", ["r"], ["n"], name="norm", axes=[1], keepdims=1),
                   helper.make_node("Clip", ["n", "eps"], ["c"], name="clip"),
                   helper.make_node("Div", ["r", "c"], ["d"], name="div"),
                   helper.make_node("Conv", ["d", "w"], ["y"], name="conv")],
                  {"eps": np.float32(1e-12), "w": RNG.normal(size=(2, 4, 1, 1))}, [1, 4, 2, 2])


def test_underflowing_eps_stays_fp32():
    model = normalize_then_conv()
    x = RNG.normal(size=(1, 4, 2, 2)).astype(np.float32)
    x[0, :, 0, 0] = -1.0  # every channel of one pixel is 0 after the ReLU: its norm is 0, clipped to eps
    reasons = fragile_nodes(model)
    assert "1e-12, which is 0 in fp16" in reasons["clip"] and "1e-12" in reasons["div"]
    # Without the constant guard (every other guard kept) eps is 0 in FP16 and 0/0 poisons the output ...
    others = [n for n, why in reasons.items() if "1e-12" not in why]
    for emulate in (False, True):
        assert np.isnan(_run(to_fp16_body(model, keep_fp32=others, guard=False, emulate=emulate), x)).any()
    # ... with it, FP16 matches FP32.
    ref = _run(model, x)
    for emulate in (False, True):
        np.testing.assert_allclose(_run(to_fp16_body(model, emulate=emulate), x), ref, atol=1e-2, rtol=1e-2)


def test_layernorm_on_large_activations_stays_fp32():
    """LayerNorm decomposed (as opsets < 17 export it) on activations of ~500: the squares exceed 65504."""
    model = _model([helper.make_node("ReduceMean", ["x"], ["mu"], name="mean", axes=[-1]),
                    helper.make_node("Sub", ["x", "mu"], ["xc"], name="center"),
                    helper.make_node("Pow", ["xc", "two"], ["sq"], name="square"),
                    helper.make_node("ReduceMean", ["sq"], ["var"], name="variance", axes=[-1]),
                    helper.make_node("Add", ["var", "eps"], ["ve"], name="add_eps"),
                    helper.make_node("Sqrt", ["ve"], ["sd"], name="sqrt"),
                    helper.make_node("Div", ["xc", "sd"], ["xn"], name="normalize"),
                    helper.make_node("Mul", ["xn", "gamma"], ["xg"], name="gamma"),
                    helper.make_node("MatMul", ["xg", "w"], ["y"], name="proj")],
                   {"two": np.float32(2), "eps": np.float32(1e-5), "gamma": RNG.normal(size=16),
                    "w": RNG.normal(size=(16, 4)) / 4}, [1, 8, 16])
    assert {"square", "variance", "add_eps", "sqrt", "normalize"} <= set(fragile_nodes(model))
    x = (500 * RNG.normal(size=(1, 8, 16))).astype(np.float32)
    ref = _run(model, x)
    unguarded = _run(to_fp16_body(model, guard=False, emulate=True), x)
    assert not np.allclose(unguarded, ref, atol=0.1, rtol=0.05)  # variance inf: the normalised values collapse to 0
    np.testing.assert_allclose(_run(to_fp16_body(model, emulate=True), x), ref, atol=0.1, rtol=0.05)


def test_softmax_reads_fp32_logits():
    """Softmax over logits beyond FP16's range (an attention score, a mask offset): in FP16 they are inf and the
    softmax NaN; kept FP32, only its probabilities (in [0, 1]) enter the FP16 MatMul."""
    model = _model([helper.make_node("Softmax", ["x"], ["p"], name="softmax", axis=-1),
                    helper.make_node("MatMul", ["p", "v"], ["y"], name="attend")],
                   {"v": RNG.normal(size=(8, 3))}, [1, 4, 8])
    x = RNG.normal(size=(1, 4, 8)).astype(np.float32)
    x[0, :, 2] = 7e4
    ref = _run(model, x)
    assert np.isnan(_run(to_fp16_body(model, guard=False, emulate=True), x)).any()
    np.testing.assert_allclose(_run(to_fp16_body(model, emulate=True), x), ref, atol=1e-2, rtol=1e-2)


def test_nonfinite_graph_refused_naming_the_first_node():
    model = normalize_then_conv()
    x = RNG.normal(size=(1, 4, 2, 2)).astype(np.float32)
    x[0, :, 1, 1] = -1.0
    with pytest.raises(BuildError, match=r"in FP16 gives non-finite outputs y \(\d+ NaN\) on the test image where FP32 "
                                         r"is finite; the first node 'div' \(Div\) gives NaN from finite inputs: keep it "
                                         r"in FP32 with backend_config.common_config.fp32_nodes=\['div'\]"):
        check_low_precision_finite(model, to_fp16_body(model, guard=False, emulate=True), {"x": x}, "fp16",
                                   "end2end.onnx", "the test image")
    check_low_precision_finite(model, to_fp16_body(model, emulate=True), {"x": x}, "fp16", "end2end.onnx", "x")


def test_fp32_nodes_pattern_matching_nothing_warns_with_close_names(caplog):
    with caplog.at_level(logging.WARNING, logger="trtdeploy"):
        assert fp32_node_names(normalize_then_conv(), ["conv*", "nrom"], "cfg.py: common_config.fp32_nodes") == ["conv"]
    assert "cfg.py: common_config.fp32_nodes: 'nrom' matches no node of the graph; close names: norm" in caplog.text


class _Layer:
    def __init__(self, name, dtypes):
        self.name, self.precision, self.num_outputs = name, "unset", len(dtypes)
        self._outputs = [SimpleNamespace(dtype=d) for d in dtypes]
        self.output_types = {}

    def get_output(self, k):
        return self._outputs[k]

    def set_output_type(self, k, dtype):
        self.output_types[k] = dtype


def test_weakly_typed_route_pins_the_guarded_layers_to_fp32():
    """TensorRT <= 10: layer.precision = FLOAT (float outputs too) and a precision-constraints flag."""
    dtype = SimpleNamespace(FLOAT="FLOAT", HALF="HALF", INT32="INT32", __members__={"FLOAT": 0, "HALF": 1, "INT32": 3})
    flags = SimpleNamespace(PREFER_PRECISION_CONSTRAINTS="prefer", OBEY_PRECISION_CONSTRAINTS="obey")
    trt = SimpleNamespace(module=SimpleNamespace(DataType=dtype, BuilderFlag=flags))
    layers = [_Layer("conv", ["HALF"]), _Layer("norm", ["FLOAT"]), _Layer("shape", ["INT32"]), _Layer("div", ["HALF"])]
    network = SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])
    for obey, flag in ((False, "prefer"), (True, "obey")):
        config = SimpleNamespace(flags=[])
        config.set_flag = config.flags.append
        assert pin_fp32(trt, config, network, {"norm", "div", "shape"}, obey=obey) == ["norm", "shape", "div"]
        assert config.flags == [flag]
    assert [layer.precision for layer in layers] == ["unset", "FLOAT", "FLOAT", "FLOAT"]
    assert [layer.output_types for layer in layers] == [{}, {0: "FLOAT"}, {}, {0: "FLOAT"}]


@pytest.mark.slow
def test_ssd300_fp16_graph_is_finite_with_the_fp32_detections(tmp_path):
    """Issue 15's failure: SSD300's L2Norm eps (1e-12) was 0 in FP16, 0/0 poisoned every score (0 detections)."""
    cfg = tmp_path / "ssd_fp16.py"
    cfg.write_text(f"_base_ = ['{CONFIGS}/detection/detection_static.py', '{CONFIGS}/_base_/backends/tensorrt-fp16.py']\n"
                   "onnx_config = dict(input_shape=[300, 300])\n"
                   "backend_config = dict(model_inputs=[dict(input_shapes=dict(input=dict(min_shape=[1, 3, 300, 300], "
                   "opt_shape=[1, 3, 300, 300], max_shape=[1, 3, 300, 300])))])\n")
    work = tmp_path / "w"
    run_cli("convert", cfg, "torchvision://ssd300_vgg16", "--work-dir", work, "--test-img", DEMO_IMG)
    deployed = trtdeploy.load(work / "end2end.onnx")
    feed = {"input": deployed.task.preprocess(str(DEMO_IMG), deployed.input_shape())[0]}
    deployed.close()
    names = ["dets", "labels"]
    ref = dict(zip(names, ort.InferenceSession(str(work / "end2end.onnx")).run(None, feed)))
    half = dict(zip(names, ort.InferenceSession(str(work / "end2end_fp16.onnx")).run(None, feed)))
    assert np.isfinite(half["dets"]).all()
    match = match_detections(half, ref)
    assert match["reference"] == match["matched"] == 100 and match["unmatched"] == 0
    assert match["box"] < 2.0 and match["score"] < 0.05
    unguarded = to_fp16_body(onnx.load(str(work / "end2end.onnx")), guard=False)
    assert (ort.InferenceSession(unguarded.SerializeToString()).run(None, feed)[1] >= 0).sum() == 0  # as before
