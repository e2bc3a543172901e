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
    summary = run_cli("convert", cfg, path, "--work-dir", work).stdout
    feeds = root / "tokens.npz"
    np.savez(feeds, input_ids=rng.integers(0, VOCAB, (2, 5)), attention_mask=np.ones((2, 5), np.int64))
    return {"onnx": path, "work": work, "feeds": feeds, "root": root, "summary": summary}


def test_convert_summary_suggests_tensor_inputs_and_names_the_file_as_reference(text_model):
    summary = text_model["summary"]
    assert "vs text.onnx   not checked: run the compare command below with an .npz of its inputs" in summary
    assert f"trtdeploy run {text_model['work'] / 'end2end.onnx'} --input INPUTS.npz" in summary
    assert "--dataset VAL_FOLDER" not in summary  # `test` scores images


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
    assert main(["run", str(text_model["work"]), "--input", str(text_model["root"] / "missing.npz")]) == 10
    assert "missing.npz does not exist; pass an .npz of arrays named after" in capsys.readouterr().err


TEXT_MODULE = '''
import torch


class TextClassifier(torch.nn.Module):
    """Embedding, masked self-attention (as a BERT layer writes it: an additive mask), mean pooling over the real
    tokens, 3 classes."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 16)
        self.qkv = torch.nn.Linear(16, 48)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, input_ids, attention_mask):
        x = self.emb(input_ids)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        m = attention_mask.unsqueeze(-1).to(x.dtype)
        scores = q @ k.transpose(1, 2) / 4.0 + (1.0 - m.transpose(1, 2)) * -10000.0
        x = x + scores.softmax(-1) @ v
        return self.head((x * m).sum(1) / m.sum(1).clamp(min=1))


def build():
    torch.manual_seed(0)
    return TextClassifier().eval()
'''

TEXT_CONFIG = '''
onnx_config = dict(input_names=['input_ids', 'attention_mask'], output_names=['logits'],
                   input_dtypes=dict(input_ids='int64', attention_mask='int64'),
                   dynamic_axes={'input_ids': {0: 'batch', 1: 'tokens'}, 'attention_mask': {0: 'batch', 1: 'tokens'},
                                 'logits': {0: 'batch'}})
codebase_config = dict(task='Classification')
backend_config = dict(type='BACKEND', model_inputs=[dict(input_shapes=dict(
    input_ids=dict(min_shape=[1, 4], opt_shape=[2, 16], max_shape=[4, 64]),
    attention_mask=dict(min_shape=[1, 4], opt_shape=[2, 16], max_shape=[4, 64])))])
'''


def test_pytorch_text_model_with_two_integer_inputs_exports_compares_and_builds(tmp_path):
    """convert traces every onnx_config input at its profile's opt shape and declared dtype; compare feeds the same
    .npz to PyTorch and ONNX Runtime; TensorRT-RTX builds the graph with the two-input profile."""
    from conftest import build_in_child

    (tmp_path / "text_models.py").write_text(TEXT_MODULE)
    for backend in ("onnxruntime", "tensorrt"):
        (tmp_path / f"{backend}.py").write_text(TEXT_CONFIG.replace("BACKEND", backend))
    model = f"{tmp_path / 'text_models.py'}:build"
    run_cli("convert", tmp_path / "onnxruntime.py", model, "--work-dir", tmp_path / "work")
    graph = onnx.load(str(tmp_path / "work/end2end.onnx"))
    assert [(i.name, i.type.tensor_type.elem_type) for i in graph.graph.input] == [
        ("input_ids", TensorProto.INT64), ("attention_mask", TensorProto.INT64)]
    tokens = tmp_path / "tokens.npz"
    mask = np.ones((3, 9), np.int64)
    mask[1, 5:] = 0  # a padded sequence: the mask must reach the attention in both
    np.savez(tokens, input_ids=np.random.default_rng(1).integers(0, 50, (3, 9)), attention_mask=mask)
    out = run_cli("compare", tmp_path / "work", "--model", model, "--input", tokens).stdout
    assert "PASSED: 1 output comparisons within tolerance" in out and "pytorch" in out
    built = build_in_child(tmp_path / "work/end2end.onnx", tmp_path / "trt", tmp_path / "tensorrt.py")
    assert built["size"] > 0 and set(built["profiles"][0]) == {"input_ids", "attention_mask"}


def test_an_input_without_a_shape_or_with_an_unknown_dtype_is_refused(tmp_path):
    from trtdeploy.config import load_deploy_config
    from trtdeploy.errors import ConfigError
    from trtdeploy.tasks import get_task

    bad = TEXT_CONFIG.replace("BACKEND", "onnxruntime").replace("input_ids='int64'", "input_ids='long'")
    (tmp_path / "bad.py").write_text(bad)
    with pytest.raises(ConfigError, match=r"onnx_config.input_dtypes.input_ids must be one of float32, .*got 'long'"):
        load_deploy_config(tmp_path / "bad.py")
    cfg = load_deploy_config({"onnx_config": {"input_names": ["input_ids"], "input_dtypes": {"input_ids": "int64"}},
                              "backend_config": {"type": "onnxruntime"}})
    with pytest.raises(ConfigError, match=r"input 'input_ids' needs a shape to export with: give backend_config"):
        get_task("Classification")().example_inputs(cfg)


HF_MODULE = '''
import torch
from transformers import BertConfig, BertForSequenceClassification


def tiny_bert():
    """A two-layer BERT built from its config (random weights, nothing downloaded); it returns a ModelOutput."""
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=4, intermediate_size=64,
                                                    max_position_embeddings=128, num_labels=3)).eval()
'''


@pytest.mark.slow
def test_hugging_face_bert_converts_to_fp16_engine_and_matches_pytorch(tmp_path):
    """transformers' BERT (dict-like ModelOutput, int64 ids and mask): the FP16 numerics check runs on integer
    inputs, TensorRT-RTX builds the two-input profile, and its FP16 graph on ONNX Runtime matches PyTorch."""
    (tmp_path / "hf_models.py").write_text(HF_MODULE)
    cfg = tmp_path / "bert_fp16.py"
    cfg.write_text(TEXT_CONFIG.replace("type='BACKEND'", "type='tensorrt', common_config=dict(fp16_mode=True)"))
    model = f"{tmp_path / 'hf_models.py'}:tiny_bert"
    out = run_cli("convert", cfg, model, "--work-dir", tmp_path / "work").stdout
    assert "input_ids min 1x4 opt 2x16 max 4x64; attention_mask min 1x4 opt 2x16 max 4x64" in out
    assert (tmp_path / "work/end2end.engine").stat().st_size > 0
    tokens = tmp_path / "tokens.npz"
    mask = np.ones((2, 12), np.int64)
    mask[1, 7:] = 0
    np.savez(tokens, input_ids=np.random.default_rng(2).integers(0, 100, (2, 12)), attention_mask=mask)
    out = run_cli("compare", tmp_path / "work", "--model", model, "--input", tokens, "--atol", "1e-3").stdout
    assert "onnxruntime fp16 (end2end_fp16.onnx, stand-in for end2end.engine)  logits" in out
    assert "PASSED: 1 output comparisons within tolerance" in out
