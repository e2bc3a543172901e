"""INT8 logic: Q/DQ insertion, range methods, FP16-elsewhere, route choice, shape checks,
and the implicit calibrator (batches, cache) against a stand-in TensorRT module."""
from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from trtdeploy.backends.tensorrt.compat import TensorRT
from trtdeploy.backends.tensorrt.int8 import (CalibrationBatches, CalibrationCache, choose_route, fit_to_shape,
                                              make_calibrator)
from trtdeploy.calibration import CalibrationFile
from trtdeploy.calibration.qdq import check_calibration_shapes
from trtdeploy.config import ShapeRange, load_deploy_config
from trtdeploy.errors import BackendUnavailableError, ConfigError, ShapeError
from trtdeploy.passes import quantize

REPO = Path(__file__).resolve().parents[1]
INT8_CFG = REPO / "configs/classification/classification_tensorrt-int8_static-224x224.py"


class SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 5)
        self.proj = torch.nn.Parameter(torch.randn(5, 4))

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.head(x.mean((2, 3))) @ self.proj


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> onnx.ModelProto:
    path = tmp_path_factory.mktemp("q") / "small.onnx"
    torch.onnx.export(SmallNet().eval(), torch.rand(1, 3, 16, 16), path, input_names=["input"],
                      output_names=["output"], opset_version=17, dynamo=False)
    return onnx.load(str(path))


def feeds(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return [{"input": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(n)]


def run(model, feed):
    """``model`` on ONNX Runtime with each Q/DQ pair run as written (what TensorRT's int32-accumulating INT8
    computes); its fused u8 x s8 kernels saturate on CPUs without VNNI."""
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feed)[0]


def test_targets_are_conv_gemm_matmul_with_constant_weights(small_onnx):
    targets = quantize.quantization_targets(small_onnx)
    assert sorted(t.op_type for t in targets) == ["Conv", "Conv", "Gemm", "MatMul"]
    by_op = {t.op_type: t for t in targets}
    assert by_op["Gemm"].axis == 0 and by_op["MatMul"].axis == 1 and by_op["Conv"].axis == 0
    kept = quantize.quantization_targets(small_onnx, exclude_nodes=["*conv2*"], exclude_op_types=["MatMul"])
    assert sorted(t.node for t in kept) == sorted(t.node for t in targets if "conv2" not in t.node and t.op_type != "MatMul")


def test_qdq_graph_is_symmetric_per_channel_with_float_biases(small_onnx):
    targets = quantize.quantization_targets(small_onnx)
    ranges = quantize.collect_ranges(small_onnx, [t.activation for t in targets], lambda: feeds(), "minmax")
    q = quantize.insert_qdq(small_onnx, targets, ranges)
    onnx.checker.check_model(q)
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    qdq = [n for n in q.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len([n for n in qdq if n.op_type == "QuantizeLinear"]) == 4  # one per activation, none elsewhere
    assert all(not inits[n.input[2]].any() and inits[n.input[2]].dtype == np.int8 for n in qdq)  # zero points 0
    weight_dq = [n for n in qdq if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None]
    assert len(weight_dq) == 4 and all(inits[n.input[0]].dtype == np.int8 for n in weight_dq)
    assert all(inits[n.input[1]].shape == (inits[n.input[0]].shape[next(a.i for a in n.attribute if a.name == "axis")],)
               for n in weight_dq)  # one scale per output channel
    convs = [n for n in q.graph.node if n.op_type == "Conv"]
    assert all(inits[c.input[2]].dtype == np.float32 for c in convs)  # bias not quantized
    for feed in feeds(3, seed=1):
        ref, got = run(small_onnx, feed), run(q, feed)
        assert np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()


def test_range_methods_clip_outliers_that_minmax_keeps():
    rng = np.random.default_rng(0)
    values = np.abs(np.concatenate([rng.normal(0, 1, 200_000), [60.0]]))
    hist, _ = np.histogram(values, bins=2048, range=(0, values.max()))
    amax = float(values.max())
    minmax = quantize.RANGE_METHODS.get("minmax").threshold(hist, amax, {})
    entropy = quantize.RANGE_METHODS.get("entropy").threshold(hist, amax, {})
    pct = quantize.RANGE_METHODS.get("percentile").threshold(hist, amax, {"percentile": 99.9})
    assert minmax == amax
    assert 2.0 < entropy < 15.0  # clipped far below the single outlier, above most of the mass
    assert abs(pct - np.percentile(values, 99.9)) < 2 * amax / 2048
    relu = np.concatenate([np.zeros(700_000), np.abs(rng.normal(0, 1, 300_000))])  # mostly exact zeros
    hist, _ = np.histogram(relu, bins=2048, range=(0, relu.max()))
    assert quantize.RANGE_METHODS.get("entropy").threshold(hist, float(relu.max()), {}) > 2.5  # zeros don't pull it down
    with pytest.raises(ConfigError, match="percentile must be in"):
        quantize.RANGE_METHODS.get("percentile").threshold(hist, amax, {"percentile": 150})
    with pytest.raises(ConfigError, match="unknown calibration method 'entropie'.*did you mean 'entropy'"):
        quantize.collect_ranges(onnx.ModelProto(), [], lambda: [], "entropie")


def test_fp16_elsewhere_feeds_dequantized_fp16_straight_into_conv(small_onnx):
    targets = quantize.quantization_targets(small_onnx)
    ranges = quantize.collect_ranges(small_onnx, [t.activation for t in targets], lambda: feeds(), "entropy")
    q16 = quantize.to_fp16_keeping_qdq(quantize.insert_qdq(small_onnx, targets, ranges), keep_fp32_nodes=["*Gemm*"])
    producer = {o: n for n in q16.graph.node for o in n.output}
    conv = next(n for n in q16.graph.node if n.op_type == "Conv")
    assert [producer[i].op_type for i in conv.input[:2]] == ["DequantizeLinear", "DequantizeLinear"]
    inits = {i.name: i for i in q16.graph.initializer}
    assert inits[producer[conv.input[0]].input[1]].data_type == onnx.TensorProto.FLOAT16
    gemm = next(n for n in q16.graph.node if n.op_type == "Gemm")
    typed = onnx.shape_inference.infer_shapes(q16).graph
    elem = {v.name: v.type.tensor_type.elem_type for v in typed.value_info}
    assert elem[conv.input[0]] == onnx.TensorProto.FLOAT16
    assert elem[gemm.input[0]] == onnx.TensorProto.FLOAT  # kept in FP32 inside an FP16 graph
    assert q16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # I/O stays FP32


def test_sensitivity_ranks_layers_and_proposes_the_worst(small_onnx):
    targets = quantize.quantization_targets(small_onnx)
    ranges = quantize.collect_ranges(small_onnx, [t.activation for t in targets], lambda: feeds(), "minmax")
    broken = dict(ranges)
    worst = targets[1]
    broken[worst.activation] = ranges[worst.activation] * 0.05  # a far too narrow range ruins that layer alone
    scores = quantize.layer_sensitivity(small_onnx, targets, broken, feeds(4))
    assert scores[0][0] == worst and scores[0][1] > 3 * scores[1][1]
    assert quantize.propose_high_precision(scores) == [worst]


# -- routes and the implicit calibrator, against stand-in TensorRT modules -----------------
def fake_trt(version: str, flavour: str = "tensorrt", implicit: bool = True, strongly_typed: bool = True) -> TensorRT:
    class Calibrator:
        def __init__(self):
            self.base_init = True

    flags = {"FP16": 0, "OBEY_PRECISION_CONSTRAINTS": 1, **({"INT8": 2} if implicit else {})}
    module = SimpleNamespace(
        BuilderFlag=SimpleNamespace(__members__=flags, **flags),
        NetworkDefinitionCreationFlag=SimpleNamespace(__members__={"STRONGLY_TYPED": 0} if strongly_typed else {}),
        **({"IInt8EntropyCalibrator2": Calibrator, "IInt8MinMaxCalibrator": Calibrator} if implicit else {}))
    return TensorRT(module, flavour, version, "/fake", "pip")


def cfg_with(**common):
    cfg = load_deploy_config(INT8_CFG)
    cfg.common.update(common)
    return cfg


def test_route_follows_what_tensorrt_supports_and_the_config():
    assert choose_route(fake_trt("10.3"), cfg_with()) == "implicit"
    assert choose_route(fake_trt("10.3"), cfg_with(explicit_quantization=True)) == "explicit"
    assert choose_route(fake_trt("11.0", implicit=False), cfg_with()) == "explicit"
    assert choose_route(fake_trt("1.7", "tensorrt_rtx", implicit=False), cfg_with()) == "explicit"
    cfg = cfg_with()
    cfg.calib["method"] = "percentile"
    assert choose_route(fake_trt("10.3"), cfg) == "explicit"  # TensorRT has no percentile calibrator
    with pytest.raises(BackendUnavailableError, match="explicit_quantization=False asks for implicit calibration"):
        choose_route(fake_trt("1.7", "tensorrt_rtx", implicit=False), cfg_with(explicit_quantization=False))
    with pytest.raises(BackendUnavailableError, match="has no INT8 support"):
        choose_route(fake_trt("7.0", implicit=False, strongly_typed=False), cfg_with())


def write_calib(path: Path, shapes) -> Path:
    with h5py.File(path, "w") as f:
        g = f.create_group("calib_data/end2end/input")
        for i, s in enumerate(shapes):
            g.create_dataset(str(i), data=np.full(s, i + 1, np.float32))
    return path


def test_calibration_shapes_are_checked_against_the_profile(tmp_path):
    static = {"input": ShapeRange((1, 3, 224, 224), (1, 3, 224, 224), (1, 3, 224, 224))}
    with CalibrationFile(write_calib(tmp_path / "a.h5", [(1, 3, 224, 224)] * 2)) as f:
        check_calibration_shapes(f, {"input": (1, 3, 224, 224)}, static)
    with CalibrationFile(write_calib(tmp_path / "b.h5", [(1, 3, 224, 224), (1, 3, 800, 1216)])) as f:
        with pytest.raises(ShapeError, match="differing sizes .* profile is static 1x3x224x224"):
            check_calibration_shapes(f, {"input": (1, 3, 224, 224)}, static)
        dynamic = {"input": ShapeRange((1, 3, 224, 224), (4, 3, 224, 224), (16, 3, 320, 320))}
        with pytest.raises(ShapeError, match=r"sample 1 .* dimension 2 is 800, outside the engine profile \[224, 320\]"):
            check_calibration_shapes(f, {"input": (-1, 3, -1, -1)}, dynamic)
        # no profile (ONNX Runtime): the graph's dynamic dims take any size (issue 13: a file with dynamic H, W),
        # its fixed ones are checked
        check_calibration_shapes(f, {"input": (-1, 3, -1, -1)}, {})
        with pytest.raises(ShapeError, match=r"sample 1 .* dimension 2 is 800, outside the engine profile \[224, 224\]"):
            check_calibration_shapes(f, {"input": (-1, 3, 224, 224)}, {})


def test_calibrator_feeds_opt_shape_batches_and_keeps_its_cache(tmp_path, caplog):
    calib = write_calib(tmp_path / "c.h5", [(1, 3, 6, 6), (1, 3, 8, 8), (1, 3, 8, 8)])

    def samples():
        with CalibrationFile(calib) as f:
            yield from ({"input": s["input"]} for s in f)

    batches = CalibrationBatches(samples, {"input": (2, 3, 8, 8)})
    got = list(batches)
    assert [b["input"].shape for b in got] == [(2, 3, 8, 8)] * 2
    assert got[0]["input"][0, 0, 5, 5] == 1 and got[0]["input"][0, 0, 7, 7] == 0  # zero-padded 6x6 sample
    assert got[1]["input"][1, 0, 0, 0] == 3  # the short last batch is repeated, not dropped
    np.testing.assert_array_equal(fit_to_shape(np.ones((1, 3, 10, 4)), (1, 3, 8, 8))[0, 0].sum(axis=0), [8] * 4 + [0] * 4)

    trt = fake_trt("10.3")
    cache = CalibrationCache(tmp_path / "calib_cache.bin", {"calib_file": "abc", "method": "entropy"})
    fed = []

    class Buffer:
        def __init__(self, arr):
            fed.append(arr)

        def data_ptr(self):
            return 1000 + len(fed)

    calibrator = make_calibrator(trt, "entropy", batches, cache, to_device=Buffer)
    assert calibrator.base_init and calibrator.get_batch_size() == 2
    assert calibrator.get_batch(["input"]) == [1001]
    assert calibrator.get_batch(["input"]) == [1002]
    assert calibrator.get_batch(["input"]) is None
    assert calibrator.read_calibration_cache() is None
    blob = b"TRT-100300-EntropyCalibration2\ninput: 3c010a14\noutput: 3d8f5c29\n"
    calibrator.write_calibration_cache(blob)
    assert CalibrationCache(cache.path, cache.key).read() == blob
    assert CalibrationCache(cache.path, {**cache.key, "calib_file": "other"}).read() is None  # other data
    cache.path.write_bytes(b"\x00\xffgarbage")
    with caplog.at_level(logging.WARNING, logger="trtdeploy"):
        assert CalibrationCache(cache.path, cache.key).read() is None  # damaged -> recalibrate, no crash
    assert "damaged" in caplog.text


def test_sensitivity_needs_an_int8_work_dir(tmp_path):
    from trtdeploy.evaluation.precision import int8_sensitivity
    from trtdeploy.errors import ModelError

    with pytest.raises(ModelError, match="does not exist; pass the --work-dir of an INT8"):
        int8_sensitivity(tmp_path / "missing")
    with pytest.raises(ModelError, match="holds no INT8 engine"):
        int8_sensitivity(tmp_path)
    with pytest.raises(ConfigError, match="--samples must be an integer >= 1"):
        int8_sensitivity(tmp_path, num_samples=0)


def test_implicit_plan_configures_flag_calibrator_profile_and_kept_layers(tmp_path, small_onnx):
    from trtdeploy.backends.tensorrt.int8 import prepare_int8

    onnx.save(small_onnx, tmp_path / "end2end.onnx")
    write_calib(tmp_path / "calib_data.h5", [(1, 3, 16, 16)] * 3)
    trt = fake_trt("10.3")
    trt.module.DataType = SimpleNamespace(HALF="half", FLOAT="float")
    cfg = cfg_with()
    cfg.calib["exclude_nodes"] = ["/conv2/*"]
    profile = {"input": ShapeRange((1, 3, 16, 16), (2, 3, 16, 16), (4, 3, 16, 16))}
    plan = prepare_int8(trt, tmp_path / "end2end.onnx", tmp_path, cfg, False, profile)
    assert plan.onnx_path == tmp_path / "end2end.onnx" and plan.facts["int8"]["route"] == "implicit"

    class Recorder(SimpleNamespace):
        def __getattr__(self, name):  # any builder/config call is recorded as (name, args)
            return lambda *args: self.calls.append((name, args)) or self

    builder, config = Recorder(calls=[]), Recorder(calls=[])
    layers = [SimpleNamespace(name="/conv1/Conv", precision=None), SimpleNamespace(name="/conv2/Conv", precision=None)]
    network = SimpleNamespace(num_layers=2, get_layer=lambda i: layers[i])
    plan.configure(builder, config, network)
    assert ("set_flag", (trt.module.BuilderFlag.INT8,)) in config.calls
    assert ("set_flag", (trt.module.BuilderFlag.OBEY_PRECISION_CONSTRAINTS,)) in config.calls
    assert config.int8_calibrator.get_batch_size() == 2  # the profile's opt batch
    assert ("set_shape", ("input", (2, 3, 16, 16), (2, 3, 16, 16), (2, 3, 16, 16))) in builder.calls
    assert [layer.precision for layer in layers] == [None, "half"]  # excluded layer kept in FP16 (fp16_mode)
