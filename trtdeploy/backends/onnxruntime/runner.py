"""The ONNX Runtime runner: an InferenceSession, from activate() to deactivate()."""
from __future__ import annotations

import mmap
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


def signed_qdq(path: Path) -> bool:
    """Whether ``path`` quantizes activations to signed int8 (TensorRT's Q/DQ scheme, an explicitly quantized
    file from ModelOpt): ONNX Runtime then runs each Q/DQ pair as written, in float, instead of fusing it into
    its integer kernels, whose u8 x s8 pair sums saturate in int16 on x86 CPUs without VNNI with 8-bit weights
    (measured: logits off by a third of their range on an AVX2 EPYC). So the graph computes what the engine
    it stands for computes. trtdeploy's own ONNX Runtime INT8 graphs (uint8 activations and weights) keep
    the integer kernels."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            if data.find(b"QuantizeLinear") < 0:  # no Q/DQ graph: not parsed (runs on every load)
                return False
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001  (ONNX Runtime reports what is wrong with the file)
        return False
    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant" and n.attribute}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2:
            zero = inits.get(node.input[2]) or consts.get(node.input[2])
            if zero is not None and numpy_helper.to_array(zero).dtype.kind == "i":
                return True
    return False


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
        if signed_qdq(self.path):
            opts.add_session_config_entry("session.disable_quant_qdq", "1")
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
