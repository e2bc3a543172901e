"""The ONNX Runtime runner: an InferenceSession, from activate() to deactivate()."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import ModelError
from ..base import Runner, TensorSpec

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
