"""Issues 15.3/15.4/16.2: bisect across an FP32 graph and its 16-bit twin, the FP16 precision debugger, BF16."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import CONFIGS, run_cli

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


TINY_VIT = '''
import torch, torchvision


def build():
    torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel has no ONNX export
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(image_size=224, patch_size=32, num_layers=2, num_heads=2,
                                                 hidden_dim=64, mlp_dim=128, num_classes=10)
    torch.nn.init.normal_(model.heads.head.weight)  # torchvision starts the head at zero: every logit would be 0
    return model.eval()
'''


@pytest.mark.slow
@pytest.mark.parametrize("model", ["torchvision://resnet18", "vit"])
def test_bf16_builds_with_tensorrt_rtx_and_its_emulation_is_within_bf16_tolerance(model, tmp_path):
    """common_config.precision='bf16' on strongly typed TensorRT-RTX: end2end_bf16.onnx (BF16 body) builds, and the
    emulation (FP32 with BF16 round trips at the same points, which ONNX Runtime's CPU runs) stays near FP32."""
    if model == "vit":
        (tmp_path / "vit.py").write_text(TINY_VIT)
        model = f"{tmp_path / 'vit.py'}:build"
    cfg = tmp_path / "bf16.py"
    cfg.write_text(f"_base_ = ['{CONFIGS}/classification/classification_static.py', "
                   f"'{CONFIGS}/_base_/backends/tensorrt.py']\n"
                   "backend_config = dict(common_config=dict(precision='bf16'))\n")
    work = tmp_path / "w"
    run_cli("convert", cfg, model, "--work-dir", work)
    sidecar = json.loads((work / "end2end.engine.json").read_text())
    assert sidecar["precision"] == "bf16" and sidecar["built_from"] == "end2end_bf16.onnx"
    assert sidecar["check_with"] == "end2end_bf16_emulated.onnx" and sidecar["engine_bytes"] > 0
    body = onnx.load(str(work / "end2end_bf16.onnx"))
    assert sum(i.data_type == TensorProto.BFLOAT16 for i in body.graph.initializer) >= 5
    x = RNG.normal(size=(1, 3, 224, 224)).astype(np.float32)
    ref = ort.InferenceSession(str(work / "end2end.onnx")).run(None, {"input": x})[0]
    got = ort.InferenceSession(str(work / "end2end_bf16_emulated.onnx")).run(None, {"input": x})[0]
    # BF16 keeps 8 significant bits (relative step 2**-8): a few steps of the output's scale, direction intact.
    assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()
    assert float(np.dot(got.ravel(), ref.ravel()) / np.linalg.norm(got) / np.linalg.norm(ref)) > 0.999


def test_sensitivity_fp16_bisects_the_nodes_to_keep_and_prints_the_config_line(tmp_path, capsys):
    from trtdeploy.cli.main import main

    cancellation(tmp_path / "end2end.onnx")
    assert main(["sensitivity", str(tmp_path), "--precision", "fp16", "--atol", "1e-2", "--rtol", "1e-3"]) == 0
    out = capsys.readouterr().out
    assert "FP16 (emulated on ONNX Runtime) against FP32 on random input (x [1, 3, 4, 4]; no calib_data.h5)" in out
    # the Sub kept in FP32 takes the Add with it (the FP16 walk stops at kept nodes): the cancellation is exact
    assert out.strip().endswith("backend_config = dict(common_config=dict(fp32_nodes=['sub']))")


@pytest.mark.parametrize("backend, extra, message", [
    ({"type": "tensorrt"}, {"precision": "fp8"},
     "backend_config.common_config.precision must be one of fp32, fp16, bf16, int8, got 'fp8'"),
    ({"type": "onnxruntime"}, {"precision": "bf16"}, "precision 'bf16' is built by TensorRT (strongly typed: "
     "TensorRT-RTX, TensorRT >= 10; weakly typed: TensorRT 9-10 with BuilderFlag.BF16), but backend_config.type is "
     "'onnxruntime', which runs the FP32 graph; set type='tensorrt'"),
    ({"type": "tensorrt"}, {"precision": "bf16", "fp16_mode": True},
     "precision 'bf16' conflicts with common_config.fp16_mode=True; remove it or the precision"),
    ({"type": "tensorrt", "precision": "fp16"}, {"precision": "bf16"},
     "backend_config.common_config.precision='bf16' and backend_config.precision='fp16' disagree; keep one of them"),
])
def test_precision_bad_input(backend, extra, message):
    from trtdeploy.config import load_deploy_config
    from trtdeploy.errors import ConfigError

    raw = {"onnx_config": {}, "codebase_config": {"task": "Classification"},
           "backend_config": {**backend, "common_config": extra}}
    with pytest.raises(ConfigError) as e:
        load_deploy_config(raw)
    assert message in str(e.value)
