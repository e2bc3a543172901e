"""A real engine through ``trtdeploy.load`` on a GPU with TensorRT (never in CI: TRTDEPLOY_GPU_TESTS=1).

    TRTDEPLOY_GPU_TESTS=1 python -m pytest tests/gpu/test_tensorrt_gpu.py -q

An engine with two optimization profiles runs inputs of each profile (the runner switches profile),
agrees with ONNX Runtime on the same ONNX, refuses a shape no profile holds, and gives the same
outputs with a captured CUDA graph.
"""
from __future__ import annotations

import numpy as np
import pytest

import trtdeploy
from trtdeploy.errors import ShapeError
from conftest import CONFIGS, TINY_CLASSIFIER, run_cli

TWO_PROFILES = (f"_base_ = ['{CONFIGS}/classification/classification_dynamic.py', "
                f"'{CONFIGS}/_base_/backends/tensorrt.py']\n"
                "backend_config = dict(model_inputs=[\n"
                "    dict(input_shapes=dict(input=dict(min_shape=[1, 3, 64, 64], opt_shape=[2, 3, 64, 64],"
                " max_shape=[4, 3, 96, 96]))),\n"
                "    dict(input_shapes=dict(input=dict(min_shape=[8, 3, 128, 128], opt_shape=[8, 3, 128, 128],"
                " max_shape=[16, 3, 160, 160])))])\n")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    work = tmp_path_factory.mktemp("trt_gpu")
    (work / "tiny_model.py").write_text(TINY_CLASSIFIER)
    (work / "two_profiles.py").write_text(TWO_PROFILES)
    run_cli("convert", work / "two_profiles.py", f"{work / 'tiny_model.py'}:build", "--work-dir", work)
    return work


def test_engine_runs_each_profile_like_onnxruntime(engine):
    reference = trtdeploy.load(engine / "end2end.onnx")
    model = trtdeploy.load(engine / "end2end.engine", device="cuda")
    rng = np.random.default_rng(0)
    for shape in [(2, 3, 64, 64), (12, 3, 160, 160), (3, 3, 96, 96)]:  # profile 0, 1, then 0 again
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(model(x)["output"], reference(x)["output"], atol=1e-3, rtol=1e-3)
    with pytest.raises(ShapeError, match=r"model_inputs\[0\]\.input_shapes\.input\.max_shape\[0\]"):
        model(np.zeros((6, 3, 64, 64), np.float32))
    model.close()


def test_cuda_graph_replays_the_same_outputs(engine):
    from trtdeploy.backends.sidecar import read_sidecar
    from trtdeploy.backends.tensorrt.compat import import_tensorrt
    from trtdeploy.backends.tensorrt.runner import TensorRTRunner

    path = engine / "end2end.engine"
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with TensorRTRunner(import_tensorrt(), path, read_sidecar(path, required=True)) as plain:
        want = plain(x)["output"]
    with TensorRTRunner(import_tensorrt(), path, read_sidecar(path, required=True), cuda_graph=True) as graphed:
        for _ in range(3):
            np.testing.assert_allclose(graphed(x)["output"], want, atol=1e-5)
        assert graphed._graph is not None
        np.testing.assert_allclose(graphed(x[:1])["output"], want[:1], atol=1e-5)  # new shapes: captured again
