"""Issue 7: `trtdeploy test` end to end on ONNX Runtime, with the TensorRT-RTX engine listed as unable to run here."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import trtdeploy
from conftest import CONFIGS, run_cli
from trtdeploy.cli.main import main


@pytest.fixture(scope="module")
def labelled_folder(tiny_classifier, tmp_path_factory):
    """Six random images filed so that the model is right on exactly four: top-1 must be 4/6."""
    root = tmp_path_factory.mktemp("folder")
    model = trtdeploy.load(tiny_classifier["work"] / "end2end.onnx")
    rng = np.random.default_rng(0)
    classes = ["class_0", "class_1", "class_2"]  # sorted folder i is class i (the model has no class names)
    for name in classes:
        (root / name).mkdir()
    for i in range(6):
        image = (rng.random((60, 80, 3)) * 255).astype(np.uint8)
        predicted = model.predict(image)[0][0][0]
        label = predicted if i < 4 else (predicted + 1) % 3
        Image.fromarray(image).save(root / classes[label] / f"{i}.png")
    model.close()
    return root


def test_accuracy_table_across_backends(tiny_classifier, labelled_folder, tmp_path):
    work = tiny_classifier["work"]
    out = tmp_path / "results.json"
    proc = run_cli("test", tiny_classifier["cfg"], tiny_classifier["model"], work / "end2end.onnx",
                   work / "end2end.engine", "--dataset", labelled_folder, "--out", out)
    lines = proc.stdout.splitlines()
    assert lines[0] == f"dataset: {labelled_folder} (6 images)"
    rows = {line.split("  ")[0].strip(): line for line in lines[3:7]}
    assert set(rows) == {f"pytorch fp32 ({tiny_classifier['model']})", "onnxruntime fp32 (end2end.onnx)",
                         "tensorrt fp16 (end2end.engine)", "onnxruntime fp16 (end2end_fp16.onnx, stand-in for end2end.engine)"}
    assert "cannot run here (no GPU)" in rows["tensorrt fp16 (end2end.engine)"]
    assert "needs an NVIDIA GPU" in proc.stdout  # the full reason is printed under the table
    data = json.loads(out.read_text())
    by_target = {r["target"]: r for r in data["results"]}
    for target, row in by_target.items():
        if row["status"] == "ok":
            assert row["scores"]["top-1"] == pytest.approx(400 / 6), target
            assert row["scores"]["top-5"] == 100.0 and row["images"] == 6 and row["latency_ms"] > 0
    assert by_target["tensorrt fp16 (end2end.engine)"]["scores"] == {}


def test_max_images_show_dir_and_leaving_pytorch_out(tiny_classifier, labelled_folder, tmp_path):
    proc = run_cli("test", tiny_classifier["cfg"], "none", tiny_classifier["work"] / "end2end.onnx",
                   "--dataset", labelled_folder, "--max-images", "2", "--show-dir", tmp_path / "show")
    assert "(2 images)" in proc.stdout and "pytorch" not in proc.stdout
    pictures = sorted((tmp_path / "show").rglob("*.png"))
    assert [p.relative_to(tmp_path / "show").parent.name for p in pictures] == ["onnxruntime_fp32_end2end"] * 2
    with Image.open(pictures[0]) as im:
        assert im.size == (80, 60)  # drawn on the original image


def _cli(capsys, *args) -> tuple[int, str]:
    """Run the CLI in this process (no TensorRT build involved); returns (exit code, stderr)."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_bad_input(tiny_classifier, labelled_folder, tmp_path, capsys):
    work = tiny_classifier["work"]
    cfg, model = tiny_classifier["cfg"], tiny_classifier["model"]

    code, err = _cli(capsys, "test", cfg, model, work / "end2end.onnx", "--dataset", tmp_path / "nowhere")
    assert code == 7 and "dataset" in err and "does not exist" in err

    renamed = tmp_path / "renamed.py"
    renamed.write_text(f"_base_ = ['{CONFIGS}/classification/classification_onnxruntime_static.py']\n"
                       f"onnx_config = dict(input_names=['image'])\n")
    code, err = _cli(capsys, "test", renamed, model, work / "end2end.onnx", "--dataset", labelled_folder)
    assert code == 2 and "input_names is ['image'] but" in err and "has inputs ['input']" in err

    code, err = _cli(capsys, "test", cfg, model, work / "missing.onnx", "--dataset", labelled_folder)
    assert code == 3 and "missing.onnx does not exist" in err

    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": [{"id": 1, "file_name": "gone.jpg"}], "categories": [{"id": 1, "name": "a"}]}))
    code, err = _cli(capsys, "test", cfg, model, work / "end2end.onnx", "--dataset", coco)
    assert code == 7 and "gone.jpg" in err and "--img-prefix" in err

    code, err = _cli(capsys, "test", cfg, model, work / "end2end.onnx", "--dataset", labelled_folder, "--max-images", "0")
    assert code == 7 and "--max-images must be at least 1" in err

    (tmp_path / "taken").write_text("a file, not a folder")
    code, err = _cli(capsys, "test", cfg, model, work / "end2end.onnx", "--dataset", labelled_folder,
                     "--show-dir", tmp_path / "taken")
    assert code == 9 and "taken" in err

    engine_alone = tmp_path / "alone" / "end2end.engine"
    engine_alone.parent.mkdir()
    shutil.copy(work / "end2end.engine", engine_alone)
    code, err = _cli(capsys, "test", cfg, model, engine_alone, "--dataset", labelled_folder)
    assert code == 3 and "has no sidecar" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone", "coco.json", "renamed.py", "taken"]  # nothing half-written


def test_tensorrt_not_installed_says_how_to_install(tiny_classifier, labelled_folder):
    proc = run_cli("test", tiny_classifier["cfg"], tiny_classifier["model"], tiny_classifier["work"] / "end2end.engine",
                   "--dataset", labelled_folder, check=False, env={"TRTDEPLOY_TENSORRT": "tensorrt"})
    assert proc.returncode == 5 and "pip install tensorrt" in proc.stderr


CONSTANT_SEGMENTER = '''
import torch


def build():
    """Class 1 everywhere: a 1x1 convolution with zero weights and bias (0, 5, 0)."""
    conv = torch.nn.Conv2d(3, 3, 1)
    torch.nn.init.zeros_(conv.weight)
    with torch.no_grad():
        conv.bias.copy_(torch.tensor([0.0, 5.0, 0.0]))
    return conv
'''


def test_segmentation_miou_end_to_end(tmp_path, capsys):
    """One 'cat' (category 1) rectangle over a quarter of each image; the model says class 1 everywhere:
    IoU(cat) = 1/4, IoU(background) = 0, so mIoU = 12.5 % and pixel accuracy 25 %, on every backend."""
    (tmp_path / "seg.py").write_text(CONSTANT_SEGMENTER)
    cfg = tmp_path / "deploy.py"
    cfg.write_text(f"_base_ = ['{CONFIGS}/segmentation/segmentation_onnxruntime_static-512x1024.py']\n"
                   f"onnx_config = dict(input_shape=[64, 48])\n")
    trtdeploy.convert(cfg, f"{tmp_path / 'seg.py'}:build", work_dir=tmp_path / "w")
    images, anns = [], []
    for i in (1, 2):
        Image.new("RGB", (80, 60), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
        images.append({"id": i, "file_name": f"{i}.png", "width": 80, "height": 60})
        x, y = 10 * i, 5 * i
        anns.append({"id": i, "image_id": i, "category_id": 1, "bbox": [x, y, 40, 30], "area": 1200, "iscrowd": 0,
                     "segmentation": [[x, y, x + 40, y, x + 40, y + 30, x, y + 30]]})
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}))
    out = tmp_path / "res.json"
    assert main(["test", str(cfg), f"{tmp_path / 'seg.py'}:build", str(tmp_path / "w/end2end.onnx"), "--dataset",
                 str(ann_file), "--out", str(out)]) == 0
    assert "mIoU" in capsys.readouterr().out
    rows = json.loads(out.read_text())["results"]
    assert [r["backend"] for r in rows] == ["pytorch", "onnxruntime"]
    for row in rows:
        assert row["scores"] == {"mIoU": pytest.approx(12.5), "aAcc": pytest.approx(25.0)}


SPREAD_SSDLITE = '''
import torch
import torchvision


def build():
    """SSDlite, 3 classes, re-drawn so that scores differ (torchvision's random init gives every box the same score)."""
    torch.manual_seed(0)
    model = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight)
    for p in model.head.classification_head.parameters():
        p.data.mul_(0.3)
    return model
'''


@pytest.mark.slow
def test_detection_map_end_to_end(tmp_path, capsys):
    """SSDlite on a COCO set whose ground truth is ONNX Runtime's own top detections (category ids 11-13 named after
    the model's classes, so labels map by name): ONNX Runtime must score bbox mAP 100 and PyTorch agree."""
    cfg = tmp_path / "deploy.py"
    cfg.write_text(f"_base_ = ['{CONFIGS}/detection/detection_onnxruntime_static.py']\n"
                   f"onnx_config = dict(input_shape=[320, 320])\n")
    (tmp_path / "det.py").write_text(SPREAD_SSDLITE)
    spec = f"{tmp_path / 'det.py'}:build"
    trtdeploy.convert(cfg, spec, work_dir=tmp_path / "w")
    model = trtdeploy.load(tmp_path / "w/end2end.onnx")
    rng = np.random.default_rng(0)
    images, found = [], []
    for i in (1, 2):
        Image.fromarray((rng.random((240, 320, 3)) * 255).astype(np.uint8)).save(tmp_path / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 320, "height": 240})
        det = model.predict(tmp_path / f"{i}.jpg")[0]
        found += [(float(s), i, [float(v) for v in b], int(c)) for b, s, c in zip(det["boxes"], det["scores"], det["labels"])]
    model.close()
    found.sort(key=lambda d: -d[0])
    # Cut where the scores have a gap, so that every detection above the cut is ground truth.
    cut = next(k for k in range(3, len(found)) if found[k - 1][0] - found[k][0] > 1e-4)
    truth = found[:cut]
    anns = [{"id": k + 1, "image_id": img, "category_id": 10 + label, "bbox": [x1, y1, x2 - x1, y2 - y1],
             "area": (x2 - x1) * (y2 - y1), "iscrowd": 0} for k, (_, img, (x1, y1, x2, y2), label) in enumerate(truth)]
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns,
                                    "categories": [{"id": 10 + c, "name": f"class_{c}"} for c in (1, 2, 3)]}))
    out = tmp_path / "res.json"
    assert main(["test", str(cfg), spec, str(tmp_path / "w/end2end.onnx"), "--dataset", str(ann_file),
                 "--out", str(out)]) == 0
    assert "bbox mAP" in capsys.readouterr().out
    torch_row, ort_row = json.loads(out.read_text())["results"]
    assert ort_row["backend"] == "onnxruntime" and ort_row["scores"]["bbox mAP"] == pytest.approx(100.0)
    assert torch_row["backend"] == "pytorch" and torch_row["scores"]["bbox mAP"] >= 99.0
