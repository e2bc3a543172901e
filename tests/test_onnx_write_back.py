"""Issue 13 speed: convert writes an ONNX file that no pass changes back as its own bytes (no serialisation of
its weights), and a changed one as the changed graph."""
from __future__ import annotations

from pathlib import Path

import onnx

import trtdeploy
from conftest import CONFIGS
from onnx_files import hand_classifier


def _cfg(folder: Path) -> Path:
    path = folder / "cfg.py"
    path.write_text(f"_base_ = ['{CONFIGS}/_base_/onnx_config.py', '{CONFIGS}/_base_/backends/onnxruntime.py']\n"
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
