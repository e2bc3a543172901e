"""Issue 7: `trtdeploy inspect` on ONNX and on an engine built by TensorRT-RTX on the CPU (read from its sidecar)."""
from __future__ import annotations

import json
import shutil

from conftest import run_cli
from trtdeploy.cli.main import main
from trtdeploy.evaluation import format_inspection


def test_inspect_onnx(tiny_classifier, capsys):
    onnx_file = tiny_classifier["work"] / "end2end.onnx"
    assert main(["inspect", str(onnx_file), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "onnx" and info["opsets"] == {"ai.onnx": 17}
    assert info["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 3, "height", "width"]}]
    assert info["outputs"][0]["name"] == "output"
    assert info["op_histogram"]["Conv"] == 2 and info["op_histogram"]["Gemm"] == 1
    assert info["parameters"] == 3 * 8 * 9 + 8 + 8 * 8 * 9 + 8 + 8 * 3 + 3
    assert info["custom_ops"] == []
    assert info["backends"]["onnxruntime"]["supported"] and info["backends"]["tensorrt"]["supported"]
    assert main(["inspect", str(onnx_file)]) == 0
    text = capsys.readouterr().out
    assert "opsets: ai.onnx 17" in text and "tensorrt: can build every node" in text


def test_inspect_engine_built_by_tensorrt_rtx(tiny_classifier):
    """TensorRT-RTX cannot deserialize here (no GPU), so the facts come from the sidecar, with TensorRT's reason."""
    engine = tiny_classifier["work"] / "end2end.engine"
    info = json.loads(run_cli("inspect", engine, "--json").stdout)
    assert info["kind"] == "engine" and info["source"] == "sidecar end2end.engine.json"
    assert "cannot deserialize it here" in info["tensorrt_note"]
    assert info["flavour"] == "tensorrt_rtx" and info["precision"] == "fp16" and info["built_from"] == "end2end_fp16.onnx"
    assert info["compute_capabilities"] and all(c.startswith("SM") for c in info["compute_capabilities"])
    assert info["profiles"] == [{"input": {"min_shape": [1, 3, 224, 224], "opt_shape": [4, 3, 224, 224],
                                           "max_shape": [16, 3, 320, 320]}}]
    assert info["inputs"][0]["name"] == "input" and info["outputs"][0]["name"] == "output"
    text = format_inspection(info)
    assert "precision fp16; built with TensorRT-RTX" in text and "1x3x224x224  4x3x224x224  16x3x320x320" in text
    int8 = {"route": "explicit", "method": "entropy", "quantized_layers": ["/0/Conv", "/2/Conv"], "fp32_nodes": ["/6/Gemm"]}
    assert "INT8: explicit route, entropy ranges, 2 quantized layers, kept in higher precision: /6/Gemm" in \
        format_inspection({**info, "int8": int8})


def test_bad_input(tiny_classifier, tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "none.onnx")]) == 3
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "junk.onnx").write_bytes(b"\x08garbage")
    assert main(["inspect", str(tmp_path / "junk.onnx")]) == 3
    assert "is not a readable ONNX file" in capsys.readouterr().err
    (tmp_path / "model.pt").write_bytes(b"")
    assert main(["inspect", str(tmp_path / "model.pt")]) == 3
    assert "cannot tell the backend" in capsys.readouterr().err
    shutil.copy(tiny_classifier["work"] / "end2end.engine", tmp_path / "alone.engine")
    assert main(["inspect", str(tmp_path / "alone.engine")]) == 3  # TensorRT fails before any build: safe in-process
    err = capsys.readouterr().err
    assert "has no sidecar" in err and "cannot deserialize" in err
