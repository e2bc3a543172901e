"""The reliability catalogue: bad inputs of every kind, each answered by our own error type.

Every case runs against a work dir that already holds a previous conversion (ONNX, engine,
sidecars) and asserts three things: the exact TrtDeployError subclass (hence the CLI exit
code), a message fragment that names the fix, and that the work dir is byte-for-byte as it
was, with no temp file left. The README's "Reliability" section counts these cases.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest

import trtdeploy
from trtdeploy.backends.base import build_from_onnx
from trtdeploy.calibration import prepare_calibration_file
from trtdeploy.config import load_deploy_config
from trtdeploy.errors import (ConfigError, DatasetError, EngineCompatibilityError, InputError, ModelError,
                              ShapeError, TrtDeployError, UnsupportedOpError, WorkDirError)
from trtdeploy.utils.fileio import TEMP_MARK

from conftest import CONFIGS, DEMO_IMG, REPO

CLS = CONFIGS / "classification"
ORT_DYNAMIC = CLS / "classification_onnxruntime_dynamic.py"
TRT_DYNAMIC = CLS / "classification_tensorrt_dynamic-224x224-320x320.py"


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its sha256: what 'untouched' is compared against."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def write_cfg(folder: Path, name: str, body: str, base: Path = ORT_DYNAMIC) -> Path:
    path = folder / name
    path.write_text(f"_base_ = ['{base}']\n{body}\n")
    return path


@dataclass
class Env:
    """What a case may use: the work dir with a previous conversion, a scratch dir for bad inputs."""

    work: Path
    scratch: Path
    tiny: dict
    monkeypatch: pytest.MonkeyPatch

    @property
    def model(self) -> str:
        return self.tiny["model"]

    def onnx_variant(self, name: str, edit: Callable[[onnx.ModelProto], None]) -> Path:
        model = onnx.load(str(self.work / "end2end.onnx"))
        edit(model)
        path = self.scratch / name
        onnx.save(model, str(path))
        return path

    def engine_copy(self, **sidecar_changes) -> Path:
        """The previous engine, loaded through a sidecar with some facts changed."""
        sidecar = json.loads((self.work / "end2end.engine.json").read_text())
        sidecar.update(sidecar_changes)
        folder = self.scratch / "engine"
        folder.mkdir(exist_ok=True)
        shutil.copy(self.work / "end2end.engine", folder / "end2end.engine")
        (folder / "end2end.engine.json").write_text(json.dumps(sidecar))
        return folder / "end2end.engine"


@dataclass
class Case:
    id: str
    area: str
    error: type[TrtDeployError]
    fragment: str            # part of the one-sentence message (a regex)
    run: Callable[[Env], object]


def _convert(env: Env, cfg, model=None, **kw):
    return trtdeploy.convert(cfg, model or env.model, work_dir=env.work, **kw)


def _cfg(env: Env, body: str, base: Path = ORT_DYNAMIC) -> Path:
    return write_cfg(env.scratch, "deploy.py", body, base)


def _bad_file(env: Env, name: str, data: bytes) -> Path:
    path = env.scratch / name
    path.write_bytes(data)
    return path


def _truncated(env: Env) -> Path:
    data = (env.work / "end2end.onnx").read_bytes()
    return _bad_file(env, "truncated.onnx", data[: len(data) * 2 // 3])


def _external_data_missing(env: Env) -> Path:
    model = onnx.load(str(env.work / "end2end.onnx"))
    path = env.scratch / "external.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin",
              size_threshold=0)
    (env.scratch / "weights.bin").unlink()
    return path


def _nonzero_graph(env: Env) -> Path:
    from onnx import TensorProto, helper

    node = helper.make_node("NonZero", ["input"], ["output"], name="find_nonzero")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.INT64, [4, -1])])
    path = env.scratch / "nonzero.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _profile_cfg(env: Env, shapes: str, names: str = "") -> Path:
    return _cfg(env, f"{names}backend_config = dict(model_inputs=[dict(input_shapes=dict({shapes}))])", TRT_DYNAMIC)


def _run_with_profile(env: Env, batch: np.ndarray):
    model = trtdeploy.load(env.work / "end2end.onnx", deploy_cfg=TRT_DYNAMIC)
    with contextlib.closing(model):
        return model(batch)


def _image_folder_cfg(env: Env, folder: Path) -> Path:
    path = env.scratch / "calib_dataset.py"
    path.write_text(f"data = dict(samples_per_gpu=1, workers_per_gpu=0, val=dict(type='ImageFolder', "
                    f"data_prefix='{folder}'))\n")
    return path


def _calibrate(env: Env, dataset_cfg: Path | None, body: str = ""):
    cfg = load_deploy_config(_cfg(env, body, CLS / "classification_tensorrt-int8_static-224x224.py"))
    return prepare_calibration_file(cfg, env.work, "input", dataset_cfg, fallback=_as_input, fallback_key="test")


def _as_input(image_path: Path) -> np.ndarray:
    from trtdeploy.utils.image import load_image, resize

    return resize(load_image(image_path), (224, 224)).transpose(2, 0, 1).astype(np.float32)


def _unreadable_images(env: Env) -> Path:
    folder = env.scratch / "images"
    folder.mkdir()
    for i in range(3):
        (folder / f"img{i}.jpg").write_bytes(b"not a jpeg at all")
    return _image_folder_cfg(env, folder)


def _calibration_outside_profile(env: Env):
    from trtdeploy.calibration.qdq import check_calibration_shapes
    from trtdeploy.calibration import CalibrationFile
    from trtdeploy.calibration.h5file import write_calibration_file
    from trtdeploy.config import ShapeRange

    path = env.scratch / "calib_data.h5"
    write_calibration_file(path, "input", [np.zeros((3, 200, 200), np.float32)] * 2, "test")
    static = ShapeRange((1, 3, 224, 224), (1, 3, 224, 224), (1, 3, 224, 224))
    with CalibrationFile(path) as calib:
        check_calibration_shapes(calib, {"input": (1, 3, 224, 224)}, {"input": static})


def _sm90(env: Env) -> Path:
    env.monkeypatch.setattr("trtdeploy.backends.tensorrt.backend.current_compute_capability", lambda: (9, 0))
    return env.engine_copy()


def _replaced_engine(env: Env) -> Path:
    path = env.engine_copy()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _truncated_engine(env: Env) -> Path:
    path = env.engine_copy()
    path.write_bytes(path.read_bytes()[:1000])
    return path


def _corrupt_sidecar(env: Env) -> Path:
    path = env.engine_copy()
    path.with_name(path.name + ".json").write_text("{not json")
    return path


def _empty_folder(env: Env) -> Path:
    folder = env.scratch / "empty_dir"
    folder.mkdir()
    return folder


def _no_sidecar(env: Env) -> Path:
    path = env.engine_copy()
    path.with_name(path.name + ".json").unlink()
    return path


@contextlib.contextmanager
def tiny_tmpfs(folder: Path, size: str, readonly: bool = False):
    """A real tiny (or read-only) file system at ``folder``; None where mounting is not allowed."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if readonly else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                             capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], capture_output=True)


def _full_disk_while_writing_onnx(env: Env):
    """Convert into a work dir whose disk fills up: a one-page tmpfs (the 5 KB ONNX does not fit), else a
    write that raises ENOSPC."""
    disk = env.scratch / "small_disk"
    with tiny_tmpfs(disk, "4k") as mounted:
        if mounted:
            return trtdeploy.convert(ORT_DYNAMIC, env.model, work_dir=disk)
        env.monkeypatch.setattr("trtdeploy.utils.fileio.os.fsync", _raise(errno.ENOSPC))
        return _convert(env, ORT_DYNAMIC)


def _read_only_work_dir(env: Env):
    disk = env.scratch / "read_only"
    with tiny_tmpfs(disk, "1m", readonly=True) as mounted:
        if mounted:
            return trtdeploy.convert(ORT_DYNAMIC, env.model, work_dir=disk / "work")
        env.monkeypatch.setattr("trtdeploy.utils.fileio.tempfile.mkstemp", _raise(errno.EROFS))
        return _convert(env, ORT_DYNAMIC)


def _raise(code: int):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return fail


def _cli(env: Env, *argv: str):
    """Run one command's function as `trtdeploy` would, so that its error propagates instead of becoming an exit code."""
    from trtdeploy.cli.main import build_parser

    args = build_parser().parse_args([str(a) for a in argv])
    return args.func(args)


def _offline_torch_home(env: Env) -> None:
    """An empty torch hub cache and no network: weights must be named, not fetched."""
    import torch

    env.monkeypatch.setenv("TORCH_HOME", str(env.scratch / "torch"))
    env.monkeypatch.setattr(torch.hub, "download_url_to_file", _raise(errno.ENETUNREACH))


RAISING_FACTORY = b"def build():\n    raise RuntimeError('no such layer')\n"

CASES = [
    # -- deploy configs ------------------------------------------------------------------------------
    Case("config-missing", "config", ConfigError, "does not exist", lambda e: _convert(e, e.scratch / "nope.py")),
    Case("config-syntax", "config", ConfigError, r"bad\.py: syntax error at line 2",
         lambda e: _convert(e, _bad_file(e, "bad.py", b"x = 1\nonnx_config = dict(\n"))),
    Case("config-base-missing", "config", ConfigError, "_base_",
         lambda e: _convert(e, write_cfg(e.scratch, "c.py", "", base=e.scratch / "gone.py"))),
    Case("config-top-level-typo", "config", ConfigError, "did you mean 'backend_config'",
         lambda e: _convert(e, _cfg(e, "backend_confg = dict(type='onnxruntime')"))),
    Case("config-wrong-type", "config", ConfigError, "opset_version must be int",
         lambda e: _convert(e, _cfg(e, "onnx_config = dict(opset_version='17')"))),
    Case("config-min-above-opt", "config", ConfigError, r"min_shape <= opt_shape <= max_shape",
         lambda e: _convert(e, _profile_cfg(e, "input=dict(min_shape=[4, 3, 224, 224], opt_shape=[1, 3, 224, 224], "
                                               "max_shape=[8, 3, 224, 224])"))),
    Case("config-dynamic-axis-undeclared", "config", ConfigError, r"does not declare axis 2",
         lambda e: _convert(e, _cfg(e, "onnx_config = dict(dynamic_axes=dict(_delete_=True, input={0: 'batch'}))\n"
                                       "backend_config = dict(model_inputs=[dict(input_shapes=dict(input=dict("
                                       "min_shape=[1, 3, 224, 224], opt_shape=[1, 3, 224, 224], "
                                       "max_shape=[1, 3, 320, 224])))])"))),
    Case("config-dynamic-axes-unknown-name", "config", ConfigError, "did you mean 'input'",
         lambda e: _convert(e, _cfg(e, "onnx_config = dict(dynamic_axes={'inptu': {0: 'batch'}})"))),
    Case("config-optimization-level", "config", ConfigError, r"builder_optimization_level must be 0\.\.5",
         lambda e: _convert(e, _cfg(e, "backend_config = dict(common_config=dict(builder_optimization_level=9))",
                                    TRT_DYNAMIC))),
    Case("config-tactic-source-typo", "config", ConfigError, "did you mean 'CUBLAS_LT'",
         lambda e: _convert(e, _cfg(e, "backend_config = dict(common_config=dict(tactic_sources=['-CUBLAS_LTT']))",
                                    TRT_DYNAMIC))),
    Case("config-hardware-level-typo", "config", ConfigError, "did you mean 'AMPERE_PLUS'",
         lambda e: _convert(e, _cfg(e, "backend_config = dict(common_config=dict(hardware_compatibility_level="
                                       "'AMPERE'))", TRT_DYNAMIC))),
    Case("config-compute-capability", "config", ConfigError, "'SM86' or '8.6'",
         lambda e: _convert(e, _cfg(e, "backend_config = dict(common_config=dict(compute_capabilities=['ampere']))",
                                    TRT_DYNAMIC))),
    Case("config-unknown-backend", "config", ConfigError, "did you mean 'tensorrt'",
         lambda e: _convert(e, _cfg(e, "backend_config = dict(type='tensorrtx')"))),
    Case("config-opset-out-of-range", "config", ConfigError, r"opset_version must be 7\.\.",
         lambda e: _convert(e, _cfg(e, "onnx_config = dict(opset_version=99)"))),
    Case("config-negative-workspace", "config", ConfigError, "max_workspace_size must be >= 0",
         lambda e: _convert(e, _cfg(e, "backend_config = dict(common_config=dict(max_workspace_size=-1))",
                                    TRT_DYNAMIC))),
    # -- models --------------------------------------------------------------------------------------
    Case("model-unknown-torchvision", "model", ModelError, "did you mean 'resnet18'",
         lambda e: _convert(e, ORT_DYNAMIC, "torchvision://resnet181")),
    Case("model-factory-file-missing", "model", ModelError, "does not exist",
         lambda e: _convert(e, ORT_DYNAMIC, f"{e.scratch / 'nope.py'}:build")),
    Case("model-factory-raises", "model", ModelError, r"build\(\) raised RuntimeError",
         lambda e: _convert(e, ORT_DYNAMIC, f"{_bad_file(e, 'm.py', RAISING_FACTORY)}:build")),
    Case("model-checkpoint-garbage", "model", ModelError, "cannot be read as a PyTorch state dict",
         lambda e: _convert(e, ORT_DYNAMIC, checkpoint=_bad_file(e, "w.pth", b"\x00garbage" * 10))),
    Case("model-weights-offline-not-cached", "model", ModelError,
         r"not in the torch hub cache .*put squeezenet1_1-b8a52dc0\.pth .*into .*torch/hub/checkpoints",
         lambda e: (_offline_torch_home(e), _convert(e, ORT_DYNAMIC, "torchvision://squeezenet1_1?weights=DEFAULT"))),
    Case("model-weights-unknown-enum", "model", ModelError, "SqueezeNet1_1_Weights has no 'IMAGENET1K_V2' .*did you mean 'IMAGENET1K_V1'",
         lambda e: _convert(e, ORT_DYNAMIC, "torchvision://squeezenet1_1?weights=IMAGENET1K_V2")),
    # -- ONNX files given to a backend -----------------------------------------------------------------
    Case("onnx-truncated", "onnx", ModelError, "truncated",
         lambda e: build_from_onnx(_truncated(e), TRT_DYNAMIC, e.work)),
    Case("onnx-not-onnx", "onnx", ModelError, "not a readable ONNX model",
         lambda e: build_from_onnx(_bad_file(e, "photo.onnx", DEMO_IMG.read_bytes()), TRT_DYNAMIC, e.work)),
    Case("onnx-empty", "onnx", ModelError, "is empty",
         lambda e: build_from_onnx(_bad_file(e, "empty.onnx", b""), ORT_DYNAMIC, e.work)),
    Case("onnx-wrong-opset", "onnx", ModelError, "uses opset 3",
         lambda e: build_from_onnx(e.onnx_variant("old.onnx", lambda m: setattr(m.opset_import[0], "version", 3)),
                                   TRT_DYNAMIC, e.work)),
    Case("onnx-missing-initializer", "onnx", ModelError, "missing initializer",
         lambda e: build_from_onnx(e.onnx_variant("noinit.onnx", lambda m: m.graph.initializer.pop()),
                                   TRT_DYNAMIC, e.work)),
    Case("onnx-external-data-missing", "onnx", ModelError, "external data",
         lambda e: build_from_onnx(_external_data_missing(e), TRT_DYNAMIC, e.work)),
    Case("onnx-unbuildable-op", "onnx", UnsupportedOpError, "find_nonzero .*NonZero.*rewriter",
         lambda e: build_from_onnx(_nonzero_graph(e), _cfg(e, "backend_config = dict(model_inputs=[])", TRT_DYNAMIC),
                                   e.work)),
    # -- shapes: config profiles against the model, inputs against the profiles ------------------------
    Case("shape-profile-rank", "shape", ShapeError, "has rank 3 but the model input 'input' has rank 4",
         lambda e: build_from_onnx(e.work / "end2end.onnx", _profile_cfg(
             e, "input=dict(min_shape=[3, 224, 224], opt_shape=[3, 224, 224], max_shape=[3, 224, 224])"), e.work)),
    Case("shape-profile-rank-before-export", "shape", ShapeError, "has rank 3 but the model takes rank-4 input",
         lambda e: _convert(e, _cfg(e, "backend_config = dict(model_inputs=[dict(input_shapes=dict(input=dict("
                                       "min_shape=[3, 224, 224], opt_shape=[3, 224, 224], max_shape=[3, 224, 224])))])"))),
    Case("shape-profile-fixed-dim", "shape", ShapeError, "dimension 1 must be 3",
         lambda e: build_from_onnx(e.work / "end2end.onnx", _profile_cfg(
             e, "input=dict(min_shape=[1, 4, 224, 224], opt_shape=[1, 4, 224, 224], max_shape=[1, 4, 224, 224])"),
             e.work)),
    Case("shape-profile-misses-input", "shape", ConfigError, "lacks the model input 'input'",
         lambda e: build_from_onnx(e.work / "end2end.onnx", _profile_cfg(
             e, "image=dict(min_shape=[1, 3, 224, 224], opt_shape=[1, 3, 224, 224], max_shape=[1, 3, 224, 224])",
             "onnx_config = dict(input_names=['image'], dynamic_axes=None)\n"), e.work)),
    Case("shape-above-max", "shape", ShapeError, r"input_shapes\.input\.max_shape\[2\]",
         lambda e: _run_with_profile(e, np.zeros((1, 3, 352, 224), np.float32))),
    Case("shape-below-min", "shape", ShapeError, r"min 224\).*or lower backend_config\.model_inputs\[0\]\.input_shapes\.input\.min_shape\[3\]",
         lambda e: _run_with_profile(e, np.zeros((1, 3, 224, 200), np.float32))),
    Case("shape-wrong-rank", "shape", ShapeError, "must have rank 4",
         lambda e: _run_with_profile(e, np.zeros((3, 224, 224), np.float32))),
    Case("shape-wrong-input-name", "shape", ShapeError, r"missing \['input'\], unexpected \['image'\]",
         lambda e: _run_with_profile(e, {"image": np.zeros((1, 3, 224, 224), np.float32)})),
    Case("shape-written-with-commas", "shape", ShapeError, r"not commas\), e\.g\. 1x3x224x224",
         lambda e: _cli(e, "profile", e.work / "end2end.onnx", "--shape", "1,3,224,224")),
    Case("input-not-numeric", "shape", InputError, "input 'input' cannot be read as a float32 array",
         lambda e: _run_with_profile(e, {"input": [["a", "b"]]})),
    Case("shape-calibration-sample-outside-profile", "shape", ShapeError,
         r"dimension 2 is 200, outside the engine profile \[224, 224\]", _calibration_outside_profile),
    # -- calibration datasets and caches -----------------------------------------------------------------
    Case("dataset-config-missing", "dataset", ConfigError, "does not exist",
         lambda e: _calibrate(e, e.scratch / "no_dataset.py")),
    Case("dataset-folder-missing", "dataset", DatasetError, "does not exist or is not a folder",
         lambda e: _calibrate(e, _image_folder_cfg(e, e.scratch / "no_images"))),
    Case("dataset-empty", "dataset", DatasetError, "empty",
         lambda e: _calibrate(e, _image_folder_cfg(e, _empty_folder(e)))),
    Case("dataset-unreadable-images", "dataset", DatasetError, "none of the 3 calibration images could be read",
         lambda e: _calibrate(e, _unreadable_images(e))),
    Case("cache-calibration-corrupt", "cache", DatasetError, "create_calib is False",
         lambda e: _calibrate(e, None, "calib_config = dict(create_calib=False, calib_file='"
                              f"{_bad_file(e, 'calib_data.h5', b'HDF?' * 64)}')")),
    Case("cache-timing-cache-is-dir", "cache", ConfigError, "timing_cache=.* is a directory",
         lambda e: build_from_onnx(e.work / "end2end.onnx", _cfg(
             e, f"backend_config = dict(common_config=dict(timing_cache='{e.scratch}'))", TRT_DYNAMIC), e.work)),
    # -- engines -----------------------------------------------------------------------------------------
    Case("engine-truncated", "engine", ModelError, "truncated",
         lambda e: trtdeploy.load(_truncated_engine(e))),
    Case("engine-replaced", "engine", ModelError, "sha256 differs", lambda e: trtdeploy.load(_replaced_engine(e))),
    Case("engine-other-version", "engine", EngineCompatibilityError,
         r"built with TensorRT-RTX 1\.6\.0 .*this is TensorRT-RTX .*another TensorRT version.*trtdeploy convert",
         lambda e: trtdeploy.load(e.engine_copy(backend_version="1.6.0"))),
    Case("engine-other-flavour", "engine", EngineCompatibilityError,
         r"built with TensorRT 10\.13\.0 for SM90; this is TensorRT-RTX",
         lambda e: trtdeploy.load(e.engine_copy(flavour="tensorrt", backend_version="10.13.0",
                                                compute_capabilities=["SM90"]))),
    Case("engine-unsupported-gpu", "engine", EngineCompatibilityError,
         r"on SM90 \(a GPU \(SM90\) that TensorRT-RTX does not support\): build for it with TensorRT",
         lambda e: trtdeploy.load(_sm90(e))),
    Case("engine-no-sidecar", "engine", ModelError, "has no sidecar", lambda e: trtdeploy.load(_no_sidecar(e))),
    Case("engine-sidecar-corrupt", "engine", ModelError, "sidecar .* is unreadable",
         lambda e: trtdeploy.load(_corrupt_sidecar(e))),
    Case("engine-unknown-suffix", "engine", ModelError, "suffix must be one of",
         lambda e: trtdeploy.load(_bad_file(e, "model.bin", b"\x00" * 64))),
    # -- input files named on the command line ---------------------------------------------------------
    Case("input-test-img-missing", "input", InputError, r"--test-img .*nope\.jpg does not exist",
         lambda e: _convert(e, ORT_DYNAMIC, test_img=e.scratch / "nope.jpg")),
    Case("input-compare-image-missing", "input", InputError, r"--input .*nope\.jpg does not exist",
         lambda e: _cli(e, "compare", e.work / "end2end.onnx", "--input", e.scratch / "nope.jpg")),
    Case("input-classes-file-missing", "input", InputError, r"--classes .*names\.txt does not exist",
         lambda e: _cli(e, "test", ORT_DYNAMIC, "none", e.work / "end2end.onnx", "--dataset", e.work.parent,
                        "--classes", e.scratch / "names.txt")),
    # -- file system ------------------------------------------------------------------------------------
    Case("fs-work-dir-is-a-file", "filesystem", WorkDirError, "--work-dir",
         lambda e: trtdeploy.convert(ORT_DYNAMIC, e.model, work_dir=_bad_file(e, "file", b"x") / "sub")),
    Case("fs-read-only", "filesystem", WorkDirError, "--work-dir", _read_only_work_dir),
    Case("fs-full-disk", "filesystem", WorkDirError, "no space left on the device", _full_disk_while_writing_onnx),
]


@pytest.fixture
def env(tmp_path, tiny_classifier, monkeypatch) -> Env:
    """A work dir holding a previous conversion (the session's tiny classifier), and a scratch dir."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("end2end.onnx", "end2end.onnx.json", "end2end.engine", "end2end.engine.json"):
        shutil.copy(tiny_classifier["work"] / name, work / name)
    scratch = tmp_path / "in"
    scratch.mkdir()
    return Env(work, scratch, tiny_classifier, monkeypatch)


def test_catalogue_is_large_distinct_and_counted_in_the_readme():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.area for c in CASES} == {"config", "model", "onnx", "shape", "dataset", "cache", "engine", "input",
                                       "filesystem"}
    readme = (REPO / "README.md").read_text()
    assert f"a catalogue of **{len(CASES)} bad inputs**" in readme


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_our_error_and_leaves_the_work_dir_untouched(case: Case, env: Env):
    before = snapshot(env.work)
    with pytest.raises(case.error) as raised:
        case.run(env)
    assert type(raised.value) is case.error, f"{type(raised.value).__name__}: {raised.value}"
    message = str(raised.value)
    assert re.search(case.fragment, message), message
    assert "\n" not in message, "errors are one sentence on one line"
    assert snapshot(env.work) == before
    assert not [p for p in env.work.rglob(f"*{TEMP_MARK}")]


# -- messages that are no errors: said once, one line per stage, to the right party --------------------------

def _image_folder(root: Path, classes=("a", "b")) -> Path:
    from PIL import Image

    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(root / name / "0.png")
    return root


def test_several_engines_that_cannot_run_get_the_gpu_sentence_once_and_progress_is_one_line(env, tmp_path, capsys):
    from trtdeploy.cli.main import main

    other = tmp_path / "work_b"
    shutil.copytree(env.work, other)
    code = main(["test", str(ORT_DYNAMIC), "none", str(env.work / "end2end.onnx"), str(env.work / "end2end.engine"),
                 str(other / "end2end.engine"), "--dataset", str(_image_folder(tmp_path / "images"))])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "tensorrt fp16 (work/end2end.engine)" in out and "tensorrt fp16 (work_b/end2end.engine)" in out
    assert (out + err).count("needs an NVIDIA GPU") == 1, out + err
    assert "\r" not in err and re.search(r"\] test: 2 img in \d", err), err  # stderr is no terminal here
    assert "class order is GUESSED" in err


def test_check_env_lists_each_plugin_once(capsys):
    from trtdeploy.cli.main import main
    from trtdeploy.ops import CUSTOM_OPS, load_ops

    main(["check-env"])
    out = capsys.readouterr().out
    load_ops()
    for key in CUSTOM_OPS:
        assert len(re.findall(rf"\] {re.escape(key)} ", out)) == 1, out


def test_run_accepts_a_work_dir(env, tmp_path, capsys):
    """A work dir stands for what was deployed in it: its ONNX runs, and its engine is named (not 'does not exist')."""
    from trtdeploy.cli.main import main

    onnx_only = tmp_path / "onnx_only"
    onnx_only.mkdir()
    for name in ("end2end.onnx", "end2end.onnx.json"):
        shutil.copy(env.work / name, onnx_only / name)
    assert main(["run", str(onnx_only), "--input", str(DEMO_IMG)]) == 0, capsys.readouterr().err
    assert "1. " in capsys.readouterr().out
    assert main(["run", str(env.work), "--input", str(DEMO_IMG)]) == 5
    err = capsys.readouterr().err
    assert "running end2end.engine needs an NVIDIA GPU" in err and "does not exist" not in err


def test_a_served_model_answers_bytes_that_are_no_image_with_invalid_arg(monkeypatch):
    """The Python-backend model's error carries INVALID_ARG (HTTP 400) for the client's mistakes, INTERNAL otherwise;
    triton_python_backend_utils exists only inside Triton, so a stand-in with its TritonError API is installed."""
    import importlib
    import sys
    import types

    class TritonError(Exception):
        INTERNAL, INVALID_ARG = 13, 3

        def __init__(self, message, code=INTERNAL):
            super().__init__(message)
            self.code = code

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", types.SimpleNamespace(TritonError=TritonError))
    monkeypatch.delitem(sys.modules, "trtdeploy.serving.python_backend_model", raising=False)
    shell = importlib.import_module("trtdeploy.serving.python_backend_model")
    from trtdeploy.serving.stages import decode_image

    with pytest.raises(InputError) as raised:
        decode_image(np.array([b"definitely not a jpeg"], dtype=object))
    assert shell.triton_error(raised.value).code == TritonError.INVALID_ARG
    assert shell.triton_error(RuntimeError("out of memory")).code == TritonError.INTERNAL
