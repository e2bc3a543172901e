"""Issue 4: torchvision detectors (and Mask R-CNN) as one plugin-free end-to-end graph.

Each model is exported once per session (session fixtures) at a small size and compared
with the detector's own eager output on the same pre-processed batch. Random-init
detectors are made decisive first: BatchNorm statistics re-estimated on random images
(otherwise activations shrink to ~1e-20 and every score ties) and the class-logit layers
widened; detections are then compared as matched sets (same label, box within 1e-3
relative, score within 1e-3), as box order among equal scores is arbitrary.
"""
from __future__ import annotations

import json
import textwrap

import numpy as np
import onnx
import pytest
import torch
import torchvision
from mmengine import Config

import trtdeploy
from conftest import CONFIGS, DEMO_IMG, REPO, run_cli, build_in_child
from trtdeploy.errors import ConfigError, ModelError, ShapeError
from trtdeploy.tasks.detection import paste_masks

DETECTORS = ["retinanet_resnet50_fpn", "fcos_resnet50_fpn", "ssdlite320_mobilenet_v3_large",
             "fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn"]
SIZES = [(1, 3, 320, 352), (2, 3, 352, 320)]  # two sizes (and batch sizes) inside the shipped 320..1344 profile
KEEP_TOP_K = 50
CLASS_LOGIT_LAYERS = ("cls_logits", "cls_score", "classification_head.module_list", "mask_fcn_logits",
                      "bbox_ctrness")


def decisive(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-estimate BatchNorm statistics and widen class-logit layers so scores spread out instead of tying."""
    torch.manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a plain average over the calibration batch
        bn.train()
    with torch.no_grad():
        model.backbone(torch.rand(2, 3, 256, 256) * 4 - 2)
    for bn in norms:
        bn.eval()
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and any(k in name for k in CLASS_LOGIT_LAYERS):
            torch.nn.init.normal_(m.weight, std=0.2)
    return model.eval()


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return decisive(torchvision.models.get_model(name, weights=None, weights_backbone=None))


def ort_config(name: str) -> dict:
    """The shipped dynamic ONNX Runtime config, exported small; keep_top_k/pre_top_k chosen so the test is quick."""
    folder, stem = ("instance-seg", "instance-seg") if name.startswith("maskrcnn") else ("detection", "detection")
    cfg = Config.fromfile(str(CONFIGS / folder / f"{stem}_onnxruntime_dynamic.py")).to_dict()
    cfg["onnx_config"]["input_shape"] = [352, 320]
    cfg["codebase_config"]["post_processing"].update(keep_top_k=KEEP_TOP_K, pre_top_k=3000)
    return cfg


@pytest.fixture(scope="session")
def convert_once(tmp_path_factory):
    """name -> (name, eager model, ConvertResult), each detector converted once for the session."""
    done = {}

    def convert(name: str):
        if name not in done:
            model = build(name)
            done[name] = name, model, trtdeploy.convert(ort_config(name), model, work_dir=tmp_path_factory.mktemp(name))
        return done[name]
    return convert


@pytest.fixture(scope="session", params=DETECTORS)
def converted(request, convert_once):
    return convert_once(request.param)


def assert_same_detections(ours: dict, theirs: dict, image_hw: tuple[int, int]) -> None:
    """Per image: the same number of detections, each torch detection matched by one of ours."""
    for i in range(len(theirs["labels"])):
        mine, ref = ours["labels"][i] >= 0, theirs["labels"][i] >= 0
        assert mine.sum() == ref.sum() > 0, f"image {i}: {mine.sum()} detections vs PyTorch's {ref.sum()}"
        free = set(np.flatnonzero(mine))
        for j in np.flatnonzero(ref):
            box, label = theirs["dets"][i, j, :4], theirs["labels"][i, j]
            tol = 1e-3 * max(1.0, float(np.abs(box).max()))
            close = [k for k in free if ours["labels"][i, k] == label
                     and np.abs(ours["dets"][i, k, :4] - box).max() <= tol
                     and abs(ours["dets"][i, k, 4] - theirs["dets"][i, j, 4]) <= 1e-3]
            assert close, f"image {i}: PyTorch's detection {theirs['dets'][i, j]} (label {label}) has no match"
            k = min(close, key=lambda c: np.abs(ours["dets"][i, c, :4] - box).max())
            free.remove(k)
            if "masks" in theirs:
                # Pasted into the same box: a 1e-4 px box difference can move torchvision's integer paste by a pixel.
                a = paste_masks(ours["masks"][i, k:k + 1], box[None], image_hw)
                b = paste_masks(theirs["masks"][i, j:j + 1], box[None], image_hw)
                union = (a | b).sum()
                assert union == 0 or (a & b).sum() / union >= 0.99


@pytest.mark.slow
def test_onnxruntime_matches_pytorch(converted):
    """The end-to-end graph finds what the detector itself finds, at two sizes and batch sizes."""
    name, model, result = converted
    deployed = trtdeploy.load(result.backend_path)
    for shape in SIZES:
        torch.manual_seed(1)
        batch = (torch.rand(shape) * 4 - 2).numpy()
        ours = deployed(batch)
        theirs = deployed.task.torch_outputs(model, batch, deployed.runner.output_names)
        assert ours["dets"].shape == (shape[0], KEEP_TOP_K, 5) and ours["labels"].dtype == np.int64
        assert_same_detections(ours, theirs, shape[2:])


@pytest.mark.slow
def test_graph_is_one_plugin_free_graph(converted):
    """No NonZero, NMS or RoiAlign nodes (TensorRT-RTX cannot build them), no custom nodes, MMDeploy's outputs."""
    name, _, result = converted
    graph = onnx.load(str(result.onnx_path), load_external_data=False).graph
    ops = {(n.domain or "", n.op_type) for n in graph.node}
    assert not {op for op in ops if op[0] not in ("", "ai.onnx")}, ops
    assert not {op for _, op in ops} & {"NonZero", "NonMaxSuppression", "RoiAlign"}
    assert [i.name for i in graph.input] == ["input"]
    masks = ["masks"] if name.startswith("maskrcnn") else []
    assert [o.name for o in graph.output] == ["dets", "labels", *masks]
    sidecar = json.loads(result.sidecar_path.read_text())
    assert sidecar["class_names"][1] == "person" and sidecar["post_processing"]["keep_top_k"] == KEEP_TOP_K


@pytest.mark.slow
def test_tensorrt_rtx_builds_the_graph(converted, tmp_path):
    """TensorRT-RTX parses and builds the same graph with the shipped dynamic profile (child process)."""
    name, _, result = converted
    folder = "instance-seg" if name.startswith("maskrcnn") else "detection"
    cfg = CONFIGS / folder / f"{folder}_tensorrt_dynamic-320x320-1344x1344.py"
    facts = build_in_child(result.onnx_path, tmp_path, cfg)
    assert facts["size"] > 1_000_000
    assert facts["profiles"] == [{"input": {"min_shape": [1, 3, 320, 320], "opt_shape": [1, 3, 800, 1344],
                                            "max_shape": [1, 3, 1344, 1344]}}]


MMDEPLOY_FILES = {
    # MMDeploy's configs/mmdet/detection/detection_tensorrt_dynamic-320x320-1344x1344.py and its _base_ chain,
    # field for field; only codebase_config.type differs ('mmdet' there).
    "_base_/onnx_config.py": """
        onnx_config = dict(
            type='onnx',
            export_params=True,
            keep_initializers_as_inputs=False,
            opset_version=11,
            save_file='end2end.onnx',
            input_names=['input'],
            output_names=['output'],
            input_shape=None,
            optimize=True)
    """,
    "_base_/backends/tensorrt.py": """
        backend_config = dict(
            type='tensorrt', common_config=dict(fp16_mode=False, max_workspace_size=0))
    """,
    "mmdet/_base_/base_static.py": """
        _base_ = ['../../_base_/onnx_config.py']

        onnx_config = dict(output_names=['dets', 'labels'], input_shape=None)
        codebase_config = dict(
            type='torchvision',
            task='ObjectDetection',
            model_type='end2end',
            post_processing=dict(
                score_threshold=0.05,
                confidence_threshold=0.005,  # for YOLOv3
                iou_threshold=0.5,
                max_output_boxes_per_class=200,
                pre_top_k=5000,
                keep_top_k=100,
                background_label_id=-1,
            ))
    """,
    "mmdet/_base_/base_dynamic.py": """
        _base_ = ['./base_static.py']
        onnx_config = dict(
            dynamic_axes={
                'input': {0: 'batch', 2: 'height', 3: 'width'},
                'dets': {0: 'batch', 1: 'num_dets'},
                'labels': {0: 'batch', 1: 'num_dets'},
            }, )
    """,
    "mmdet/_base_/base_tensorrt_dynamic-320x320-1344x1344.py": """
        _base_ = ['./base_dynamic.py', '../../_base_/backends/tensorrt.py']

        backend_config = dict(
            common_config=dict(max_workspace_size=1 << 30),
            model_inputs=[
                dict(
                    input_shapes=dict(
                        input=dict(
                            min_shape=[1, 3, 320, 320],
                            opt_shape=[1, 3, 800, 1344],
                            max_shape=[1, 3, 1344, 1344])))
            ])
    """,
    "mmdet/detection/detection_tensorrt_dynamic-320x320-1344x1344.py": """
        _base_ = ['../_base_/base_tensorrt_dynamic-320x320-1344x1344.py']
    """,
}


@pytest.mark.slow
def test_mmdeploy_config_converts_torchvision_retinanet(tmp_path):
    for rel, text in MMDEPLOY_FILES.items():
        (tmp_path / "configs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "configs" / rel).write_text(textwrap.dedent(text).lstrip())
    work = tmp_path / "work"
    run_cli("convert", tmp_path / "configs/mmdet/detection/detection_tensorrt_dynamic-320x320-1344x1344.py",
            "torchvision://retinanet_resnet50_fpn", "--work-dir", work)
    sidecar = json.loads((work / "end2end.engine.json").read_text())
    assert sidecar["profiles"] == [{"input": {"min_shape": [1, 3, 320, 320], "opt_shape": [1, 3, 800, 1344],
                                              "max_shape": [1, 3, 1344, 1344]}}]
    assert [o["name"] for o in sidecar["outputs"]] == ["dets", "labels"]
    assert sidecar["task"] == "ObjectDetection" and sidecar["post_processing"]["keep_top_k"] == 100


@pytest.mark.slow
def test_run_draws_boxes_names_scores_and_masks(convert_once, tmp_path):
    _, _, result = convert_once("maskrcnn_resnet50_fpn")
    out_png = tmp_path / "result.png"
    proc = run_cli("run", result.backend_path, "--input", DEMO_IMG, "--out", out_png)
    count = int(proc.stdout.split(" detections")[0].split()[-1])
    assert count > 0 and "(class " in proc.stdout and " at [" in proc.stdout
    from PIL import Image

    drawn, original = Image.open(out_png), Image.open(DEMO_IMG)
    assert drawn.size == original.size
    assert np.abs(np.asarray(drawn, np.int16) - np.asarray(original.convert("RGB"), np.int16)).max() > 50


def test_task_and_model_must_match(tmp_path):
    """A classifier with a detection config, a detector with a classification or instance-seg config."""
    det_cfg = CONFIGS / "detection/detection_onnxruntime_dynamic.py"
    proc = run_cli("convert", det_cfg, "torchvision://resnet18", "--work-dir", tmp_path, check=False)
    error = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 3 and len(error) == 1 and "ResNet is not a model of a registered detector family (torchvision RetinaNet" in error[0]
    assert "Adding a detector family" in error[0]
    ssd = torchvision.models.get_model("ssdlite320_mobilenet_v3_large", weights=None, weights_backbone=None)
    with pytest.raises(ModelError, match="SSD is not a classifier"):
        trtdeploy.convert(CONFIGS / "classification/classification_onnxruntime_dynamic.py", ssd, work_dir=tmp_path)
    with pytest.raises(ModelError, match="has no mask head.*configs/detection"):
        trtdeploy.convert(CONFIGS / "instance-seg/instance-seg_onnxruntime_dynamic.py", ssd, work_dir=tmp_path)
    assert not list(tmp_path.glob("*.onnx"))


class PatchedRetinaNet(torchvision.models.detection.RetinaNet):
    def postprocess_detections(self, head_outputs, anchors, image_shapes):
        return super().postprocess_detections(head_outputs, anchors, image_shapes)


def test_post_processing_without_rewriter_names_the_function(tmp_path):
    model = PatchedRetinaNet(torchvision.models.detection.retinanet_resnet50_fpn(
        weights=None, weights_backbone=None).backbone, num_classes=91)
    target = f"{__name__}.PatchedRetinaNet.postprocess_detections"
    with pytest.raises(ModelError, match=f"@FUNCTION_REWRITER.register\\('{target}'\\)"):
        trtdeploy.convert(CONFIGS / "detection/detection_onnxruntime_dynamic.py", model, work_dir=tmp_path)


RAW_POSTPROCESSING = '''
import torch, torchvision


class RawPostprocessing(torch.nn.Module):
    """What a torchvision detector exports to without rewriters: NonZero, NonMaxSuppression, RoiAlign."""

    def forward(self, x):
        boxes = torch.cat([x[0, 0, :8, :2] * 10, x[0, 0, :8, :2] * 10 + 20], dim=1)
        scores = x[0, 1, :8, 0]
        keep = torchvision.ops.nms(boxes, scores, 0.5)
        pooled = torchvision.ops.roi_align(x, torch.cat([torch.zeros(8, 1), boxes], dim=1), 7)
        return pooled.sum() + keep.sum() + torch.nonzero(scores > 0.1).sum()


def build():
    return RawPostprocessing()
'''


def test_unbuildable_nodes_are_listed_before_the_build(tmp_path):
    (tmp_path / "raw.py").write_text(RAW_POSTPROCESSING)
    cfg = tmp_path / "cfg.py"
    cfg.write_text(f"_base_ = ['{CONFIGS / 'classification/classification_tensorrt_static-224x224.py'}']\n"
                   f"onnx_config = dict(input_shape=[32, 32])\n"
                   f"backend_config = dict(model_inputs=[dict(input_shapes=dict(input=dict(min_shape=[1, 3, 32, 32], "
                   f"opt_shape=[1, 3, 32, 32], max_shape=[1, 3, 32, 32])))])\n")
    proc = run_cli("convert", cfg, f"{tmp_path / 'raw.py'}:build", "--work-dir", tmp_path / "work", check=False)
    err = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 6, proc.stderr
    for op in ("NonZero", "NonMaxSuppression", "RoiAlign"):
        assert f"ai.onnx::{op}" in err, err
    assert "3 node(s) cannot be built" in err
    assert "build tensorrt" not in proc.stderr  # the listing comes before any build starts
    assert not (tmp_path / "work" / "end2end.engine").exists()


@pytest.mark.slow
def test_static_graph_names_the_size_it_was_built_for(tmp_path):
    cfg = ort_config("ssdlite320_mobilenet_v3_large")
    cfg["onnx_config"].pop("dynamic_axes")
    model = build("ssdlite320_mobilenet_v3_large")
    result = trtdeploy.convert(cfg, model, work_dir=tmp_path)
    deployed = trtdeploy.load(result.backend_path)
    with pytest.raises(ShapeError, match=r"fixed to 320 \(the model was built for shape \[1, 3, 320, 352\]\)"):
        deployed(np.zeros((1, 3, 352, 352), np.float32))
    assert deployed.predict(DEMO_IMG)[0]["boxes"].shape[1] == 4  # the pipeline resizes images to the built size


def test_shipped_configs_load():
    from trtdeploy.config import load_deploy_config

    for path in sorted((REPO / "configs").glob("*/*.py")):
        if path.parent.name in ("detection", "instance-seg", "segmentation") and (
                "onnxruntime" in path.name or "tensorrt" in path.name):
            cfg = load_deploy_config(path)
            assert cfg.task in ("ObjectDetection", "InstanceSegmentation", "Segmentation")
            if "dynamic-320x320-1344x1344" in path.name:
                assert [list(r.min) + list(r.opt) + list(r.max) for r in cfg.profiles[0].values()] == [
                    [1, 3, 320, 320, 1, 3, 800, 1344, 1, 3, 1344, 1344]]


@pytest.mark.parametrize("key, value, message", [
    ("keep_top_k", 0, "keep_top_k must be an integer > 0"),
    ("iou_threshold", 1.5, "iou_threshold must be a number in \\[0, 1\\]"),
    ("score_threshold", "high", "score_threshold must be a number in \\[0, 1\\)"),
    ("pre_top_k", 0, "pre_top_k must be an integer > 0, or -1 for no cap"),
])
def test_post_processing_out_of_range_is_refused_before_export(tmp_path, key, value, message):
    cfg = ort_config("ssdlite320_mobilenet_v3_large")
    cfg["codebase_config"]["post_processing"][key] = value
    model = torchvision.models.get_model("ssdlite320_mobilenet_v3_large", weights=None, weights_backbone=None)
    with pytest.raises(ConfigError, match=f"codebase_config.post_processing.{message}"):
        trtdeploy.convert(cfg, model, work_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_masks_pasted_in_the_graph_are_refused(tmp_path):
    cfg = ort_config("maskrcnn_resnet50_fpn")
    cfg["codebase_config"]["export_postprocess_mask"] = True
    with pytest.raises(ConfigError, match="export_postprocess_mask=True .* is not supported; set it to False"):
        trtdeploy.convert(cfg, "torchvision://maskrcnn_resnet50_fpn", work_dir=tmp_path)
    assert not list(tmp_path.iterdir())
