"""Everything that differs between TensorRT 8.6, 10.x, 11.x and TensorRT-RTX lives here.

``import_tensorrt()`` finds a TensorRT Python module: ``tensorrt`` (pip, or a tar
install named by ``TENSORRT_DIR``) first, then ``tensorrt_rtx``. The rest answers
"does this TensorRT have X?" so that builder and runner code stays version-free.
"""
from __future__ import annotations

import ctypes
import functools
import glob
import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ...errors import BackendUnavailableError
from ...utils.logging import logger

FLAVOURS = ("tensorrt", "tensorrt_rtx")
INSTALL_HINT = ("pip install tensorrt (needs an NVIDIA GPU host) or pip install tensorrt-rtx-cu13 "
                "(builds without a GPU); a tar install is found through TENSORRT_DIR (with lib/ and python/) "
                "and LD_LIBRARY_PATH")


@dataclass(frozen=True)
class TensorRT:
    """The imported TensorRT module and what we know about it."""

    module: ModuleType
    flavour: str           # "tensorrt" or "tensorrt_rtx"
    version: str
    origin: str            # where the module was loaded from
    how: str               # "pip", "TENSORRT_DIR" or "PYTHONPATH"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def label(self) -> str:
        return f"{'TensorRT-RTX' if self.flavour == 'tensorrt_rtx' else 'TensorRT'} {self.version}"

    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT-RTX and TensorRT >= 11 take precision only from the graph's types."""
        return self.flavour == "tensorrt_rtx" or self.major >= 11

    @property
    def has_implicit_int8(self) -> bool:
        return hasattr(self.module.BuilderFlag, "INT8") and hasattr(self.module, "IInt8EntropyCalibrator2")

    @property
    def has_v3_execution(self) -> bool:
        return hasattr(self.module.IExecutionContext, "execute_async_v3")

    def network_flags(self, strongly_typed: bool) -> int:
        trt = self.module
        flags = 0
        names = trt.NetworkDefinitionCreationFlag.__members__
        if "EXPLICIT_BATCH" in names and self.major < 10:  # implicit batch was removed in 10
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        if strongly_typed and "STRONGLY_TYPED" in names:
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        return flags

    def set_workspace(self, config, nbytes: int) -> None:
        if nbytes <= 0:
            return
        if hasattr(config, "set_memory_pool_limit"):
            config.set_memory_pool_limit(self.module.MemoryPoolType.WORKSPACE, nbytes)
        else:  # TensorRT < 8.4
            config.max_workspace_size = nbytes


def _version_of(module: ModuleType) -> str:
    return str(getattr(module, "__version__", "0"))


def _preload_tar_libs(trt_dir: Path) -> None:
    """Check a tar install and load its libraries so the Python module finds them."""
    libs = sorted(glob.glob(str(trt_dir / "lib" / "libnvinfer.so*")))
    if not libs:
        missing = ["lib/libnvinfer.so.*"]
        if not (trt_dir / "include" / "NvInfer.h").exists():
            missing.append("include/NvInfer.h")
        raise BackendUnavailableError(
            f"TENSORRT_DIR={trt_dir} is not a TensorRT install: {', '.join(missing)} not found there; "
            f"point TENSORRT_DIR at the folder that holds lib/ and include/ of the extracted TensorRT tar")
    for pattern in ("libnvinfer.so*", "libnvinfer_plugin.so*", "libnvonnxparser.so*"):
        for lib in sorted(glob.glob(str(trt_dir / "lib" / pattern)))[-1:]:
            try:
                ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
            except OSError as e:
                logger.debug("could not preload %s: %s", lib, e)


def _import(flavour: str) -> TensorRT | None:
    try:
        module = importlib.import_module(flavour)
    except ImportError:
        return None
    except Exception as e:  # a broken install (missing CUDA libs, ABI mismatch)
        raise BackendUnavailableError(f"importing {flavour} failed ({type(e).__name__}: {e}); "
                                      f"reinstall it: {INSTALL_HINT}") from None
    origin = str(Path(module.__file__).parent)
    trt_dir = os.environ.get("TENSORRT_DIR")
    how = "TENSORRT_DIR" if trt_dir and origin.startswith(str(Path(trt_dir).resolve())) else (
        "pip" if "site-packages" in origin or "dist-packages" in origin else "PYTHONPATH")
    return TensorRT(module, flavour, _version_of(module), origin, how)


@functools.lru_cache(maxsize=None)
def import_tensorrt(prefer: str | None = None) -> TensorRT:
    """Find TensorRT: ``TRTDEPLOY_TENSORRT`` or ``prefer`` picks a flavour, else tensorrt, then tensorrt_rtx."""
    prefer = prefer or os.environ.get("TRTDEPLOY_TENSORRT") or None
    if prefer and prefer not in FLAVOURS:
        raise BackendUnavailableError(f"TRTDEPLOY_TENSORRT={prefer!r} is not a TensorRT flavour; use one of {FLAVOURS}")
    trt_dir = os.environ.get("TENSORRT_DIR")
    if trt_dir:
        trt_dir_path = Path(trt_dir)
        _preload_tar_libs(trt_dir_path)
        python_dir = trt_dir_path / "python"
        if python_dir.is_dir() and str(python_dir) not in sys.path:
            sys.path.append(str(python_dir))
    order = (prefer,) if prefer else FLAVOURS
    for flavour in order:
        found = _import(flavour)
        if found is not None:
            logger.debug("using %s from %s (%s)", found.label, found.origin, found.how)
            return found
    raise BackendUnavailableError(f"TensorRT is not installed ({' nor '.join(order)} can be imported): {INSTALL_HINT}")


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
        return True
    except BackendUnavailableError:
        return False
