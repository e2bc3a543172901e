"""Config value checks, builder options and engine version rules, against TensorRT versions we cannot install.

The option appliers and the load-time compatibility rules only ask a TensorRT module what it
has; stand-in modules shaped like TensorRT 8.0 and 10.x (same member names as the real
bindings) prove the warnings and decisions for versions this machine does not have.
"""
from __future__ import annotations

import enum
import logging
import re
from types import SimpleNamespace

import pytest

from trtdeploy.backends.tensorrt import backend as trt_backend
from trtdeploy.backends.tensorrt.compat import TensorRT
from trtdeploy.backends.tensorrt.options import apply_builder_options
from trtdeploy.config import DeployConfig
from trtdeploy.config.deploy_config import normalize_compute_capability
from trtdeploy.errors import ConfigError, EngineCompatibilityError, ShapeError
from trtdeploy.utils.logging import logger

BASE = {"onnx_config": {"input_names": ["input"], "output_names": ["output"]}, "backend_config": {"type": "tensorrt"}}


def fake_tensorrt(version: str, tactic_sources: list[str], flags: list[str], hardware_levels: bool):
    """A module with the members our code asks about, as TensorRT ``version`` has them."""
    module = SimpleNamespace(
        TacticSource=enum.IntEnum("TacticSource", {n: i for i, n in enumerate(tactic_sources)}),
        BuilderFlag=enum.IntEnum("BuilderFlag", {n: i for i, n in enumerate(flags)}),
        ProfilingVerbosity=enum.IntEnum("ProfilingVerbosity", {"DEFAULT": 0, "NONE": 1, "VERBOSE": 2}),
    )
    if hardware_levels:
        module.HardwareCompatibilityLevel = enum.IntEnum("HardwareCompatibilityLevel",
                                                         {"NONE": 0, "AMPERE_PLUS": 1, "SAME_COMPUTE_CAPABILITY": 2})
    return TensorRT(module, "tensorrt", version, "/site-packages/tensorrt", "pip")


class RecordingBuilderConfig:
    """Stands in for IBuilderConfig: remembers what was set."""

    def __init__(self, with_levels: bool):
        self.mask, self.flags = 0b111, set()
        if with_levels:
            self.builder_optimization_level = 3
            self.hardware_compatibility_level = None

    def get_tactic_sources(self):
        return self.mask

    def set_tactic_sources(self, mask):
        self.mask = mask

    def set_flag(self, flag):
        self.flags.add(flag.name)


class ListHandler(logging.Handler):
    """Collects trtdeploy's warnings whatever the CLI did to the logger's propagation."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


TRT8_0 = fake_tensorrt("8.0.3", ["CUBLAS", "CUBLAS_LT", "CUDNN"], ["FP16", "INT8"], hardware_levels=False)
TRT10 = fake_tensorrt("10.13.0", ["CUBLAS", "CUBLAS_LT", "CUDNN", "EDGE_MASK_CONVOLUTIONS", "JIT_CONVOLUTIONS"],
                      ["FP16", "INT8", "VERSION_COMPATIBLE"], hardware_levels=True)


def test_tensorrt_8_0_warns_with_the_version_that_added_each_option():
    config = RecordingBuilderConfig(with_levels=False)
    common = {"tactic_sources": ["-CUBLAS_LT", "+JIT_CONVOLUTIONS"], "builder_optimization_level": 4,
              "version_compatible": True, "hardware_compatibility_level": "AMPERE_PLUS",
              "compute_capabilities": ["8.6"], "profiling_verbosity": "detailed"}
    records = ListHandler()
    logger.addHandler(records)
    try:
        notes = apply_builder_options(TRT8_0, config, common)
    finally:
        logger.removeHandler(records)
    text = "\n".join(records.messages)
    assert "TacticSource.JIT_CONVOLUTIONS is added in TensorRT 8.5" in text
    assert "optimization levels were added in TensorRT 8.6" in text
    assert "BuilderFlag.VERSION_COMPATIBLE was added in TensorRT 8.6" in text
    assert "hardware compatibility levels came with TensorRT 8.6" in text
    assert "choosing target GPUs is a TensorRT-RTX feature" in text
    assert "DEFAULT/VERBOSE were renamed in 8.2" in text
    assert config.mask == 0b101 and notes == ["tactic_sources=['-CUBLAS_LT']"]  # cuBLASLt off: the seed's FAQ fix


def test_tensorrt_10_applies_every_option():
    config = RecordingBuilderConfig(with_levels=True)
    notes = apply_builder_options(TRT10, config, {"tactic_sources": ["-CUBLAS_LT"], "builder_optimization_level": 5,
                                                  "version_compatible": True,
                                                  "hardware_compatibility_level": "ampere_plus"})
    assert config.builder_optimization_level == 5 and "VERSION_COMPATIBLE" in config.flags
    assert config.hardware_compatibility_level.name == "AMPERE_PLUS"
    assert notes == ["builder_optimization_level=5", "tactic_sources=['-CUBLAS_LT']", "version_compatible",
                     "hardware_compatibility_level=AMPERE_PLUS"]


def sidecar(**facts):
    return {"flavour": "tensorrt", "backend_version": "10.8.0", "compute_capabilities": ["SM86"], "options": [],
            "hardware_compatibility_level": "NONE", "model": "torchvision://resnet18", **facts}


@pytest.mark.parametrize("facts, here_cc, refused", [
    ({}, (8, 6), "another TensorRT version"),
    ({"options": ["version_compatible"]}, (8, 6), None),                       # 10.8 engine, 10.13 runtime
    ({"options": ["version_compatible"], "backend_version": "9.3.0"}, (8, 6), "another TensorRT version"),
    ({"backend_version": "10.13.0"}, (8, 9), "a GPU (SM89) the engine was not built for"),
    ({"backend_version": "10.13.0", "hardware_compatibility_level": "AMPERE_PLUS"}, (8, 9), None),
    ({"backend_version": "10.13.0", "hardware_compatibility_level": "AMPERE_PLUS"}, (7, 5), "not built for"),
    ({"backend_version": "10.13.0", "flavour": "tensorrt_rtx"}, (8, 6), "another TensorRT flavour"),
])
def test_engine_compatibility_rules(monkeypatch, tmp_path, facts, here_cc, refused):
    monkeypatch.setattr(trt_backend, "current_compute_capability", lambda: here_cc)
    path = tmp_path / "end2end.engine"
    if refused is None:
        trt_backend.check_engine_compatible(TRT10, sidecar(**facts), path)
        return
    with pytest.raises(EngineCompatibilityError, match=re.escape(refused)) as raised:
        trt_backend.check_engine_compatible(TRT10, sidecar(**facts), path)
    assert "this is TensorRT 10.13.0 on SM" in str(raised.value)
    assert f"trtdeploy convert <deploy config> torchvision://resnet18 --work-dir {tmp_path}" in str(raised.value)


@pytest.mark.parametrize("cap, expected", [("8.6", "SM86"), (8.6, "SM86"), (86, "SM86"), ("sm_89", "SM89"),
                                           ("SM120", "SM120"), ("12.0", "SM120")])
def test_compute_capability_spellings(cap, expected):
    assert normalize_compute_capability(cap) == expected


@pytest.mark.parametrize("cap", ["ampere", "8.66", "1", "", "SM"])
def test_compute_capability_nonsense(cap):
    with pytest.raises(ValueError):
        normalize_compute_capability(cap)


@pytest.mark.parametrize("common, fragment", [
    ({"builder_optimization_level": -1}, r"must be 0\.\.5"),
    ({"profiling_verbosity": "loud"}, "must be one of"),
    ({"tactic_sources": ["CUDNN", 3]}, "has 3"),
    ({"compute_capabilities": ["8.6", "x"]}, "has 'x'"),
])
def test_common_config_values_are_checked_at_load(common, fragment):
    with pytest.raises(ConfigError, match=f"backend_config.common_config.* {fragment}"):
        DeployConfig({**BASE, "backend_config": {"type": "tensorrt", "common_config": common}})


@pytest.mark.parametrize("onnx_config, fragment", [
    ({"input_names": []}, "non-empty list of distinct names"),
    ({"output_names": ["a", "a"]}, "non-empty list of distinct names"),
    ({"opset_version": 6}, r"opset_version must be 7\.\."),
])
def test_onnx_config_values_are_checked_at_load(onnx_config, fragment):
    with pytest.raises(ConfigError, match=fragment):
        DeployConfig({**BASE, "onnx_config": {**BASE["onnx_config"], **onnx_config}})


def test_precision_must_be_known():
    with pytest.raises(ConfigError, match=r"backend_config.precision must be one of fp32, fp16, bf16, int8, got 'int4'"):
        DeployConfig({**BASE, "backend_config": {"type": "tensorrt", "precision": "int4"}})


def test_profiles_are_checked_against_the_exported_inputs():
    cfg = DeployConfig({**BASE, "onnx_config": {**BASE["onnx_config"], "dynamic_axes": {"input": [0, 2, 3]}},
                        "backend_config": {"type": "tensorrt", "model_inputs": [{"input_shapes": {"input": {
                            "min_shape": [1, 3, 224, 224], "opt_shape": [2, 3, 224, 224],
                            "max_shape": [4, 3, 320, 320]}}}]}})
    cfg.check_profiles({"input": ["batch", 3, "h", "w"]})
    with pytest.raises(ShapeError, match=r"dimension 1 must be 1 \(the exported graph fixes it\)"):
        cfg.check_profiles({"input": ["batch", 1, "h", "w"]})
    with pytest.raises(ShapeError, match="has rank 4 but the model input 'input' has rank 3"):
        cfg.check_profiles({"input": [3, "h", "w"]})
    with pytest.raises(ConfigError, match="lacks the model input 'mask'"):
        cfg.check_profiles({"input": [-1, 3, -1, -1], "mask": [-1, 1, -1, -1]})


def test_a_precision_only_some_backends_build_is_refused_for_the_others_as_the_config_is_read(monkeypatch):
    """Backend.builds_precisions decides, not config: a backend that declares a precision gets it, one that does not
    is refused naming the backends that build it (the config names no backend)."""
    from trtdeploy.backends.base import BACKENDS, discover_backends

    discover_backends()

    class Toy(trt_backend.TensorRTBackend):
        name = "toy"
        builds_precisions = {}

    monkeypatch.setitem(BACKENDS._items, "toy", Toy)
    common = {"precision": "bf16"}
    assert DeployConfig({**BASE, "backend_config": {"type": "tensorrt", "common_config": common}}).precision == "bf16"
    with pytest.raises(ConfigError, match=r"precision 'bf16' is built by TensorRT \(.*\), but backend_config.type is "
                                          r"'toy', which runs the FP32 graph; set type='tensorrt'$"):
        DeployConfig({**BASE, "backend_config": {"type": "toy", "common_config": common}})
    with pytest.raises(ConfigError, match=r"precision 'int8' is built by .*, but backend_config.type is 'toy'") as e:
        DeployConfig({**BASE, "backend_config": {"type": "toy", "common_config": {"int8_mode": True}}})
    assert "type='onnxruntime'" in str(e.value) and "type='tensorrt'" in str(e.value)  # both backends with INT8
