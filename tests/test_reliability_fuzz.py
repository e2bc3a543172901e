"""Property-based fuzzing of the two front doors: the deploy-config loader and ONNX -> backend.

The property: whatever the input, the only exceptions that come out are trtdeploy's own
(TrtDeployError subclasses, one line each), and a failed build leaves no file behind.
TensorRT is fuzzed in a child process, where a crash of the library would show as a
non-zero exit instead of taking pytest down.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trtdeploy
from trtdeploy.backends.base import build_from_onnx
from trtdeploy.config import DeployConfig, load_deploy_config
from trtdeploy.config.schema import DEPLOY_SCHEMA
from trtdeploy.errors import TrtDeployError

from conftest import CONFIGS, run_python

ORT_DYNAMIC = CONFIGS / "classification/classification_onnxruntime_dynamic.py"
TRT_DYNAMIC = CONFIGS / "classification/classification_tensorrt_dynamic-224x224-320x320.py"
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# -- values and configs ------------------------------------------------------------------------------------
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["input", "output", "fp16", "SM86", "-CUBLAS_LT", "AMPERE_PLUS"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
shapes = st.lists(st.one_of(st.integers(-3, 400), st.just(3), st.just(224), st.text(max_size=2)), min_size=0, max_size=5)


def section(spec: dict):
    """A dict of some of ``spec``'s keys (plus a stray one) with values of any type or of a nearby type."""
    keys = list(spec) + ["stray_key"]
    return st.dictionaries(st.sampled_from(keys), values, max_size=len(keys))


profile = st.fixed_dictionaries({}, optional={"min_shape": shapes, "opt_shape": shapes, "max_shape": shapes})
model_inputs = st.lists(st.fixed_dictionaries({"input_shapes": st.dictionaries(
    st.sampled_from(["input", "image", ""]), profile, max_size=2)}), max_size=2)
configs = st.fixed_dictionaries({}, optional={
    "onnx_config": st.one_of(section(DEPLOY_SCHEMA["onnx_config"]), values),
    "codebase_config": section(DEPLOY_SCHEMA["codebase_config"]),
    "backend_config": st.one_of(values, st.fixed_dictionaries(
        {"type": st.sampled_from(["tensorrt", "onnxruntime", "tensorrtx", 3])},
        optional={"common_config": section(DEPLOY_SCHEMA["backend_config"]["common_config"]),
                  "model_inputs": st.one_of(model_inputs, values), "precision": values})),
    "calib_config": values,
    "unknown_top_level": values,
})


def exercise(cfg: DeployConfig) -> None:
    """Ask a loaded config every question the pipeline asks."""
    cfg.precision, cfg.opset, cfg.input_names, cfg.output_names, cfg.save_file, cfg.task, cfg.backend
    for name in cfg.input_names:
        cfg.export_shape(name, (1, 3, 224, 224))
    cfg.check_profiles({"input": [-1, 3, -1, -1]})
    cfg.to_dict()


@FUZZ
@given(configs)
def test_config_dicts_load_or_fail_with_our_errors(raw):
    try:
        exercise(DeployConfig(raw))
    except TrtDeployError as e:
        assert "\n" not in str(e)


python_files = st.lists(st.tuples(st.sampled_from(["onnx_config", "backend_config", "codebase_config", "_base_",
                                                   "calib_config", "x"]), values), max_size=4)


@FUZZ
@given(body=st.one_of(python_files.map(lambda items: "\n".join(f"{k} = {v!r}" for k, v in items)),
                      st.text(max_size=80)))
def test_config_files_load_or_fail_with_our_errors(body):
    folder = Path(tempfile.mkdtemp())
    try:
        path = folder / "deploy.py"
        path.write_text(body)
        exercise(load_deploy_config(path))
    except TrtDeployError as e:
        assert "\n" not in str(e)
    finally:
        shutil.rmtree(folder)


# -- ONNX files ---------------------------------------------------------------------------------------------
def _edit_model(data: bytes, edit: str, k: int, text: str) -> bytes:
    """One structural damage to a valid model (data), chosen by ``edit`` with a parameter ``k``."""
    model = onnx.load_from_string(data)
    graph = model.graph
    if edit == "opset":
        model.opset_import[0].version = k
    elif edit == "drop_initializer" and graph.initializer:
        del graph.initializer[k % len(graph.initializer)]
    elif edit == "drop_node" and graph.node:
        del graph.node[k % len(graph.node)]
    elif edit == "op_type" and graph.node:
        graph.node[k % len(graph.node)].op_type = text or "Nope"
    elif edit == "input_dim":
        dims = graph.input[0].type.tensor_type.shape.dim
        dims[k % len(dims)].dim_value = k
    elif edit == "elem_type":
        graph.input[0].type.tensor_type.elem_type = k % 25
    elif edit == "rename_input":
        graph.input[0].name = text
    elif edit == "attribute" and graph.node:
        node = graph.node[k % len(graph.node)]
        node.attribute.append(onnx.helper.make_attribute(text or "a", k))
    return model.SerializeToString()


def _flip(data: bytes, positions: list[int]) -> bytes:
    buf = bytearray(data)
    for p in positions:
        buf[p % len(buf)] ^= 0xA5
    return bytes(buf)


def damaged_onnx(valid: bytes):
    """Truncations, byte flips, garbage and structural edits of ``valid``."""
    return st.one_of(
        st.integers(0, len(valid) - 1).map(lambda n: valid[:n]),
        st.lists(st.integers(0, len(valid) - 1), min_size=1, max_size=8).map(lambda ps: _flip(valid, ps)),
        st.binary(max_size=200),
        st.builds(_edit_model, st.just(valid),
                  st.sampled_from(["opset", "drop_initializer", "drop_node", "op_type", "input_dim", "elem_type",
                                   "rename_input", "attribute"]),
                  st.integers(0, 40), st.text(max_size=6)),
    )


@pytest.fixture(scope="module")
def valid_onnx(tiny_classifier) -> bytes:
    return (tiny_classifier["work"] / "end2end.onnx").read_bytes()


def test_onnx_front_door_onnxruntime(valid_onnx, tmp_path):
    @FUZZ
    @given(data=damaged_onnx(valid_onnx))
    def check(data):
        folder = Path(tempfile.mkdtemp(dir=tmp_path))
        path = folder / "model.onnx"
        path.write_bytes(data)
        try:
            build_from_onnx(path, ORT_DYNAMIC, folder / "work")
            model = trtdeploy.load(path)
            model(np.zeros((1, 3, 224, 224), np.float32))
            model.close()
        except TrtDeployError as e:
            assert "\n" not in str(e)
        finally:
            shutil.rmtree(folder)

    check()


TENSORRT_FUZZ_CHILD = """
import sys, shutil, tempfile, traceback
from pathlib import Path
sys.path.insert(0, "tests")
from hypothesis import given
import test_reliability_fuzz as fz
from trtdeploy.backends.base import build_from_onnx
from trtdeploy.errors import TrtDeployError
from trtdeploy.utils.fileio import TEMP_MARK

valid = Path({onnx!r}).read_bytes()
seen = {{"ours": 0, "built": 0}}

@fz.settings(fz.FUZZ, max_examples={n})
@given(data=fz.damaged_onnx(valid))
def check(data):
    folder = Path(tempfile.mkdtemp())
    try:
        (folder / "model.onnx").write_bytes(data)
        try:
            build_from_onnx(folder / "model.onnx", {cfg!r}, folder / "work")
            seen["built"] += 1
        except TrtDeployError as e:
            assert "\\n" not in str(e), str(e)
            seen["ours"] += 1
            work = folder / "work"
            assert not work.exists() or not list(work.glob("*.engine")) and not list(work.glob("*" + TEMP_MARK))
    finally:
        shutil.rmtree(folder)

check()
print("FUZZED", seen["ours"], seen["built"])
"""


@pytest.mark.slow
def test_onnx_front_door_tensorrt_in_a_child(tiny_classifier):
    proc = run_python(TENSORRT_FUZZ_CHILD.format(onnx=str(tiny_classifier["work"] / "end2end.onnx"),
                                                 cfg=str(TRT_DYNAMIC), n=40), timeout=600)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("FUZZED")][-1]
    ours, built = map(int, line.split()[1:])
    assert ours + built >= 40 and ours > 0
