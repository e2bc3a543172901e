"""FP16 for strongly typed TensorRT: the body in FP16, post-processing (and Loop bodies) in FP32."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtdeploy.passes.fp16 import to_fp16_body
from conftest import CONFIGS, run_cli, run_python


def loop_reading_outer_value() -> onnx.ModelProto:
    """Conv -> Relu -> Conv, and a Loop whose body reads the Relu output implicitly (as NMS/RoIAlign lowerings do)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(4, 4, 3, 3)).astype(np.float32) / 4, "w2"),
             numpy_helper.from_array(np.float32(0.5).reshape(1), "offset"),
             numpy_helper.from_array(np.array(3, np.int64), "trips"),
             numpy_helper.from_array(np.array(True), "cond")]
    acc = [1, 4, 8, 8]
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "relu"], ["sum"]),
         helper.make_node("Add", ["sum", "offset"], ["acc_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, acc)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, acc)])
    nodes = [helper.make_node("Conv", ["input", "w1"], ["conv1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv1"], ["relu"], name="relu"),
             helper.make_node("Conv", ["relu", "w2"], ["conv2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["conv2", "offset"], ["start"], name="scale"),
             helper.make_node("Loop", ["trips", "cond", "start"], ["output"], name="loop", body=body)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, acc)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_body_fp16_loop_fp32_same_result():
    model = loop_reading_outer_value()
    half = to_fp16_body(model)
    onnx.checker.check_model(half)
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(half).graph.value_info}
    relu = next(n for n in half.graph.node if n.op_type == "Relu")
    assert types[relu.output[0]] == TensorProto.FLOAT16          # the body (upstream of conv2) is FP16 ...
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert types["relu"] == TensorProto.FLOAT                    # ... and what the Loop reads is FP32 again
    x = np.random.default_rng(1).normal(size=(1, 3, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"input": x})[0]
    got = ort.InferenceSession(half.SerializeToString()).run(None, {"input": x})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, rtol=2e-2, atol=2e-2)


def test_body_fp16_graph_builds_with_tensorrt_rtx(tmp_path):
    onnx.save(to_fp16_body(loop_reading_outer_value()), tmp_path / "half.onnx")
    run_python(f"""
import tensorrt_rtx as trt
logger = trt.Logger(trt.Logger.ERROR)
builder = trt.Builder(logger)
network = builder.create_network(0)
parser = trt.OnnxParser(network, logger)
assert parser.parse_from_file({str(tmp_path / 'half.onnx')!r}), [parser.get_error(i).desc() for i in range(parser.num_errors)]
assert builder.build_serialized_network(network, builder.create_builder_config()) is not None
""")


@pytest.mark.slow
def test_fp16_detector_with_plugin_free_ops_builds(tmp_path):
    """Faster R-CNN (NMS and multi-level RoIAlign lowered to Loops) builds in FP16 with TensorRT-RTX."""
    cfg = tmp_path / "cfg.py"
    cfg.write_text(f"_base_ = ['{CONFIGS}/detection/detection_dynamic.py', '{CONFIGS}/_base_/backends/tensorrt-fp16.py']\n"
                   "backend_config = dict(model_inputs=[dict(input_shapes=dict(input=dict(min_shape=[1, 3, 320, 320], "
                   "opt_shape=[1, 3, 320, 320], max_shape=[1, 3, 384, 384])))])\n")
    run_cli("convert", cfg, "torchvision://fasterrcnn_mobilenet_v3_large_320_fpn", "--work-dir", tmp_path / "w")
    half = onnx.load(tmp_path / "w" / "end2end_fp16.onnx")
    assert sum(i.data_type == TensorProto.FLOAT16 for i in half.graph.initializer) > 50
    x = np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32)
    full = ort.InferenceSession(str(tmp_path / "w" / "end2end.onnx")).run(None, {"input": x})
    got = ort.InferenceSession(half.SerializeToString()).run(None, {"input": x})
    assert [a.shape for a in got] == [a.shape for a in full] and got[0].dtype == np.float32
