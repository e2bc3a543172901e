"""Issue 13 speed: convert writes an ONNX file that no pass changes back as its own bytes (no serialisation of
its weights), one whose nodes alone changed as its bytes with the new nodes, any other as the changed graph;
an FP32 TensorRT build runs while end2end.onnx is written, and a failed write leaves the previous conversion;
`trtdeploy convert` starts without importing the other commands; an FP32 TensorRT build of the file as it is starts
beside the checks and is taken only when they leave a graph that builds the same."""
from __future__ import annotations

from pathlib import Path

import onnx
import pytest

import trtdeploy
from conftest import CONFIGS, full_disk_at, run_cli, run_python
from onnx_files import einsum_graph, hand_classifier


def _cfg(folder: Path, backend: str = "onnxruntime") -> Path:
    path = folder / f"{backend}.py"
    path.write_text(f"_base_ = ['{CONFIGS}/_base_/onnx_config.py', '{CONFIGS}/_base_/backends/{backend}.py']\n"
                    "codebase_config = dict(type='mmpretrain', task='Classification')\n")
    return path


def test_unchanged_file_is_written_back_as_its_bytes_changed_one_as_changed(tmp_path):
    plain = hand_classifier(tmp_path / "plain.onnx")
    ir_version = onnx.load(str(plain)).ir_version  # repeated at the end: the same model, bytes no serialiser writes
    plain.write_bytes(plain.read_bytes() + bytes([0x08, ir_version]))
    result = trtdeploy.convert(_cfg(tmp_path), plain, work_dir=tmp_path / "a")
    assert result.onnx_path.read_bytes() == plain.read_bytes()

    model = onnx.load(str(plain))  # torch.onnx's alias of a reused weight: bypassed by convert's passes
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    model.graph.node.insert(0, onnx.helper.make_node("Identity", [conv.input[1]], ["weight_alias"]))
    conv.input[1] = "weight_alias"
    aliased = tmp_path / "aliased.onnx"
    aliased.write_bytes(model.SerializeToString())
    written = onnx.load(str(trtdeploy.convert(_cfg(tmp_path), aliased, work_dir=tmp_path / "b").onnx_path))
    assert [n.op_type for n in written.graph.node] == [n.op_type for n in onnx.load(str(plain)).graph.node]


def test_a_graph_changed_beyond_its_nodes_is_serialised_as_changed(tmp_path):
    """Only the nodes are taken from the graph in memory; a changed weight fails the proof (the bytes parsed
    back) and the graph is serialised whole."""
    from trtdeploy.api import _serialized

    data = hand_classifier(tmp_path / "plain.onnx").read_bytes()
    model = onnx.load_from_string(data)
    weight = max(model.graph.initializer, key=lambda t: len(t.raw_data))
    weight.raw_data = bytes(len(weight.raw_data))
    written, spliced = _serialized(model, data)
    assert onnx.load_from_string(written) == model and written != data and not spliced


def test_convert_starts_without_the_other_commands():
    proc = run_python("import sys\nfrom trtdeploy.cli.main import build_parser\nbuild_parser('convert')\n"
                      "print(sorted(m for m in sys.modules if '.cli.cmd_' in m))\n"
                      "print(len(build_parser()._subparsers._group_actions[0].choices) > 10)")
    assert proc.stdout.split() == ["['trtdeploy.cli.cmd_convert']", "True"]


# Converts into WORK, lists its files (hash and inode: a file written again is a new one, even with the same
# bytes), converts again with ENOSPC at end2end.onnx's fsync, lists them again.
FULL_DISK_AT_THE_GRAPH = """
import hashlib, pathlib
import trtdeploy
from trtdeploy.errors import WorkDirError
work = pathlib.Path({work!r})
def files():
    return sorted((p.name, hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_ino) for p in work.iterdir())
trtdeploy.convert({cfg!r}, {model!r}, work_dir=work)
print("BEFORE", files())
{full_disk}
try:
    trtdeploy.convert({cfg!r}, {model!r}, work_dir=work)
except WorkDirError as e:
    print("REFUSED", e)
print("AFTER", files())
"""


@pytest.mark.slow
def test_a_failed_graph_write_during_the_build_leaves_the_previous_conversion(tmp_path):
    """TensorRT (FP32) builds from the bytes in memory while end2end.onnx is written, and writes the engine only
    once the graph is written: a full disk at the graph leaves the previous four files as they were, no temp."""
    model = hand_classifier(tmp_path / "static.onnx", dynamic=False)
    code = FULL_DISK_AT_THE_GRAPH.format(work=str(tmp_path / "work"), cfg=str(_cfg(tmp_path, "tensorrt")),
                                         model=str(model), full_disk=full_disk_at(".end2end.onnx."))
    out = run_python(code, env={"TRTDEPLOY_TENSORRT": "tensorrt_rtx"}).stdout
    before, refused, after = (next(line for line in out.splitlines() if line.startswith(mark))
                              for mark in ("BEFORE", "REFUSED", "AFTER"))
    assert "no space left on the device while writing" in refused and "end2end.onnx" in refused
    assert after[len("AFTER"):] == before[len("BEFORE"):] and "end2end.engine.json" in before


def test_builds_the_same_accepts_only_value_preserving_node_rewrites(tmp_path):
    from trtdeploy import passes

    model = onnx.load(str(hand_classifier(tmp_path / "plain.onnx")))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    model.graph.node.insert(0, onnx.helper.make_node("Identity", [conv.input[1]], ["weight_alias"], name="alias"))
    conv.input[1] = "weight_alias"
    original = [n.SerializeToString() for n in model.graph.node]
    simplified = passes.name_nodes(passes.simplify(model))  # bypasses the alias: the same values
    assert len(simplified.graph.node) == len(original) - 1 and passes.builds_the_same(simplified, original)
    next(n for n in simplified.graph.node if n.op_type == "Conv").attribute[0].ints[0] += 1  # a real change
    assert not passes.builds_the_same(simplified, original)


@pytest.mark.slow
def test_fp32_engine_built_beside_the_checks_only_for_an_unchanged_graph(tmp_path):
    """The classifier (dynamic batch, a profile for it) builds while convert checks it, and that engine is kept;
    the Einsum file's passes rewrite its equation (TensorRT cannot parse the file as it is), so its engine is built
    from the rewritten graph. (A dynamic file without a profile is built after the checks, at their shapes.)"""
    static = tmp_path / "trt.py"  # the Einsum file is static
    static.write_text(f"_base_ = ['{CONFIGS}/_base_/onnx_config.py', '{CONFIGS}/_base_/backends/tensorrt.py']\n")
    dynamic = tmp_path / "trt_dynamic.py"
    dynamic.write_text(static.read_text() + "backend_config = dict(model_inputs=[dict(input_shapes=dict(images=dict("
                       "min_shape=[1, 3, 64, 64], opt_shape=[2, 3, 64, 64], max_shape=[4, 3, 64, 64])))])\n")
    kept = "the engine was built from the input file while its graph was checked"
    for model, cfg, reused in ((hand_classifier(tmp_path / "plain.onnx"), dynamic, True),
                               (einsum_graph(tmp_path / "ein.onnx"), static, False)):
        proc = run_cli("convert", cfg, model, "--work-dir", tmp_path / model.stem)
        assert (kept in proc.stderr) == reused, proc.stderr
        assert (tmp_path / model.stem / "end2end.engine").stat().st_size > 0

