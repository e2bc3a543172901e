"""Issue 6 benchmark: INT8 accuracy you can trust, on a classifier trained here.

scikit-learn's digits (bundled, no download) upscaled to 3-channel 32x32 PNGs; a small CNN trained in
about a minute on the training split; held-out split evaluated on ONNX Runtime:
  FP32 | trtdeploy INT8 (entropy, minmax, percentile; the FP32-scale Q/DQ twin of each engine) |
  onnxruntime.quantization.quantize_static (its defaults, and symmetric per-channel entropy) with the
  same calibration images. Each trtdeploy method is a real `trtdeploy convert` (TensorRT-RTX builds the
  engine). Also: calibration pipeline throughput (images/s, with workers) and the range computation time.

    python benchmarks/bench_int8.py [--calib 256] [--epochs 8] [--out work_dirs/bench_int8] [--retrain]
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZE = 32
MEAN, STD = [127.5] * 3, [64.0] * 3


def build_digits_net():
    """The benchmark's model: 3 conv blocks + linear head (BatchNorm folds into the convs on export)."""
    import torch.nn as nn

    def block(cin, cout, stride):
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*block(3, 16, 2), *block(16, 32, 1), *block(32, 64, 2), *block(64, 64, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))


def make_images(out: Path, n_calib: int) -> dict:
    """PNG files: calibration images from the training split, a held-out test split with labels."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    imgs = (digits.images / 16.0 * 255).astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(imgs, digits.target, test_size=0.3, random_state=0,
                                                        stratify=digits.target)

    def upscale(a):
        return np.asarray(Image.fromarray(a).resize((SIZE, SIZE), Image.BILINEAR).convert("RGB"))

    x_train = np.stack([upscale(a) for a in x_train])
    x_test = np.stack([upscale(a) for a in x_test])
    calib_dir = out / "calib_images"
    calib_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(x_train), n_calib, replace=False):
        Image.fromarray(x_train[i]).save(calib_dir / f"{i:04d}.png")
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "calib_dir": calib_dir}


def normalise(x: np.ndarray) -> np.ndarray:
    return ((x.astype(np.float32) - np.float32(MEAN[0])) / np.float32(STD[0])).transpose(0, 3, 1, 2).copy()


def train(data: dict, epochs: int, ckpt: Path) -> float:
    import torch

    torch.manual_seed(0)
    model = build_digits_net()
    x = torch.from_numpy(normalise(data["x_train"]))
    y = torch.from_numpy(data["y_train"]).long()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(64):
            shift = torch.randint(-2, 3, (2,))  # small translations: a less brittle net
            xb = torch.roll(x[idx], shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():  # settle BatchNorm's running statistics on the un-augmented training set
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None  # a cumulative average
        for chunk in x.split(256):
            model(chunk)
    torch.save(model.state_dict(), ckpt)
    return time.perf_counter() - start


def write_configs(out: Path, calib_dir: Path) -> tuple[Path, dict[str, Path]]:
    dataset = out / "calib_dataset.py"
    dataset.write_text(f"""data = dict(samples_per_gpu=8, workers_per_gpu=2, val=dict(
    type='ImageFolder', data_prefix='{calib_dir}',
    pipeline=[dict(type='LoadImageFromFile'), dict(type='Resize', scale=({SIZE}, {SIZE}), keep_ratio=False),
              dict(type='Normalize', mean={MEAN}, std={STD}, to_rgb=True),
              dict(type='ImageToTensor', keys=['img']), dict(type='Collect', keys=['img'])]))
""")
    configs = {}
    for method in ("entropy", "minmax", "percentile"):
        path = out / f"deploy_int8_{method}.py"
        path.write_text(f"""_base_ = ['{REPO}/configs/classification/classification_tensorrt-int8_static-224x224.py']
onnx_config = dict(input_shape=[{SIZE}, {SIZE}])
backend_config = dict(model_inputs=[dict(input_shapes=dict(input=dict(
    min_shape=[1, 3, {SIZE}, {SIZE}], opt_shape=[1, 3, {SIZE}, {SIZE}], max_shape=[1, 3, {SIZE}, {SIZE}])))])
calib_config = dict(method='{method}', num_samples=100000)
""")
        configs[method] = path
    return dataset, configs


def predictions(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.asarray([int(np.argmax(session.run(None, {name: x[i:i + 1]})[0])) for i in range(len(x))])


def seed_pipeline_throughput(out: Path, n: int = 32) -> float:
    """Images/s of the seed's calibration_dataset.py (1333x800 resize, normalise, pad) on 640x480 JPEGs."""
    from PIL import Image, ImageDraw

    from trtdeploy.calibration import prepare_calibration_file
    from trtdeploy.config import load_deploy_config

    root = out / "seed_images"
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ramp = np.linspace(40, 200, 640, dtype=np.float32)
    for i in range(n):  # photo-like content (gradients and shapes): HDF5 gzip cost depends on it
        im = Image.fromarray(np.stack([np.tile(ramp, (480, 1)) * f for f in rng.uniform(0.5, 1.2, 3)], -1)
                             .clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(im)
        for _ in range(6):
            x0, y0 = rng.integers(0, 560), rng.integers(0, 400)
            draw.ellipse([x0, y0, x0 + rng.integers(20, 80), y0 + rng.integers(20, 80)],
                         fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        im.save(root / f"{i}.jpg", quality=90)
    (root / "val_annotations.json").write_text(json.dumps({"images": [{"id": i, "file_name": f"{i}.jpg"} for i in range(n)]}))
    seed = (REPO / "configs/calibration/calibration_dataset.py").read_text()
    cfg = out / "seed_calibration_dataset.py"
    cfg.write_text(seed.replace("data_root = 'calibration/dataset/root'", f"data_root = '{root}/'"))
    (out / "seed_pipeline" / "calib_data.h5").unlink(missing_ok=True)
    t = time.perf_counter()
    prepare_calibration_file(load_deploy_config(REPO / "configs/classification/classification_tensorrt-int8_static-224x224.py"),
                             out / "seed_pipeline", "input", cfg)
    return n / (time.perf_counter() - t)


def ort_quantize_static(fp32: Path, calib_h5: Path, out: Path, **kwargs) -> Path:
    """onnxruntime's own static quantization, fed the very calibration samples trtdeploy used."""
    from onnxruntime.quantization import CalibrationDataReader, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from trtdeploy.calibration import CalibrationFile

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.f = CalibrationFile(calib_h5)
            self.it = iter(self.f)

        def get_next(self):
            sample = next(self.it, None)
            return None if sample is None else {"input": sample[self.f.input_names[0]]}

    pre = out.with_name(out.stem + "_pre.onnx")
    quant_pre_process(str(fp32), str(pre))
    quantize_static(str(pre), str(out), Reader(), **kwargs)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calib", type=int, default=256, help="calibration images (from the training split)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--out", type=Path, default=REPO / "work_dirs/bench_int8")
    ap.add_argument("--retrain", action="store_true", help="train again even if OUT/digits_net.pth exists")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    data = make_images(out, args.calib)
    ckpt = out / "digits_net.pth"
    train_s = train(data, args.epochs, ckpt) if args.retrain or not ckpt.exists() else 0.0
    dataset_cfg, configs = write_configs(out, data["calib_dir"])
    x_test, y_test = normalise(data["x_test"]), data["y_test"]

    # Calibration pipeline throughput, in-process (no TensorRT here): 2 workers as the dataset config says.
    from trtdeploy.calibration import prepare_calibration_file
    from trtdeploy.config import load_deploy_config

    pipe_dir = out / "pipeline"
    (pipe_dir / "calib_data.h5").unlink(missing_ok=True)
    t = time.perf_counter()
    prepare_calibration_file(load_deploy_config(configs["entropy"]), pipe_dir, "input", dataset_cfg)
    pipeline_s = time.perf_counter() - t

    rows, facts = [], {}
    for method, cfg in configs.items():
        work = out / f"int8_{method}"
        work.mkdir(exist_ok=True)
        (work / "calib_data.h5").write_bytes((pipe_dir / "calib_data.h5").read_bytes())  # same samples for all
        (work / "int8_ranges.json").unlink(missing_ok=True)
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "trtdeploy", "convert", str(cfg),
                               f"{Path(__file__).resolve()}:build_digits_net", "--checkpoint", str(ckpt),
                               "--work-dir", str(work), "--calib-dataset-cfg", str(dataset_cfg)],
                              capture_output=True, text=True, cwd=REPO)
        convert_s = time.perf_counter() - t
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        build = re.search(r"build tensorrt \(int8\) done in ([\d.]+) s", proc.stderr)
        facts[method] = {"convert_s": convert_s, "build_stage_s": float(build.group(1)) if build else None,
                         "engine_mb": (work / "end2end.engine").stat().st_size / 1e6}
        if method == "entropy":
            rows.append(("FP32 (end2end.onnx)", predictions(work / "end2end.onnx", x_test)))
        rows.append((f"trtdeploy INT8 {method}", predictions(work / "end2end_int8.onnx", x_test)))

    from onnxruntime.quantization import CalibrationMethod, QuantFormat

    fp32 = out / "int8_entropy/end2end.onnx"
    h5 = pipe_dir / "calib_data.h5"
    rows.append(("ORT quantize_static (defaults: minmax, per-tensor, asymmetric activations)",
                 predictions(ort_quantize_static(fp32, h5, out / "ort_default.onnx"), x_test)))
    rows.append(("ORT quantize_static (entropy, per-channel, symmetric)",
                 predictions(ort_quantize_static(fp32, h5, out / "ort_entropy_pc.onnx", quant_format=QuantFormat.QDQ,
                                                 per_channel=True, calibrate_method=CalibrationMethod.Entropy,
                                                 extra_options={"ActivationSymmetric": True, "WeightSymmetric": True}),
                             x_test)))

    n_calib = len(list(data["calib_dir"].iterdir()))
    print(f"digits 32x32x3: {len(data['x_train'])} train / {len(y_test)} held-out images, {n_calib} calibration images; "
          f"training {train_s:.1f} s")
    print(f"calibration pipeline (load, resize, normalise, HDF5; 2 workers): {pipeline_s:.2f} s = "
          f"{n_calib / pipeline_s:.0f} images/s")
    print(f"seed calibration_dataset.py pipeline on 640x480 JPEGs (-> 1088x800, 2 workers): "
          f"{seed_pipeline_throughput(out):.1f} images/s")
    fp32_pred = rows[0][1]
    table = [(name, 100.0 * float(np.mean(p == y_test)), 100.0 * float(np.mean(p == fp32_pred))) for name, p in rows]
    print(f"{'model':<78} {'top-1 %':>8} {'drop pt':>8} {'same as FP32 %':>15}")
    for name, acc, agree in table:
        print(f"{name:<78} {acc:8.2f} {table[0][1] - acc:8.2f} {agree:15.2f}")
    for method, f in facts.items():
        print(f"trtdeploy convert ({method}): {f['convert_s']:.1f} s in all, INT8 build stage (ranges + Q/DQ + "
              f"TensorRT-RTX) {f['build_stage_s']:.2f} s, engine {f['engine_mb']:.3f} MB")
    (out / "results.json").write_text(json.dumps({"rows": table, "facts": facts, "pipeline_s": pipeline_s,
                                                  "calib_images": n_calib, "train_s": train_s}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
