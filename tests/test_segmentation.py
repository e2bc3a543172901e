"""Issue 4: semantic segmentation (FCN, DeepLabV3, LRASPP) with the class map inside the graph."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
from mmengine import Config

import trtdeploy
from conftest import CONFIGS, DEMO_IMG, run_cli, build_in_child
from trtdeploy.errors import ModelError

SEGMENTORS = ["fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"]
SIZES = [(1, 3, 128, 160), (2, 3, 160, 96)]


def build(name: str) -> torch.nn.Module:
    """Random init with BatchNorm statistics re-estimated, so the score maps are not all ties."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None, aux_loss=False)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 128, 128) * 4 - 2)
    return model.eval()


@pytest.fixture(scope="session")
def convert_once(tmp_path_factory):
    """name -> (name, eager model, ConvertResult), each model converted once for the session."""
    done = {}

    def convert(name: str):
        if name not in done:
            model = build(name)
            cfg = Config.fromfile(str(CONFIGS / "segmentation/segmentation_onnxruntime_dynamic.py")).to_dict()
            cfg["onnx_config"]["input_shape"] = [160, 128]
            done[name] = name, model, trtdeploy.convert(cfg, model, work_dir=tmp_path_factory.mktemp(name))
        return done[name]
    return convert


@pytest.fixture(scope="session", params=SEGMENTORS)
def converted(request, convert_once):
    return convert_once(request.param)


@pytest.mark.slow
def test_class_map_matches_pytorch(converted):
    """ArgMax inside the graph gives PyTorch's class map, wherever PyTorch's top two scores are not tied."""
    _, model, result = converted
    deployed = trtdeploy.load(result.backend_path)
    for shape in SIZES:
        torch.manual_seed(1)
        x = torch.rand(shape) * 4 - 2
        class_map = deployed(x.numpy())["output"]
        with torch.no_grad():
            scores = model(x)["out"]
        assert class_map.shape == (shape[0], 1, *shape[2:]) and class_map.dtype == np.int64
        top2 = scores.topk(2, dim=1).values
        decided = (top2[:, 0] - top2[:, 1] > 1e-3).numpy()
        expected = scores.argmax(1).numpy()
        assert decided.mean() > 0.95 and len(np.unique(expected)) > 1
        assert np.array_equal(class_map[:, 0][decided], expected[decided])


# FCN-ResNet50 (output stride 8) at 2048x2048 needs more memory than TensorRT-RTX gets on this CPU-only
# machine ("OutOfMemory, requested 1205461588 bytes"): it is built with the static 512x1024 config here.
TENSORRT_CONFIGS = {
    "fcn_resnet50": ("segmentation_tensorrt_static-512x1024.py", [1, 3, 512, 1024], [1, 3, 512, 1024]),
    "deeplabv3_mobilenet_v3_large": ("segmentation_tensorrt_dynamic-512x1024-2048x2048.py",
                                     [1, 3, 512, 1024], [1, 3, 2048, 2048]),
    "lraspp_mobilenet_v3_large": ("segmentation_tensorrt_dynamic-512x1024-2048x2048.py",
                                  [1, 3, 512, 1024], [1, 3, 2048, 2048]),
}


@pytest.mark.slow
def test_tensorrt_rtx_builds_the_graph(converted, tmp_path):
    name, _, result = converted
    config, low, high = TENSORRT_CONFIGS[name]
    cfg = CONFIGS / "segmentation" / config
    opt = low if low == high else [1, 3, 1024, 2048]
    facts = build_in_child(result.onnx_path, tmp_path, cfg)
    assert facts["size"] > 1_000_000
    assert facts["profiles"] == [{"input": {"min_shape": low, "opt_shape": opt, "max_shape": high}}]


@pytest.mark.slow
def test_run_prints_and_draws_the_class_map(convert_once, tmp_path):
    _, _, result = convert_once("lraspp_mobilenet_v3_large")
    sidecar = json.loads(result.sidecar_path.read_text())
    assert sidecar["task"] == "Segmentation" and sidecar["class_names"][15] == "person"
    out_png = tmp_path / "map.png"
    proc = run_cli("run", result.backend_path, "--input", DEMO_IMG, "--out", out_png)
    assert " in a 320x240 map:" in proc.stdout and "% of pixels" in proc.stdout
    from PIL import Image

    assert Image.open(out_png).size == Image.open(DEMO_IMG).size


def test_detector_with_a_segmentation_config_says_so(tmp_path):
    model = torchvision.models.get_model("ssdlite320_mobilenet_v3_large", weights=None, weights_backbone=None)
    with pytest.raises(ModelError, match="SSD is a detector but codebase_config.task is 'Segmentation'"):
        trtdeploy.convert(CONFIGS / "segmentation/segmentation_onnxruntime_dynamic.py", model, work_dir=tmp_path)
    with pytest.raises(ModelError, match="does not output a per-pixel score map"):
        trtdeploy.convert(CONFIGS / "segmentation/segmentation_onnxruntime_dynamic.py",
                          torchvision.models.get_model("mobilenet_v3_small", weights=None), work_dir=tmp_path)
    assert not list(tmp_path.iterdir())
