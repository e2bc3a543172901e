"""INT8 end to end through `trtdeploy convert`: the seed's calibration file verbatim, resnet18 Q/DQ built by
TensorRT-RTX with FP16 elsewhere, reuse on a second build, `trtdeploy sensitivity`, and the bad inputs of issue 6."""
from __future__ import annotations

import json

import h5py
import pytest

from conftest import CONFIGS, DEMO_IMG, run_cli
from test_calibration import make_coco, seed_config

pytestmark = pytest.mark.slow

TINY_MODEL = '''
import torch

def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=4, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=4, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()
'''

# A classifier deploy config whose dynamic profile takes the seed pipeline's 1333x800 detection-size inputs.
WIDE_INT8_CFG = f'''
_base_ = ['{CONFIGS}/classification/classification_tensorrt-int8_dynamic-224x224-320x320.py']
backend_config = dict(model_inputs=[dict(input_shapes=dict(input=dict(
    min_shape=[1, 3, 32, 32], opt_shape=[1, 3, 800, 1088], max_shape=[2, 3, 1344, 1344])))])
'''


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8_tiny")
    (root / "tiny_model.py").write_text(TINY_MODEL)
    (root / "wide_int8.py").write_text(WIDE_INT8_CFG)
    make_coco(root / "images", sizes=((40, 30), (44, 30), (40, 30), (30, 40)))
    calib_cfg = seed_config(root, root / "images")
    work = root / "work"
    first = run_cli("convert", root / "wide_int8.py", f"{root / 'tiny_model.py'}:build", "--work-dir", work,
                    "--calib-dataset-cfg", calib_cfg)
    return {"root": root, "work": work, "calib_cfg": calib_cfg, "first": first}


def test_seed_calibration_file_drives_an_int8_build(tiny):
    work = tiny["work"]
    with h5py.File(work / "calib_data.h5") as f:
        group = f["calib_data/end2end/input"]
        assert sorted(group) == ["0", "1", "2", "3"]
        assert {group[k].shape for k in group} == {(1, 3, 800, 1088), (1, 3, 800, 1184), (1, 3, 1088, 800)}
    sidecar = json.loads((work / "end2end.engine.json").read_text())
    assert sidecar["precision"] == "int8"
    assert sidecar["int8"]["route"] == "explicit" and sidecar["int8"]["method"] == "mse"  # the default
    assert len(sidecar["int8"]["quantized_layers"]) == 2  # the Linear head writes the logits: kept FP16
    assert sidecar["built_from"] == "end2end_int8_fp16.onnx" and sidecar["check_with"] == "end2end_int8.onnx"
    assert "calibration images" in tiny["first"].stderr  # the progress bar


def test_second_build_reuses_calibration_data_and_ranges(tiny):
    again = run_cli("convert", tiny["root"] / "wide_int8.py", f"{tiny['root'] / 'tiny_model.py'}:build",
                    "--work-dir", tiny["work"], "--calib-dataset-cfg", tiny["calib_cfg"], "--sensitivity")
    assert f"reusing {tiny['work'] / 'calib_data.h5'} (4 samples of input)" in again.stderr
    assert "proposal for the deploy config: calib_config = dict(exclude_nodes=[" in again.stdout
    assert "reusing mse ranges" in again.stderr
    assert "calibration images" not in again.stderr


def test_sensitivity_command_ranks_layers_and_proposes_a_config(tiny):
    out = run_cli("sensitivity", tiny["work"], "--samples", "2").stdout
    assert "when only one layer is INT8" in out and "all 3 layers INT8: error" in out
    assert "calib_config = dict(exclude_nodes=[" in out
    report = json.loads((tiny["work"] / "int8_sensitivity.json").read_text())
    assert len(report["layers"]) == 3 and report["samples"] == 2


def test_resnet18_qdq_builds_with_tensorrt_rtx_fp16_elsewhere(tmp_path):
    images = tmp_path / "images"
    make_coco(images, sizes=((64, 48), (48, 64), (80, 60)))
    calib = tmp_path / "folder.py"
    calib.write_text(f"data = dict(samples_per_gpu=2, workers_per_gpu=1, val=dict(type='ImageFolder', data_prefix='{images}'))\n")
    work = tmp_path / "work"
    proc = run_cli("convert", CONFIGS / "classification/classification_tensorrt-int8_static-224x224.py",
                   "torchvision://resnet18", "--work-dir", work, "--calib-dataset-cfg", calib, "--test-img", DEMO_IMG)
    engine_mb = (work / "end2end.engine").stat().st_size / 1e6
    assert engine_mb < 20, f"INT8 resnet18 engine is {engine_mb:.1f} MB; FP32 weights alone are 47 MB"
    import onnx

    fp16 = onnx.load(str(work / "end2end_int8_fp16.onnx"))
    types = {i.name: i.data_type for i in fp16.graph.initializer}
    biases = [n.input[2] for n in fp16.graph.node if n.op_type == "Conv"]
    assert all(types[b] == onnx.TensorProto.FLOAT16 for b in biases)  # the float part is FP16
    assert sum(n.op_type == "QuantizeLinear" for n in fp16.graph.node) >= 18
    assert "end2end_int8.onnx, standing in for end2end.engine" in proc.stdout  # FP32-scale twin checked on ORT


@pytest.mark.parametrize("case, exit_code, needle", [
    ("no dataset", 2, "pass --calib-dataset-cfg FILE"),
    ("missing ann_file", 7, "does not exist; set ann_file"),
    ("no implicit route", 5, "does not have (removed with BuilderFlag.INT8"),
    ("onnxruntime", 2, "pass --calib-dataset-cfg FILE"),  # ONNX Runtime INT8 exists: it too needs calibration data
    ("static profile", 4, "differing sizes (1x3x1088x800, 1x3x800x1088, 1x3x800x1184) but the engine profile is static 1x3x224x224"),
])
def test_bad_int8_inputs_fail_before_export(tmp_path, tiny, capsys, case, exit_code, needle):
    from trtdeploy.cli.main import main  # these fail before any build, so in-process is safe and quick

    static = CONFIGS / "classification/classification_tensorrt-int8_static-224x224.py"
    (tmp_path / "implicit.py").write_text(f"_base_ = ['{static}']\n"
                                          f"backend_config = dict(common_config=dict(explicit_quantization=False))\n")
    (tmp_path / "ort_int8.py").write_text(f"_base_ = ['{CONFIGS}/classification/classification_onnxruntime_static.py']\n"
                                          f"backend_config = dict(precision='int8')\n")
    args = {
        "no dataset": [static],
        "missing ann_file": [static, "--calib-dataset-cfg", seed_config(tmp_path, tmp_path / "nowhere")],
        "no implicit route": [tmp_path / "implicit.py", "--calib-dataset-cfg", tiny["calib_cfg"]],
        "onnxruntime": [tmp_path / "ort_int8.py"],
        "static profile": [static, "--calib-dataset-cfg", tiny["calib_cfg"]],
    }[case]
    work = tmp_path / "work"
    code = main(["convert", str(args[0]), f"{tiny['root'] / 'tiny_model.py'}:build", *map(str, args[1:]),
                 "--work-dir", str(work)])
    err = capsys.readouterr().err
    assert code == exit_code, err
    assert needle in err and "Traceback" not in err
    assert not (work / "end2end.onnx").exists() and not list(work.glob(".*tmp*"))


def test_retinanet_int8_builds_plugin_free_with_fp16_elsewhere(tmp_path):
    """RetinaNet (plugin-free NMS) quantized and built by TensorRT-RTX; images pre-processed by the detection task."""
    make_coco(tmp_path / "images", sizes=((64, 48), (48, 64)))
    (tmp_path / "coco.py").write_text(f"data = dict(val=dict(type='CalibrationDataset', "
                                      f"ann_file='{tmp_path}/images/val_annotations.json'))\n")
    # 320x320 keeps the CPU work small; TensorRT caps TopK at 3840, below the shipped pre_top_k=5000.
    (tmp_path / "retinanet_int8.py").write_text(f"""
_base_ = ['{CONFIGS}/detection/detection_tensorrt-int8_static-800x1344.py']
onnx_config = dict(input_shape=[320, 320])
codebase_config = dict(post_processing=dict(pre_top_k=1000))
backend_config = dict(model_inputs=[dict(input_shapes=dict(input=dict(
    min_shape=[1, 3, 320, 320], opt_shape=[1, 3, 320, 320], max_shape=[1, 3, 320, 320])))])
calib_config = dict(method='minmax')
""")
    work = tmp_path / "work"
    run_cli("convert", tmp_path / "retinanet_int8.py", "torchvision://retinanet_resnet50_fpn", "--work-dir", work,
            "--calib-dataset-cfg", tmp_path / "coco.py")
    with h5py.File(work / "calib_data.h5") as f:
        assert f["calib_data/end2end/input/0"].shape == (1, 3, 320, 320)
    sidecar = json.loads((work / "end2end.engine.json").read_text())
    assert sidecar["precision"] == "int8" and sidecar["built_from"] == "end2end_int8_fp16.onnx"
    assert len(sidecar["int8"]["quantized_layers"]) > 100  # backbone, FPN and heads
    fp32_mb = (work / "end2end.onnx").stat().st_size / 1e6
    assert (work / "end2end.engine").stat().st_size / 1e6 < 0.5 * fp32_mb
    import onnx

    graph = onnx.load(str(work / "end2end_int8_fp16.onnx"), load_external_data=False).graph
    assert not {n.op_type for n in graph.node} & {"NonMaxSuppression", "RoiAlign", "NonZero"}  # plugin-free
    nms_loop = next(n for n in graph.node if n.op_type == "Loop")
    body_reads = {i for n in nms_loop.attribute[0].g.node for i in n.input}
    outer_types = {i.name: i.data_type for i in graph.initializer if i.name in body_reads}
    assert outer_types and onnx.TensorProto.FLOAT16 not in outer_types.values()  # NMS body stays FP32
