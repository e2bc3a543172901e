"""Issue 3: convert end to end, ONNX Runtime vs PyTorch, TensorRT-RTX builds and their profiles."""
from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
import torch
import torchvision

import trtdeploy
from conftest import CONFIGS, DEMO_IMG, run_cli

CLS = CONFIGS / "classification"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_onnxruntime_matches_pytorch(tmp_path, name):
    """The converted graph computes what the PyTorch model computes (FP32, <= 1e-4)."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    result = trtdeploy.convert(CLS / "classification_onnxruntime_dynamic.py", model, work_dir=tmp_path)
    deployed = trtdeploy.load(result.backend_path)
    for shape in [(1, 3, 224, 224), (3, 3, 256, 192)]:  # batch and size are dynamic in this config
        x = torch.rand(shape)
        with torch.no_grad():
            expected = model(x).numpy()
        got = deployed(x.numpy())["output"]
        assert got.shape == expected.shape
        assert np.max(np.abs(got - expected)) <= 1e-4


def test_main_job_prints_top5_and_files(tmp_path):
    """README's set-up command: convert, run the sample image, print top-5 for both backends and the files."""
    proc = run_cli("convert", CLS / "classification_onnxruntime_dynamic.py", "torchvision://resnet18",
                   "--work-dir", tmp_path, "--test-img", DEMO_IMG)
    out = proc.stdout
    assert out.count("  5. ") == 2, out  # top-5 from PyTorch and from ONNX Runtime
    assert "PyTorch:" in out and "onnxruntime:" in out
    diff = float(out.split("max abs difference")[1].split()[0])
    assert diff <= 1e-4
    # The closing summary: files with sizes, precision, dynamic dims by name, and the commands to run next.
    assert re.search(rf"{re.escape(str(tmp_path / 'end2end.onnx'))} +\d+\.\d MB", out), out
    assert "onnxruntime fp32" in out and "input [batch, 3, height, width]" in out
    assert "trtdeploy compare " in out and "--model torchvision://resnet18" in out
    assert proc.stderr.count("has random weights") == 1 and "torchvision://resnet18?weights=DEFAULT" in proc.stderr
    # Stage progress with timings goes to stderr.
    assert "[1/5] load model" in proc.stderr and "done in" in proc.stderr
    sidecar = json.loads((tmp_path / "end2end.onnx.json").read_text())
    assert sidecar["task"] == "Classification" and sidecar["class_names"][0] == "tench"
    assert sidecar["onnx_sha256"] and sidecar["inputs"][0]["name"] == "input"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["end2end.onnx", "end2end.onnx.json"]


def test_run_uses_the_sidecar(resnet18_ort, tmp_path):
    out_png = tmp_path / "top5.png"
    proc = run_cli("run", resnet18_ort / "end2end.onnx", "--input", DEMO_IMG, "--out", out_png)
    lines = [line for line in proc.stdout.splitlines() if line.strip()[:2] in {f"{i}." for i in range(1, 6)}]
    assert len(lines) == 5 and "(class " in lines[0]
    from PIL import Image

    assert Image.open(out_png).size == Image.open(DEMO_IMG).size


def _engine_sidecar(work):
    return json.loads((work / "end2end.engine.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("config, expected", [
    ("classification_tensorrt_static-224x224.py",
     {"min_shape": [1, 3, 224, 224], "opt_shape": [1, 3, 224, 224], "max_shape": [1, 3, 224, 224]}),
    ("classification_tensorrt_dynamic-224x224-320x320.py",
     {"min_shape": [1, 3, 224, 224], "opt_shape": [4, 3, 224, 224], "max_shape": [16, 3, 320, 320]}),
])
def test_tensorrt_rtx_builds_with_the_config_profile(tmp_path, config, expected):
    run_cli("convert", CLS / config, "torchvision://resnet18", "--work-dir", tmp_path)
    engine = tmp_path / "end2end.engine"
    assert engine.stat().st_size > 1_000_000
    facts = _engine_sidecar(tmp_path)
    assert facts["profiles"] == [{"input": expected}]
    assert facts["flavour"] in ("tensorrt", "tensorrt_rtx") and facts["backend_version"]
    assert facts["precision"] == "fp32"
    static = expected["min_shape"] == expected["max_shape"]
    assert facts["inputs"][0]["shape"] == (expected["min_shape"] if static else [-1, 3, -1, -1])


@pytest.mark.slow
def test_fp16_build_is_half_the_size_and_keeps_fp32_io(tmp_path):
    """Strongly typed TensorRT gets FP16 from the graph: the FP16 ONNX is written and built."""
    fp32, fp16 = tmp_path / "fp32", tmp_path / "fp16"
    run_cli("convert", CLS / "classification_tensorrt_dynamic-224x224-320x320.py", "torchvision://resnet18",
            "--work-dir", fp32)
    run_cli("convert", CLS / "classification_tensorrt-fp16_dynamic-224x224-320x320.py", "torchvision://resnet18",
            "--work-dir", fp16)
    facts = _engine_sidecar(fp16)
    assert facts["precision"] == "fp16" and facts["built_from"] == "end2end_fp16.onnx"
    graph = onnx.load(fp16 / "end2end_fp16.onnx").graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in graph.initializer)
    ratio = (fp16 / "end2end.engine").stat().st_size / (fp32 / "end2end.engine").stat().st_size
    assert ratio < 0.6


@pytest.mark.slow
def test_factory_model_and_checkpoint(tmp_path):
    """`module:factory` models and --checkpoint state dicts (also under 'state_dict')."""
    src = tmp_path / "my_models.py"
    src.write_text("import torch\n"
                   "def build():\n"
                   "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1),"
                   " torch.nn.Flatten(), torch.nn.Linear(4, 3))\n")
    torch.manual_seed(1)
    import importlib.util

    spec = importlib.util.spec_from_file_location("my_models_ref", src)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    reference = mod.build().eval()
    torch.save({"state_dict": reference.state_dict()}, tmp_path / "ckpt.pth")
    work = tmp_path / "work"
    result = trtdeploy.convert(CLS / "classification_onnxruntime_dynamic.py", f"{src}:build",
                               checkpoint=tmp_path / "ckpt.pth", work_dir=work)
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        expected = reference(x).numpy()
    np.testing.assert_allclose(trtdeploy.load(result.backend_path)(x.numpy())["output"], expected, atol=1e-5)


@pytest.mark.slow
def test_several_profiles_one_per_model_inputs_entry(tmp_path):
    """Each backend_config.model_inputs entry becomes one optimization profile of the engine."""
    cfg = tmp_path / "two_profiles.py"
    cfg.write_text(f"_base_ = ['{CLS}/classification_dynamic.py', '{CONFIGS}/_base_/backends/tensorrt.py']\n"
                   "backend_config = dict(model_inputs=[\n"
                   "    dict(input_shapes=dict(input=dict(min_shape=[1, 3, 224, 224], opt_shape=[1, 3, 224, 224],"
                   " max_shape=[1, 3, 224, 224]))),\n"
                   "    dict(input_shapes=dict(input=dict(min_shape=[2, 3, 160, 160], opt_shape=[8, 3, 192, 192],"
                   " max_shape=[8, 3, 256, 256])))])\n")
    run_cli("convert", cfg, "torchvision://mobilenet_v3_small", "--work-dir", tmp_path / "w")
    profiles = _engine_sidecar(tmp_path / "w")["profiles"]
    assert [p["input"]["opt_shape"] for p in profiles] == [[1, 3, 224, 224], [8, 3, 192, 192]]
    assert profiles[1]["input"]["min_shape"] == [2, 3, 160, 160]
