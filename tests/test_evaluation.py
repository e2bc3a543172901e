"""Issue 7, the evaluation API: metrics against hand-computed values, tolerances, comparison, bisect, inspection."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from trtdeploy.config import load_deploy_config
from trtdeploy.errors import ConfigError, DatasetError
from trtdeploy.evaluation import (EvalDataset, Tolerances, bisect_onnx, check_config_matches,
                                  compare_arrays, compare_outputs, metric_for, open_dataset, parse_tolerance,
                                  worst_case)
from trtdeploy.evaluation.inspection import inspect_file
from trtdeploy.tasks.segmentation import MeanIoU
from trtdeploy.backends.base import TensorSpec
from trtdeploy.passes import to_fp16_body

from conftest import CONFIGS


def _rect(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


@pytest.fixture
def coco_set(tmp_path):
    """Two 100x100 images; 'cat' thrice, 'dog' once; boxes given with matching rectangle polygons."""
    for i in (1, 2):
        Image.new("RGB", (100, 100)).save(tmp_path / f"im{i}.png")
    boxes = [(1, 1, [10, 10, 20, 20]), (1, 1, [50, 50, 30, 30]), (2, 1, [5, 5, 40, 40]), (2, 2, [60, 10, 30, 50])]
    gt = {"images": [{"id": i, "file_name": f"im{i}.png", "width": 100, "height": 100} for i in (1, 2)],
          "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
          "annotations": [{"id": k + 1, "image_id": img, "category_id": cat, "bbox": box, "segmentation": _rect(*box),
                           "area": box[2] * box[3], "iscrowd": 0} for k, (img, cat, box) in enumerate(boxes)]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    return tmp_path / "gt.json"


def _box_mask(box, shape=(100, 100)):
    mask = np.zeros(shape, bool)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = True
    return mask


def test_coco_map_equals_hand_computed_value(coco_set):
    """cat: hits at scores .9 and .7 around a false positive at .8, one cat missed -> precision 1 up to recall 1/3,
    2/3 up to recall 2/3, then 0: AP = (34 * 1 + 33 * 2/3) / 101 on COCO's 101 recall points, at every IoU (the hits
    are exact). dog: one exact hit, AP = 1. mAP = (56/101 + 1) / 2."""
    dataset = open_dataset(coco_set)
    # The model's class indices differ from the category ids: the mapping goes by class name.
    metric = metric_for("InstanceSegmentation", dataset, ["background", "dog", "cat"])
    cat, dog = 2, 1
    predictions = {
        1: {"boxes": [[10, 10, 30, 30], [70, 0, 90, 20], [50, 50, 80, 80]], "scores": [0.9, 0.8, 0.7],
            "labels": [cat, cat, cat]},
        2: {"boxes": [[60, 10, 90, 60]], "scores": [1.0], "labels": [dog]},
    }
    for sample in dataset.samples:
        pred = predictions[sample.image_id]
        pred["masks"] = np.stack([_box_mask([int(v) for v in b]) for b in pred["boxes"]])
        metric.update(pred, sample)
    scores = metric.compute()
    expected = 100 * (56 / 101 + 1) / 2
    for key in ("bbox mAP", "bbox mAP50", "bbox mAP75", "segm mAP"):
        assert scores[key] == pytest.approx(expected, abs=1e-6), key


def test_coco_map_is_zero_without_detections(coco_set):
    dataset = open_dataset(coco_set)
    metric = metric_for("ObjectDetection", dataset, None)
    for sample in dataset.samples:
        metric.update({"boxes": np.zeros((0, 4)), "scores": [], "labels": []}, sample)
    assert metric.compute()["bbox mAP"] == 0.0


def test_miou_hand_computed():
    """pred [[0,1],[1,1]] vs truth [[0,1],[0,1]]: class 0 IoU 1/2, class 1 IoU 2/3; 3 of 4 pixels right."""
    dataset = EvalDataset("x.json", [], ["a"], coco=type("C", (), {"categories": [{"id": 1, "name": "a"}]})())
    metric = MeanIoU(dataset, None)
    metric.add(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 1]]))
    scores = metric.compute()
    assert scores["mIoU"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)
    assert scores["aAcc"] == pytest.approx(75.0)


def test_miou_from_coco_polygons(coco_set):
    """Ground truth is rasterised from the polygons: predicting exactly those rectangles scores 100."""
    dataset = open_dataset(coco_set)
    metric = metric_for("Segmentation", dataset, ["background", "cat", "dog"])
    for sample in dataset.samples:
        pred = np.zeros((100, 100), np.int64)
        for ann in dataset.coco.annotations[sample.image_id]:
            x, y, w, h = ann["bbox"]
            pred[y:y + h, x:x + w] = ann["category_id"]
        metric.update(pred, sample)
    assert metric.compute()["mIoU"] == pytest.approx(100.0)


def test_top_k_accuracy_maps_folders_to_model_classes_by_name(tmp_path):
    for name in ("ant", "cat", "zebra"):
        (tmp_path / name).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / name / "0.png")
    dataset = open_dataset(tmp_path)
    metric = metric_for("Classification", dataset, ["zebra", "ant", "cat"])
    ranked = {"ant": [1, 0, 2], "cat": [0, 1, 2], "zebra": [0, 2, 1]}  # cat's true class 2 is only third
    for sample in dataset.samples:
        metric.update([(i, "", 0.0) for i in ranked[sample.path.parent.name]], sample)
    assert metric.compute() == {"top-1": pytest.approx(200 / 3), "top-5": 100.0}


def test_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "flat.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="no class sub-folders"):
        open_dataset(tmp_path)
    (tmp_path / "a.json").write_text(json.dumps({"images": [{"id": 1, "file_name": "nope.png"}],
                                                 "categories": [{"id": 1, "name": "x"}]}))
    with pytest.raises(DatasetError, match="1 of 1 images .* do not exist"):
        open_dataset(tmp_path / "a.json")


@pytest.mark.parametrize("values, expected", [
    (["1e-3"], {"": 1e-3}), (["dets:0.5", "2"], {"dets": 0.5, "": 2.0}), ("0", {"": 0.0}),
    ({"dets": 0.1}, {"dets": 0.1}), (0.25, {"": 0.25}), (["a:b:1e-2"], {"a:b": 1e-2})])
def test_tolerances_parse(values, expected):
    assert parse_tolerance(values, "atol") == expected


@pytest.mark.parametrize("kind, value", [("atol", "abc"), ("atol", "-1"), ("rtol", "nan"), ("rtol", "inf"),
                                         ("atol", ":3"), ("cosine", "1.5"), ("atol", "1e-3x"), ("atol", "")])
def test_tolerances_reject_what_does_not_parse(kind, value):
    with pytest.raises(ConfigError, match=f"--{kind}"):
        parse_tolerance([value], kind)


def test_tolerances_command_line_overrides_config_per_output():
    tol = Tolerances.from_sources({"atol": ["dets:0.5"]}, {"atol": 1e-2, "rtol": {"dets": 0.0}})
    assert tol.for_output("dets") == (0.5, 0.0, 0.999)
    assert tol.for_output("labels") == (1e-2, 1e-3, 0.999)
    with pytest.raises(ConfigError, match="unknown field"):
        Tolerances.from_sources({}, {"atool": 1})


def test_compare_arrays_applies_allclose_rule_and_cosine():
    ref = np.array([1.0, -2.0, 100.0])
    tol = Tolerances(atol={"": 0.01}, rtol={"": 0.001})
    assert compare_arrays("o", ref, ref + np.array([0.0, 0.0, 0.1]), tol).passed        # 0.1 <= 0.01 + 0.1
    failed = compare_arrays("o", ref, ref + np.array([0.0, 0.02, 0.0]), tol)           # 0.02 > 0.01 + 0.002
    assert not failed.passed and failed.max_abs == pytest.approx(0.02) and failed.max_rel == pytest.approx(0.01)
    assert not compare_arrays("o", ref, -ref, Tolerances(atol={"": 1e9})).passed           # cosine -1 < 0.999
    assert not compare_arrays("o", ref, np.array([1.0, np.nan, 100.0]), tol).passed
    assert "shape" in compare_arrays("o", ref, ref[:2], tol).note


def test_worst_case_over_inputs_keeps_largest_error_and_lowest_cosine():
    tol = Tolerances(atol={"": 0.1})
    ref = np.ones(4)
    runs = [compare_outputs({"o": ref}, {"o": ref + 0.05}, tol, "ref", "cand"),
            compare_outputs({"o": ref}, {"o": ref * np.array([1, 1, 1, -1])}, tol, "ref", "cand")]
    (merged,) = worst_case(runs)
    assert merged.max_abs == pytest.approx(2.0) and merged.cosine == pytest.approx(0.5) and not merged.passed
    assert worst_case(runs[:1])[0].passed


def _chain(scale: float, path):
    """input -> Conv -> Relu -> Mul(scale) -> Add -> Sigmoid; node names say what they are."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(np.array([scale], np.float32), "K"),
             numpy_helper.from_array(np.array([0.5], np.float32), "B")]
    nodes = [helper.make_node("Conv", ["input", "W"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Mul", ["r", "K"], ["m"], name="scale"),
             helper.make_node("Add", ["m", "B"], ["a"], name="shift"),
             helper.make_node("Sigmoid", ["a"], ["output"], name="squash")]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def test_bisect_names_the_injected_node(tmp_path):
    good, bad = _chain(1.0, tmp_path / "good.onnx"), _chain(1.5, tmp_path / "bad.onnx")
    feed = {"input": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    divergence, compared = bisect_onnx(good, bad, feed, Tolerances())
    assert divergence.node == "scale" and divergence.op_type == "Mul"
    assert divergence.comparison.output == "m" and divergence.input_max_abs == 0.0
    assert compared == 3  # conv, relu agree; scale is the first that does not
    assert bisect_onnx(good, _chain(1.0, tmp_path / "same.onnx"), feed, Tolerances()) == (None, 5)


def test_bisect_fp32_against_its_fp16_graph(tmp_path):
    """The FP16 graph (as the TensorRT backend writes it) keeps the FP32 tensor names, so bisect lines them up."""
    good = _chain(1.0, tmp_path / "good.onnx")
    onnx.save(to_fp16_body(onnx.load(str(good))), str(tmp_path / "good_fp16.onnx"))
    feed = {"input": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    loose = Tolerances(atol={"": 1e-2}, rtol={"": 1e-2})
    assert bisect_onnx(good, tmp_path / "good_fp16.onnx", feed, loose)[0] is None
    strict = Tolerances(atol={"": 1e-7}, rtol={"": 0.0})
    assert bisect_onnx(good, tmp_path / "good_fp16.onnx", feed, strict)[0].node == "conv"


def test_inspect_onnx_lists_custom_ops_and_backend_support(tmp_path):
    nodes = [helper.make_node("Relu", ["input"], ["r"], name="relu"),
             helper.make_node("NonZero", ["r"], ["nz"], name="find"),
             helper.make_node("Frobnicate", ["r"], ["output"], name="frob", domain="acme"),
             helper.make_node("MMCVRoIAlign", ["feat", "rois"], ["pooled"], name="pool", domain="mmdeploy",
                              output_height=2, output_width=2, spatial_scale=1.0, sampling_ratio=2, mode="avg",
                              aligned=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4]),
                                           helper.make_tensor_value_info("feat", TensorProto.FLOAT, [1, 2, 8, 8]),
                                           helper.make_tensor_value_info("rois", TensorProto.FLOAT, [3, 5])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4]),
                               helper.make_tensor_value_info("nz", TensorProto.INT64, [2, "n"]),
                               helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [3, 2, 2, 2])])
    path = tmp_path / "custom.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme", 1),
                                                      helper.make_opsetid("mmdeploy", 1)]), str(path))
    info = inspect_file(path)
    assert info["opsets"] == {"ai.onnx": 17, "acme": 1, "mmdeploy": 1}
    assert info["op_histogram"] == {"Relu": 1, "NonZero": 1, "acme::Frobnicate": 1, "mmdeploy::MMCVRoIAlign": 1}
    assert info["outputs"][1] == {"name": "nz", "dtype": "int64", "shape": [2, "n"]}
    assert info["custom_ops"] == [
        {"op": "acme::Frobnicate", "count": 1, "registered": False, "tensorrt_plugin": False,
         "plugin_free_lowering": False, "onnxruntime_impl": False},
        {"op": "mmdeploy::MMCVRoIAlign", "count": 1, "registered": True, "tensorrt_plugin": True,
         "plugin_free_lowering": True, "onnxruntime_impl": True}]
    trt = info["backends"]["tensorrt"]
    assert trt["installed"] and not trt["supported"]
    assert {n["name"] for n in trt["unsupported_nodes"]} == {"find", "frob"}


def test_config_that_disagrees_with_the_model_file():
    inputs = [TensorSpec("input", "float32", [-1, 3, 512, 512])]
    cfg = load_deploy_config(CONFIGS / "classification/classification_tensorrt_dynamic-224x224-320x320.py")
    with pytest.raises(ConfigError, match=r"allows 224..320 in dimension 2 but end2end.onnx fixes it to 512"):
        check_config_matches(cfg, inputs, "end2end.onnx")
    renamed = load_deploy_config({"onnx_config": {"input_names": ["image"]}, "backend_config": {"type": "onnxruntime"}})
    with pytest.raises(ConfigError, match=r"input_names is \['image'\] but end2end.onnx has inputs \['input'\]"):
        check_config_matches(renamed, inputs, "end2end.onnx")
    classification = load_deploy_config(CONFIGS / "classification/classification_onnxruntime_dynamic.py")
    check_config_matches(classification, inputs, "end2end.onnx", [TensorSpec("output", "float32", [-1, 1000])],
                         "Classification")
    detection = load_deploy_config(CONFIGS / "detection/detection_onnxruntime_dynamic.py")
    with pytest.raises(ConfigError, match=r"task is 'ObjectDetection' but end2end.onnx was converted as a 'Classification'"):
        check_config_matches(detection, inputs, "end2end.onnx", task="Classification")
    with pytest.raises(ConfigError, match=r"output_names is \['dets', 'labels'\] but end2end.onnx has outputs \['output'\]"):
        check_config_matches(detection, inputs, "end2end.onnx", [TensorSpec("output", "float32", [-1, 1000])])


def test_tensorrt_layer_times_from_iprofiler_reports():
    """No GPU here: a stand-in TensorRT module and context check that IProfiler reports are averaged per run
    and the profiler is detached afterwards."""
    from types import SimpleNamespace

    from trtdeploy.backends.base import get_backend

    class IProfiler:
        def __init__(self):
            pass

    class FakeRunner:
        trt = SimpleNamespace(module=SimpleNamespace(IProfiler=IProfiler))

        def __init__(self):
            self.context = SimpleNamespace(profiler=None)

        def __call__(self, feed):
            self.context.profiler.report_layer_time("conv", 3.0)
            self.context.profiler.report_layer_time("relu", 1.0)

    runner = FakeRunner()
    layers = get_backend("tensorrt").layer_times(runner, {}, 4)
    assert [(lt.name, lt.mean_ms, lt.share) for lt in layers] == [("conv", 3.0, 75.0), ("relu", 1.0, 25.0)]
    assert runner.context.profiler is None
