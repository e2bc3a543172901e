"""A contract fake of the TensorRT 10 runtime API, for testing ``TensorRTRunner`` where no TensorRT executes.

It keeps the documented semantics the runner relies on, and rejects what TensorRT rejects:

- ``ICudaEngine``: ``num_io_tensors``, ``get_tensor_name(i)``, ``get_tensor_mode``, ``get_tensor_dtype``,
  ``get_tensor_shape`` (-1 where a profile lets a dimension vary), ``num_optimization_profiles``,
  ``get_tensor_profile_shape(name, profile)`` -> [min, opt, max].
- ``IExecutionContext``: profile 0 is active on creation; ``set_optimization_profile_async(i, stream)``
  returns False for an index out of range and, on a switch, forgets the input shapes set so far;
  ``set_input_shape`` returns False for a name that is not an input, a rank that differs, or a
  dimension outside the active profile's [min, max]; ``set_tensor_address`` returns False for an unknown
  name; ``get_tensor_shape`` has -1 dims until the inputs it depends on are set; ``infer_shapes()``
  names the inputs without a shape; ``all_binding_shapes_specified`` says whether none is left;
  ``execute_async_v3`` returns False unless every input has a shape and every tensor an address.
- ``Runtime(logger).deserialize_cuda_engine(bytes)`` returns None (and logs an error) for bytes that are
  not an engine.

An "engine" is JSON (``fake_engine_bytes``): inputs with dtypes, the profiles, and each output as
``input + add``, computed on the memory at the addresses set (host memory: the runner on ``device="cpu"``).
"""
from __future__ import annotations

import ctypes
import enum
import json
import math
import types

import numpy as np


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = Severity

    def __init__(self):
        pass


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.Enum):
    FLOAT = "float32"
    HALF = "float16"
    INT32 = "int32"
    INT64 = "int64"
    BOOL = "bool"


def fake_engine_bytes(inputs: dict[str, str], outputs: dict[str, dict], profiles: list[dict]) -> bytes:
    """``inputs``: name -> dtype; ``outputs``: name -> {"from": input, "add": number};
    ``profiles``: [{input: (min, opt, max)}] (every input in every profile, as TensorRT requires)."""
    return json.dumps({"magic": "fake-trt-10", "inputs": inputs, "outputs": outputs,
                       "profiles": [{n: [list(s) for s in r] for n, r in p.items()} for p in profiles]}).encode()


def _memory(address: int, shape: tuple, dtype: str) -> np.ndarray:
    """The array at a device address (host memory here), writable."""
    n = math.prod(shape)
    raw = (ctypes.c_char * max(n * np.dtype(dtype).itemsize, 1)).from_address(address)
    return np.frombuffer(raw, dtype=dtype, count=n).reshape(shape)


class ICudaEngine:
    def __init__(self, spec: dict):
        self._spec = spec
        self._names = list(spec["inputs"]) + list(spec["outputs"])

    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._spec["profiles"])

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        if name in self._spec["inputs"]:
            return TensorIOMode.INPUT
        return TensorIOMode.OUTPUT if name in self._spec["outputs"] else TensorIOMode.NONE

    def get_tensor_dtype(self, name: str) -> DataType:
        source = self._spec["outputs"][name]["from"] if name in self._spec["outputs"] else name
        return DataType(self._spec["inputs"][source])

    def get_tensor_shape(self, name: str) -> tuple:
        source = self._spec["outputs"][name]["from"] if name in self._spec["outputs"] else name
        ranges = [p[source] for p in self._spec["profiles"]]
        first = ranges[0][0]
        return tuple(v if all(r[0][d] == r[2][d] == v for r in ranges) else -1 for d, v in enumerate(first))

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple]:
        if name not in self._spec["inputs"] or not 0 <= profile_index < self.num_optimization_profiles:
            raise RuntimeError(f"no profile shape for {name!r} in profile {profile_index}")
        return [tuple(s) for s in self._spec["profiles"][profile_index][name]]

    def create_execution_context(self) -> "IExecutionContext":
        return IExecutionContext(self)


class IExecutionContext:
    def __init__(self, engine: ICudaEngine):
        self.engine = engine
        self.active_optimization_profile = 0
        self.shapes: dict[str, tuple] = {}
        self.addresses: dict[str, int] = {}
        self.profile_calls: list[int] = []   # what the runner asked for, for tests
        self.executions = 0

    def set_optimization_profile_async(self, profile_index: int, stream_handle: int) -> bool:
        self.profile_calls.append(profile_index)
        if not 0 <= profile_index < self.engine.num_optimization_profiles:
            return False
        if profile_index != self.active_optimization_profile:
            self.shapes.clear()  # a switch invalidates the dynamic shapes set so far
        self.active_optimization_profile = profile_index
        return True

    def set_input_shape(self, name: str, shape) -> bool:
        if self.engine.get_tensor_mode(name) != TensorIOMode.INPUT:
            return False
        low, _, high = self.engine.get_tensor_profile_shape(name, self.active_optimization_profile)
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(low) or not all(lo <= d <= hi for lo, d, hi in zip(low, shape, high)):
            return False
        self.shapes[name] = shape
        return True

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if self.engine.get_tensor_mode(name) == TensorIOMode.NONE:
            return False
        self.addresses[name] = int(memory)
        return True

    def get_tensor_shape(self, name: str) -> tuple:
        spec = self.engine._spec
        source = spec["outputs"][name]["from"] if name in spec["outputs"] else name
        return self.shapes.get(source, self.engine.get_tensor_shape(source))

    def infer_shapes(self) -> list[str]:
        return [n for n in self.engine._spec["inputs"] if n not in self.shapes]

    @property
    def all_binding_shapes_specified(self) -> bool:
        return not self.infer_shapes()

    def execute_async_v3(self, stream_handle: int) -> bool:
        spec = self.engine._spec
        if self.infer_shapes() or any(n not in self.addresses for n in self.engine._names):
            return False
        for name, out in spec["outputs"].items():
            src, shape = out["from"], self.shapes[out["from"]]
            dtype = spec["inputs"][src]
            _memory(self.addresses[name], shape, dtype)[...] = _memory(self.addresses[src], shape, dtype) + out["add"]
        self.executions += 1
        return True


class Runtime:
    def __init__(self, logger: ILogger):
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes) -> ICudaEngine | None:
        try:
            spec = json.loads(data)
            assert spec["magic"] == "fake-trt-10"
        except Exception:
            self.logger.log(Severity.ERROR, "Serialization assertion failed: magic tag does not match")
            return None
        return ICudaEngine(spec)


def fake_tensorrt():
    """A ``compat.TensorRT`` wrapping this fake module, as ``import_tensorrt()`` would return."""
    from trtdeploy.backends.tensorrt.compat import TensorRT

    module = types.SimpleNamespace(Runtime=Runtime, ILogger=ILogger, TensorIOMode=TensorIOMode, DataType=DataType,
                                   __version__="10.13.0")
    return TensorRT(module, "tensorrt", "10.13.0", "tests/trt_fake.py", "pip")
