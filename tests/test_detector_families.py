"""Issue 14: the public detector-family registry, used from outside the package.

A toy detector family is registered here, in the test module alone (its rewriter keyed by the dotted name of the
function it replaces, its family by the class path), and converts end to end with the shipped detection config.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from mmengine import Config

import trtdeploy
from conftest import CONFIGS
from trtdeploy.errors import ModelError
from trtdeploy.export import DETECTOR_FAMILIES, FUNCTION_REWRITER, DetectorFamily
from trtdeploy.ops.batched_nms import multiclass_nms


class ToyDetector(torch.nn.Module):
    """Every 16x16 cell predicts 3 class scores and a box around itself; eager post-processing is torchvision's NMS."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.head = torch.nn.Conv2d(3, 3 + 4, 16, stride=16)
        self.score_threshold, self.keep = 0.3, 20

    def forward(self, x):
        return self.postprocess(self.head(x))

    def decode(self, out):
        n, _, h, w = out.shape
        ys, xs = torch.meshgrid(torch.arange(h, dtype=out.dtype), torch.arange(w, dtype=out.dtype), indexing="ij")
        centers = torch.stack([xs, ys, xs, ys]).reshape(1, 4, -1) * 16 + 8
        boxes = centers + torch.tensor([-1.0, -1.0, 1.0, 1.0]).view(1, 4, 1) * (8 + 16 * out[:, 3:].sigmoid().flatten(2))
        return boxes.transpose(1, 2), out[:, :3].sigmoid().flatten(2).transpose(1, 2)

    def postprocess(self, out):
        boxes, scores = self.decode(out)
        results = []
        for b, s in zip(boxes, scores):
            score, label = s.max(1)
            keep = score > self.score_threshold
            picked = torchvision.ops.batched_nms(b[keep], score[keep], label[keep], 0.5)[:self.keep]
            results.append({"boxes": b[keep][picked], "scores": score[keep][picked], "labels": label[keep][picked]})
        return results


@FUNCTION_REWRITER.register(f"{__name__}.ToyDetector.postprocess")
def toy_postprocess(ctx, self, out):
    boxes, scores = self.decode(out)
    best = scores == scores.amax(-1, keepdim=True)  # one label per box, as the eager code picks it
    return multiclass_nms(boxes, torch.where(best, scores, torch.full_like(scores, -1.0)), iou_threshold=0.5,
                          score_threshold=self.score_threshold, pre_top_k=1000, keep_top_k=self.keep)


def _configure(model, post_processing: dict) -> dict:
    model.score_threshold = post_processing.get("score_threshold", model.score_threshold)
    model.keep = post_processing.get("keep_top_k", model.keep)
    return {"score_threshold": model.score_threshold, "iou_threshold": 0.5, "keep_top_k": model.keep}


DETECTOR_FAMILIES.add("toy detector", DetectorFamily(
    class_path=f"{__name__}.ToyDetector", num_classes=lambda m: 3,
    rewritten=lambda m: [ToyDetector.postprocess], configure=_configure,
    eager=lambda model, batch, post_processing: model(batch),
    preprocess=lambda m: {"mean": [0.0] * 3, "std": [255.0] * 3, "keep_ratio": True, "pad_value": 0.0},
    class_names=lambda m: ["red", "green", "blue"]))


def test_a_family_registered_outside_the_package_converts_and_matches(tmp_path):
    cfg = Config.fromfile(str(CONFIGS / "detection/detection_onnxruntime_dynamic.py")).to_dict()
    cfg["onnx_config"]["input_shape"] = [128, 96]
    cfg["codebase_config"]["post_processing"].update(score_threshold=0.3, keep_top_k=20)
    model = ToyDetector().eval()
    result = trtdeploy.convert(cfg, model, work_dir=tmp_path)
    deployed = trtdeploy.load(result.backend_path)
    batch = np.random.default_rng(0).uniform(0, 1, (2, 3, 160, 128)).astype(np.float32)  # another size and batch
    ours, theirs = deployed(batch), deployed.task.torch_outputs(model, batch, deployed.runner.output_names)
    assert (theirs["labels"] >= 0).sum() > 4
    np.testing.assert_array_equal(ours["labels"], theirs["labels"])
    np.testing.assert_allclose(ours["dets"], theirs["dets"], atol=1e-4)
    assert deployed.sidecar["class_names"] == ["red", "green", "blue"]
    assert deployed.sidecar["preprocess"]["std"] == [255.0] * 3


def test_an_unknown_detector_is_refused_with_the_registered_families(tmp_path):
    with pytest.raises(ModelError) as err:
        trtdeploy.convert(CONFIGS / "detection/detection_onnxruntime_dynamic.py", torch.nn.Conv2d(3, 3, 1),
                          work_dir=tmp_path)
    message = str(err.value)
    for family in ("torchvision RetinaNet", "ultralytics YOLO", "toy detector"):
        assert family in message
    assert "Adding a detector family" in message and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_keypoint_rcnn_converts_builds_draws_and_scores(tmp_path):
    """keypoints [N, K, 17, 3] (x, y, heatmap score) beside dets/labels: built by TensorRT-RTX, drawn by `run --out`,
    scored by `test` as COCO keypoint mAP."""
    import json

    from PIL import Image

    from conftest import DEMO_IMG, build_in_child, run_cli
    from test_detection import assert_same_detections, decisive

    model = decisive(torchvision.models.get_model("keypointrcnn_resnet50_fpn", weights=None, weights_backbone=None))
    cfg = Config.fromfile(str(CONFIGS / "keypoints/keypoints_onnxruntime_dynamic.py")).to_dict()
    cfg["onnx_config"]["input_shape"] = [352, 320]
    cfg["codebase_config"]["post_processing"].update(keep_top_k=20, pre_top_k=3000)
    result = trtdeploy.convert(cfg, model, work_dir=tmp_path / "work")
    deployed = trtdeploy.load(result.backend_path)
    torch.manual_seed(1)
    batch = (torch.rand(1, 3, 320, 352) * 4 - 2).numpy()
    ours, theirs = deployed(batch), deployed.task.torch_outputs(model, batch, deployed.runner.output_names)
    assert ours["keypoints"].shape == theirs["keypoints"].shape == (1, 20, 17, 3)
    assert_same_detections({k: ours[k] for k in ("dets", "labels")}, {k: theirs[k] for k in ("dets", "labels")},
                           (320, 352))
    boxes, xy = ours["dets"][0, :, None, :4], ours["keypoints"][0, :, :, :2]
    assert ((xy >= boxes[..., :2] - 1e-3) & (xy <= boxes[..., 2:] + 1e-3)).all()  # every keypoint inside its box
    assert build_in_child(result.onnx_path, tmp_path / "trt",
                          CONFIGS / "keypoints/keypoints_tensorrt_dynamic-320x320-1344x1344.py")["size"] > 1_000_000

    drawn = tmp_path / "drawn.png"
    run_cli("run", result.backend_path, "--input", DEMO_IMG, "--out", drawn)
    assert np.abs(np.asarray(Image.open(drawn), np.int16) - np.asarray(Image.open(DEMO_IMG).convert("RGB"), np.int16)).max() > 50
    width, height = Image.open(DEMO_IMG).size
    person = [v for k in range(17) for v in (width * (0.3 + 0.02 * k), height * (0.2 + 0.03 * k), 2)]
    coco = {"images": [{"id": 1, "file_name": DEMO_IMG.name, "width": width, "height": height}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [width * 0.3, height * 0.2, width * 0.34,
                                                                                 height * 0.48],
                             "area": width * height * 0.16, "iscrowd": 0, "keypoints": person, "num_keypoints": 17}],
            "categories": [{"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(17)], "skeleton": []}]}
    (tmp_path / "kp.json").write_text(json.dumps(coco))
    proc = run_cli("test", CONFIGS / "keypoints/keypoints_onnxruntime_dynamic.py", "none", result.onnx_path,
                   "--dataset", tmp_path / "kp.json", "--img-prefix", DEMO_IMG.parent, "--out", tmp_path / "acc.json")
    scores = json.loads((tmp_path / "acc.json").read_text())["results"][0]["scores"]
    assert {"bbox mAP", "keypoints mAP", "keypoints mAP50"} <= set(scores), proc.stdout

    from trtdeploy.serving import model_config as mc

    run_cli("export-triton", result.work_dir, "--repo", tmp_path / "repo", "--name", "kp")
    served = {o.name: list(o.dims) for o in mc.parse(tmp_path / "repo/kp/config.pbtxt").output}
    assert served["keypoints"] == [-1, -1, 3]  # the Python-backend model answers each detection's keypoints


HF_DETR = '''
import torch
from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig


def tiny_detr():
    """A one-layer DETR on a small ResNet, built from its config (random weights, nothing downloaded)."""
    torch.manual_seed(0)
    backbone = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 64], depths=[1, 1, 1, 1], layer_type="basic",
                            out_features=["stage4"])
    return DetrForObjectDetection(DetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone, d_model=32,
        encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, num_queries=20, num_labels=5, id2label={i: f"shape{i}" for i in range(5)})).eval()
'''


@pytest.mark.slow
def test_hugging_face_detr_converts_matches_pytorch_and_builds(tmp_path):
    """transformers' DETR through its family: no NMS, each query's best class; the graph matches the eager model at
    two sizes and TensorRT-RTX builds it under the shipped dynamic FP16 config."""
    from conftest import build_in_child

    (tmp_path / "detr_models.py").write_text(HF_DETR)
    cfg = Config.fromfile(str(CONFIGS / "detection/detection_onnxruntime_dynamic.py")).to_dict()
    cfg["codebase_config"]["post_processing"].update(score_threshold=0.0)
    result = trtdeploy.convert(cfg, f"{tmp_path / 'detr_models.py'}:tiny_detr", work_dir=tmp_path / "work")
    deployed = trtdeploy.load(result.backend_path)
    assert deployed.task.settings["class_names"] == [f"shape{i}" for i in range(5)]
    from trtdeploy.export import load_model

    model = load_model(f"{tmp_path / 'detr_models.py'}:tiny_detr", None, "cpu")
    for shape in [(1, 3, 320, 352), (2, 3, 480, 416)]:
        batch = (torch.rand(*shape) * 4 - 2).numpy()
        ours, theirs = deployed(batch), deployed.task.torch_outputs(model, batch, deployed.runner.output_names)
        assert ours["dets"].shape == (shape[0], 20, 5)  # keep_top_k capped at the model's 20 queries
        np.testing.assert_array_equal(ours["labels"], theirs["labels"])
        np.testing.assert_allclose(ours["dets"], theirs["dets"], atol=1e-3)
    built = build_in_child(result.onnx_path, tmp_path / "trt",
                           CONFIGS / "detection/detection_tensorrt-fp16_dynamic-320x320-1344x1344.py")
    assert built["size"] > 0
