"""Everything that differs between TensorRT 8.6, 10.x, 11.x and TensorRT-RTX lives here.

``import_tensorrt()`` finds a TensorRT Python module: ``tensorrt`` (pip, or a tar
install named by ``TENSORRT_DIR`` whose python/ wheel was pip-installed) first, then
``tensorrt_rtx``. The rest answers
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


def flavour_label(flavour: str | None, version: str | None) -> str:
    """'TensorRT-RTX 1.7.0' / 'TensorRT 10.13.0': a flavour and version as people name them."""
    return f"{'TensorRT-RTX' if flavour == 'tensorrt_rtx' else 'TensorRT'} {version or '?'}"


@dataclass(frozen=True)
class TensorRT:
    """The imported TensorRT module and what we know about it."""

    module: ModuleType
    flavour: str           # "tensorrt" or "tensorrt_rtx"
    version: str
    origin: str            # where the module was loaded from
    how: str               # "pip", "TENSORRT_DIR", "system" (apt, JetPack) or "PYTHONPATH"
    library: str | None = None   # the core shared library the process mapped
    library_how: str = "unknown"  # "TENSORRT_DIR", "LD_LIBRARY_PATH", "pip" or "system"

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def label(self) -> str:
        return flavour_label(self.flavour, self.version)

    @property
    def strongly_typed_only(self) -> bool:
        """TensorRT-RTX and TensorRT >= 11 take precision only from the graph's types."""
        return self.flavour == "tensorrt_rtx" or self.major >= 11

    @property
    def has_implicit_int8(self) -> bool:
        return hasattr(self.module.BuilderFlag, "INT8") and hasattr(self.module, "IInt8EntropyCalibrator2")

    @property
    def has_hardware_compatibility(self) -> bool:
        """TensorRT >= 8.6; TensorRT-RTX has the enum but ignores it (it targets compute capabilities)."""
        return self.flavour == "tensorrt" and hasattr(self.module, "HardwareCompatibilityLevel")

    @property
    def supported_targets(self) -> tuple[str, ...]:
        """The GPUs (SMxy) TensorRT-RTX can build for; empty for TensorRT, which builds for the GPU it runs on."""
        caps = getattr(self.module, "ComputeCapability", None)
        return tuple(m for m in caps.__members__ if m.startswith("SM")) if caps is not None else ()

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


# What a tar install of each flavour holds: the core library (first pattern) and the ones it needs.
TAR_LIBRARIES = {
    "tensorrt": ("libnvinfer.so*", "libnvinfer_plugin.so*", "libnvonnxparser.so*"),
    "tensorrt_rtx": ("libtensorrt_rtx.so*", "libtensorrt_onnxparser_rtx.so*"),
}
TAR_HEADER = "include/NvInfer.h"
WHEEL_PREFIX = {"tensorrt": "tensorrt-", "tensorrt_rtx": "tensorrt_rtx-"}


@dataclass(frozen=True)
class TarInstall:
    """What a ``TENSORRT_DIR`` (an extracted TensorRT tar) holds."""

    root: Path
    libraries: dict         # flavour -> core library files found in lib/
    has_header: bool
    wheels: tuple           # python/*.whl

    @property
    def flavour(self) -> str | None:
        return next((f for f, libs in self.libraries.items() if libs), None)

    @property
    def library_version(self) -> str | None:
        """The version in the core library's file name (libnvinfer.so.10.13.0 -> 10.13.0)."""
        libs = self.libraries.get(self.flavour, [])
        versions = [lib.name.split(".so.", 1)[1] for lib in libs if ".so." in lib.name]
        return max(versions, key=len) if versions else None

    def missing(self) -> list[str]:
        """Files a usable install must have and this one lacks, as paths relative to the root."""
        missing = [] if self.flavour else ["lib/libnvinfer.so.* (lib/libtensorrt_rtx.so.* for TensorRT-RTX)"]
        if not self.has_header:
            missing.append(TAR_HEADER)
        return missing

    def wheel_for_this_python(self, flavour: str) -> Path | None:
        tag = f"-cp{sys.version_info.major}{sys.version_info.minor}-"
        return next((w for w in self.wheels if w.name.startswith(WHEEL_PREFIX[flavour]) and tag in w.name), None)


def inspect_tensorrt_dir(root: str | os.PathLike) -> TarInstall:
    """Look into a TENSORRT_DIR without loading anything from it."""
    root = Path(root)
    libraries = {flavour: sorted(Path(p) for p in glob.glob(str(root / "lib" / patterns[0])))
                 for flavour, patterns in TAR_LIBRARIES.items()}
    wheels = tuple(sorted(Path(p) for p in glob.glob(str(root / "python" / "*.whl"))))
    return TarInstall(root, libraries, (root / TAR_HEADER).is_file(), wheels)


def check_tensorrt_dir(root: str | os.PathLike) -> TarInstall:
    """Refuse a TENSORRT_DIR that is not a TensorRT install, naming the files it lacks."""
    tar = inspect_tensorrt_dir(root)
    if not tar.root.is_dir():
        raise BackendUnavailableError(f"TENSORRT_DIR={tar.root} does not exist; point it at the folder of the extracted "
                                      f"TensorRT tar (the one holding lib/, include/ and python/), or unset it to use "
                                      f"a pip install")
    if not tar.flavour:
        raise BackendUnavailableError(f"TENSORRT_DIR={tar.root} is not a TensorRT install: {' and '.join(tar.missing())} "
                                      f"not found there; point TENSORRT_DIR at the folder of the extracted TensorRT tar "
                                      f"that holds lib/, include/ and python/")
    return tar


def _preload_tar_libs(tar: TarInstall) -> None:
    """Load the tar's libraries globally so that its Python module finds them without LD_LIBRARY_PATH."""
    for pattern in TAR_LIBRARIES[tar.flavour]:
        for lib in sorted(glob.glob(str(tar.root / "lib" / pattern)), key=len)[-1:]:
            try:
                ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
            except OSError as e:
                logger.debug("could not preload %s: %s", lib, e)


def loaded_library(flavour: str) -> str | None:
    """The path of the core TensorRT library this process has mapped (from /proc/self/maps)."""
    stem = TAR_LIBRARIES[flavour][0].rstrip("*")
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rsplit(maxsplit=1)[-1]
                if Path(path).name.startswith(stem):
                    return path
    except OSError:
        pass
    return None


def library_source(path: str | None) -> str:
    """How the loader found a library: TENSORRT_DIR, LD_LIBRARY_PATH, pip (a wheel) or system (e.g. JetPack)."""
    if not path:
        return "unknown"
    folder = Path(path).parent.resolve()
    trt_dir = os.environ.get("TENSORRT_DIR")
    if trt_dir and folder.is_relative_to(Path(trt_dir).resolve()):
        return "TENSORRT_DIR"
    ld_dirs = [Path(d).resolve() for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    if folder in ld_dirs:
        return "LD_LIBRARY_PATH"
    if "site-packages" in folder.parts or "dist-packages" in folder.parts:
        return "pip"
    return "system"


def module_source(origin: str) -> str:
    """How Python found the module: a tar's wheel under TENSORRT_DIR, apt (JetPack), pip, or PYTHONPATH."""
    folder = Path(origin).resolve()
    trt_dir = os.environ.get("TENSORRT_DIR")
    if trt_dir and folder.is_relative_to(Path(trt_dir).resolve()):
        return "TENSORRT_DIR"
    if folder.is_relative_to("/usr/lib/python3/dist-packages"):
        return "system"
    if "site-packages" in folder.parts or "dist-packages" in folder.parts:
        return "pip"
    return "PYTHONPATH"


def _import(flavour: str) -> TensorRT | None:
    try:
        module = importlib.import_module(flavour)
    except ImportError:
        return None
    except Exception as e:  # a broken install (missing CUDA libs, ABI mismatch)
        raise BackendUnavailableError(f"importing {flavour} failed ({type(e).__name__}: {e}); "
                                      f"reinstall it: {INSTALL_HINT}") from None
    origin = str(Path(module.__file__).parent)
    library = loaded_library(flavour)
    return TensorRT(module, flavour, _version_of(module), origin, module_source(origin), library,
                    library_source(library))


def _not_installed(order: tuple[str, ...], tar: TarInstall | None) -> BackendUnavailableError:
    """Nothing imports: say so, and when a tar install has a wheel for this Python, name it."""
    if tar is not None and tar.flavour:
        wheel = tar.wheel_for_this_python(tar.flavour)
        if wheel is not None:
            return BackendUnavailableError(f"TENSORRT_DIR={tar.root} holds {tar.flavour} but its Python wheel is not "
                                           f"installed: pip install {wheel}")
        tags = sorted({w.name.split("-")[2] for w in tar.wheels if w.name.count("-") >= 3})
        return BackendUnavailableError(
            f"TENSORRT_DIR={tar.root} has no {tar.flavour} wheel for Python {sys.version_info.major}."
            f"{sys.version_info.minor} in python/ (found: {', '.join(tags) or 'none'}); use a Python it has a wheel "
            f"for, or pip install tensorrt")
    return BackendUnavailableError(f"TensorRT is not installed ({' nor '.join(order)} can be imported): {INSTALL_HINT}")


@functools.lru_cache(maxsize=None)
def import_tensorrt(prefer: str | None = None) -> TensorRT:
    """Find TensorRT: ``TRTDEPLOY_TENSORRT`` or ``prefer`` picks a flavour, else tensorrt, then tensorrt_rtx.

    A ``TENSORRT_DIR`` is checked first (a wrong one is named with the files it lacks) and its
    libraries are preloaded, so a tar install works without LD_LIBRARY_PATH.
    """
    prefer = prefer or os.environ.get("TRTDEPLOY_TENSORRT") or None
    if prefer and prefer not in FLAVOURS:
        raise BackendUnavailableError(f"TRTDEPLOY_TENSORRT={prefer!r} is not a TensorRT flavour; use one of {FLAVOURS}")
    trt_dir = os.environ.get("TENSORRT_DIR")
    tar = check_tensorrt_dir(trt_dir) if trt_dir else None
    if tar is not None:
        _preload_tar_libs(tar)
    order = (prefer,) if prefer else FLAVOURS
    for flavour in order:
        found = _import(flavour)
        if found is not None:
            if tar is not None and tar.flavour != found.flavour:
                logger.warning("TENSORRT_DIR=%s holds %s but %s (%s) is in use; install the tar's wheel from %s/python "
                               "to use it", tar.root, tar.flavour, found.label, found.how, tar.root)
            logger.debug("using %s from %s (%s), library %s (%s)", found.label, found.origin, found.how,
                         found.library, found.library_how)
            return found  # plugins are registered where a graph or an engine needs them (plugins.py)
    raise _not_installed(order, tar)
