"""Models that do not take images (a text model: int64 token ids and a mask, both dynamic): converted from an ONNX
file with a config of one line, then fed from .npz tensors (run, compare) or seeded random data of the right kind
(0/1 integers for ids and masks, every input given a shape) by compare and profile."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import run_cli
from trtdeploy.cli.main import main

VOCAB, WIDTH = 50, 8


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """logits[b, 3] = mean over tokens of embedding[ids] * mask, then a Gemm: ids out of range fail on ONNX Runtime."""
    root = tmp_path_factory.mktemp("text")
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["x"]),
             helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m", "axis2"], ["m3"]),
             helper.make_node("Mul", ["x", "m3"], ["xm"]),
             helper.make_node("ReduceMean", ["xm"], ["pooled"], axes=[1], keepdims=0),
             helper.make_node("Gemm", ["pooled", "w"], ["logits"])]
    inits = [numpy_helper.from_array(rng.standard_normal((VOCAB, WIDTH)).astype(np.float32), "emb"),
             numpy_helper.from_array(rng.standard_normal((WIDTH, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.array([2], np.int64), "axis2")]
    graph = helper.make_graph(nodes, "text", [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])], inits)
    path = root / "text.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    cfg = root / "ort.py"
    cfg.write_text("backend_config = dict(type='onnxruntime')\n")  # no onnx_config: the file brings names and axes
    work = root / "work"
    run_cli("convert", cfg, path, "--work-dir", work)
    feeds = root / "tokens.npz"
    np.savez(feeds, input_ids=rng.integers(0, VOCAB, (2, 5)), attention_mask=np.ones((2, 5), np.int64))
    return {"onnx": path, "work": work, "feeds": feeds, "root": root}


def test_run_feeds_npz_tensors_and_prints_each_output(text_model, capsys):
    assert main(["run", str(text_model["work"]), "--input", str(text_model["feeds"])]) == 0
    out = capsys.readouterr().out
    assert out.startswith("logits: float32 [2, 3]  [")


def test_compare_takes_npz_and_random_integers_within_any_vocabulary(text_model, capsys):
    work, path = text_model["work"] / "end2end.onnx", text_model["onnx"]
    assert main(["compare", str(work), str(path), "--input", str(text_model["feeds"])]) == 0
    assert f"from tensors {text_model['feeds']}" in capsys.readouterr().out
    # random data: the integer inputs get 0/1 (valid ids and mask values), every input a shape from --shape
    assert main(["compare", str(work), str(path), "--shape", "input_ids:3x7", "--shape", "attention_mask:3x7"]) == 0
    out = capsys.readouterr().out
    assert "inputs: input_ids [3, 7], attention_mask [3, 7] from random normal data (seed 0)" in out
    assert "PASSED" in out


def test_profile_times_every_input(text_model, capsys):
    assert main(["profile", str(text_model["work"]), "--shape", "input_ids:2x4,attention_mask:2x4"]) == 0
    assert "p50" in capsys.readouterr().out


def test_npz_naming_other_arrays_is_refused_with_both_lists(text_model, capsys):
    bad = text_model["root"] / "bad.npz"
    np.savez(bad, ids=np.zeros((1, 2), np.int64))
    code = main(["run", str(text_model["work"]), "--input", str(bad)])
    err = capsys.readouterr().err
    assert code == 10 and "holds arrays ['ids'] but the model's inputs are ['input_ids', 'attention_mask']" in err
