"""Shared test helpers.

TensorRT builds run in a child process (``run_cli``/``run_python``): repeated builds in one
process once segfaulted, and interpreter shutdown after a build can crash.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# GPU tests run only where asked (TRTDEPLOY_GPU_TESTS=1, on a machine with a CUDA GPU); CI has none.
# The gate lives here, not in tests/gpu/conftest.py: a second module named `conftest` would shadow
# this one for the tests that import helpers from it.
collect_ignore_glob = [] if os.environ.get("TRTDEPLOY_GPU_TESTS") == "1" else ["gpu/*"]
CONFIGS = REPO / "configs"
DEMO_IMG = REPO / "demo" / "demo.jpg"


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 900,
            check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m trtdeploy ARGS`` in a fresh process; returns the completed process."""
    proc = subprocess.run([sys.executable, "-m", "trtdeploy", *map(str, args)], cwd=cwd or REPO,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"trtdeploy {' '.join(map(str, args))} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def interruptible() -> None:
    """``preexec_fn`` for a child a test sends Ctrl-C (SIGINT): the default handling a terminal gives it. A suite
    started in the background (``cmd &`` in a script) ignores SIGINT, and Python keeps an ignored SIGINT ignored
    in its children, so such a test would see the signal dropped."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_python(code: str, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a Python snippet in a fresh process (for TensorRT builds); raises on failure."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise AssertionError(f"child process exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(autouse=True)
def restore_trtdeploy_logger():
    """An in-process ``main([...])`` installs a stderr handler (bound to capsys's stream) and stops
    propagation; put the logger back so that later tests' caplog still sees trtdeploy's records."""
    from trtdeploy.utils.logging import logger

    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def full_disk_at(marker: str) -> str:
    """Python source for a child process: from then on, fsync of a file whose path holds ``marker`` fails with
    ENOSPC (a full disk), as trtdeploy's atomic writes see it (``trtdeploy.utils.fileio``)."""
    return textwrap.dedent(f"""
        import errno, os
        import trtdeploy.utils.fileio as fileio
        real_fsync = os.fsync
        def fsync(fd):
            if {marker!r} in os.readlink(f"/proc/self/fd/{{fd}}"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_fsync(fd)
        fileio.os.fsync = fsync
    """)


def build_in_child(onnx_path: Path, work_dir: Path, deploy_cfg: Path) -> dict:
    """Build ``onnx_path`` with the TensorRT backend and ``deploy_cfg`` in a child process; returns
    ``{"size": engine bytes, "profiles": the sidecar's profiles}``."""
    import json

    proc = run_python(textwrap.dedent(f"""
        import json
        from pathlib import Path
        from trtdeploy.backends.base import get_backend
        from trtdeploy.config import load_deploy_config
        built = get_backend("tensorrt").build(Path({str(onnx_path)!r}), Path({str(work_dir)!r}),
                                              load_deploy_config({str(deploy_cfg)!r}))
        print(json.dumps({{"size": built.path.stat().st_size, "profiles": built.facts["profiles"]}}))
    """))
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def demo_img() -> Path:
    return DEMO_IMG


@pytest.fixture(scope="session")
def resnet18_ort(tmp_path_factory) -> Path:
    """A resnet18 converted once for the session with the dynamic ONNX Runtime config."""
    work = tmp_path_factory.mktemp("r18_ort")
    run_cli("convert", CONFIGS / "classification/classification_onnxruntime_dynamic.py",
            "torchvision://resnet18", "--work-dir", work)
    return work


TINY_CLASSIFIER = '''
import torch


def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, stride=2),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 3))
'''


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory) -> dict:
    """A 3-class CNN (seeded) converted once with the TensorRT FP16 dynamic config: end2end.onnx,
    end2end_fp16.onnx and an engine built by TensorRT-RTX on the CPU, with sidecars."""
    work = tmp_path_factory.mktemp("tiny_classifier")
    (work / "tiny_model.py").write_text(TINY_CLASSIFIER)
    cfg = CONFIGS / "classification/classification_tensorrt-fp16_dynamic-224x224-320x320.py"
    run_cli("convert", cfg, f"{work / 'tiny_model.py'}:build", "--work-dir", work)
    return {"work": work, "model": f"{work / 'tiny_model.py'}:build", "cfg": cfg}
