"""Issues 15.3/15.4/16.2: bisect across an FP32 graph and its 16-bit twin, the FP16 precision debugger, BF16."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trtdeploy.evaluation import Tolerances, bisect_onnx
from trtdeploy.passes.fp16 import to_fp16_body

RNG = np.random.default_rng(0)


def cancellation(path) -> onnx.ModelProto:
    """conv -> +1000 -> -1000 -> conv: the Add is fine in FP16 relative to its size, the Sub cancels to its error."""
    inits = [numpy_helper.from_array(RNG.normal(size=(4, 3, 1, 1)).astype(np.float32), "w1"),
             numpy_helper.from_array(RNG.normal(size=(2, 4, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.float32(1000.0), "big")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1"),
             helper.make_node("Add", ["c1", "big"], ["shifted"], name="add"),
             helper.make_node("Sub", ["shifted", "big"], ["back"], name="sub"),
             helper.make_node("Conv", ["back", "w2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return model


def test_bisect_maps_the_fp16_twins_names_and_names_the_cancelling_node(tmp_path):
    model = cancellation(tmp_path / "fp32.onnx")
    feed = {"x": RNG.normal(size=(1, 3, 4, 4)).astype(np.float32)}
    tol = Tolerances(atol={"": 1e-2}, rtol={"": 1e-3})
    # Every tensor of the FP16 twin (renamed c1__fp16, shifted__fp16, ...) is compared under its FP32 name. ONNX
    # Runtime's CPU runs FP16 Add/Sub in FP32 without rounding between them, so that twin agrees ...
    onnx.save(to_fp16_body(model), str(tmp_path / "fp16.onnx"))
    assert bisect_onnx(tmp_path / "fp32.onnx", tmp_path / "fp16.onnx", feed, tol) == (None, 4)
    # ... and the emulation, which rounds every output to FP16 as the engine does, shows where it breaks: the Sub,
    # whose input (about 1000, within rtol) agrees and whose output (about 1, error up to 0.25) does not.
    onnx.save(to_fp16_body(model, emulate=True), str(tmp_path / "emulated.onnx"))
    divergence, compared = bisect_onnx(tmp_path / "fp32.onnx", tmp_path / "emulated.onnx", feed, tol)
    assert (divergence.node, divergence.op_type, compared) == ("sub", "Sub", 3)
    assert divergence.comparison.max_abs > 1e-2 and divergence.input_max_abs <= 0.25
