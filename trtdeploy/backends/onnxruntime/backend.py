"""ONNX Runtime backend: the ONNX file is the artefact; the runner is an InferenceSession."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Mapping

import numpy as np

from ...config import DeployConfig
from ...errors import BackendUnavailableError, ModelError
from ..base import BACKENDS, Backend, BuildResult, Runner, TensorSpec, profiles_from_json

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
               "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def _spec(arg) -> TensorSpec:
    return TensorSpec(arg.name, _ORT_DTYPES.get(arg.type, "float32"),
                      [d if isinstance(d, int) else -1 for d in arg.shape])


class OnnxRuntimeRunner(Runner):
    """An InferenceSession; active from construction, since the model's inputs and outputs are the session's."""

    def __init__(self, path: Path, providers: list[str] | None = None, profiles=None,
                 session_options=None):
        super().__init__([], [], profiles, source=str(path))
        self.path = Path(path)
        self.providers = providers or ["CPUExecutionProvider"]
        self.session_options = session_options
        self.session = None
        self.activate()

    def activate_impl(self) -> None:
        import onnxruntime as ort

        opts = self.session_options or ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=self.providers)
        except Exception as e:
            if "is not a registered function/op" not in str(e):
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ModelError(f"ONNX Runtime cannot load {self.path}: {first}") from None
            from ...ops.ort_ops import session_for  # custom nodes (mmdeploy::*): register their implementations

            self.session = session_for(self.path, opts, self.providers)
        self.inputs = [_spec(a) for a in self.session.get_inputs()]
        self.outputs = [_spec(a) for a in self.session.get_outputs()]

    def infer_impl(self, feed: dict[str, np.ndarray], profile: int) -> dict[str, np.ndarray]:
        values = self.session.run(None, feed)
        return dict(zip(self.output_names, values))

    def deactivate_impl(self) -> None:
        self.session = None


@BACKENDS.register("onnxruntime")
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    file_suffixes = (".onnx",)
    install_hint = "pip install onnxruntime (or onnxruntime-gpu for CUDA)"

    def is_available(self) -> bool:
        return importlib.util.find_spec("onnxruntime") is not None

    def build(self, onnx_path: Path, work_dir: Path, cfg: DeployConfig, sample=None) -> BuildResult:
        # ONNX Runtime runs the ONNX file itself: nothing to build.
        return BuildResult(Path(onnx_path), {"precision": "fp32"})

    def providers(self, device: str) -> list[str]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in available:
                raise BackendUnavailableError(
                    "--device cuda needs onnxruntime-gpu (CUDAExecutionProvider); pip install onnxruntime-gpu, "
                    "or use --device cpu")
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def load(self, path: Path, sidecar: Mapping | None = None, device: str = "cpu") -> Runner:
        self.require()
        if not Path(path).is_file():
            raise ModelError(f"model file {path} does not exist")
        profiles = profiles_from_json((sidecar or {}).get("profiles", []))
        return OnnxRuntimeRunner(Path(path), self.providers(device), profiles)

    def describe(self) -> dict:
        if not self.is_available():
            return {"available": False, "install": self.install_hint}
        import onnxruntime as ort

        return {"available": True, "version": ort.__version__, "location": str(Path(ort.__file__).parent),
                "providers": ort.get_available_providers()}
