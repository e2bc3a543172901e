"""Issue 3's bad inputs: one clear sentence, a non-zero exit, nothing half-written."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import trtdeploy
from trtdeploy.config import load_deploy_config
from trtdeploy.errors import (BackendUnavailableError, ConfigError, ModelError, WorkDirError)
from conftest import CONFIGS, REPO, interruptible, run_cli

CLS = CONFIGS / "classification"
ORT_CFG = CLS / "classification_onnxruntime_dynamic.py"


def write_cfg(tmp_path, body: str, name: str = "cfg.py"):
    path = tmp_path / name
    path.write_text(f"_base_ = ['{CLS}/classification_dynamic.py', '{CONFIGS}/_base_/backends/tensorrt.py']\n"
                    + textwrap.dedent(body))
    return path


def profile(min_shape, opt_shape, max_shape):
    return (f"backend_config = dict(model_inputs=[dict(input_shapes=dict(input=dict("
            f"min_shape={min_shape}, opt_shape={opt_shape}, max_shape={max_shape})))])\n")


def test_base_inheritance_and_overrides_resolve(tmp_path):
    cfg = load_deploy_config(write_cfg(tmp_path, """
        onnx_config = dict(opset_version=16)
        backend_config = dict(common_config=dict(fp16_mode=True),
            model_inputs=[dict(input_shapes=dict(input=dict(min_shape=[1, 3, 64, 64], opt_shape=[2, 3, 96, 96],
                                                            max_shape=[4, 3, 128, 128])))])
    """))
    assert cfg.opset == 16                                   # overridden
    assert cfg.input_names == ["input"]                      # from _base_/onnx_config.py
    assert cfg.dynamic_axes["input"] == {0: "batch", 2: "height", 3: "width"}  # from classification_dynamic.py
    assert cfg.backend == "tensorrt" and cfg.fp16 and cfg.common["max_workspace_size"] == 0  # merged dicts
    assert cfg.task == "Classification"
    assert cfg.profiles[0]["input"].opt == (2, 3, 96, 96)
    assert cfg.export_shape("input", (1, 3, 224, 224)) == (2, 3, 96, 96)


@pytest.mark.parametrize("body, fragment", [
    ("onnx_config = dict(opset_version='17')\n", "onnx_config.opset_version must be int"),
    ("backend_config = dict(common_config=dict(fp16_mod=True))\n", "did you mean 'fp16_mode'"),
    ("backnd_config = dict()\n", "did you mean 'backend_config'"),
    (profile([1, 3, 320, 320], [1, 3, 224, 224], [1, 3, 320, 320]), "min_shape <= opt_shape <= max_shape"),
    (profile([1, 3, 224, 224], [1, 3, 320, 320], [1, 3, 256, 256]), "dimension 2 must satisfy"),
    (profile([1, 3, 224], [1, 3, 224, 224], [1, 3, 224, 224]), "same rank"),
    (profile([1, 3, 224, 224], [1, 3, 224, 224], [1, 3, 224, 0]), "positive integers"),
    ("backend_config = dict(model_inputs=[dict(input_shapes=dict(image=dict(min_shape=[1, 3, 8, 8], "
     "opt_shape=[1, 3, 8, 8], max_shape=[1, 3, 8, 8])))])\n", "names an input the model does not have"),
])
def test_bad_config_fields(tmp_path, body, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        load_deploy_config(write_cfg(tmp_path, body)).check_export_axes()  # as convert does before a PyTorch export
    assert fragment in str(info.value) and str(tmp_path / "cfg.py") in str(info.value)


def test_dynamic_dim_not_declared(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text(f"_base_ = ['{CLS}/classification_static.py', '{CONFIGS}/_base_/backends/tensorrt.py']\n"
                    + profile([1, 3, 224, 224], [1, 3, 224, 224], [8, 3, 224, 224]))
    with pytest.raises(ConfigError, match="does not declare axis 0 of 'input' dynamic"):
        load_deploy_config(path).check_export_axes()


@pytest.mark.parametrize("args, code, fragment", [
    (["missing.py", "torchvision://resnet18"], 2, "does not exist"),
    ([ORT_CFG, "torchvision://resnet81"], 3, "did you mean 'resnet18'"),
    ([ORT_CFG, "torchvision://resnet18", "--checkpoint", "nope.pth"], 3, "does not exist"),
    ([ORT_CFG, "no_such_module_xyz:build"], 3, "cannot import"),
])
def test_cli_errors_are_one_sentence(tmp_path, args, code, fragment):
    proc = run_cli("convert", *args, "--work-dir", tmp_path / "w", check=False)
    assert proc.returncode == code, proc.stderr
    assert fragment in proc.stderr and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("trtdeploy convert: error: ") and fragment in last and proc.stderr.count("error:") == 1
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())


def test_unknown_backend_lists_known(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text(f"_base_ = ['{CLS}/classification_dynamic.py']\nbackend_config = dict(type='tensorrtx')\n")
    with pytest.raises(ConfigError, match=r"unknown backend type 'tensorrtx'.*did you mean 'tensorrt'.*known: onnxruntime, tensorrt"):
        trtdeploy.convert(path, "torchvision://resnet18", work_dir=tmp_path / "w")


def test_checkpoint_that_does_not_match(tmp_path):
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "wrong.pth")
    with pytest.raises(ModelError, match=r"does not match the model: .*missing .*unexpected"):
        trtdeploy.convert(ORT_CFG, "torchvision://resnet18", checkpoint=tmp_path / "wrong.pth",
                          work_dir=tmp_path / "w")
    assert not (tmp_path / "w" / "end2end.onnx").exists()


def test_work_dir_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WorkDirError, match="--work-dir"):
        trtdeploy.convert(ORT_CFG, "torchvision://resnet18", work_dir=blocker / "sub")


def test_tensorrt_missing_says_how_to_install(tmp_path):
    """Forcing the full `tensorrt` flavour (not installed here) gives the install hint, before any export."""
    proc = run_cli("convert", CLS / "classification_tensorrt_static-224x224.py", "torchvision://resnet18",
                   "--work-dir", tmp_path, check=False, env={"TRTDEPLOY_TENSORRT": "tensorrt"})
    assert proc.returncode == BackendUnavailableError.exit_code
    assert "pip install tensorrt" in proc.stderr and "TENSORRT_DIR" in proc.stderr and "LD_LIBRARY_PATH" in proc.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_ctrl_c_during_build_leaves_no_engine(tmp_path):
    """SIGINT while TensorRT builds cancels the build; the previous engine (here: none) stays as it was."""
    proc = subprocess.Popen([sys.executable, "-m", "trtdeploy", "convert",
                             str(CLS / "classification_tensorrt_dynamic-224x224-320x320.py"),
                             "torchvision://resnet152", "--work-dir", str(tmp_path)],
                            cwd=REPO, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=interruptible)
    for line in proc.stderr:
        if "build tensorrt" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=300) == 130, rest
    assert "interrupted" in rest
    assert not (tmp_path / "end2end.engine").exists()
    assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]
