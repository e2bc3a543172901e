"""Issue 14: Ultralytics YOLO through the detector-family registry (``ultralytics://``), and its bad inputs.

Each model is built from ultralytics' own yaml (random init, offline), made decisive (BatchNorm statistics
re-estimated on random images, head outputs widened: a random-init YOLO scores every box alike), converted once
per session at 320x320 with the shipped ONNX Runtime config, and compared with ultralytics' own inference plus its
own ``non_max_suppression`` as matched detection sets at two sizes and batch sizes.
"""
from __future__ import annotations

import json
import textwrap

import numpy as np
import onnx
import pytest
import torch
from mmengine import Config

import trtdeploy
from conftest import CONFIGS, DEMO_IMG, build_in_child, run_cli
from test_detection import assert_same_detections
from trtdeploy.errors import ModelError
from trtdeploy.export import load_model

SIZES = [(1, 3, 320, 320), (2, 3, 352, 320)]
KEEP_TOP_K = 50
SCORE_THRESHOLD = 0.3


def decisive(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-estimate BatchNorm statistics on random images and widen the head's last layers, so scores spread out."""
    torch.manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    model.eval()
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 256, 256))
    for bn in norms:
        bn.eval()
    head = model.model[-1]
    last = {branch: [seq[-1] for seq in getattr(head, branch, None) or []]
            for branch in ("cv2", "cv3", "cv4", "one2one_cv2", "one2one_cv3", "one2one_cv4")}
    rms = {}

    def record(conv, args, out) -> None:
        rms[conv] = args[0].pow(2).mean().sqrt()

    hooks = [conv.register_forward_hook(record) for convs in last.values() for conv in convs]
    with torch.no_grad():
        model(torch.rand(2, 3, 256, 256))
    for h in hooks:
        h.remove()
    for branch, convs in last.items():  # logits of about unit spread, whatever the features' scale
        for conv in convs:
            fan_in = conv.weight[0].numel()
            torch.nn.init.normal_(conv.weight, std=float(1.0 / (rms[conv] * fan_in ** 0.5)))
            torch.nn.init.constant_(conv.bias, {"cv3": -4.0, "one2one_cv3": -2.0}.get(branch, 0.0))
    return model.eval()


def ort_config(name: str) -> dict:
    folder = "instance-seg" if "-seg" in name else "detection"
    cfg = Config.fromfile(str(CONFIGS / folder / f"{folder}_onnxruntime_dynamic.py")).to_dict()
    cfg["onnx_config"]["input_shape"] = [320, 320]
    cfg["codebase_config"]["post_processing"].update(score_threshold=SCORE_THRESHOLD, keep_top_k=KEEP_TOP_K,
                                                     pre_top_k=3000)
    return cfg


@pytest.fixture(scope="session")
def yolo_once(tmp_path_factory):
    """yaml name -> (eager model, ConvertResult), each model converted once for the session."""
    done = {}

    def convert(name: str):
        if name not in done:
            model = decisive(load_model(f"ultralytics://{name}"))
            if name.startswith(("yolov10", "yolo26")):
                model.model[-1].end2end = True  # the one-to-one branch (a yaml-built v10/26 infers one-to-many)
            done[name] = model, trtdeploy.convert(ort_config(name), model, work_dir=tmp_path_factory.mktemp(name))
        return done[name]
    return convert


def assert_same_masks(ours: dict, theirs: dict) -> None:
    """Matched detections (same label, nearest box) have masks that agree on all but a sliver of pixels."""
    for i in range(len(theirs["labels"])):
        for j in np.flatnonzero(theirs["labels"][i] >= 0):
            same = np.flatnonzero(ours["labels"][i] == theirs["labels"][i, j])
            k = same[np.argmin(np.abs(ours["dets"][i, same, :4] - theirs["dets"][i, j, :4]).max(1))]
            a, b = ours["masks"][i, k] > 0.5, theirs["masks"][i, j] > 0.5
            assert (a != b).mean() < 0.01, f"image {i}: mask of detection {j} differs on {(a != b).mean():.1%}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolo11n.yaml", "yolov8n-seg.yaml", "yolov10n.yaml", "yolo26n.yaml"])
def test_onnxruntime_matches_ultralytics(yolo_once, name):
    """The graph finds what ultralytics' inference and NMS (or the end-to-end head's TopK) find."""
    model, result = yolo_once(name)
    deployed = trtdeploy.load(result.backend_path)
    for shape in SIZES:
        torch.manual_seed(1)
        batch = torch.rand(shape).numpy()
        ours = deployed(batch)
        theirs = deployed.task.torch_outputs(model, batch, deployed.runner.output_names)
        assert ours["dets"].shape == (shape[0], KEEP_TOP_K, 5) and ours["labels"].dtype == np.int64
        assert_same_detections({k: ours[k] for k in ("dets", "labels")}, {k: theirs[k] for k in ("dets", "labels")},
                               shape[2:])
        if "-seg" in name:
            assert ours["masks"].shape == (shape[0], KEEP_TOP_K, shape[2] // 4, shape[3] // 4)
            assert_same_masks(ours, theirs)


@pytest.mark.slow
def test_graph_and_sidecar(yolo_once):
    """Plugin-free standard ONNX with MMDeploy's outputs; the sidecar records YOLO's letterbox, which `run` uses."""
    _, result = yolo_once("yolov8n-seg.yaml")
    graph = onnx.load(str(result.onnx_path), load_external_data=False).graph
    assert {n.domain for n in graph.node} <= {"", "ai.onnx"}
    assert [o.name for o in graph.output] == ["dets", "labels", "masks"]
    sidecar = json.loads(result.sidecar_path.read_text())
    assert sidecar["preprocess"] == {"mean": [0.0] * 3, "std": [255.0] * 3, "keep_ratio": True, "center": True,
                                     "pad_value": pytest.approx(114 / 255)}
    assert sidecar["mask_layout"] == "image" and sidecar["post_processing"]["keep_top_k"] == KEEP_TOP_K
    batch, meta = trtdeploy.load(result.backend_path).task.preprocess(np.zeros((100, 200, 3), np.uint8), (1, 3, 320, 320))
    assert meta["pad"] == [80, 0] and np.allclose(batch[0, :, :80], 114 / 255) and np.allclose(batch[0, :, 80:240], 0)
    from PIL import Image

    width, height = Image.open(DEMO_IMG).size
    found = trtdeploy.load(result.backend_path).predict(DEMO_IMG)[0]
    assert found["masks"].shape == (len(found["scores"]), height, width) and found["masks"].dtype == bool


@pytest.mark.slow
def test_int8_keeps_the_head_out_by_default(yolo_once):
    """The YOLO family's INT8 default leaves exactly the head's convs in high precision (in INT8 they cost 2.3 mAP
    on the trained model, benchmarks/RESULTS.md issue 14) and quantizes every backbone and neck conv."""
    from trtdeploy.passes.quantize import quantization_targets
    from trtdeploy.tasks import get_task

    model, result = yolo_once("yolov8n.yaml")
    kept = get_task("ObjectDetection")().int8_exclude_nodes(model)
    assert kept == [f"/model/model.{len(model.model) - 1}/*"]
    graph = onnx.load(str(result.onnx_path))
    convs = [n.name for n in graph.graph.node if n.op_type == "Conv"]
    head_convs = {n for n in convs if n.startswith(kept[0][:-1])}
    assert len(head_convs) == sum(isinstance(m, torch.nn.Conv2d) for m in model.model[-1].modules()) > 0
    assert {t.node for t in quantization_targets(graph, kept)} == set(convs) - head_convs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolo11n.yaml", "yolov8n-seg.yaml"])
def test_tensorrt_rtx_builds_both_routes(yolo_once, name, tmp_path):
    """Plugin-free (the converted graph) and plugin route (the same export with mmdeploy::TRTBatchedNMS kept)."""
    from trtdeploy.config import load_deploy_config
    from trtdeploy.export import export_onnx

    model, result = yolo_once(name)
    folder = "instance-seg" if "-seg" in name else "detection"
    static = CONFIGS / "detection/detection_tensorrt_static-320x320.py"
    assert build_in_child(result.onnx_path, tmp_path / "free", static)["size"] > 1_000_000
    plugin_cfg = tmp_path / "plugin.py"
    plugin_cfg.write_text(f"_base_ = ['{static}']\nbackend_config = dict(custom_ops='plugin')\n"
                          f"onnx_config = dict(output_names={['dets', 'labels'] + (['masks'] if folder != 'detection' else [])})\n")
    cfg = load_deploy_config(ort_config(name))
    task = trtdeploy.api.get_task(cfg.task).from_config(cfg)
    proto = export_onnx(task.torch_wrapper(model), task.example_inputs(cfg), cfg)
    assert "TRTBatchedNMS" in {n.op_type for n in proto.graph.node}
    (tmp_path / "plugin").mkdir()
    onnx.save(proto, str(tmp_path / "plugin" / "raw.onnx"))
    assert build_in_child(tmp_path / "plugin" / "raw.onnx", tmp_path / "plugin", plugin_cfg)["size"] > 1_000_000


# -- bad input ------------------------------------------------------------------------------------------
def test_a_pt_that_is_not_an_ultralytics_checkpoint(tmp_path):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "plain.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError, match="plain.pt is not an ultralytics checkpoint \\(it holds no 'model'"):
        load_model(f"ultralytics://{tmp_path / 'plain.pt'}")
    with pytest.raises(ModelError, match="junk.pt is not an ultralytics checkpoint .*; pass a .pt saved by ultralytics"):
        load_model(f"ultralytics://{tmp_path / 'junk.pt'}")
    with pytest.raises(ModelError, match="missing.pt does not exist"):
        load_model(f"ultralytics://{tmp_path / 'missing.pt'}")


def test_an_unknown_yaml_name_lists_close_ones(tmp_path):
    proc = run_cli("convert", CONFIGS / "detection/detection_onnxruntime_dynamic.py", "ultralytics://yolov8q.yaml",
                   "--work-dir", tmp_path / "work", check=False)
    error = [line for line in proc.stderr.splitlines() if "error" in line]
    assert proc.returncode == 3 and len(error) == 1, proc.stderr
    assert "ultralytics has no model yaml 'yolov8q.yaml' (did you mean" in error[0] and "yolov8n.yaml" in error[0]
    assert not (tmp_path / "work").exists() or not list((tmp_path / "work").iterdir())


def test_ultralytics_not_installed_says_the_pip_line(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ultralytics", None)  # `import ultralytics` raises ImportError
    with pytest.raises(ModelError, match=r"needs ultralytics, which is not installed; pip install 'trtdeploy\[yolo\]'"):
        load_model("ultralytics://yolov8n.yaml")


@pytest.mark.parametrize("name, what", [("yolov8n-pose.yaml", "pose \\(keypoint\\)"),
                                        ("yolov8n-obb.yaml", "oriented-box \\(obb\\)")])
def test_unsupported_yolo_tasks_say_so(tmp_path, name, what):
    with pytest.raises(ModelError, match=f"is an ultralytics {what} model, which trtdeploy does not export yet"):
        trtdeploy.convert(CONFIGS / "detection/detection_onnxruntime_dynamic.py", f"ultralytics://{name}",
                          work_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_trained_checkpoint_loads_offline_with_its_class_names(tmp_path):
    from ultralytics import YOLO

    yolo = YOLO("yolov8n.yaml")
    yolo.model.names = {i: f"shape {i}" for i in range(80)}
    path = tmp_path / "best.pt"
    yolo.save(path)
    model = load_model(f"ultralytics://{path}")
    assert type(model).__name__ == "DetectionModel" and not model.training
    from trtdeploy.tasks.detection import detector_family

    name, family = detector_family(model)
    assert name == "ultralytics YOLO" and family.class_names(model)[:2] == ["shape 0", "shape 1"]


# -- RT-DETR: no NMS, TopK over the queries ---------------------------------------------------------------
@pytest.mark.slow
def test_rtdetr_matches_builds_and_its_fp16_graph_keeps_the_detections(tmp_path):
    """One conversion with the TensorRT FP16 config: the FP32 graph matches ultralytics on ONNX Runtime, TensorRT-RTX
    builds it, and the FP16 graph the engine was built from scores like FP32 (DETR-likes are FP16-fragile)."""
    model = load_model("ultralytics://rtdetr-l.yaml")
    torch.manual_seed(0)
    for linear in model.model[-1].dec_score_head:
        torch.nn.init.normal_(linear.weight, std=0.3)
    cfg = tmp_path / "rtdetr_fp16.py"
    cfg.write_text(f"_base_ = ['{CONFIGS / 'detection/detection_tensorrt_static-320x320.py'}']\n"
                   f"backend_config = dict(common_config=dict(fp16_mode=True))\n"
                   f"codebase_config = dict(post_processing=dict(score_threshold={SCORE_THRESHOLD}, "
                   f"keep_top_k={KEEP_TOP_K}))\n")
    result = trtdeploy.convert(cfg, model, work_dir=tmp_path / "work")
    assert result.backend_path.suffix == ".engine" and result.backend_path.stat().st_size > 1_000_000
    fp32 = trtdeploy.load(result.onnx_path)
    fp16 = trtdeploy.load(tmp_path / "work" / "end2end_fp16.onnx")
    fp16.task = fp32.task
    graph = onnx.load(str(result.onnx_path), load_external_data=False).graph
    assert not {n.op_type for n in graph.node} & {"NonMaxSuppression", "Loop"}  # TopK only
    torch.manual_seed(1)
    batch = torch.rand(1, 3, 320, 320).numpy()
    ours, theirs = fp32(batch), fp32.task.torch_outputs(model, batch, fp32.runner.output_names)
    assert_same_detections(ours, theirs, (320, 320))
    half = fp16(batch)
    # Random-init queries score within 1e-3 of each other, so which of them is kept may change; the FP16 decoder's
    # numbers may not: the ranked scores agree within 1e-2 and stay finite.
    assert np.abs(np.sort(half["dets"][0, :, 4]) - np.sort(ours["dets"][0, :, 4])).max() <= 1e-2
    assert np.isfinite(half["dets"]).all() and int((half["labels"][0] >= 0).sum()) > 0


# -- torchvision transformers -----------------------------------------------------------------------------
@pytest.mark.slow
def test_vit_b_16_converts_and_builds(tmp_path):
    """nn.MultiheadAttention's fused fast path is off during export; the TorchScript dump stays out of stdout."""
    proc = run_cli("convert", CONFIGS / "classification/classification_tensorrt_static-224x224.py",
                   "torchvision://vit_b_16", "--work-dir", tmp_path)
    assert "Torch IR graph" not in proc.stdout + proc.stderr
    assert (tmp_path / "end2end.engine").stat().st_size > 100_000_000


def test_export_restores_the_attention_fast_path():
    from trtdeploy.config import load_deploy_config
    from trtdeploy.export import export_onnx

    cfg = load_deploy_config(CONFIGS / "classification/classification_onnxruntime_static.py")
    class SelfAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = torch.nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    proto = export_onnx(SelfAttention().eval(), (torch.rand(1, 4, 8),), cfg)
    assert "Softmax" in {n.op_type for n in proto.graph.node} and torch.backends.mha.get_fastpath_enabled()
