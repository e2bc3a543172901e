"""What this machine has for trtdeploy, and what to do about what is wrong: the facts behind `check-env`.

Each check is a function registered in ``ENV_CHECKS`` that returns ``Finding`` rows; a check that
itself fails becomes a finding, so the report always completes. A finding is ``required`` when the
default job (convert to ONNX and run it on ONNX Runtime) cannot work without it.
"""
from __future__ import annotations

import ctypes
import functools
import importlib
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from .backends.base import all_backends
from .registry import Registry
from .utils.findings import ABSENT, FAIL, OK, WARN, Finding
from .utils.findings import dist_version as _dist_version
from .version import __version__

# Jetson boards carry their L4T release here; tests point it elsewhere.
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
NVIDIA_DRIVER_VERSION = Path("/proc/driver/nvidia/version")
# The oldest Linux driver each CUDA major version needs (NVIDIA's CUDA release notes).
MIN_DRIVER_FOR_CUDA = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
# torchvision's minor version follows torch's: torch 2.N pairs with torchvision 0.(N+15).
TORCHVISION_MINOR_OFFSET = 15


ENV_CHECKS: Registry[Callable[[], list[Finding]]] = Registry("environment check")


def check_environment() -> list[Finding]:
    """Run every registered check in registration order, each backend's own (``Backend.env_findings``) after
    'packages'."""
    checks = list(ENV_CHECKS.items())
    at = [name for name, _ in checks].index("packages") + 1
    gpus = visible_gpus()
    own = [(backend.name, functools.partial(backend.env_findings, gpus)) for backend in all_backends()]
    findings = []
    for section, check in checks[:at] + own + checks[at:]:
        try:
            findings.extend(check())
        except Exception as e:  # a check must never stop the report
            findings.append(Finding(section, section, WARN, f"the check itself failed: {type(e).__name__}: {e}",
                                    "rerun with --log-level debug and report it"))
    return findings


def default_job_broken(findings: list[Finding]) -> bool:
    return any(f.required and f.status in (FAIL, ABSENT) for f in findings)


@ENV_CHECKS.register("python")
def _python() -> list[Finding]:
    version = platform.python_version()
    if sys.version_info < (3, 10):
        return [Finding("python", "Python", FAIL, f"{version} ({sys.executable})",
                        "use Python 3.10 or newer", required=True)]
    return [Finding("python", "Python", OK, f"{version} ({sys.executable})")]


def jetson_release() -> str | None:
    """'L4T R36.3.0' on a Jetson (from /etc/nv_tegra_release), else None."""
    try:
        text = TEGRA_RELEASE.read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"L4T R{match.group(1)}.{match.group(2)}" if match else "L4T (release unreadable)"


@ENV_CHECKS.register("platform")
def _platform() -> list[Finding]:
    machine = platform.machine()
    jetson = jetson_release()
    where = f"{platform.system()} {machine}"
    if jetson:
        return [Finding("platform", "platform", OK, f"{where}, NVIDIA Jetson ({jetson})",
                        "on Jetson use JetPack's TensorRT (apt install python3-libnvinfer) and NVIDIA's torch wheel "
                        "for your JetPack; see README 'Jetson / aarch64'")]
    if machine not in ("x86_64", "aarch64", "AMD64", "arm64"):
        return [Finding("platform", "platform", WARN, where,
                        "TensorRT ships only for x86_64 and aarch64; use ONNX Runtime here")]
    return [Finding("platform", "platform", OK, where)]


@ENV_CHECKS.register("packages")
def _packages() -> list[Finding]:
    rows = []
    for module, dists, required in (("torch", ("torch",), True), ("torchvision", ("torchvision",), True),
                                    ("onnx", ("onnx",), True), ("onnxslim", ("onnxslim",), True),
                                    ("mmengine", ("mmengine-lite", "mmengine"), True)):
        try:
            mod = importlib.import_module(module)
        except Exception as e:
            rows.append(Finding("packages", module, FAIL if required else ABSENT,
                                f"cannot be imported ({type(e).__name__}: {e})",
                                f"pip install {dists[0]}", required=required))
            continue
        version = getattr(mod, "__version__", None) or _dist_version(*dists) or "?"
        detail = str(version)
        if module == "torch":
            detail += f" (CUDA {mod.version.cuda} build)" if mod.version.cuda else " (CPU build)"
        rows.append(Finding("packages", module, OK, detail))
    rows.extend(_torchvision_pairing())
    return rows


def _torchvision_pairing() -> list[Finding]:
    torch_v, tv_v = _dist_version("torch"), _dist_version("torchvision")
    if not torch_v or not tv_v:
        return []
    torch_minor, tv_minor = int(torch_v.split(".")[1]), int(tv_v.split(".")[1])
    if tv_minor == torch_minor + TORCHVISION_MINOR_OFFSET:
        return []
    wanted = f"0.{torch_minor + TORCHVISION_MINOR_OFFSET}"
    return [Finding("packages", "torchvision", FAIL, f"torchvision {tv_v} was not built for torch {torch_v}",
                    f"pip install 'torchvision=={wanted}.*'", required=True)]


def cuda_driver_version() -> tuple[int, int] | None:
    """The newest CUDA version the installed driver supports, from libcuda; None without a driver."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version = ctypes.c_int(0)
    if libcuda.cuDriverGetVersion(ctypes.byref(version)) != 0:
        return None
    return version.value // 1000, (version.value % 1000) // 10


@ENV_CHECKS.register("cuda")
def _cuda() -> list[Finding]:
    driver = cuda_driver_version()
    kernel = ""
    if NVIDIA_DRIVER_VERSION.is_file():
        match = re.search(r"Kernel Module\s+([\d.]+)", NVIDIA_DRIVER_VERSION.read_text(errors="replace"))
        kernel = f"driver {match.group(1)}, " if match else ""
    rows = []
    if driver is None:
        rows.append(Finding("cuda", "CUDA driver", ABSENT, "no NVIDIA driver (libcuda.so.1) on this machine",
                            "engines can still be built with TensorRT-RTX here; running them needs an NVIDIA GPU "
                            "and driver"))
    else:
        rows.append(Finding("cuda", "CUDA driver", OK, f"{kernel}supports CUDA {driver[0]}.{driver[1]}"))
    import torch

    runtimes = [("torch", int(torch.version.cuda.split(".")[0]), torch.version.cuda)] if torch.version.cuda else []
    runtimes += [(who, major, f"{major}.x") for who, major in filter(None, (b.cuda_runtime() for b in all_backends()))]
    rows.append(Finding("cuda", "CUDA runtime", OK,
                        ", ".join(f"{who}: CUDA {text}" for who, _, text in runtimes) or "none (CPU-only torch)"))
    for who, major, text in runtimes:
        if driver is not None and driver[0] < major:
            rows.append(Finding("cuda", "CUDA runtime", WARN,
                                f"{who} needs CUDA {text} but the driver supports only {driver[0]}.{driver[1]}",
                                f"update the NVIDIA driver to >= {MIN_DRIVER_FOR_CUDA.get(major, 'the newest')}, or "
                                f"install a {who} built for CUDA {driver[0]}"))
    return rows


def visible_gpus() -> list[dict]:
    """GPUs as dicts (index, name, cc): asked of torch, else of nvidia-smi (a CPU-only torch on a GPU host)."""
    import torch

    if torch.cuda.is_available():
        return [{"index": i, "name": torch.cuda.get_device_name(i), "cc": torch.cuda.get_device_capability(i)}
                for i in range(torch.cuda.device_count())]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index,name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and re.fullmatch(r"\d+\.\d+", parts[2]):
            major, minor = parts[2].split(".")
            gpus.append({"index": int(parts[0]), "name": parts[1], "cc": (int(major), int(minor))})
    return gpus


@ENV_CHECKS.register("gpus")
def _gpus() -> list[Finding]:
    """Each visible GPU, judged by every backend that can tell whether it builds for it (``Backend.gpu_support``)."""
    gpus = visible_gpus()
    if not gpus:
        return [Finding("gpus", "GPU", ABSENT, "none visible",
                        "engines can be built here with TensorRT-RTX (compute_capabilities picks targets) "
                        "and checked on ONNX Runtime; running them needs an NVIDIA GPU")]
    backends = all_backends()
    rows = []
    for gpu in gpus:
        detail = f"{gpu['index']}: {gpu['name']}, compute capability {gpu['cc'][0]}.{gpu['cc'][1]}"
        verdicts = [v for v in (b.gpu_support(tuple(gpu["cc"])) for b in backends) if v is not None]
        bad = next((v for v in verdicts if not v[0]), None)
        if bad is not None:
            rows.append(Finding("gpus", f"GPU {gpu['index']}", WARN, f"{detail}: {bad[1]}", bad[2]))
        else:
            rows.append(Finding("gpus", f"GPU {gpu['index']}", OK, detail + "".join(f": {v[1]}" for v in verdicts)))
    return rows


@ENV_CHECKS.register("plugins")
def _plugins() -> list[Finding]:
    """trtdeploy's custom ops: how each can be served, and what each backend has for it (its plugin's registration)."""
    from .ops import CUSTOM_OPS, load_ops

    load_ops()
    registrations = {}  # op key -> [(what a backend has for it, the fix where that is broken)]
    for backend in all_backends():
        for key, status in backend.custom_op_status().items():
            registrations.setdefault(key, []).append(status)
    rows = []
    for key in [*CUSTOM_OPS, *(name for name in registrations if name not in CUSTOM_OPS)]:  # each name once
        op = CUSTOM_OPS.get(key) if key in CUSTOM_OPS else None
        ways = [w for w, present in (("plugin-free lowering", op.lowering), ("ONNX Runtime", op.ort),
                                     (f"TensorRT plugin {op.op_type}", op.plugin)) if present] if op else []
        status, fix = (OK, "") if ways or op is None else (WARN, "the op folder registers neither a lowering nor a plugin")
        parts = [", ".join(ways) or "no implementation"] if op else []
        for detail, problem in registrations.get(key, []):
            parts.append(detail)
            if problem:
                status, fix = WARN, problem
        rows.append(Finding("plugins", key, status, "; ".join(parts), fix))
    if not rows:
        rows.append(Finding("plugins", "custom ops", OK, "none registered"))
    return rows


def findings_as_json(findings: list[Finding]) -> dict:
    return {"trtdeploy": __version__, "default_job_ok": not default_job_broken(findings),
            "findings": [asdict(f) for f in findings]}
