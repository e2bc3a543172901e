"""The package's import layers (docs/architecture.md): every import, function-local ones included, points down.

Parsed from the source with ``ast`` (nothing is imported), so a lazy import cannot hide an upward
dependency. A unit is a top-level module or subpackage of trtdeploy; imports inside one unit are free.
"""
from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "trtdeploy"

# Bottom to top. A unit may import units of its own layer or below; within a layer the graph is acyclic.
LAYERS = [
    ("errors", "version", "registry", "utils", "config"),  # foundations: no trtdeploy stage
    ("passes",),                                             # ONNX -> ONNX, knowing no op by name
    ("datasets", "calibration"),                             # image folders, COCO, calibration data
    ("ops",),                                                # custom ops; their lowerings register into passes
    ("backends",),                                           # ONNX -> artefact -> runner, one folder each
    ("export",),                                             # torch -> ONNX, with rewriters
    ("tasks",),                                              # pre/post-processing per task; wraps models for export
    ("artefacts", "api", "env"),                             # the Python API and what a conversion left behind
    ("evaluation", "serving"),                               # test, profile, compare, inspect; Triton, the server
    ("cli", "__main__", "__init__"),                         # the shells: `trtdeploy`, python -m, the package facade
]
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


@functools.lru_cache(maxsize=None)
def import_edges() -> dict[tuple[str, str], list[str]]:
    """(importing unit, imported unit) -> where ('file:line'), for every import between two units."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts)
        package = module[: -len(".__init__")] if module.endswith(".__init__") else module.rsplit(".", 1)[0]
        module = module[: -len(".__init__")] if module.endswith(".__init__") else module
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    prefix = ".".join(base)
                else:
                    prefix = ""
                if node.module:
                    targets = [f"{prefix}.{node.module}" if prefix else node.module]
                else:  # from . import x: x is a module of that package
                    targets = [f"{prefix}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] != "trtdeploy":
                    continue
                a, b = _unit(module), _unit(target)
                if a != b:
                    edges[(a, b)].append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    return edges


def test_every_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and any(p.glob("*.py"))))}
    assert sorted(units - set(LAYER_OF)) == [], "add the new module or subpackage to LAYERS (and docs/architecture.md)"


def test_imports_point_down_the_layers():
    upward = [f"{a} (layer {LAYER_OF[a]}) imports {b} (layer {LAYER_OF[b]}) at {', '.join(where)}"
              for (a, b), where in sorted(import_edges().items()) if LAYER_OF[b] > LAYER_OF[a]]
    assert upward == []


def test_no_cycles_between_units():
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in import_edges():
        graph[a].add(b)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(unit: str, path: list[str]) -> None:
        state[unit] = 1
        for nxt in sorted(graph[unit]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[unit] = 2

    for unit in sorted(graph):
        if unit not in state:
            visit(unit, [unit])
    assert cycles == []


def test_the_walker_sees_lazy_and_relative_imports():
    """The rule is only as honest as the parser: a function-local ``from ..x import y`` must count."""
    edges = import_edges()
    assert ("ops", "passes") in edges          # ops/__init__.py: lowerings register into passes
    assert ("api", "passes") in edges          # api.py: `from . import passes` inside convert()
    assert ("evaluation", "export") in edges   # evaluation/targets.py: a function-local import


LAZY = """
import sys
import trtdeploy  # noqa: F401

heavy = ("torch", "torchvision", "onnx", "onnxruntime", "onnxslim", "mmengine", "tensorrt", "tensorrt_rtx", "triton")
print("IMPORT", sorted(m for m in heavy if m in sys.modules))

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
weight = numpy_helper.from_array(np.full((4, 3, 3, 3), 0.1, np.float32), "w")
graph = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["output"], pads=[1, 1, 1, 1])], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 224, 224])], [weight])
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), sys.argv[1] + "/conv.onnx")
from trtdeploy.backends.base import build_from_onnx

built = build_from_onnx(sys.argv[1] + "/conv.onnx", sys.argv[2], sys.argv[1])
print("BUILD", built.path.stat().st_size > 0, sorted(m for m in ("torch", "torchvision", "triton") if m in sys.modules))
"""


def test_import_and_a_plugin_free_onnx_build_stay_light(tmp_path):
    """`import trtdeploy` imports no heavy package (not even onnx); ONNX -> engine imports no torch (no plugin nodes)."""
    cfg = PACKAGE.parent / "configs/classification/classification_tensorrt_static-224x224.py"
    proc = subprocess.run([sys.executable, "-c", LAZY, str(tmp_path), str(cfg)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TRTDEPLOY_TENSORRT": "tensorrt_rtx"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.startswith(("IMPORT", "BUILD")))
    assert lines["IMPORT"] == "[]"
    assert lines["BUILD"] == "True []"


def test_a_backend_folder_imports_no_other_backend():
    """A backend is one folder: what two backends share lives below them (backends/base.py, calibration, passes)."""
    folders = {p.name for p in (PACKAGE / "backends").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    crossing = []
    for folder in sorted(folders):
        for path in sorted((PACKAGE / "backends" / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    target = ("." * node.level + (node.module or "")) if node.level else (node.module or "")
                    other = [f for f in folders - {folder} if f"..{f}" in target or f"backends.{f}" in target]
                    crossing += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports backends/{o}" for o in other]
    assert crossing == []
