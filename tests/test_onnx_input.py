"""Issue 13: `trtdeploy convert CFG model.onnx` for ONNX files from elsewhere, through ONNX Runtime and TensorRT-RTX.

Files (tests/onnx_files.py): a hand-exported classifier (input ``images``, output ``scores``), an MMDeploy-style
detector with ``mmdeploy::TRTBatchedNMS``/``MMCVRoIAlign`` nodes, ultralytics' ``yolo export format=onnx``, a file
with external data; parser fixes (Einsum), profile refusal, the out-of-memory message, and bad input.
"""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

import trtdeploy
from conftest import CONFIGS, DEMO_IMG, run_cli, run_python
from onnx_files import (channels_last_classifier, einsum_graph, fixed_position_vit, half_classifier, hand_classifier,
                        mmdeploy_detector, pose_head_file, yolo_file)
from trtdeploy.errors import BuildError, ConfigError, ModelError, ShapeError, UnsupportedOpError

BASE = CONFIGS / "_base_"


def write_cfg(folder: Path, backend: str, body: str = "", name: str = "cfg.py",
              task: str = "Classification", codebase: str = "") -> Path:
    """A deploy config with no onnx_config.input_names/dynamic_axes for the file: the file brings its own.
    ``codebase``: more codebase_config fields (``key=value, ...``)."""
    path = folder / name
    path.write_text(f"_base_ = ['{BASE}/onnx_config.py', '{BASE}/backends/{backend}.py']\n"
                    f"codebase_config = dict(type='mmdet', task={task!r}, {codebase})\n" + textwrap.dedent(body))
    return path


def images_profile(name: str, lo, opt, hi) -> str:
    return (f"backend_config = dict(model_inputs=[dict(input_shapes=dict({name}=dict(min_shape={lo}, "
            f"opt_shape={opt}, max_shape={hi})))])\n")


def sidecar(path: Path) -> dict:
    return json.loads(Path(f"{path}.json").read_text())


def difference(out: str) -> float:
    return float(out.split("max abs difference")[1].split()[0])


def calibration_cfg(folder: Path) -> Path:
    """A calibration dataset config over four copies of the demo image (an ImageFolder without a pipeline: the task's
    own pre-processing from codebase_config)."""
    images = folder / "calib"
    images.mkdir()
    for i in range(4):
        (images / f"{i}.jpg").write_bytes(DEMO_IMG.read_bytes())
    calib = folder / "calib_cfg.py"
    calib.write_text(f"data = dict(samples_per_gpu=2, workers_per_gpu=0, val=dict(type='ImageFolder', "
                     f"data_prefix='{images}/'))\n")
    return calib


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    return hand_classifier(tmp_path_factory.mktemp("files") / "classifier.onnx")


# -- the hand-exported classifier ------------------------------------------------------------------

def test_classifier_no_torch(tmp_path, classifier):
    """A file whose input is `images` with a dynamic batch converts with a config that names neither, on ONNX
    Runtime and to a TensorRT-RTX engine, without importing torch (nor onnxslim, which has nothing to do)."""
    trt_cfg = write_cfg(tmp_path, "tensorrt", images_profile("images", [1, 3, 64, 64], [2, 3, 64, 64], [4, 3, 64, 64]),
                        name="trt.py")
    proc = run_python(textwrap.dedent(f"""
        import sys, trtdeploy
        r = trtdeploy.convert({str(write_cfg(tmp_path, 'onnxruntime'))!r}, {str(classifier)!r},
                              work_dir={str(tmp_path / 'work')!r}, test_img={str(DEMO_IMG)!r})
        e = trtdeploy.convert({str(trt_cfg)!r}, {str(classifier)!r}, work_dir={str(tmp_path / 'trt')!r})
        trtdeploy.convert({str(write_cfg(tmp_path, 'tensorrt', name='static.py'))!r}, {str(classifier)!r},
                          work_dir={str(tmp_path / 'static')!r})  # no profile: the dynamic batch is built at 1
        print("torch imported:", "torch" in sys.modules, "onnxslim:", "onnxslim" in sys.modules,
              "diff:", r.test_report["max_abs_diff"], "engine:", e.backend_path.name)
    """))
    assert "torch imported: False onnxslim: False diff: 0.0 engine: end2end.engine" in proc.stdout
    assert sidecar(tmp_path / "static" / "end2end.engine")["profiles"] == [
        {"images": {"min_shape": [1, 3, 64, 64], "opt_shape": [1, 3, 64, 64], "max_shape": [1, 3, 64, 64]}}]
    facts = sidecar(tmp_path / "work" / "end2end.onnx")
    assert facts["source_format"] == "onnx" and facts["model"] == str(classifier)
    assert [i["name"] for i in facts["inputs"]] == ["images"] and facts["inputs"][0]["shape"][0] == "n"
    assert [o["name"] for o in facts["outputs"]] == ["scores"]


@pytest.mark.slow
def test_classifier_tensorrt_fp16_dynamic_then_test_compare_profile(tmp_path, classifier):
    """FP16 engine with a profile keyed by the file's input name; test/compare take the file as MODEL."""
    cfg = write_cfg(tmp_path, "tensorrt-fp16", images_profile("images", [1, 3, 64, 64], [2, 3, 64, 64], [4, 3, 64, 64]))
    work = tmp_path / "work"
    out = run_cli("convert", cfg, classifier, "--work-dir", work, "--test-img", DEMO_IMG).stdout
    assert "classifier.onnx on ONNX Runtime:" in out and difference(out) < 1e-2
    engine = sidecar(work / "end2end.engine")
    assert engine["precision"] == "fp16" and engine["flavour"] == "tensorrt_rtx"
    assert engine["profiles"] == [{"images": {"min_shape": [1, 3, 64, 64], "opt_shape": [2, 3, 64, 64],
                                              "max_shape": [4, 3, 64, 64]}}]
    data = tmp_path / "val"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        (data / cls / "1.jpg").write_bytes(DEMO_IMG.read_bytes())
    table = run_cli("test", cfg, classifier, work / "end2end.onnx", work / "end2end.engine", "--dataset", data).stdout
    assert "onnxruntime (classifier.onnx)" in table and "end2end_fp16.onnx, stand-in for end2end.engine" in table
    compared = run_cli("compare", work / "end2end.onnx", "--model", classifier, "--input", DEMO_IMG).stdout
    assert "reference: onnxruntime (classifier.onnx)" in compared and "PASS" in compared
    assert "images  1x3x64x64  2x3x64x64  4x3x64x64" in run_cli("inspect", work / "end2end.engine").stdout
    profiled = run_cli("profile", work / "end2end.onnx", "--seconds", "0.2").stdout
    assert "2x3x64x64" in profiled  # the profile's opt shape, from the sidecar
    triton = run_cli("export-triton", work, "--repo", tmp_path / "repo", "--name", "mine").stdout
    assert "mine_onnx" in triton and "mine_trt" in triton
    assert 'name: "images"' in (tmp_path / "repo" / "mine_onnx" / "config.pbtxt").read_text()


@pytest.mark.slow
def test_classifier_tensorrt_int8_static_with_calibration(tmp_path):
    """A static file (no profile in the config) calibrated through a dataset config and the task's pre-processing."""
    static = hand_classifier(tmp_path / "static.onnx", dynamic=False)
    work = tmp_path / "work"
    out = run_cli("convert", write_cfg(tmp_path, "tensorrt-int8"), static, "--work-dir", work,
                  "--calib-dataset-cfg", calibration_cfg(tmp_path), "--test-img", DEMO_IMG).stdout
    assert difference(out) < 0.05
    engine = sidecar(work / "end2end.engine")
    assert engine["precision"] == "int8" and engine["int8"]["route"] == "explicit"
    assert engine["inputs"][0] == {"name": "images", "dtype": "float32", "shape": [1, 3, 64, 64]}
    assert (work / "calib_data.h5").is_file() and (work / "end2end_int8.onnx").is_file()


@pytest.mark.slow
def test_float16_file(tmp_path):
    """A file exported in FP16 (float16 input, weights and output): the FP16 build's numerics check feeds the test
    image as float16 (it was an internal error) and --test-img matches; INT8 names the float16 weights."""
    model = half_classifier(tmp_path / "half.onnx")
    cfg = write_cfg(tmp_path, "tensorrt-fp16", images_profile("images", [1, 3, 64, 64], [1, 3, 64, 64], [2, 3, 64, 64]))
    out = run_cli("convert", cfg, model, "--work-dir", tmp_path / "work", "--test-img", DEMO_IMG).stdout
    assert difference(out) < 1e-2 and "end2end_fp16.onnx, standing in for end2end.engine" in out, out
    assert sidecar(tmp_path / "work" / "end2end.engine")["inputs"][0]["dtype"] == "float16"
    with pytest.raises(ConfigError, match="INT8 quantizes float32 weights and end2end.onnx holds float16 ones"):
        trtdeploy.convert(write_cfg(tmp_path, "onnxruntime-int8", name="int8.py"), model, work_dir=tmp_path / "int8",
                          calib_dataset_cfg=calibration_cfg(tmp_path))


def test_numerics_check_names_inputs_the_graph_does_not_take(classifier):
    """NCHW images for an NHWC file (a tf2onnx export) in the FP16 check: one sentence, not ONNX Runtime's error."""
    from trtdeploy.passes.numerics import run_onnx

    with pytest.raises(ModelError, match=r"ONNX Runtime cannot run the graph on images \[1, 64, 64, 3\] float32: .*"
                                         r"Got invalid dimensions.*; check that codebase_config"):
        run_onnx(onnx.load(str(classifier)), {"images": np.zeros((1, 64, 64, 3), np.float32)})


def test_channels_last_file_gets_its_images_transposed_everywhere(tmp_path):
    """A tf2onnx-style file ([N, 64, 64, 3]): --test-img, run and the FP16 numerics check feed it the task's
    pre-processing transposed to NHWC; its default size is the task's in its own layout."""
    from trtdeploy.tasks import get_task
    from trtdeploy.utils.image import channels_last

    assert channels_last(["unk__0", 64, 64, 3]) and not channels_last([-1, 3, 64, 64]) and not channels_last([1, 3, 3, 3])
    task = get_task("Classification")()
    nchw, _ = task.preprocess(str(DEMO_IMG), (1, 3, 64, 64))
    nhwc, _ = task.prepare(str(DEMO_IMG), (1, 64, 64, 3))
    np.testing.assert_array_equal(nhwc, nchw.transpose(0, 2, 3, 1))
    model = channels_last_classifier(tmp_path / "keras.onnx")
    out = run_cli("convert", write_cfg(tmp_path, "onnxruntime"), model, "--work-dir", tmp_path / "ort",
                  "--test-img", DEMO_IMG).stdout
    assert difference(out) == 0.0 and "input_1 [unk__0, 64, 64, 3]" in out
    assert "class_0" in run_cli("run", tmp_path / "ort", "--input", DEMO_IMG).stdout
    cfg = write_cfg(tmp_path, "tensorrt-fp16", images_profile("input_1", [1, 64, 64, 3], [2, 64, 64, 3], [4, 64, 64, 3]),
                    name="fp16.py")
    out = run_cli("convert", cfg, model, "--work-dir", tmp_path / "trt", "--test-img", DEMO_IMG).stdout
    assert difference(out) < 1e-2 and (tmp_path / "trt/end2end.engine").stat().st_size > 0
    # INT8 calibrates with HWC samples, from the task's pre-processing and from a dataset pipeline's CHW arrays alike
    calib = calibration_cfg(tmp_path)
    piped = tmp_path / "piped_cfg.py"
    piped.write_text(calib.read_text().replace(
        "val=dict(type='ImageFolder', ", "val=dict(type='ImageFolder', pipeline=[dict(type='LoadImageFromFile'), "
        "dict(type='Resize', scale=(64, 64), keep_ratio=False), dict(type='PackDetInputs')], "))
    for name, dataset in (("fallback", calib), ("pipeline", piped)):
        result = trtdeploy.convert(write_cfg(tmp_path, "onnxruntime-int8", name=f"{name}.py"), model,
                                   work_dir=tmp_path / name, calib_dataset_cfg=dataset, test_img=DEMO_IMG)
        assert result.test_report["max_abs_diff"] < 0.5, name
        names = [n.name for n in onnx.load(str(result.onnx_path)).graph.node]  # the file's nodes have no names
        assert all(names) and len(set(names)) == len(names)  # Q/DQ placement addresses nodes by name
        import h5py

        with h5py.File(tmp_path / name / "calib_data.h5") as h5:
            shapes = {h5["calib_data/end2end/input_1"][k].shape for k in h5["calib_data/end2end/input_1"]}
        assert shapes == {(1, 64, 64, 3)}, (name, shapes)


def test_external_data(tmp_path):
    """Weights in a file beside the model are read; without that file, one sentence and nothing written."""
    model = hand_classifier(tmp_path / "ext.onnx", external=True)
    assert (tmp_path / "ext.onnx.data").is_file()
    cfg = write_cfg(tmp_path, "onnxruntime")
    result = trtdeploy.convert(cfg, model, work_dir=tmp_path / "ok", test_img=DEMO_IMG)
    assert result.test_report["max_abs_diff"] == 0.0
    assert onnx.load(str(result.onnx_path)).graph.initializer  # the output graph holds the weights itself
    (tmp_path / "ext.onnx.data").unlink()
    with pytest.raises(ModelError, match=r"external data files \['ext.onnx.data'\] that are missing"):
        trtdeploy.convert(cfg, model, work_dir=tmp_path / "missing")
    assert not list((tmp_path / "missing").iterdir())


# -- an MMDeploy-style detector with plugin nodes ---------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("backend, custom_ops", [("onnxruntime", "auto"), ("tensorrt", "auto"),
                                                 ("tensorrt", "plugin")])
def test_mmdeploy_detector(tmp_path, backend, custom_ops):
    """TRTBatchedNMS and MMCVRoIAlign are lowered ('auto') or kept for the plugins; --test-img runs the original
    file, custom nodes and all, on ONNX Runtime (trtdeploy's ONNX Runtime ops) and matches every detection."""
    model = mmdeploy_detector(tmp_path / "mmdet.onnx")
    body = f"backend_config = dict(custom_ops={custom_ops!r})\n"
    if backend == "tensorrt":
        body = (f"backend_config = dict(custom_ops={custom_ops!r}, model_inputs=[dict(input_shapes=dict(input=dict("
                f"min_shape=[1, 3, 64, 64], opt_shape=[1, 3, 64, 64], max_shape=[2, 3, 64, 64])))])\n")
    cfg = write_cfg(tmp_path, backend, body, task="ObjectDetection", codebase="preprocess=dict(keep_ratio=False)")
    out = run_cli("convert", cfg, model, "--work-dir", tmp_path / "work", "--test-img", DEMO_IMG).stdout
    assert "10 of 10 detections matched" in out and "differ by at most 0 px" in out, out
    graph = onnx.load(str(tmp_path / "work" / "end2end.onnx"))
    kept = {n.op_type for n in graph.graph.node if n.domain == "mmdeploy"}
    assert kept == ({"TRTBatchedNMS", "MMCVRoIAlign"} if custom_ops == "plugin" else set())
    if backend == "tensorrt":
        assert sidecar(tmp_path / "work" / "end2end.engine")["plugins"] == (
            ["mmdeploy::MMCVRoIAlign", "mmdeploy::TRTBatchedNMS"] if custom_ops == "plugin" else [])


# -- ultralytics `yolo export format=onnx` ----------------------------------------------------------

YOLO_PRE = "preprocess=dict(mean=[0, 0, 0], std=[255, 255, 255], keep_ratio=True, pad_value=0.447)"


@pytest.fixture(scope="module")
def yolo_static(tmp_path_factory) -> Path:
    return yolo_file(tmp_path_factory.mktemp("yolo"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorrt-fp16", "tensorrt-int8", "onnxruntime-int8"])
def test_yolo_nms_appended(tmp_path, yolo_static, backend):
    """A raw [1, 84, A] head gets decoding + the plugin-free NMS when post_processing asks for it; the FP16 (INT8:
    calibrated with the task's letterbox) graph finds the same detections as the original file with trtdeploy's NMS
    op on ONNX Runtime (ONNX Runtime INT8 once lost all 20: its int32 class biases clipped, its NMS quantized)."""
    cfg = write_cfg(tmp_path, backend, task="ObjectDetection", codebase=f"{YOLO_PRE}, post_processing="
                    "dict(score_threshold=0.0, iou_threshold=0.7, pre_top_k=300, keep_top_k=20)")
    precision = backend.split("-")[1]
    calib = ["--calib-dataset-cfg", calibration_cfg(tmp_path)] if precision == "int8" else []
    out = run_cli("convert", cfg, yolo_static, "--work-dir", tmp_path / "work", "--test-img", DEMO_IMG, *calib).stdout
    assert "20 of 20 detections matched" in out, out
    tensorrt = backend.startswith("tensorrt")
    assert not tensorrt or f"end2end_{precision}.onnx, standing in for end2end.engine" in out, out
    built = sidecar(tmp_path / "work" / ("end2end.engine" if tensorrt else "end2end_int8.onnx"))
    assert [o["name"] for o in built["outputs"]] == ["dets", "labels"]
    assert built["outputs"][0]["shape"][1:] == [20, 5] and built["precision"] == precision
    graph = onnx.load(str(tmp_path / "work" / "end2end.onnx"))
    assert not [n for n in graph.graph.node if n.domain not in ("", "ai.onnx")]  # the NMS is standard ONNX


@pytest.mark.slow
def test_yolo_dynamic_kept_raw_or_with_nms(tmp_path):
    """A dynamic export (even C is symbolic in its declared output: inference finds 84): without post_processing the
    raw head stays; with it, a TensorRT-RTX engine under a 160..320 profile on the file's own `images`."""
    model = yolo_file(tmp_path, dynamic=True)
    nms = write_cfg(tmp_path, "tensorrt", images_profile("images", [1, 3, 160, 160], [1, 3, 224, 224], [2, 3, 320, 320]),
                    name="nms.py", task="ObjectDetection", codebase=f"{YOLO_PRE}, post_processing=dict("
                    "score_threshold=0.0, iou_threshold=0.7, pre_top_k=300, keep_top_k=20)")
    out = run_cli("convert", nms, model, "--work-dir", tmp_path / "nms", "--test-img", DEMO_IMG).stdout
    assert "20 of 20 detections matched" in out, out
    assert sidecar(tmp_path / "nms" / "end2end.engine")["profiles"][0]["images"]["max_shape"] == [2, 3, 320, 320]
    cfg = write_cfg(tmp_path, "onnxruntime", task="ObjectDetection", codebase=YOLO_PRE)
    result = trtdeploy.convert(cfg, model, work_dir=tmp_path / "work")
    facts = sidecar(result.onnx_path)
    assert [o["name"] for o in facts["outputs"]] == ["output0"] and facts["outputs"][0]["shape"][1] == 84
    with pytest.raises(ModelError, match="raw head; convert it with codebase_config.post_processing"):
        trtdeploy.load(result.onnx_path).predict(str(DEMO_IMG))


def test_pose_head_nms_takes_the_class_count_from_the_metadata(tmp_path):
    """A `yolo export` of a pose model: 56 channels after the box are 1 class score and 51 keypoint values; the
    file's metadata names one class, so the appended NMS ranks that score only (not 52 "classes")."""
    cfg = write_cfg(tmp_path, "onnxruntime", task="ObjectDetection", codebase=f"{YOLO_PRE}, post_processing=dict("
                    "score_threshold=0.0, iou_threshold=0.7, pre_top_k=300, keep_top_k=20)")
    result = trtdeploy.convert(cfg, pose_head_file(tmp_path / "pose.onnx"), work_dir=tmp_path / "work")
    found = trtdeploy.load(result.onnx_path).predict(str(DEMO_IMG))[0]
    assert len(found["labels"]) > 0 and set(np.asarray(found["labels"]).tolist()) == {0}


def test_raw_heads_kept_raw_are_compared_as_arrays(tmp_path):
    """Without post_processing a raw head stays raw: --test-img compares its arrays with the file's (not an error);
    `predict` says what to do: post_processing for one head, and not for two (a segmentation export's boxes and
    mask prototypes), which it cannot decode."""
    model = onnx.load(str(pose_head_file(tmp_path / "pose.onnx")))
    model.graph.output.append(onnx.helper.make_tensor_value_info("unit", onnx.TensorProto.FLOAT, [1, 56, 16]))
    onnx.save(model, str(tmp_path / "two.onnx"))
    cfg = write_cfg(tmp_path, "onnxruntime", task="ObjectDetection", codebase=YOLO_PRE)
    for name, outputs, fix in (("pose.onnx", "output0", "convert it with codebase_config.post_processing"),
                               ("two.onnx", "output0, unit", r"codebase_config.post_processing decodes one \[N, 4 \+ C, A\] head only")):
        result = trtdeploy.convert(cfg, tmp_path / name, work_dir=tmp_path / name[:-5], test_img=DEMO_IMG)
        assert result.test_report["difference"] == f"raw head kept raw ({outputs}): max abs difference 0"
        with pytest.raises(ModelError, match=f"it ends in a raw head; {fix}"):
            trtdeploy.load(result.onnx_path).predict(str(DEMO_IMG))


# -- the rest of the matrix: file kind x backend x static/dynamic x precision ---------------------------
# Covered above: classifier ORT fp32 dynamic, TRT fp32 dynamic and static, TRT fp16 dynamic, TRT int8 static;
# external data ORT fp32; MMDeploy detector ORT fp32, TRT fp32 dynamic ('auto' and 'plugin'); YOLO TRT fp16 and
# int8 and ORT int8 static with NMS, TRT fp32 dynamic with NMS, ORT fp32 dynamic raw. Each case here: the --test-img check runs
# the graph the backend was given (for TensorRT, which cannot run here, the exact graph it built) on ONNX Runtime.

DETECTOR = ("ObjectDetection", "preprocess=dict(keep_ratio=False)")
FILES = {
    "classifier": (lambda d: hand_classifier(d / "classifier.onnx"), "images", ("Classification", "")),
    "classifier-static": (lambda d: hand_classifier(d / "static.onnx", dynamic=False), "images", ("Classification", "")),
    "external": (lambda d: hand_classifier(d / "ext.onnx", external=True), "images", ("Classification", "")),
    "mmdeploy": (lambda d: mmdeploy_detector(d / "mmdet.onnx"), "input", DETECTOR),
    "mmdeploy-opset11": (lambda d: mmdeploy_detector(d / "mmdet.onnx", opset=11), "input", DETECTOR),
    "mmdeploy-opset11-static": (lambda d: mmdeploy_detector(d / "mmdet.onnx", batch=1, opset=11), "input", DETECTOR),
}
MATRIX = [  # file, backend config, dynamic profile (batch 1..2) or static build, backend_config.custom_ops
    ("classifier", "onnxruntime-int8", False, "auto"),
    ("classifier-static", "tensorrt-fp16", False, "auto"),
    ("external", "tensorrt-int8", True, "auto"),
    ("mmdeploy", "onnxruntime-int8", False, "auto"),
    ("mmdeploy", "tensorrt-fp16", True, "auto"),
    ("mmdeploy-opset11", "tensorrt-fp16", True, "plugin"),  # the FP16 check runs the kept nodes' lowering
    ("mmdeploy-opset11-static", "tensorrt-int8", False, "plugin"),  # calibration too; Q/DQ upgrades the opset
]


@pytest.mark.slow
@pytest.mark.parametrize("kind, backend, dynamic, custom_ops", MATRIX,
                         ids=[f"{k}-{b}-{'dynamic' if d else 'static'}-{c}" for k, b, d, c in MATRIX])
def test_file_kind_backend_precision(tmp_path, kind, backend, dynamic, custom_ops):
    """Each file converts with the precision asked, under the profile asked (static: the file's own shape), and
    its result matches the original file on the test image (INT8: calibrated through a dataset config)."""
    make, name, (task, codebase) = FILES[kind]
    model = make(tmp_path)
    profile = ("" if not dynamic else f", model_inputs=[dict(input_shapes=dict({name}=dict(min_shape=[1, 3, 64, 64], "
               f"opt_shape=[1, 3, 64, 64], max_shape=[2, 3, 64, 64])))]")
    cfg = write_cfg(tmp_path, backend, f"backend_config = dict(custom_ops={custom_ops!r}{profile})\n", task=task,
                    codebase=codebase)
    work = tmp_path / "work"
    calib = ["--calib-dataset-cfg", calibration_cfg(tmp_path)] if backend.endswith("int8") else []
    out = run_cli("convert", cfg, model, "--work-dir", work, "--test-img", DEMO_IMG, *calib).stdout
    if task == "ObjectDetection":
        assert "10 of 10 detections matched" in out, out
    else:
        assert difference(out) < 0.05, out
    tensorrt = backend.startswith("tensorrt")
    built = sidecar(work / ("end2end.engine" if tensorrt else "end2end_int8.onnx"))
    precision = backend.split("-")[1]
    assert built["precision"] == precision and built["model"] == str(model)
    if tensorrt:
        assert f"end2end_{precision}.onnx, standing in for end2end.engine" in out, out
        if dynamic:
            assert built["profiles"][0][name]["max_shape"] == [2, 3, 64, 64]
        else:  # a static file needs no profile
            assert built["profiles"] == [] and built["inputs"][0]["shape"] == [1, 3, 64, 64]
        assert built["plugins"] == (["mmdeploy::MMCVRoIAlign", "mmdeploy::TRTBatchedNMS"] if custom_ops == "plugin"
                                    else [])
    if precision == "int8":  # ONNX Runtime's artefact, TensorRT's stand-in: the Q/DQ graph
        assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(work / "end2end_int8.onnx")).graph.node)


# -- parser fixes, profiles, memory -----------------------------------------------------------------

@pytest.mark.slow
def test_einsum_fails_to_parse_before_and_builds_after(tmp_path):
    """MaxViT's Einsum spelling: the file as it is fails in TensorRT-RTX's parser (and the pre-build scan names
    it); `trtdeploy convert` rewrites the equation and builds."""
    model = einsum_graph(tmp_path / "einsum.onnx")
    cfg = write_cfg(tmp_path, "tensorrt")
    before = run_python(textwrap.dedent(f"""
        from pathlib import Path
        import onnx
        from trtdeploy.backends.base import get_backend
        from trtdeploy.config import load_deploy_config
        from trtdeploy.errors import BuildError
        backend = get_backend("tensorrt")
        print("scan:", backend.unsupported_nodes(onnx.load({str(model)!r}))[0]["hint"][:40])
        try:
            backend.build(Path({str(model)!r}), Path({str(tmp_path)!r}), load_deploy_config({str(cfg)!r}))
        except BuildError as e:
            print("parse:", e)
    """)).stdout
    assert "scan: TensorRT's parser takes Einsum equations" in before
    assert "parse:" in before and "Invalid character(s) in Einsum equation" in before
    run_cli("convert", cfg, model, "--work-dir", tmp_path / "work")
    graph = onnx.load(str(tmp_path / "work" / "end2end.onnx"))
    (einsum,) = [n for n in graph.graph.node if n.op_type == "Einsum"]
    assert onnx.helper.get_attribute_value(einsum.attribute[0]) == b"bghid,bghjd->bghij"
    assert sidecar(tmp_path / "work" / "end2end.engine")["engine_bytes"] > 0


def test_einsum_rewrite_keeps_values(tmp_path):
    import numpy as np
    import onnxruntime as ort

    from trtdeploy.passes import fix_for_parser
    from trtdeploy.passes.parser_fixes import canonical_einsum

    assert canonical_einsum("bB,Bc->bc") == "ba,ac->bc"  # a lower-case label keeps its letter, B takes a free one
    assert canonical_einsum("...IJ,...JK->...IK") == "...ij,...jk->...ik"
    model = onnx.load(str(einsum_graph(tmp_path / "e.onnx")))
    query = np.random.default_rng(1).normal(size=(1, 2, 3, 4, 5)).astype(np.float32)
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"query": query})[0]
    after = ort.InferenceSession(fix_for_parser(model).SerializeToString()).run(None, {"query": query})[0]
    assert np.array_equal(before, after)


def test_simplify_skips_onnxslim_only_when_it_has_nothing_to_do(tmp_path):
    """torch.onnx's Identity per reused (deduplicated) weight is bypassed by our own code; then a plain CNN has nothing for
    onnxslim (which is not even imported), and a graph with a Reshape still goes through it."""
    import numpy as np
    import onnxruntime as ort

    from trtdeploy.passes.basic import _bypass_identities, nothing_to_simplify

    model = onnx.load(str(hand_classifier(tmp_path / "c.onnx")))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    model.graph.node.insert(0, onnx.helper.make_node("Identity", [conv.input[1]], ["weight_alias"]))
    conv.input[1] = "weight_alias"  # what torch.onnx writes for a weight it deduplicated
    assert not nothing_to_simplify(model)
    x = np.random.default_rng(0).random((1, 3, 64, 64), np.float32)
    name = model.graph.input[0].name
    before = ort.InferenceSession(model.SerializeToString()).run(None, {name: x})[0]
    bypassed = _bypass_identities(model)
    assert nothing_to_simplify(bypassed)
    assert np.array_equal(before, ort.InferenceSession(bypassed.SerializeToString()).run(None, {name: x})[0])
    reshaped = onnx.load(str(einsum_graph(tmp_path / "e.onnx")))
    reshaped.graph.node[0].op_type = "Reshape"
    assert not nothing_to_simplify(reshaped)


def test_profile_the_graph_cannot_serve_is_refused(tmp_path):
    """A ViT with a fixed position embedding under a 32..64 profile: refused before the build, naming the profile's
    dimension and the node that fails; nothing written."""
    model = fixed_position_vit(tmp_path / "vit.onnx")
    cfg = write_cfg(tmp_path, "tensorrt", images_profile("pixels", [1, 3, 32, 32], [1, 3, 32, 32], [2, 3, 64, 64]))
    with pytest.raises(ShapeError) as info:
        trtdeploy.convert(cfg, model, work_dir=tmp_path / "work")
    text = str(info.value)
    assert "backend_config.model_inputs[0].input_shapes.pixels.max_shape[2] = 64 cannot be served" in text
    assert "node '/Add' (Add)" in text and "set max_shape[2] to 32" in text and "\n" not in text
    assert not list((tmp_path / "work").iterdir())
    ok = write_cfg(tmp_path, "onnxruntime", images_profile("pixels", [1, 3, 32, 32], [2, 3, 32, 32], [4, 3, 32, 32]),
                   name="ok.py")
    trtdeploy.convert(ok, model, work_dir=tmp_path / "ok")  # batch is free: accepted


def test_out_of_memory_names_the_request_and_the_field():
    from trtdeploy.backends.tensorrt.builder import out_of_memory_hint

    log = ["[virtualMemoryBuffer.cpp::resizePhysical::140] Error Code 2: OutOfMemory (Requested size was "
           "1187893064 bytes.)", "[builder.cpp::buildSerializedNetwork] Error Code 2: Internal Error"]
    hint = out_of_memory_hint(log, None)
    assert "TensorRT asked for 1187893064 bytes (1.11 GiB)" in hint
    assert "backend_config.common_config.max_workspace_size is unset" in hint
    capped = out_of_memory_hint(log, 1 << 30)  # the request is above the cap: lift the cap, not "set it below"
    assert "max_workspace_size is 1073741824 (1.00 GiB): set max_workspace_size = 0 (no cap)" in capped
    assert "set max_workspace_size below" in out_of_memory_hint(log, 2 << 30)  # within the cap: memory ran out
    assert out_of_memory_hint(["Error Code 4: some other failure"], None) == ""
    assert "TensorRT ran out of memory and" in out_of_memory_hint(["Unexpected exception std::bad_alloc"], None)


@pytest.mark.slow
def test_build_out_of_memory_on_tensorrt_rtx(tmp_path):
    """Real TensorRT-RTX on this CPU, both ways its build runs out of memory, each a BuildError naming
    common_config.max_workspace_size: under a 1 KiB cap no tactic fits a Conv; with the address space capped once the
    graph is parsed (RLIMIT_AS, 32 MiB above what the process holds), allocating a 64 MiB MatMul weight fails with
    `OutOfMemory (Requested size was N bytes.)`."""
    proc = run_python(textwrap.dedent(f"""
        import resource
        from pathlib import Path
        import numpy as np
        from onnx import TensorProto, helper, numpy_helper, save
        from trtdeploy.backends.tensorrt.builder import build_engine
        from trtdeploy.backends.tensorrt.compat import import_tensorrt
        from trtdeploy.config import load_deploy_config
        from trtdeploy.errors import BuildError

        tmp, k = Path({str(tmp_path)!r}), 4096
        def save_graph(name, node, x, y, weight):
            graph = helper.make_graph([node], name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, y)],
                                      [numpy_helper.from_array(weight, "w")])
            save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp / name))
            return tmp / name
        rng = np.random.default_rng(0)
        conv = save_graph("conv.onnx", helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), [1, 64, 8, 8],
                          [1, 64, 8, 8], rng.random((64, 64, 3, 3), np.float32))
        matmul = save_graph("matmul.onnx", helper.make_node("MatMul", ["x", "w"], ["y"]), [8, k], [8, k],
                            rng.random((k, k), np.float32))
        def cap(builder, config, network):
            held = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
            resource.setrlimit(resource.RLIMIT_AS, (held + (32 << 20), resource.RLIM_INFINITY))
        for path, workspace, configure in ((conv, 1024, None), (matmul, 0, cap)):
            cfg = load_deploy_config(dict(onnx_config=dict(type="onnx"), codebase_config=dict(task="Classification"),
                backend_config=dict(type="tensorrt", common_config=dict(max_workspace_size=workspace))))
            try:
                build_engine(import_tensorrt(), path, tmp / "x.engine", cfg, {{}}, strongly_typed=True,
                             configure=configure)
                print("built", path.name)
            except BuildError as e:
                print("BuildError:", e)
    """)).stdout.splitlines()
    assert len(proc) == 2 and all(line.startswith("BuildError: ") for line in proc), proc
    assert "within workspace limit" in proc[0] and "max_workspace_size = 1024 (1.0 KB): raise it" in proc[0]
    asked = int(proc[1].split("TensorRT asked for ")[1].split()[0])
    assert f"Requested size was {asked} bytes" in proc[1] and asked >= 4 * 4096 * 4096  # the weight, in bytes
    assert "backend_config.common_config.max_workspace_size is unset" in proc[1]
    assert not (tmp_path / "x.engine").exists()


# -- bad input: one sentence each, the right error, nothing written ----------------------------------

def _truncated(tmp_path: Path, classifier: Path) -> Path:
    path = tmp_path / "truncated.onnx"
    path.write_bytes(classifier.read_bytes()[: classifier.stat().st_size // 2])
    return path


def _not_onnx(tmp_path: Path, classifier: Path) -> Path:
    path = tmp_path / "photo.onnx"
    path.write_bytes(DEMO_IMG.read_bytes())
    return path


def _custom_node(tmp_path: Path, classifier: Path) -> Path:
    model = onnx.load(str(classifier))
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    relu.op_type, relu.domain = "FancyRelu", "vendor"
    model.opset_import.append(onnx.helper.make_opsetid("vendor", 1))
    path = tmp_path / "vendor.onnx"
    onnx.save(model, str(path))
    return path


def _short_weight(tmp_path: Path, classifier: Path) -> Path:
    """A weight one float short (a damaged file): its size is checked by us, not by the checker (weightless)."""
    import numpy as np

    weight = onnx.numpy_helper.from_array(np.ones(2000, np.float32), "w")
    weight.raw_data = weight.raw_data[:-4]
    graph = onnx.helper.make_graph([onnx.helper.make_node("Add", ["x", "w"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2000])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2000])], [weight])
    path = tmp_path / "short.onnx"
    path.write_bytes(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]).SerializeToString())
    return path


BAD = [
    ("not-onnx", _not_onnx, "onnxruntime", "", ModelError, "is not a readable ONNX model"),
    ("truncated", _truncated, "onnxruntime", "", ModelError, "is not a readable ONNX model|truncated"),
    ("short-weight", _short_weight, "onnxruntime", "", ModelError, r"initializer 'w' holds 7996 bytes but its shape \[2000\] needs 8000"),
    ("names", lambda t, c: c, "onnxruntime", images_profile("input", [1, 3, 64, 64], [1, 3, 64, 64], [2, 3, 64, 64]),
     ConfigError, r"lacks the model input 'images': it names \['input'\] but .*classifier.onnx has inputs \['images'\]"),
    ("rank", lambda t, c: c, "tensorrt", images_profile("images", [1, 64, 64], [1, 64, 64], [2, 64, 64]),
     ShapeError, r"has rank 3 but the model input 'images' has rank 4"),
    ("fixed-dim", lambda t, c: c, "tensorrt", images_profile("images", [1, 3, 64, 64], [1, 3, 64, 64], [1, 3, 96, 96]),
     ShapeError, r"dimension 2 must be 64 \(.*classifier.onnx fixes it\).*export .* again with that axis dynamic"),
    ("custom-node-ort", _custom_node, "onnxruntime", "", UnsupportedOpError,
     r"vendor::FancyRelu\): neither ONNX Runtime nor trtdeploy implements it"),
    ("custom-node-trt", _custom_node, "tensorrt", "", UnsupportedOpError,
     r"vendor::FancyRelu\): no TensorRT plugin serves it"),
]


@pytest.mark.parametrize("case, make, backend, body, error, fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_onnx_input(tmp_path, classifier, case, make, backend, body, error, fragment):
    cfg = write_cfg(tmp_path, backend, body)
    work = tmp_path / "work"
    with pytest.raises(error, match=fragment) as info:
        trtdeploy.convert(cfg, make(tmp_path, classifier), work_dir=work)
    assert "\n" not in str(info.value)
    assert not work.exists() or not list(work.iterdir())


def _missing_data(tmp_path: Path, classifier: Path) -> Path:
    model = hand_classifier(tmp_path / "ext.onnx", external=True)
    (tmp_path / "ext.onnx.data").unlink()
    return model


CLI_BAD = BAD + [("missing-external-data", _missing_data, "onnxruntime", "", ModelError,
                  r"external data files \['ext.onnx.data'\] that are missing")]


@pytest.fixture(scope="module")
def previous(tmp_path_factory, classifier) -> Path:
    """A work dir holding an earlier conversion of the classifier."""
    folder = tmp_path_factory.mktemp("previous")
    trtdeploy.convert(write_cfg(folder, "onnxruntime"), classifier, work_dir=folder / "work")
    return folder / "work"


@pytest.mark.parametrize("case, make, backend, body, error, fragment", CLI_BAD, ids=[b[0] for b in CLI_BAD])
def test_bad_onnx_input_cli(tmp_path, capsys, classifier, previous, case, make, backend, body, error, fragment):
    """`trtdeploy convert` on each bad file: the error type's exit code, one line naming the problem and the fix,
    and the work dir of an earlier conversion left byte for byte (no temp file)."""
    import shutil

    from trtdeploy.cli.main import main

    work = tmp_path / "work"
    shutil.copytree(previous, work)
    before = {p.name: p.read_bytes() for p in work.iterdir()}
    code = main(["convert", str(write_cfg(tmp_path, backend, body)), str(make(tmp_path, classifier)),
                 "--work-dir", str(work)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == error.exit_code and "Traceback" not in "\n".join(err)
    assert err[-1].startswith("trtdeploy convert: error: ") and re.search(fragment, err[-1])
    assert [line for line in err if "error" in line.lower()] == [err[-1]]
    assert {p.name: p.read_bytes() for p in work.iterdir()} == before


def test_bad_input_exit_code(tmp_path):
    """The CLI exits with ModelError's code (3), one line, no traceback."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    proc = run_cli("convert", write_cfg(tmp_path, "onnxruntime"), bad, "--work-dir", tmp_path / "w", check=False)
    assert proc.returncode == ModelError.exit_code and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("trtdeploy convert: error:")
    assert BuildError.exit_code != proc.returncode
