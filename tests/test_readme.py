"""README.md is tested: every ```python block runs, and so do the quick start's commands.

Rules for README authors (several people add sections):
- Every fenced block opened with ```python is run, in the order of the README, each in a fresh interpreter, all in
  one scratch folder that holds the repository's configs/, demo/, benchmarks/ and deploy/ (symlinked) and the
  files the ``scratch`` fixture makes: ``val/`` (an image folder with two ImageNet class names), ``model.onnx``
  (a small classifier's graph) and ``my_trt_fp16.py`` (a TensorRT FP16 deploy config for it). A block that needs
  another file a user would have adds it there. A block may use what an earlier block wrote (the Python API
  example's ``work_dirs/api_r18`` is used by the evaluation example).
- A block that cannot run offline on a CPU (a running server, a GPU, a dataset that cannot be made) is preceded,
  on the line right before its fence, by ``<!-- no-test: REASON -->``; the reason is required and says where else
  the code is exercised. Nothing else skips a block.
- The quick start's first ```bash block is run too, without its ``pip install`` part (this environment is the
  installed one), and the README's test command must be the command `.ci/run` runs.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import trtdeploy
from conftest import CONFIGS, DEMO_IMG, REPO, TINY_CLASSIFIER

README = REPO / "README.md"
NO_TEST = re.compile(r"<!--\s*no-test:\s*(\S.*?)\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")

pytestmark = pytest.mark.slow


def blocks(language: str) -> list[tuple[int, str, str | None]]:
    """(line number, code, no-test reason or None) of every fenced block in ``language``."""
    lines = README.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if opened and opened.group(1):
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            if opened.group(1) == language:
                marker = NO_TEST.search(lines[i - 1]) if i else None
                found.append((i + 1, "\n".join(lines[i + 1:end]), marker.group(1) if marker else None))
            i = end
        elif opened:  # an unlabelled block: skip to its end
            i = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        i += 1
    return found


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """The folder the README's code runs in: the repository's inputs, plus a small ImageNet-named test set."""
    from PIL import Image

    root = tmp_path_factory.mktemp("readme")
    for name in ("configs", "demo", "benchmarks", "deploy"):
        (root / name).symlink_to(REPO / name)
    with Image.open(DEMO_IMG) as demo:
        for i, cls in enumerate(("tench", "goldfish")):
            (root / "val" / cls).mkdir(parents=True)
            demo.resize((160 + 32 * i, 120)).save(root / "val" / cls / "0.jpg")
    (root / "tiny_model.py").write_text(TINY_CLASSIFIER)
    made = trtdeploy.convert(CONFIGS / "classification" / "classification_onnxruntime_dynamic.py",
                             f"{root / 'tiny_model.py'}:build", work_dir=root / "tiny")
    shutil.copy(made.onnx_path, root / "model.onnx")
    (root / "my_trt_fp16.py").write_text(
        f"_base_ = ['{CONFIGS / 'classification' / 'classification_tensorrt-fp16_dynamic-224x224-320x320.py'}']\n")
    return root


def _run(command: list[str] | str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env,
                          shell=isinstance(command, str))


def test_every_python_block_runs(scratch):
    python = blocks("python")
    assert len(python) >= 3, "the README's Python examples went missing"
    for line, code, reason in python:
        if reason is not None:
            continue
        proc = _run([sys.executable, "-c", code], scratch)
        assert proc.returncode == 0, f"README.md line {line}: the python block fails:\n{code}\n{proc.stderr[-3000:]}"
    skipped = [(line, reason) for line, _, reason in python if reason is not None]
    assert len(skipped) < len(python) / 2, f"most python blocks are marked no-test: {skipped}"


def test_the_quick_start_commands_run(scratch):
    section = README.read_text().split("## Quick start", 1)[1]
    first = section.split("```bash", 1)[1].split("```", 1)[0].strip()
    commands = [c.strip() for c in first.split("&&")]
    assert commands[0].startswith("python3 -m pip install"), "the quick start's first command installs trtdeploy"
    for command in commands[1:]:
        proc = _run(command, scratch)
        assert proc.returncode == 0, f"quick start: {command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    out = proc.stdout
    assert out.count("  5. ") == 2 and "max abs difference" in out and "next:" in out, out
    assert (scratch / "work_dirs" / "resnet18" / "end2end.onnx").is_file()


def test_the_readme_test_command_is_what_ci_runs():
    section = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    test_command = [b for b in section.split("```bash")[1:] if "pytest" in b][0].split("```", 1)[0].strip()
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    assert ci == [test_command], (ci, test_command)
    constraints = dict(line.split("==") for line in (REPO / ".ci" / "constraints.txt").read_text().splitlines()
                       if "==" in line and not line.startswith("#"))
    assert set(constraints) == {"torch", "torchvision"}
    assert "-c .ci/constraints.txt" in shlex.join(shlex.split(test_command))


def test_no_test_markers_name_a_reason():
    text = README.read_text()
    assert len(re.findall(r"<!--\s*no-test", text)) == len(NO_TEST.findall(text)), "a no-test marker lacks its reason"
