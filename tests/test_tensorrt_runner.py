"""TensorRTRunner against a contract fake of the TensorRT 10 runtime (tests/trt_fake.py).

No TensorRT can execute here; the fake keeps TensorRT's per-profile bounds, return values and tensor
addresses, so a runner that skips the profile switch, ignores a refused shape or points TensorRT at
the wrong memory fails these tests. tests/gpu/test_tensorrt_gpu.py runs a real engine.
"""
from __future__ import annotations

import gc
import json
import weakref
from pathlib import Path

import numpy as np
import pytest
from trt_fake import IExecutionContext, fake_engine_bytes, fake_tensorrt

from trtdeploy.backends.tensorrt.runner import TensorRTRunner
from trtdeploy.errors import ModelError, ShapeError

SMALL = ([1, 3, 8, 8], [2, 3, 8, 8], [4, 3, 16, 16])      # profile 0
LARGE = ([8, 3, 16, 16], [8, 3, 32, 32], [16, 3, 32, 32])  # profile 1


def _engine(tmp_path: Path, engine_profiles, sidecar_profiles=None) -> TensorRTRunner:
    path = tmp_path / "end2end.engine"
    path.write_bytes(fake_engine_bytes({"input": "float32"}, {"output": {"from": "input", "add": 1.0}},
                                       [{"input": p} for p in engine_profiles]))
    sidecar = {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 3, -1, -1]}],
               "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, 3, -1, -1]}],
               "profiles": [{"input": dict(zip(("min_shape", "opt_shape", "max_shape"), p))}
                            for p in (sidecar_profiles or engine_profiles)]}
    return TensorRTRunner(fake_tensorrt(), path, json.loads(json.dumps(sidecar)), device="cpu")


def test_fake_rejects_what_tensorrt_rejects(tmp_path):
    runner = _engine(tmp_path, [SMALL, LARGE]).activate()
    ctx = runner.context
    assert not ctx.set_optimization_profile_async(2, 0)            # no profile 2
    assert not ctx.set_input_shape("input", (10, 3, 32, 32))       # fits profile 1, profile 0 is active
    assert not ctx.set_input_shape("input", (2, 3, 8))             # rank differs
    assert not ctx.set_input_shape("output", (2, 3, 8, 8))         # not an input
    assert ctx.set_input_shape("input", (2, 3, 8, 8)) and ctx.all_binding_shapes_specified
    assert not ctx.execute_async_v3(0)                              # no addresses set
    assert ctx.set_optimization_profile_async(1, 0) and ctx.infer_shapes() == ["input"]  # a switch forgets shapes


def test_selects_the_profile_the_input_fits(tmp_path):
    with _engine(tmp_path, [SMALL, LARGE]) as runner:
        small = np.random.rand(2, 3, 8, 8).astype(np.float32)
        large = np.random.rand(10, 3, 32, 32).astype(np.float32)  # fits profile 1 only
        np.testing.assert_array_equal(runner(small)["output"], small + 1)
        np.testing.assert_array_equal(runner(large)["output"], large + 1)
        np.testing.assert_array_equal(runner(large)["output"], large + 1)
        assert runner.context.profile_calls == [0, 1]  # switched once, and only when the profile changed
        assert runner.context.active_optimization_profile == 1


def test_no_profile_fits_names_the_profile_and_the_field(tmp_path):
    with _engine(tmp_path, [SMALL, LARGE]) as runner:
        with pytest.raises(ShapeError, match=r"dimension 0 is 20, outside the engine's profile 0 \(max 4\) and its 1 "
                                             r"other profile.*backend_config\.model_inputs\[0\]\.input_shapes\.input\."
                                             r"max_shape\[0\]"):
            runner(np.zeros((20, 3, 16, 16), np.float32))
        assert runner.context.executions == 0


def test_engine_refusing_a_shape_names_its_profile_bound(tmp_path):
    # the sidecar promises a larger max than the engine holds: TensorRT's own refusal must surface, named
    wide = (SMALL[0], SMALL[1], [4, 3, 64, 64])
    with _engine(tmp_path, [SMALL], sidecar_profiles=[wide]) as runner:
        with pytest.raises(ShapeError, match=r"refused shape \[1, 3, 40, 40\].*dimension 2 is 40, outside profile 0 "
                                             r"\(max 16\).*model_inputs\[0\]\.input_shapes\.input\.max_shape\[2\]"):
            runner(np.zeros((1, 3, 40, 40), np.float32))


def test_buffers_are_reused_and_results_do_not_alias_them(tmp_path):
    with _engine(tmp_path, [SMALL]) as runner:
        first = runner(np.ones((4, 3, 16, 16), np.float32))["output"]
        addresses = dict(runner.context.addresses)
        second = runner(np.zeros((2, 3, 8, 8), np.float32))["output"]  # smaller: the same buffers
        assert runner.context.addresses == addresses
        np.testing.assert_array_equal(first, 2.0)   # the first result is a copy, not the reused buffer
        np.testing.assert_array_equal(second, 1.0)


def test_deactivate_frees_and_activate_restores(tmp_path):
    runner = _engine(tmp_path, [SMALL]).activate()
    runner(np.ones((1, 3, 8, 8), np.float32))
    context = weakref.ref(runner.context)
    runner.deactivate()
    gc.collect()
    assert context() is None and runner.engine is None and not runner._buffers
    with pytest.raises(ModelError, match="not active"):
        runner(np.ones((1, 3, 8, 8), np.float32))
    with runner:
        assert isinstance(runner.context, IExecutionContext)
        np.testing.assert_array_equal(runner(np.ones((1, 3, 8, 8), np.float32))["output"], 2.0)
    assert runner.context is None


def test_refuses_an_engine_its_sidecar_does_not_describe(tmp_path):
    runner = _engine(tmp_path, [SMALL])
    runner.outputs[0].name = "dets"
    with pytest.raises(ModelError, match=r"has inputs \['input'\] and outputs \['output'\] but its sidecar lists"):
        runner.activate()
    runner.engine_path.write_bytes(b"not an engine")
    with pytest.raises(ModelError, match="cannot load .*magic tag"):
        runner.activate()


def test_fake_speaks_the_installed_tensorrt_api():
    """Every engine/context call the fake offers (and the runner makes) exists on the real TensorRT-RTX classes."""
    import tensorrt_rtx as trt

    from trt_fake import ICudaEngine

    for fake, real in ((ICudaEngine, trt.ICudaEngine), (IExecutionContext, trt.IExecutionContext)):
        api = [n for n in vars(fake) if not n.startswith("_")]
        assert api and [n for n in api if not hasattr(real, n)] == [], real
    assert {"INPUT", "OUTPUT"} <= set(trt.TensorIOMode.__members__)
