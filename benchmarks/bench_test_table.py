"""Issue 7 benchmark: `trtdeploy test` and `trtdeploy profile`, FP32 / FP16 / INT8 side by side, on models trained here.

Classifier: issue 6's (benchmarks/bench_int8.py: scikit-learn's digits upscaled to 3x32x32, a small CNN). Its
checkpoint and INT8 engine are copied from --int8-dir when a finished run of that benchmark is there; otherwise
this script trains and converts the same way itself (and says so). Held-out split as an image folder.
Detector: issue 6 has none yet, so this script trains one: an FCOS with a 4-layer backbone on 1,600 generated 64x64
images of squares and discs (COCO JSON), about three minutes on one CPU thread; held-out set as COCO JSON + PNGs.

For each model: FP32 (ONNX Runtime), FP16 and INT8 (TensorRT-RTX engines; INT8 calibrated on training images)
with `trtdeploy convert`, then `trtdeploy test` over PyTorch and the three files, and `trtdeploy profile`.
Engines cannot run here: their graphs stand in on ONNX Runtime (end2end_fp16.onnx; the INT8 engine's
FP32-scale Q/DQ twin).

    python benchmarks/bench_test_table.py [--int8-dir work_dirs/bench_int8] [--out work_dirs/bench_test_table]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BENCH_INT8 = REPO / "benchmarks" / "bench_int8.py"


def bench_int8_module():
    spec = importlib.util.spec_from_file_location("bench_int8", BENCH_INT8)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CommandFailed(Exception):
    """A trtdeploy command exited non-zero; the message is its last line of stderr."""


def trtdeploy(*args, cwd=REPO) -> tuple[str, float]:
    """Run the CLI; PyTorch gets one intra-op thread (OMP_NUM_THREADS=1): on a shared 2-core machine its
    default two spin against the other processes and batch-1 latency of this tiny net jumps 100-fold."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "trtdeploy", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise CommandFailed(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}")
    return proc.stdout, time.perf_counter() - start


def write_configs(out: Path, bench) -> dict[str, Path]:
    """FP32 (ONNX Runtime) and FP16 (TensorRT) at the digits' 32x32, with the digits' pre-processing."""
    preprocess = f"codebase_config = dict(preprocess=dict(crop_ratio=1.0, mean={bench.MEAN}, std={bench.STD}))\n"
    size = bench.SIZE
    shapes = f"min_shape=[1, 3, {size}, {size}], opt_shape=[1, 3, {size}, {size}], max_shape=[1, 3, {size}, {size}]"
    configs = {
        "fp32": f"_base_ = ['{REPO}/configs/classification/classification_onnxruntime_static.py']\n"
                f"onnx_config = dict(input_shape=[{size}, {size}])\n{preprocess}",
        "fp16": f"_base_ = ['{REPO}/configs/classification/classification_tensorrt-fp16_static-224x224.py']\n"
                f"onnx_config = dict(input_shape=[{size}, {size}])\n{preprocess}"
                f"backend_config = dict(model_inputs=[dict(input_shapes=dict(input=dict({shapes})))])\n",
    }
    paths = {}
    for name, text in configs.items():
        paths[name] = out / f"deploy_{name}.py"
        paths[name].write_text(text)
    return paths


def write_test_folder(x_test, y_test, folder: Path) -> None:
    from PIL import Image

    for i, (image, label) in enumerate(zip(x_test, y_test)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / str(label) / f"{i:04d}.png")


def test_and_profile(deploy_cfg: Path, model: str, ckpt: Path, files: list[Path], dataset: Path, out: Path,
                     iterations: int) -> None:
    """The two commands this benchmark is about, printed with their output and wall time."""
    for command in (["test", deploy_cfg, model, "--checkpoint", ckpt, *files, "--dataset", dataset,
                     "--out", out / "test.json"],
                    ["profile", *files, "--model", model, "--checkpoint", ckpt, "--iterations", iterations,
                     "--warmup", 20, "--json", out / "profile.json"]):
        table, seconds = trtdeploy(*command)
        print(f"\n$ trtdeploy {' '.join(str(c).replace(str(REPO) + '/', '') for c in command)}   ({seconds:.1f} s)\n"
              f"{table}")


def classification_table(int8_dir: Path, out: Path, iterations: int) -> None:
    bench = bench_int8_module()
    data = bench.make_images(out, 256)
    theirs = [int8_dir / "digits_net.pth", int8_dir / "int8_entropy/end2end.engine", int8_dir / "int8_entropy/end2end.engine.json"]
    finished = int8_dir / "results.json"  # written last: the checkpoint and the engine belong to one finished run
    ckpt, int8_engine = out / "digits_net.pth", out / "int8_entropy" / "end2end.engine"
    if finished.is_file() and all(p.is_file() and p.stat().st_mtime <= finished.stat().st_mtime for p in theirs):
        shutil.copy(theirs[0], ckpt)  # a snapshot: that benchmark may be run again while this one runs
        shutil.copytree(int8_dir / "int8_entropy", int8_engine.parent, dirs_exist_ok=True)
        print(f"classifier and INT8 engine: copied from {int8_dir} (a finished run of benchmarks/bench_int8.py)")
    else:
        train_s = bench.train(data, 8, ckpt)
        dataset_cfg, int8_configs = bench.write_configs(out, data["calib_dir"])
        trtdeploy("convert", int8_configs["entropy"], f"{BENCH_INT8}:build_digits_net", "--checkpoint", ckpt,
                  "--work-dir", int8_engine.parent, "--calib-dataset-cfg", dataset_cfg)
        print(f"classifier and INT8 engine: trained ({train_s:.0f} s) and converted here the way "
              f"benchmarks/bench_int8.py does (no finished run of it in {int8_dir})")
    configs = write_configs(out, bench)
    model = f"{BENCH_INT8}:build_digits_net"
    files = convert_all(configs, model, ckpt, out) + [int8_engine]
    folder = out / "test_images"
    if not folder.is_dir():
        write_test_folder(data["x_test"], data["y_test"], folder)
    test_and_profile(configs["fp32"], model, ckpt, files, folder, out, iterations)


def convert_all(configs: dict[str, Path], model: str, ckpt: Path, out: Path, *extra) -> list[Path]:
    """Convert with each config; a conversion that fails is reported and left out of the table."""
    files = []
    for precision, cfg in configs.items():
        try:
            _, seconds = trtdeploy("convert", cfg, model, "--checkpoint", ckpt, "--work-dir", out / precision, *extra)
        except CommandFailed as e:
            print(f"convert {precision}: FAILED: {e}")
            continue
        files.append(out / precision / ("end2end.onnx" if precision == "fp32" else "end2end.engine"))
        print(f"convert {precision}: {seconds:.1f} s")
    return files


# -- the detector ------------------------------------------------------------------------------------------

SHAPES_SIZE = 64
SHAPES_CLASSES = ["background", "square", "disc"]


def build_shapes_fcos():
    """FCOS (torchvision) on a 4-layer backbone with one stride-8 feature map: small enough to train in minutes."""
    from collections import OrderedDict

    import torch
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    class Backbone(torch.nn.Module):
        def __init__(self):
            super().__init__()

            def block(cin, cout, stride):
                return [torch.nn.Conv2d(cin, cout, 3, stride, 1), torch.nn.BatchNorm2d(cout), torch.nn.ReLU()]
            self.body = torch.nn.Sequential(*block(3, 16, 2), *block(16, 32, 2), *block(32, 64, 2), *block(64, 64, 1))
            self.out_channels = 64

        def forward(self, x):
            return OrderedDict([("0", self.body(x))])

    torch.manual_seed(0)
    return FCOS(Backbone(), num_classes=len(SHAPES_CLASSES), min_size=SHAPES_SIZE, max_size=SHAPES_SIZE,
                image_mean=[0.5] * 3, image_std=[0.25] * 3, score_thresh=0.05, detections_per_img=20,
                anchor_generator=AnchorGenerator(sizes=((16,),), aspect_ratios=((1.0,),)))


def make_shapes(n: int, seed: int) -> list[tuple]:
    """(image, boxes xyxy, labels): one or two filled squares/discs of 12-27 px on dark noise."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n):
        im = Image.fromarray((rng.random((SHAPES_SIZE, SHAPES_SIZE, 3)) * 60).astype(np.uint8))
        draw = ImageDraw.Draw(im)
        boxes, labels = [], []
        for _ in range(rng.integers(1, 3)):
            size = int(rng.integers(12, 28))
            x, y = (int(v) for v in rng.integers(0, SHAPES_SIZE - size, 2))
            label = int(rng.integers(1, 3))
            shape = draw.rectangle if label == 1 else draw.ellipse
            shape([x, y, x + size - 1, y + size - 1], fill=tuple(int(v) for v in rng.integers(120, 256, 3)))
            boxes.append([x, y, x + size, y + size])
            labels.append(label)
        samples.append((np.asarray(im), np.array(boxes, np.float32), np.array(labels, np.int64)))
    return samples


def train_shapes(samples: list[tuple], ckpt: Path, epochs: int) -> float:
    import torch

    model = build_shapes_fcos().train()
    batches = np.arange(len(samples) // 32 * 32).reshape(-1, 32)
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    # One-cycle schedule: measured 51 bbox mAP after 40 epochs where a constant rate stayed under 10.
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * len(batches))
    images = torch.from_numpy(np.stack([s[0] for s in samples])).permute(0, 3, 1, 2).float() / 255
    start = time.perf_counter()
    for epoch in range(epochs):
        for idx in np.random.default_rng(epoch).permutation(len(samples))[batches]:
            targets = [{"boxes": torch.from_numpy(samples[i][1]), "labels": torch.from_numpy(samples[i][2])} for i in idx]
            loss = sum(model(list(images[idx]), targets).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            schedule.step()
    torch.save(model.state_dict(), ckpt)
    return time.perf_counter() - start


def write_coco(samples: list[tuple], folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i, (image, boxes, labels) in enumerate(samples, 1):
        Image.fromarray(image).save(folder / f"{i:04d}.png")
        images.append({"id": i, "file_name": f"{i:04d}.png", "width": SHAPES_SIZE, "height": SHAPES_SIZE})
        anns += [{"id": len(anns) + 1, "image_id": i, "category_id": int(c), "bbox": [x1, y1, x2 - x1, y2 - y1],
                  "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}
                 for (x1, y1, x2, y2), c in zip(boxes.tolist(), labels.tolist())]
    ann_file = folder / "annotations.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": [
        {"id": i, "name": name} for i, name in enumerate(SHAPES_CLASSES) if i]}))
    return ann_file


def detection_table(out: Path, iterations: int, epochs: int) -> None:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "shapes_fcos.pth"
    train = make_shapes(1600, 0)
    train_s = train_shapes(train, ckpt, epochs)
    print(f"detector: FCOS trained here on {len(train)} generated images, {epochs} epochs, {train_s:.0f} s")
    ann_file = write_coco(make_shapes(200, 1), out / "test_images")
    calib = out / "calib_images"
    calib.mkdir(exist_ok=True)
    for i, (image, _, _) in enumerate(train[:128]):
        Image.fromarray(image).save(calib / f"{i:04d}.png")
    (out / "calib_dataset.py").write_text(f"data = dict(samples_per_gpu=8, workers_per_gpu=2, "
                                          f"val=dict(type='ImageFolder', data_prefix='{calib}'))\n")
    common = (f"onnx_config = dict(input_shape=[{SHAPES_SIZE}, {SHAPES_SIZE}])\n"
              f"codebase_config = dict(class_names={SHAPES_CLASSES})\n")
    size = f"[1, 3, {SHAPES_SIZE}, {SHAPES_SIZE}]"
    profile = f"backend_config = dict(model_inputs=[dict(input_shapes=dict(input=dict(min_shape={size}, " \
              f"opt_shape={size}, max_shape={size})))])\n"
    bases = {"fp32": "detection_onnxruntime_static.py", "fp16": "detection_tensorrt_static-320x320.py",
             "int8": "detection_tensorrt-int8_static-800x1344.py"}
    configs = {}
    for precision, base in bases.items():
        configs[precision] = out / f"deploy_{precision}.py"
        fp16 = "backend_config = dict(common_config=dict(fp16_mode=True))\n" if precision == "fp16" else ""
        configs[precision].write_text(f"_base_ = ['{REPO}/configs/detection/{base}']\n{common}"
                                      f"{profile if precision != 'fp32' else ''}{fp16}")
    model = f"{Path(__file__).resolve()}:build_shapes_fcos"
    files = convert_all({k: configs[k] for k in ("fp32", "fp16")}, model, ckpt, out)
    files += convert_all({"int8": configs["int8"]}, model, ckpt, out, "--calib-dataset-cfg", out / "calib_dataset.py")
    test_and_profile(configs["fp32"], model, ckpt, files, ann_file, out, iterations)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--int8-dir", type=Path, default=REPO / "work_dirs/bench_int8",
                    help="where benchmarks/bench_int8.py left its checkpoint and INT8 engine")
    ap.add_argument("--out", type=Path, default=REPO / "work_dirs/bench_test_table")
    ap.add_argument("--iterations", type=int, default=300, help="timed calls per file for `trtdeploy profile`")
    ap.add_argument("--detector-epochs", type=int, default=40)
    ap.add_argument("--only", choices=("classification", "detection"), help="run one of the two tables")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.only != "detection":
        classification_table(args.int8_dir.resolve(), out, args.iterations)
    if args.only != "classification":
        import torch

        torch.set_num_threads(1)  # training in this process: one thread, as the runs it launches
        detection_table(out / "shapes", args.iterations, args.detector_epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
