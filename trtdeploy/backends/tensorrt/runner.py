"""Run a TensorRT engine: select the optimization profile the inputs fit, set and check every shape, run.

One execution context, one CUDA stream and one device buffer per tensor live from ``activate()`` to
``deactivate()``; a buffer grows only when a larger shape comes. With ``cuda_graph=True`` the enqueue is
captured once per set of input shapes and replayed while the shapes stay the same. Device memory comes
from torch; on ``device="cpu"`` the buffers are host tensors, which only a fake TensorRT
(tests/trt_fake.py) can run. TensorRT 8.6-11 and TensorRT-RTX all have this name-based API
(``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``; TensorRT >= 8.5).
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Mapping

import numpy as np

from ...errors import BackendUnavailableError, ModelError, ShapeError
from ..base import Runner, TensorSpec, profiles_from_json
from .builder import make_logger
from .compat import TensorRT


class TensorRTRunner(Runner):
    def __init__(self, trt: TensorRT, engine_path: Path, sidecar: Mapping, device: str = "cuda",
                 cuda_graph: bool = False):
        super().__init__([TensorSpec.from_dict(d) for d in sidecar["inputs"]],
                         [TensorSpec.from_dict(d) for d in sidecar["outputs"]],
                         profiles_from_json(sidecar.get("profiles")), source=str(engine_path))
        self.trt = trt
        self.engine_path = Path(engine_path)
        self.device = device
        self.cuda_graph = cuda_graph
        self.engine = self.context = self.stream = None
        self._buffers: dict = {}       # tensor name -> torch tensor, reused across calls
        self._profile: int | None = None
        self._graph = self._graph_key = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def activate_impl(self) -> None:
        import torch

        device = torch.device(self.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"running {self.engine_path.name} needs an NVIDIA GPU with a CUDA driver, and none is visible here; "
                f"run the ONNX file with ONNX Runtime instead: trtdeploy run {self.engine_path.with_suffix('.onnx')}")
        if self.cuda_graph and device.type != "cuda":
            raise BackendUnavailableError(f"cuda_graph=True needs a CUDA device, not {self.device!r}")
        self._logger = make_logger(self.trt)
        self._runtime = self.trt.module.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            raise ModelError(f"{self.trt.label} cannot load {self.engine_path}: {self._errors() or 'corrupt engine'}; "
                             f"convert the model again")
        self._check_io(engine)
        context = engine.create_execution_context()
        if context is None:
            raise ModelError(f"{self.trt.label} cannot create an execution context for {self.engine_path} "
                             f"({self._errors() or 'out of GPU memory?'}); free GPU memory and try again")
        self._device = device
        self.engine, self.context = engine, context
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._profile = None

    def deactivate_impl(self) -> None:
        # the context goes before its engine, and both before the runtime (TensorRT's destruction order)
        self._graph = self._graph_key = None
        self._buffers.clear()
        self.context = None
        self.engine = None
        self._runtime = None
        self.stream = None
        self._profile = None

    def _check_io(self, engine) -> None:
        """Refuse an engine whose inputs and outputs are not the ones its sidecar lists."""
        mode = self.trt.module.TensorIOMode
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        have_in = sorted(n for n in names if engine.get_tensor_mode(n) == mode.INPUT)
        have_out = sorted(n for n in names if engine.get_tensor_mode(n) == mode.OUTPUT)
        if have_in != sorted(self.input_names) or have_out != sorted(self.output_names):
            raise ModelError(f"{self.engine_path} has inputs {have_in} and outputs {have_out} but its sidecar lists "
                             f"{sorted(self.input_names)} and {sorted(self.output_names)}; convert the model again")

    # -- inference -------------------------------------------------------------------------------------
    def infer_impl(self, feed: dict[str, np.ndarray], profile: int) -> dict[str, np.ndarray]:
        import torch

        with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
            self._use_profile(profile)
            for name, arr in feed.items():
                self._set_input_shape(name, arr.shape, profile)
                host = torch.from_numpy(arr)
                buf = self._buffer(name, arr.shape, host.dtype)
                buf.copy_(host)
                self._set_address(name, buf)
            unspecified = self.context.infer_shapes()
            if unspecified:
                raise ModelError(f"{self.trt.label} cannot infer the shapes of {unspecified} in {self.source}; "
                                 f"convert the model again")
            outputs = {}
            for spec in self.outputs:
                shape = tuple(self.context.get_tensor_shape(spec.name))
                if any(d < 0 for d in shape):
                    raise ModelError(f"{self.source}: output {spec.name!r} has a data-dependent shape {list(shape)}, "
                                     f"which this runner cannot allocate for; export the model with fixed-size outputs "
                                     f"(e.g. keep_top_k rows)")
                outputs[spec.name] = self._buffer(spec.name, shape, getattr(torch, spec.dtype))
                self._set_address(spec.name, outputs[spec.name])
            self._execute(key=(profile, *(arr.shape for arr in feed.values())))
            result = {name: buf.to("cpu", copy=True).numpy() for name, buf in outputs.items()}
        if self.stream is not None:
            self.stream.synchronize()
        return result

    def _use_profile(self, profile: int) -> None:
        if profile == self._profile:
            return
        if not self.context.set_optimization_profile_async(profile, self._stream_handle):
            raise ModelError(f"{self.trt.label} refused optimization profile {profile} of {self.source} (the engine has "
                             f"{self.engine.num_optimization_profiles}): {self._errors() or 'no reason given'}; "
                             f"the sidecar does not match the engine: convert the model again")
        self._profile = profile
        self._graph = self._graph_key = None

    def _set_input_shape(self, name: str, shape: tuple, profile: int) -> None:
        """Set one input's shape; when TensorRT refuses it, say which bound of which profile, from the engine itself."""
        if self.context.set_input_shape(name, tuple(shape)):
            return
        low, _, high = (tuple(s) for s in self.engine.get_tensor_profile_shape(name, profile))
        where = ""
        for d, got in enumerate(shape):
            if len(low) == len(shape) and not low[d] <= got <= high[d]:
                key, bound = ("max_shape", high[d]) if got > high[d] else ("min_shape", low[d])
                where = (f": dimension {d} is {got}, outside profile {profile} ({key.split('_')[0]} {bound}); resize the "
                         f"input, or raise backend_config.model_inputs[{profile}].input_shapes.{name}.{key}[{d}] and "
                         f"convert again")
                break
        raise ShapeError(f"{self.trt.label} refused shape {list(shape)} for input {name!r} of {self.source} "
                         f"(profile {profile} holds {list(low)} to {list(high)}){where or '; convert the model again'}")

    def _buffer(self, name: str, shape: tuple, dtype) -> "torch.Tensor":
        """A view of ``shape`` into the tensor's buffer, which grows (and only grows) when a larger shape comes."""
        import torch

        n = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < n or buf.dtype != dtype:
            buf = self._buffers[name] = torch.empty(max(n, 1), dtype=dtype, device=self._device)
            self._graph = self._graph_key = None  # a captured graph holds the old addresses
        return buf[:n].view(shape)

    def _set_address(self, name: str, tensor) -> None:
        if self.context.set_tensor_address(name, tensor.data_ptr()) is False:
            raise ModelError(f"{self.trt.label} refused the buffer of {name!r} in {self.source}: {self._errors()}")

    def _execute(self, key: tuple) -> None:
        """Enqueue the engine; with ``cuda_graph``, capture it once per input shapes and replay it after."""
        if not self.cuda_graph:
            return self._enqueue()
        import torch

        if self._graph_key != key:
            self._enqueue()  # TensorRT must run once before capture (it may allocate and set up lazily)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph, stream=self.stream, capture_error_mode="thread_local"):
                self._enqueue()
            self._graph_key = key
        self._graph.replay()

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self._stream_handle):
            raise ModelError(f"{self.trt.label} failed to execute {self.source}: {self._errors() or 'no reason given'}")

    @property
    def _stream_handle(self) -> int:
        return self.stream.cuda_stream if self.stream is not None else 0

    def _errors(self) -> str:
        return "; ".join(self._logger.errors[-2:])
