"""TensorRT's part of ``trtdeploy check-env``: its flavours, a tar install, its plugins, the GPUs it supports."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import sys
from pathlib import Path

from ...errors import BackendUnavailableError
from ...utils.findings import ABSENT, FAIL, OK, WARN, Finding
from .compat import FLAVOURS, INSTALL_HINT, import_tensorrt, inspect_tensorrt_dir


def tensorrt_findings() -> list[Finding]:
    """Each flavour: installed, usable, from where; the one in use; a TENSORRT_DIR tar install."""
    rows = []
    for flavour in FLAVOURS:
        try:
            trt = import_tensorrt(flavour)
        except BackendUnavailableError as e:
            installed = importlib.util.find_spec(flavour) is not None
            rows.append(Finding("tensorrt", flavour, WARN if installed else ABSENT,
                                "installed but unusable" if installed else "not installed",
                                str(e) if installed else INSTALL_HINT))
            continue
        rows.append(Finding("tensorrt", flavour, OK,
                            f"{trt.label}: module {trt.origin} ({trt.how}); library {trt.library or '?'} "
                            f"({trt.library_how})"))
    try:
        in_use = import_tensorrt()
        rows.append(Finding("tensorrt", "in use", OK, f"{in_use.label} (set TRTDEPLOY_TENSORRT=tensorrt|tensorrt_rtx "
                                                       f"to choose)"))
    except BackendUnavailableError as e:
        rows.append(Finding("tensorrt", "in use", ABSENT, "none: trtdeploy converts to ONNX Runtime only", str(e)))
    return rows + _tensorrt_dir()


def _tensorrt_dir() -> list[Finding]:
    """A tar install named by TENSORRT_DIR: its files, LD_LIBRARY_PATH and its Python wheel."""
    trt_dir = os.environ.get("TENSORRT_DIR")
    if not trt_dir:
        return [Finding("tensorrt", "TENSORRT_DIR", OK, "not set (pip installs need none)")]
    tar = inspect_tensorrt_dir(trt_dir)
    if not tar.root.is_dir():
        return [Finding("tensorrt", "TENSORRT_DIR", FAIL, f"{trt_dir} does not exist",
                        "point TENSORRT_DIR at the extracted TensorRT tar (with lib/, include/, python/) or unset it")]
    if not tar.flavour:
        return [Finding("tensorrt", "TENSORRT_DIR", FAIL, f"{trt_dir} lacks {' and '.join(tar.missing())}",
                        "point TENSORRT_DIR at the folder of the extracted TensorRT tar that holds lib/ and include/")]
    rows = [Finding("tensorrt", "TENSORRT_DIR", OK, f"{trt_dir}: {tar.flavour} {tar.library_version or ''}".strip())]
    if not tar.has_header:
        rows.append(Finding("tensorrt", "TENSORRT_DIR", WARN, f"{trt_dir} has no include/NvInfer.h",
                            "headers are needed only to compile C++ plugins (trtdeploy's are Python); "
                            "re-extract the tar if you compile any"))
    lib_dir = str(tar.root / "lib")
    ld_dirs = [str(Path(d).resolve()) for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    if str(Path(lib_dir).resolve()) not in ld_dirs:
        rows.append(Finding("tensorrt", "LD_LIBRARY_PATH", WARN, f"does not contain {lib_dir}",
                            f"export LD_LIBRARY_PATH={lib_dir}:$LD_LIBRARY_PATH (e.g. in ~/.bashrc); trtdeploy "
                            f"preloads the libraries, other tools and plugins need it"))
    if importlib.util.find_spec(tar.flavour) is None:
        wheel = tar.wheel_for_this_python(tar.flavour)
        rows.append(Finding("tensorrt", "TENSORRT_DIR", WARN, f"the {tar.flavour} Python module is not installed",
                            f"pip install {wheel}" if wheel else
                            f"{trt_dir}/python has no wheel for Python {sys.version_info.major}."
                            f"{sys.version_info.minor}; use a Python it has one for"))
    return rows


def plugin_findings() -> dict[str, tuple[str, str]]:
    """Per plugin key: its registration with each flavour in words, and the fix when a registration failed."""
    from .plugins import last_creation_error, plugin_status

    status = {}
    for row in plugin_status():
        states = row["registered"]  # flavour -> True / False / why it cannot be asked
        detail = f"v{row['version']} namespace {row['namespace']}: " + ", ".join(
            f"{f} {'registered' if s is True else 'NOT registered' if s is False else s}" for f, s in states.items())
        broken = any(state is False for state in states.values())
        status[row["plugin"]] = (detail, f"registration failed ({last_creation_error() or 'no reason recorded'}); "
                                         f"the plugin-free lowering still builds" if broken else "")
    return status


def gpu_support(cc: tuple[int, int]) -> tuple[bool, str, str] | None:
    """Whether the TensorRT in use builds for compute capability ``cc`` (TensorRT-RTX has a list of targets)."""
    try:
        trt = import_tensorrt()
    except BackendUnavailableError:
        return None
    sm = f"SM{cc[0]}{cc[1]}"
    if trt.supported_targets and sm not in trt.supported_targets:
        return (False, f"{trt.label} does not support {sm}", f"pip install tensorrt to build and run engines on this "
                f"GPU; {trt.label} targets {'/'.join(trt.supported_targets)}")
    return True, f"supported by {trt.label}", ""


def wheel_cuda_major() -> tuple[str, int] | None:
    """The installed TensorRT wheel and the CUDA major version it is built for (from its -cuNN package name)."""
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        match = re.fullmatch(r"(tensorrt(?:-rtx)?)-cu(\d+)", name)
        if match:
            return name, int(match.group(2))
    return None
