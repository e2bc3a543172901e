"""Builds that fail half-way, in real child processes: SIGKILL during the build and during the
engine write, a full disk at the engine write, options the installed TensorRT lacks, a damaged
timing cache. Each leaves the previous engine (matching its sidecar) or nothing."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trtdeploy.backends.tensorrt.backend import check_engine_file
from trtdeploy.utils.fileio import TEMP_MARK, clean_stale_temps

from conftest import CONFIGS, REPO, full_disk_at, run_cli

TRT_CFG = CONFIGS / "classification/classification_tensorrt-fp16_dynamic-224x224-320x320.py"

# The child converts the tiny model into WORK after installing one fault (PATCH); it prints
# a marker when it reaches the point where the parent should kill it.
CHILD = """
import os, sys, time
from pathlib import Path
import trtdeploy
import trtdeploy.backends.tensorrt.builder as builder
import trtdeploy.utils.fileio as fileio
{patch}
from trtdeploy.cli.main import main
sys.exit(main(["convert", {cfg!r}, {model!r}, "--work-dir", {work!r}]))
"""

BLOCK_IN_BUILD = """
def blocking_monitor(trt, cancel):
    mod = trt.module
    class Blocking(mod.IProgressMonitor):
        def __init__(self):
            mod.IProgressMonitor.__init__(self)
        def phase_start(self, phase_name, parent_phase, num_steps):
            pass
        def step_complete(self, phase_name, step):
            print("BUILDING", flush=True)
            time.sleep(600)
            return True
        def phase_finish(self, phase_name):
            pass
    return Blocking()
builder._progress_monitor = blocking_monitor
"""

# The real progress monitor, slowed down so that a signal surely arrives while TensorRT builds.
SLOW_BUILD = """
real_monitor = builder._progress_monitor
def slow_monitor(trt, cancel):
    monitor = real_monitor(trt, cancel)
    class Slow(type(monitor)):
        def step_complete(self, phase_name, step):
            print("BUILDING", flush=True)
            time.sleep(2)
            return super().step_complete(phase_name, step)
    return Slow()
builder._progress_monitor = slow_monitor
"""

# fsync is the last step before the rename: the engine's temp file is complete but not in place.
BLOCK_IN_ENGINE_WRITE = """
real_fsync = os.fsync
def fsync(fd):
    if os.readlink(f"/proc/self/fd/{fd}").endswith(".trtdeploy-tmp") and ".end2end.engine." in os.readlink(f"/proc/self/fd/{fd}"):
        print("WRITING", flush=True)
        time.sleep(600)
    return real_fsync(fd)
fileio.os.fsync = fsync
"""

DISK_FULL_AT_ENGINE_WRITE = full_disk_at(".end2end.engine.")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def previous(tmp_path, tiny_classifier) -> dict:
    """A work dir with a previous engine and its sidecar; their hashes."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("end2end.onnx", "end2end.onnx.json", "end2end.engine", "end2end.engine.json"):
        shutil.copy(tiny_classifier["work"] / name, work / name)
    return {"work": work, "model": tiny_classifier["model"],
            "engine": sha(work / "end2end.engine"), "sidecar": sha(work / "end2end.engine.json")}


def start_child(patch: str, work: Path, model: str, cfg: Path = TRT_CFG) -> subprocess.Popen:
    code = CHILD.format(patch=textwrap.dedent(patch), cfg=str(cfg), model=model, work=str(work))
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def kill_at(proc: subprocess.Popen, marker: str) -> None:
    for line in proc.stdout:
        if marker in line:
            break
    else:
        raise AssertionError(f"the child ended before {marker}: {proc.stderr.read()}")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def assert_previous_engine_intact(previous: dict) -> None:
    work = previous["work"]
    assert sha(work / "end2end.engine") == previous["engine"]
    assert sha(work / "end2end.engine.json") == previous["sidecar"]
    check_engine_file(work / "end2end.engine", json.loads((work / "end2end.engine.json").read_text()))


@pytest.mark.slow
def test_sigkill_during_the_build_keeps_the_previous_engine(previous):
    proc = start_child(BLOCK_IN_BUILD, previous["work"], previous["model"])
    kill_at(proc, "BUILDING")
    assert_previous_engine_intact(previous)
    assert not list(previous["work"].glob(f"*{TEMP_MARK}"))


@pytest.mark.slow
def test_sigterm_during_the_build_cancels_it_and_keeps_the_previous_engine(previous):
    proc = start_child(SLOW_BUILD, previous["work"], previous["model"])
    for line in proc.stdout:
        if "BUILDING" in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted; no partial file was left behind" in stderr
    assert_previous_engine_intact(previous)
    assert not list(previous["work"].glob(f"*{TEMP_MARK}"))


@pytest.mark.slow
def test_sigkill_during_the_engine_write_keeps_the_previous_engine_and_the_next_run_cleans_up(previous):
    work = previous["work"]
    proc = start_child(BLOCK_IN_ENGINE_WRITE, work, previous["model"])
    kill_at(proc, "WRITING")
    assert_previous_engine_intact(previous)
    leftovers = list(work.glob(f".end2end.engine.*{TEMP_MARK}"))
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 0, "the kill must land mid-write"

    rerun = run_cli("convert", TRT_CFG, previous["model"], "--work-dir", work)
    assert f"removed {leftovers[0].name} left by an interrupted run" in rerun.stderr
    assert not list(work.glob(f"*{TEMP_MARK}"))
    check_engine_file(work / "end2end.engine", json.loads((work / "end2end.engine.json").read_text()))


@pytest.mark.slow
def test_full_disk_at_the_engine_write_keeps_the_previous_engine(previous):
    proc = start_child(DISK_FULL_AT_ENGINE_WRITE, previous["work"], previous["model"])
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 9, stderr
    assert "no space left on the device while writing" in stderr and "end2end.engine" in stderr
    assert "Traceback" not in stderr
    assert_previous_engine_intact(previous)
    assert not list(previous["work"].glob(f"*{TEMP_MARK}"))


@pytest.mark.slow
def test_options_the_installed_tensorrt_lacks_warn_and_a_damaged_timing_cache_is_replaced(tmp_path, tiny_classifier):
    cache = tmp_path / "caches" / "timing.cache"
    cache.parent.mkdir()
    cache.write_bytes(b"\x00damaged" * 32)
    cfg = tmp_path / "options.py"
    cfg.write_text(f"_base_ = ['{TRT_CFG}']\nbackend_config = dict(common_config=dict("
                   f"tactic_sources=['-CUBLAS_LT', '+JIT_CONVOLUTIONS'], builder_optimization_level=1, "
                   f"hardware_compatibility_level='AMPERE_PLUS', compute_capabilities=['8.6', 'SM89'], "
                   f"timing_cache='{cache}'))\n")
    proc = run_cli("convert", cfg, tiny_classifier["model"], "--work-dir", tmp_path / "w")
    assert "TacticSource.CUBLAS_LT is deprecated in TensorRT 9.0 and absent from TensorRT-RTX" in proc.stderr
    assert "hardware compatibility levels came with TensorRT 8.6 and TensorRT-RTX has none" in proc.stderr
    sidecar = json.loads((tmp_path / "w" / "end2end.engine.json").read_text())
    assert sidecar["compute_capabilities"] == ["SM86", "SM89"]
    assert "tactic_sources=['+JIT_CONVOLUTIONS']" in sidecar["options"]
    assert "builder_optimization_level=1" in sidecar["options"]
    assert cache.read_bytes() != b"\x00damaged" * 32 and cache.stat().st_size > 0


@pytest.mark.slow
def test_version_compatible_without_the_lean_runtime_names_the_option(tmp_path, tiny_classifier):
    cfg = tmp_path / "vc.py"
    cfg.write_text(f"_base_ = ['{TRT_CFG}']\nbackend_config = dict(common_config=dict(version_compatible=True))\n")
    proc = run_cli("convert", cfg, tiny_classifier["model"], "--work-dir", tmp_path / "w", check=False)
    assert proc.returncode == 6, proc.stderr
    assert "remove backend_config.common_config.version_compatible" in proc.stderr
    assert not list((tmp_path / "w").glob("*.engine*")) and not list((tmp_path / "w").glob(f"*{TEMP_MARK}"))


def test_stale_temps_of_dead_writers_go_and_live_writers_keep_theirs(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_temp = tmp_path / f".end2end.engine.{dead.stdout.strip()}.abcd1234{TEMP_MARK}"
    live_temp = tmp_path / f".end2end.onnx.{os.getppid()}.efgh5678{TEMP_MARK}"
    legacy_temp = tmp_path / f".end2end.onnx.xyz{TEMP_MARK}"
    unrelated = tmp_path / "end2end.engine"
    for p in (dead_temp, live_temp, legacy_temp, unrelated):
        p.write_bytes(b"x")
    assert sorted(clean_stale_temps(tmp_path)) == sorted([dead_temp, legacy_temp])
    assert live_temp.exists() and unrelated.exists()
