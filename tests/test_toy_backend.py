"""docs/architecture.md, "add a backend", done once: a toy backend from outside the package, found by discovery.

The backend lives in a module this test writes into a temporary folder, with a distribution's
metadata that names it in the ``trtdeploy.backends`` entry-point group, as a third-party package
would; no file of trtdeploy changes. A child process (fresh discovery) then converts a tiny model
to it, loads the artefact through ``trtdeploy.load`` and the CLI, and sees it in ``trtdeploy inspect``
and check-env.
"""
from __future__ import annotations

import json
import os

from conftest import CONFIGS, DEMO_IMG, TINY_CLASSIFIER, run_python

TOY_BACKEND = '''
"""A toy backend: its artefact is the ONNX file under another suffix, run by ONNX Runtime."""
import shutil
from pathlib import Path

from trtdeploy.backends.base import BACKENDS, Backend, BuildResult
from trtdeploy.backends.onnxruntime import OnnxRuntimeRunner
from trtdeploy.utils.findings import OK, Finding


@BACKENDS.register("toy")
class ToyBackend(Backend):
    name = "toy"
    file_suffixes = (".toy",)
    artefact_suffix = ".toy"
    install_hint = "pip install toy-backend"

    def is_available(self):
        return True

    def build(self, onnx_path, work_dir, cfg, sample=None, model=None):
        path = Path(work_dir) / (Path(onnx_path).stem + ".toy")
        shutil.copyfile(onnx_path, path)
        return BuildResult(path, {"precision": "fp32", "built_from": Path(onnx_path).name})

    def load(self, path, sidecar=None, device="cpu"):
        return OnnxRuntimeRunner(Path(path))

    def describe(self):
        return {"available": True}

    def inspect(self, path):
        return {"file": str(path), "kind": "toy", "size_bytes": Path(path).stat().st_size}

    def env_findings(self, gpus):
        return [Finding("toy", "toy", OK, "always here")]
'''

CHILD = """
import json
import numpy as np
import trtdeploy
from trtdeploy.backends.base import discover_backends
from trtdeploy.cli.main import main
from trtdeploy.env import check_environment
from trtdeploy.evaluation import inspect_file

work, cfg, model, image = ARGS
result = trtdeploy.convert(cfg, model, work_dir=work)
deployed = trtdeploy.load(work)                     # the work dir stands for the .toy artefact
out = deployed(np.zeros((1, 3, 224, 224), np.float32))
reference = trtdeploy.load(result.onnx_path)(np.zeros((1, 3, 224, 224), np.float32))
print("RESULT " + json.dumps({
    "backends": discover_backends(), "artefact": result.backend_path.name, "runner": type(deployed.runner).__name__,
    "same": bool(np.array_equal(out["output"], reference["output"])),
    "predict": str(deployed.predict(image)), "inspect": inspect_file(result.backend_path)["kind"],
    "env": [f.detail for f in check_environment() if f.section == "toy"],
    "cli_run": main(["run", work, "--input", image])}))
"""


def test_a_backend_from_another_package_converts_and_loads(tmp_path):
    site = tmp_path / "site"
    (site / "toy_backend-0.1.dist-info").mkdir(parents=True)
    (site / "toy_backend.py").write_text(TOY_BACKEND)
    (site / "toy_backend-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-backend\n"
                                                                  "Version: 0.1\n")
    (site / "toy_backend-0.1.dist-info" / "entry_points.txt").write_text("[trtdeploy.backends]\ntoy = toy_backend\n")
    (tmp_path / "tiny_model.py").write_text(TINY_CLASSIFIER)
    cfg = tmp_path / "toy_cfg.py"
    cfg.write_text(f"_base_ = ['{CONFIGS}/classification/classification_onnxruntime_static.py']\n"
                   "backend_config = dict(type='toy')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    args = [str(tmp_path / "work"), str(cfg), f"{tmp_path / 'tiny_model.py'}:build", str(DEMO_IMG)]
    proc = run_python(CHILD.replace("ARGS", repr(args)), env=env)
    result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["backends"][:2] == ["onnxruntime", "tensorrt"] and "toy" in result["backends"]
    assert result["artefact"] == "end2end.toy" and result["runner"] == "OnnxRuntimeRunner"
    assert result["same"] and result["predict"] and result["inspect"] == "toy"
    assert result["env"] == ["always here"] and result["cli_run"] == 0
