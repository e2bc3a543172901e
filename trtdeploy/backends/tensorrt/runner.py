"""Run a TensorRT engine. Thin by design: no machine of ours can execute one.

Input checking is the shared ``Runner.check_inputs`` (tested on every backend);
this file only moves tensors. Device memory comes from torch (CUDA tensors), which
every trtdeploy install has. TensorRT >= 10 / TensorRT-RTX use the name-based API
(``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``); 8.6 uses bindings.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import BackendUnavailableError, ModelError
from ..base import Runner, TensorSpec, profiles_from_json
from .builder import make_logger
from .compat import TensorRT


class TensorRTRunner(Runner):
    def __init__(self, trt: TensorRT, engine_path: Path, sidecar: dict, device: str = "cuda"):
        import torch

        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"running {engine_path.name} needs an NVIDIA GPU with a CUDA driver, and none is visible here; "
                f"run the ONNX file with ONNX Runtime instead: trtdeploy run {engine_path.with_suffix('.onnx')}")
        self.trt = trt
        self.device = torch.device(device if device.startswith("cuda") else "cuda")
        self._logger = make_logger(trt)
        runtime = trt.module.Runtime(self._logger)
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise ModelError(f"{trt.label} cannot load {engine_path}: {'; '.join(self._logger.errors[-2:]) or 'corrupt engine'}; "
                             f"convert the model again")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(self.device)
        super().__init__([TensorSpec.from_dict(d) for d in sidecar["inputs"]],
                         [TensorSpec.from_dict(d) for d in sidecar["outputs"]],
                         profiles_from_json(sidecar.get("profiles")), source=str(engine_path))

    def _infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        inputs = {k: torch.from_numpy(v).to(self.device) for k, v in feed.items()}
        if self.trt.has_v3_execution:
            outputs = self._run_v3(inputs)
        else:
            outputs = self._run_v2(inputs)
        self.stream.synchronize()
        return {k: v.cpu().numpy() for k, v in outputs.items()}

    def _alloc(self, spec: TensorSpec, shape) -> "torch.Tensor":
        import torch

        dtype = getattr(torch, spec.dtype) if spec.dtype != "bool" else torch.bool
        return torch.empty(tuple(shape), dtype=dtype, device=self.device)

    def _run_v3(self, inputs):
        for name, tensor in inputs.items():
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for spec in self.outputs:
            outputs[spec.name] = self._alloc(spec, self.context.get_tensor_shape(spec.name))
            self.context.set_tensor_address(spec.name, outputs[spec.name].data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise ModelError(f"{self.trt.label} failed to execute {self.source}: {'; '.join(self._logger.errors[-2:])}")
        return outputs

    def _run_v2(self, inputs):  # TensorRT 8.6
        bindings = [0] * self.engine.num_bindings
        outputs = {}
        for name, tensor in inputs.items():
            idx = self.engine.get_binding_index(name)
            self.context.set_binding_shape(idx, tuple(tensor.shape))
            bindings[idx] = tensor.data_ptr()
        for spec in self.outputs:
            idx = self.engine.get_binding_index(spec.name)
            outputs[spec.name] = self._alloc(spec, self.context.get_binding_shape(idx))
            bindings[idx] = outputs[spec.name].data_ptr()
        if not self.context.execute_async_v2(bindings, self.stream.cuda_stream):
            raise ModelError(f"{self.trt.label} failed to execute {self.source}")
        return outputs

    def close(self) -> None:
        self.context = None
        self.engine = None
