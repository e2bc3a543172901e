"""Issue 6 benchmark, detection: INT8 mAP on a small FCOS trained on generated shapes (COCO format).

    python benchmarks/bench_int8_detection.py train --out DIR      # where a GPU is (CPU works, slowly)
    python benchmarks/bench_int8_detection.py evaluate --out DIR   # here: convert (TensorRT-RTX) + trtdeploy test

Images are 128x128 with 1-3 filled rectangles, ellipses or triangles (3 classes) on noisy backgrounds;
`train` writes the images (train / calibration / held-out val, COCO JSON) and DIR/shapes_fcos.pth.
`evaluate` converts with a static 128x128 INT8 config per calibration method, then runs `trtdeploy test`
(COCO bbox mAP) on FP32 end2end.onnx, each INT8 twin end2end_int8.onnx, and onnxruntime's quantize_static
(Conv layers, same calibration samples).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZE = 128
CLASSES = ["rectangle", "ellipse", "triangle"]


def build_shapes_detector():
    """FCOS with a 4-stage BatchNorm CNN backbone (strides 4/8/16), 3 classes + background."""
    import torch
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    def block(cin, cout, stride):
        return torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False), torch.nn.BatchNorm2d(cout),
                                   torch.nn.ReLU())

    class Backbone(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Sequential(block(3, 32, 2), block(32, 32, 1))
            self.c3 = torch.nn.Sequential(block(32, 64, 2), block(64, 64, 1))
            self.c4 = block(64, 64, 2)
            self.c5 = block(64, 64, 2)
            self.out_channels = 64

        def forward(self, x):
            p3 = self.c3(self.stem(x))
            p4 = self.c4(p3)
            return OrderedDict([("0", p3), ("1", p4), ("2", self.c5(p4))])

    anchors = AnchorGenerator(sizes=((16,), (32,), (64,)), aspect_ratios=((1.0,),) * 3)
    return FCOS(Backbone(), num_classes=len(CLASSES) + 1, min_size=SIZE, max_size=SIZE, anchor_generator=anchors,
                score_thresh=0.05, detections_per_img=20)


def make_split(root: Path, name: str, n: int, seed: int) -> Path:
    """PNG images and a COCO JSON (``root/name.json``, images in ``root/name/``)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    (root / name).mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        arr = np.clip(rng.uniform(30, 120, 3) + rng.normal(0, 12, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
        im = Image.fromarray(arr)
        draw = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(1, 4))):
            w, h = (int(v) for v in rng.integers(16, 56, 2))
            x0, y0 = int(rng.integers(0, SIZE - w)), int(rng.integers(0, SIZE - h))
            cls = int(rng.integers(0, len(CLASSES)))
            fill = tuple(int(v) for v in rng.uniform(150, 255, 3))
            box = [x0, y0, x0 + w, y0 + h]
            if cls == 0:
                draw.rectangle(box, fill=fill)
            elif cls == 1:
                draw.ellipse(box, fill=fill)
            else:
                draw.polygon([(x0, y0 + h), (x0 + w // 2, y0), (x0 + w, y0 + h)], fill=fill)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cls + 1, "bbox": [x0, y0, w, h],
                         "area": float(w * h), "iscrowd": 0})
        im.save(root / name / f"{i:05d}.png")
        images.append({"id": i, "file_name": f"{name}/{i:05d}.png", "width": SIZE, "height": SIZE})
    ann_file = root / f"{name}.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns,
                                    "categories": [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)]}))
    return ann_file


def train(out: Path, epochs: int, n_train: int) -> None:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    ann = json.loads(make_split(out, "train", n_train, 0).read_text())
    make_split(out, "val", 300, 1)
    make_split(out, "calib", 128, 2)
    from PIL import Image

    device = "cuda" if torch.cuda.is_available() else "cpu"
    by_image: dict[int, list] = {}
    for a in ann["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    xs, targets = [], []
    for img in ann["images"]:
        xs.append(torch.from_numpy(np.array(Image.open(out / img["file_name"]).convert("RGB"))).permute(2, 0, 1).float() / 255)
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                 for a in by_image[img["id"]]]
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32, device=device),
                        "labels": torch.tensor([a["category_id"] for a in by_image[img["id"]]], device=device)})
    torch.manual_seed(0)
    model = build_shapes_detector().to(device)
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * -(-len(xs) // 16))
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(xs)).split(16):
            losses = model([xs[i].to(device) for i in idx], [targets[i] for i in idx])
            loss = sum(losses.values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        print(f"epoch {epoch}: loss {total / -(-len(xs) // 16):.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, out / "shapes_fcos.pth")


def _bbox_map(stdout: str, label: str) -> float | None:
    for line in stdout.splitlines():
        if label in line:
            numbers = re.findall(r"\s(\d+\.\d+)\s", f" {line} ")
            return float(numbers[0]) if numbers else None
    return None


def evaluate(out: Path) -> int:
    factory = f"{Path(__file__).resolve()}:build_shapes_detector"
    ckpt = out / "shapes_fcos.pth"
    for name, n, seed in (("val", 300, 1), ("calib", 128, 2)):  # the same images `train` made (same seeds)
        if not (out / f"{name}.json").exists():
            make_split(out, name, n, seed)
    dataset = out / "calib_dataset.py"
    dataset.write_text(f"data = dict(samples_per_gpu=8, workers_per_gpu=2, val=dict(type='CalibrationDataset', "
                       f"ann_file='{out / 'calib.json'}'))\n")
    facts = {}
    for method in ("entropy", "minmax", "percentile"):
        cfg = out / f"deploy_int8_{method}.py"
        cfg.write_text(f"""_base_ = ['{REPO}/configs/detection/detection_tensorrt-int8_static-800x1344.py']
onnx_config = dict(input_shape=[{SIZE}, {SIZE}])
codebase_config = dict(post_processing=dict(pre_top_k=1000, keep_top_k=20))
backend_config = dict(model_inputs=[dict(input_shapes=dict(input=dict(
    min_shape=[1, 3, {SIZE}, {SIZE}], opt_shape=[1, 3, {SIZE}, {SIZE}], max_shape=[1, 3, {SIZE}, {SIZE}])))])
calib_config = dict(method='{method}')
""")
        work = out / f"int8_{method}"
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "trtdeploy", "convert", str(cfg), factory, "--checkpoint", str(ckpt),
                               "--work-dir", str(work), "--calib-dataset-cfg", str(dataset)],
                              capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        facts[method] = {"convert_s": time.perf_counter() - t,
                         "engine_mb": (work / "end2end.engine").stat().st_size / 1e6}
    fp32 = out / "int8_entropy/end2end.onnx"
    ort_q = quantize_static_conv(fp32, out / "int8_entropy/calib_data.h5", out / "ort_quantize_static.onnx")
    files = [fp32] + [out / f"int8_{m}/end2end_int8.onnx" for m in facts] + [ort_q]
    proc = subprocess.run([sys.executable, "-m", "trtdeploy", "test", str(out / "deploy_int8_entropy.py"), "none",
                           *map(str, files), "--dataset", str(out / "val.json"), "--out", str(out / "test.json")],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, file=sys.stderr)
        return 1
    summarize(out, list(facts))
    for method, f in facts.items():
        print(f"trtdeploy convert ({method}): {f['convert_s']:.1f} s, engine {f['engine_mb']:.2f} MB")
    return 0


def summarize(out: Path, methods: list[str]) -> None:
    """mAP per model from `trtdeploy test`'s JSON, in the order the files were given."""
    rows = json.loads((out / "test.json").read_text())["results"]
    names = ["FP32 (end2end.onnx)"] + [f"trtdeploy INT8 {m}" for m in methods] + ["ORT quantize_static (Conv, defaults)"]
    fp32_map = rows[0]["scores"]["bbox mAP"]
    print(f"{rows[0]['images']} held-out images")
    print(f"{'model':<40} {'mAP':>6} {'drop pt':>8} {'mAP50':>6}")
    for name, row in zip(names, rows):
        m = row["scores"]["bbox mAP"]
        print(f"{name:<40} {m:6.2f} {fp32_map - m:8.2f} {row['scores']['bbox mAP50']:6.2f}")


def quantize_static_conv(fp32: Path, calib_h5: Path, out: Path) -> Path:
    """onnxruntime's quantize_static on the Conv layers (the NMS part is left alone), same samples."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    from trtdeploy.calibration import CalibrationFile

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.f = CalibrationFile(calib_h5)
            self.it = iter(self.f)

        def get_next(self):
            sample = next(self.it, None)
            return None if sample is None else {"input": sample[self.f.input_names[0]]}

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=("train", "evaluate"))
    ap.add_argument("--out", type=Path, default=REPO / "work_dirs/bench_int8_detection")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--train-images", type=int, default=2000)
    args = ap.parse_args()
    if args.step == "train":
        train(args.out.resolve(), args.epochs, args.train_images)
        return 0
    return evaluate(args.out.resolve())


if __name__ == "__main__":
    sys.exit(main())
