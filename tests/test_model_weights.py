"""MODEL weights: torchvision's pretrained weights through the torch hub cache, and seeded random weights.

Nothing is downloaded here: each test points TORCH_HOME at a temp folder and writes the state dict
where torch.hub looks for it (``hub/checkpoints/<file name of the weight enum's URL>``).
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
import torchvision

from trtdeploy.errors import ModelError
from trtdeploy.export.model_loader import load_model

from conftest import CONFIGS, run_cli


def _cache(torch_home: Path, weights) -> Path:
    path = torch_home / "hub" / "checkpoints" / Path(urlparse(weights.url).path).name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


@pytest.mark.parametrize("query", ["weights=DEFAULT", "weights=IMAGENET1K_V1", "weights=SqueezeNet1_1_Weights.IMAGENET1K_V1"])
def test_weight_enum_loads_the_cached_state_dict(torch_home, query):
    weights = torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1
    torch.manual_seed(123)
    state = torchvision.models.squeezenet1_1().state_dict()
    torch.save(state, _cache(torch_home, weights))
    model = load_model(f"torchvision://squeezenet1_1?{query}")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_backbone_weights_by_short_name_load_the_backbone_only(torch_home):
    """weights_backbone=DEFAULT names the backbone's enum (read from the builder's annotation); the head stays seeded."""
    weights = torchvision.models.MobileNet_V3_Large_Weights.DEFAULT
    torch.manual_seed(5)
    state = torchvision.models.mobilenet_v3_large().state_dict()
    torch.save(state, _cache(torch_home, weights))
    model = load_model("torchvision://lraspp_mobilenet_v3_large?weights_backbone=DEFAULT")
    assert torch.equal(model.state_dict()["backbone.0.0.weight"], state["features.0.0.weight"])  # the stem conv


def test_missing_weights_offline_name_the_file_and_the_folder(torch_home, monkeypatch):
    def offline(url, dst, *args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ModelError) as raised:
        load_model("torchvision://squeezenet1_1?weights=DEFAULT")
    message = str(raised.value)
    assert "squeezenet1_1-b8a52dc0.pth" in message and str(torch_home / "hub" / "checkpoints") in message
    assert "\n" not in message


def test_unknown_weight_name_is_refused_with_a_suggestion():
    with pytest.raises(ModelError, match="did you mean 'IMAGENET1K_V1'"):
        load_model("torchvision://resnet18?weights=IMAGENET1K_V2")


def test_random_weights_are_seeded_from_the_model_string_and_leave_the_global_rng_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    a = load_model("torchvision://squeezenet1_1")
    assert torch.equal(torch.rand(3), expected), "building a model must not consume the caller's random numbers"
    b = load_model("torchvision://squeezenet1_1")
    c = load_model("torchvision://squeezenet1_1?num_classes=10")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert c.classifier[1].weight.shape[0] == 10


def test_compare_against_a_converted_work_dir_without_a_checkpoint_passes(tmp_path, capsys):
    """The README's own check: convert, then compare --model with the same MODEL string in another process."""
    from trtdeploy.cli.main import main

    cfg = CONFIGS / "classification" / "classification_onnxruntime_dynamic.py"
    assert main(["convert", str(cfg), "torchvision://squeezenet1_1", "--work-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().err.count("random weights") == 1
    proc = run_cli("compare", tmp_path, "--model", "torchvision://squeezenet1_1", "--atol", "1e-4")
    assert "PASSED" in proc.stdout, proc.stdout
