"""INT8 issue 15: the MSE range method, where each backend's scheme puts Q/DQ (TensorRT: residual Add, pooling,
Concat with one scale, attention MatMul; ONNX Runtime: patterns it fuses into integer kernels), and both graphs
running: ONNX Runtime INT8 through `trtdeploy convert` and `run`, TensorRT's through a TensorRT-RTX build."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from conftest import CONFIGS, build_in_child, run_cli
from trtdeploy.backends.onnxruntime import qdq_scheme as onnxruntime_scheme  # noqa: F401  (registers it)
from trtdeploy.backends.tensorrt import qdq_scheme as tensorrt_scheme  # noqa: F401
from trtdeploy.passes import quantize

SIZE = 16


class Net(torch.nn.Module):
    """Stem + MaxPool, an identity and a downsampling residual block, a Concat, one attention layer over the
    4x4 positions (Softmax, LayerNorm), global average pooling and a head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        conv = torch.nn.Conv2d
        self.stem, self.c1, self.c2 = conv(3, 8, 3, padding=1), conv(8, 8, 3, padding=1), conv(8, 8, 3, padding=1)
        self.d1, self.d2, self.down = conv(8, 16, 3, 2, 1), conv(16, 16, 3, padding=1), conv(8, 16, 1, 2)
        self.a, self.b, self.mix = conv(16, 8, 1), conv(16, 8, 1), conv(16, 16, 1)
        self.qkv, self.norm = torch.nn.Linear(16, 48), torch.nn.LayerNorm(16)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x):
        relu = torch.relu
        x = torch.nn.functional.max_pool2d(relu(self.stem(x)), 2)
        x = relu(self.c2(relu(self.c1(x))) + x)
        x = relu(self.d2(relu(self.d1(x))) + self.down(x))
        x = self.mix(torch.cat([relu(self.a(x)), relu(self.b(x))], 1))
        tokens = x.flatten(2).transpose(1, 2)
        q, k, v = self.qkv(self.norm(tokens)).chunk(3, -1)
        x = x + (torch.softmax(q @ k.transpose(1, 2) / 4.0, -1) @ v).transpose(1, 2).reshape(x.shape)
        return self.head(torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


@pytest.fixture(scope="module")
def net_onnx(tmp_path_factory) -> onnx.ModelProto:
    path = tmp_path_factory.mktemp("placement") / "net.onnx"
    torch.onnx.export(Net().eval(), torch.rand(1, 3, SIZE, SIZE), path, input_names=["input"],
                      output_names=["output"], opset_version=17, dynamo=False)
    return onnx.load(str(path))


def feeds(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return [{"input": rng.normal(0, 1, (1, 3, SIZE, SIZE)).astype(np.float32)} for _ in range(n)]


def quantized(model: onnx.ModelProto, scheme: str, method: str = "minmax") -> tuple[onnx.ModelProto, quantize.Placement]:
    targets = quantize.quantization_targets(model)
    placement = quantize.place(model, targets, scheme)
    ranges = quantize.collect_ranges(model, placement.tensors, feeds, method,
                                     levels=quantize.activation_levels(model, placement, scheme))
    return quantize.insert_qdq(model, targets, ranges, placement, scheme), placement


def by_reader(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    return readers


def test_mse_threshold_has_less_quantization_error_than_minmax_and_entropy():
    rng = np.random.default_rng(0)
    values = np.abs(np.concatenate([rng.laplace(0, 1, 100_000), [40.0, -35.0]]))
    amax = float(values.max())
    hist, _ = np.histogram(values, bins=quantize.NUM_BINS, range=(0, amax))

    def error(threshold: float) -> float:
        step = threshold / quantize.INT8_MAX
        return float(np.mean((np.minimum(np.round(values / step), quantize.INT8_MAX) * step - values) ** 2))

    found = {m: quantize.RANGE_METHODS.get(m).threshold(hist, amax, {}) for m in ("mse", "minmax", "entropy")}
    assert error(found["mse"]) < error(found["minmax"]) and error(found["mse"]) < error(found["entropy"])
    assert quantize.DEFAULT_METHOD == "mse"
    # uint8 after Relu has twice the levels, so the best threshold clips less
    assert quantize.RANGE_METHODS.get("mse").threshold(hist, amax, {"levels": 255}) > found["mse"]


def test_tensorrt_placement_quantizes_residual_add_pooling_concat_and_attention(net_onnx):
    q, placement = quantized(net_onnx, "tensorrt")
    producer = {o: n for n in net_onnx.graph.node for o in n.output}
    readers = {t: {n.split("/")[-1] for n in names} for t, names in placement.edges.items()}
    add1, add2 = [n for n in net_onnx.graph.node if n.op_type == "Add" and all(i in producer for i in n.input)][:2]
    # identity block: the skip input (MaxPool output) is INT8, the Conv output is left for TensorRT to fuse
    assert [i in placement.edges and add1.name.split("/")[-1] in readers[i] for i in add1.input] == [False, True]
    # downsampling block: both inputs are Conv outputs; the 1x1 shortcut (shorter branch) is the one quantized
    assert {producer[i].name for i in add2.input if i in placement.edges and add2.name.split("/")[-1] in readers[i]} \
        == {"/down/Conv"}
    for pool in ("MaxPool", "GlobalAveragePool"):
        node = next(n for n in net_onnx.graph.node if n.op_type == pool)
        assert node.input[0] in placement.edges
    attention = [n for n in net_onnx.graph.node if n.op_type == "MatMul" and all(i in producer for i in n.input)]
    assert len(attention) == 2 and all(i in placement.edges for n in attention for i in n.input)
    for op in ("Softmax", "LayerNormalization"):  # high precision: their inputs are never quantized
        node = next(n for n in net_onnx.graph.node if n.op_type == op)
        assert node.input[0] not in placement.edges
    concat = next(n for n in net_onnx.graph.node if n.op_type == "Concat" and n.input[0] in producer
                  and producer[n.input[0]].op_type == "Relu")
    scales = {numpy_helper.to_array(i).item() for i in q.graph.initializer
              if i.name in {f"{t}_scale" for t in (*concat.input, concat.output[0])}}
    assert len(scales) == 1  # one scale across the Concat: TensorRT concatenates in INT8 without requantizing
    zero_points = [numpy_helper.to_array(i) for i in q.graph.initializer if i.name.endswith("_zero_point")]
    assert all(z.dtype == np.int8 and not z.any() for z in zero_points)  # symmetric, as TensorRT-RTX requires
    assert all(i.data_type == onnx.TensorProto.FLOAT for i in q.graph.initializer if i.name.endswith(".bias"))
    kept = {t.node for t in quantize.quantization_targets(net_onnx)} - {
        t.node for t in quantize.quantization_targets(net_onnx, output_layers=False)}
    assert kept == {"/head/Gemm"}  # convert's default: the layer writing the logits stays high precision


def test_onnxruntime_scheme_fuses_into_integer_kernels(net_onnx, tmp_path):
    q, _ = quantized(net_onnx, "onnxruntime")
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = ort.InferenceSession(q.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    ops = {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert {"QLinearConv", "QLinearAdd", "QLinearConcat", "QLinearGlobalAveragePool"} <= ops
    assert "Conv" not in ops and "FusedConv" not in ops  # no float convolution left
    reference = ort.InferenceSession(net_onnx.SerializeToString(), providers=["CPUExecutionProvider"])
    for feed in feeds(3, seed=1):
        ref, got = reference.run(None, feed)[0], session.run(None, feed)[0]
        assert np.abs(got - ref).max() <= 0.1 * np.abs(ref).max()
    zero_points = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer if i.name.endswith("_zero_point")}
    relu_out = next(n for n in net_onnx.graph.node if n.op_type == "Relu").output[0]
    assert zero_points[f"{relu_out}_zero_point"].dtype == np.uint8 and zero_points[f"{relu_out}_zero_point"] == 0
    assert zero_points["input_zero_point"] == 128  # signed input: uint8 around 128
    biases = [n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.input[0].endswith("_int32")]
    assert len(biases) == len([n for n in net_onnx.graph.node if n.op_type in ("Conv", "Gemm")])  # int32 biases


@pytest.mark.slow
def test_tensorrt_qdq_graph_builds_with_tensorrt_rtx(net_onnx, tmp_path):
    q, _ = quantized(net_onnx, "tensorrt", "mse")
    onnx.save(q, tmp_path / "net_int8.onnx")
    cfg = tmp_path / "deploy.py"
    cfg.write_text(f"_base_ = ['{CONFIGS}/classification/classification_tensorrt_static-224x224.py']\n"
                   f"backend_config = dict(model_inputs=[dict(input_shapes=dict(input=dict(min_shape=[1, 3, {SIZE}, "
                   f"{SIZE}], opt_shape=[1, 3, {SIZE}, {SIZE}], max_shape=[1, 3, {SIZE}, {SIZE}])))])\n")
    assert build_in_child(tmp_path / "net_int8.onnx", tmp_path / "work", cfg)["size"] > 0


TINY = '''
import torch


def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 3))
'''


@pytest.mark.slow
def test_onnxruntime_int8_convert_writes_a_fused_graph_that_run_serves(tmp_path, demo_img):
    from PIL import Image

    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(images / f"{i}.png")
    (tmp_path / "tiny.py").write_text(TINY)
    (tmp_path / "calib.py").write_text(f"data = dict(val=dict(type='ImageFolder', data_prefix='{images}'))\n")
    (tmp_path / "deploy.py").write_text(f"_base_ = ['{CONFIGS}/classification/classification_onnxruntime-int8_static.py']\n"
                                        f"onnx_config = dict(input_shape=[32, 32])\n")
    work = tmp_path / "work"
    run_cli("convert", tmp_path / "deploy.py", f"{tmp_path / 'tiny.py'}:build", "--work-dir", work,
            "--calib-dataset-cfg", tmp_path / "calib.py")
    sidecar = json.loads((work / "end2end_int8.onnx.json").read_text())
    assert sidecar["backend"] == "onnxruntime" and sidecar["precision"] == "int8"
    assert sidecar["int8"]["scheme"] == "onnxruntime" and sidecar["int8"]["method"] == "mse"
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(work / "end2end_int8.onnx"), opts, providers=["CPUExecutionProvider"])
    assert "QLinearConv" in {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    out = run_cli("run", work / "end2end_int8.onnx", "--input", demo_img).stdout
    assert "label" in out or "class" in out, out


def _conv_head(bias: list[float]) -> onnx.ModelProto:
    """x [1, 1, 4, 4] -> Conv with weights 1e-3 and ``bias`` -> logits; then Sigmoid, as a detector's class head."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["logits"], name="head"),
             helper.make_node("Sigmoid", ["logits"], ["scores"], name="sigmoid")]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [numpy_helper.from_array(np.full((2, 1, 1, 1), 1e-3, np.float32), "w"),
                               numpy_helper.from_array(np.array(bias, np.float32), "b")])
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])


def test_onnxruntime_int32_bias_that_would_clip_stays_float():
    """Issue 13 (a random-init YOLOv8n's class scores): an input whose range is tiny makes the int32 bias scale
    (input scale x weight scale) so small that a bias of -11.5 needs more than 2^31 steps; int32 clipped it to
    about -0.01, so every score was 0.5. Such a bias stays float; a bias that fits still goes through int32."""
    model = _conv_head([-11.5, 0.1])
    targets = quantize.quantization_targets(model)
    placement = quantize.place(model, targets, "onnxruntime")
    x = np.zeros((1, 1, 4, 4), np.float32)
    for amax, int32 in ((1e-6, False), (10.0, True)):
        qdq = quantize.insert_qdq(model, targets, {t: amax for t in placement.tensors}, placement, "onnxruntime")
        assert any(i.name.endswith("b_int32") for i in qdq.graph.initializer) == int32
        scores = ort.InferenceSession(qdq.SerializeToString()).run(None, {"x": x})[0]
        assert np.allclose(scores[0, :, 0, 0], 1 / (1 + np.exp([11.5, -0.1])), atol=1e-3), scores[0, :, 0, 0]
