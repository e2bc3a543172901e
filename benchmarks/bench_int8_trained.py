"""Issue 15 benchmark: INT8 on classifiers trained here (resnet18 and a small ViT), against FP32, onnxruntime's
quantize_static and NVIDIA ModelOpt, plus ONNX Runtime INT8 latency.

    python benchmarks/bench_int8_trained.py train --out DIR        # on a GPU: writes DIR/*.fp16.pt (state dicts)
    python benchmarks/bench_int8_trained.py evaluate --ckpt DIR --out WORK [--modelopt VENV/bin/python]
    python benchmarks/bench_int8_trained.py placement --modelopt VENV/bin/python   # RetinaNet vs ModelOpt

`evaluate` (CPU): per model, a `trtdeploy convert` with the TensorRT INT8 config (default method; TensorRT-RTX
builds the engine), the Q/DQ graph of every other range method (the same function convert calls), onnxruntime's
quantize_static (MinMax/Entropy/Percentile, QDQ, per-channel, symmetric), ModelOpt INT8 max/entropy (FP32
elsewhere) from the same calibration samples, and a `trtdeploy convert` with the ONNX Runtime INT8 config; then
top-1 and mean |logit - FP32 logit| on ONNX Runtime, ORT FP32 vs INT8 latency (paired median) and the quantized
tensors against ModelOpt's. ModelOpt pulls onnxruntime-gpu: install it in its own venv
(`python3 -m venv VENV && VENV/bin/pip install 'nvidia-modelopt[onnx]'`).

Data: benchmarks/make_image_dataset.py (10 classes of drawn shapes and textures, 64x64); train seed 0,
calibration seed 1 (200 images, written as PNGs and read through an ImageFolder dataset config), test seed 2.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_image_dataset as data  # noqa: E402

N_TRAIN, N_CALIB, N_TEST = 16000, 200, 1000
CHUNK_BYTES = 15 << 20  # files that come back from the GPU machine must stay under 16 MiB


def build_resnet18():
    """torchvision resnet18 with a 10-class head."""
    import torchvision

    return torchvision.models.resnet18(num_classes=len(data.CLASSES))


def build_vit():
    """A small ViT: 64x64 input, 8x8 patches (64 tokens), 4 layers, width 192, 3 heads."""
    from torchvision.models import VisionTransformer

    return VisionTransformer(image_size=data.SIZE, patch_size=8, num_layers=4, num_heads=3, hidden_dim=192,
                             mlp_dim=384, num_classes=len(data.CLASSES))


MODELS = {"resnet18": (build_resnet18, dict(epochs=12, lr=2e-3, wd=5e-4)),
          "vit": (build_vit, dict(epochs=60, lr=1e-3, wd=0.05))}


# -- train (GPU) ------------------------------------------------------------------------------
def _fit(model, x, y, epochs: int, lr: float, wd: float, device: str) -> float:
    import torch

    torch.manual_seed(0)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    steps = epochs * ((len(x) + 255) // 256)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), device=device).split(256):
            xb = x[idx]
            shift = torch.randint(-4, 5, (2,))
            xb = torch.roll(xb, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            if torch.rand(()) < 0.5:
                xb = xb.flip(3)
            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(xb), y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return time.perf_counter() - start


def _accuracy(model, x, y) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xb).argmax(1) for xb in x.split(500)])
    return 100.0 * float((pred == y).float().mean())


def save_fp16(state: dict, out: Path, name: str) -> list[Path]:
    """The state dict in FP16, split into files under CHUNK_BYTES."""
    import torch

    chunks, current, size = [], {}, 0
    for k, v in state.items():
        v = v.half() if v.is_floating_point() else v
        nbytes = v.numel() * v.element_size()
        if current and size + nbytes > CHUNK_BYTES:
            chunks.append(current)
            current, size = {}, 0
        current[k], size = v.cpu(), size + nbytes
    chunks.append(current)
    paths = []
    for i, chunk in enumerate(chunks):
        paths.append(out / f"{name}.{i}.fp16.pt")
        torch.save(chunk, paths[-1])
    return paths


def load_fp32(ckpt_dir: Path, name: str, out: Path) -> Path:
    """Join the FP16 chunks into one FP32 state dict file that ``trtdeploy convert --checkpoint`` reads."""
    import torch

    state = {}
    for part in sorted(ckpt_dir.glob(f"{name}.*.fp16.pt")):
        state.update(torch.load(part, map_location="cpu"))
    if not state:
        raise SystemExit(f"no {name}.*.fp16.pt in {ckpt_dir}; run `train` first")
    path = out / f"{name}.pth"
    torch.save({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, path)
    return path


def cmd_train(args) -> int:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    x_train, y_train = data.make_split(N_TRAIN, data.SEEDS["train"], workers=args.workers)
    x_test, y_test = data.make_split(N_TEST, data.SEEDS["test"], workers=args.workers)
    print(f"generated {N_TRAIN} + {N_TEST} images in {time.perf_counter() - t:.1f} s", flush=True)
    x = torch.from_numpy(data.normalise(x_train)).to(device)
    y = torch.from_numpy(y_train).long().to(device)
    xt = torch.from_numpy(data.normalise(x_test)).to(device)
    yt = torch.from_numpy(y_test).long().to(device)
    for name in args.models:
        factory, hp = MODELS[name]
        model = factory()
        seconds = _fit(model, x, y, hp["epochs"], hp["lr"], hp["wd"], device)
        model.float()
        print(f"{name}: {hp['epochs']} epochs in {seconds:.1f} s on {device}, test top-1 {_accuracy(model, xt, yt):.2f} %",
              flush=True)
        save_fp16(model.state_dict(), args.out, name)
    return 0


# -- evaluate (CPU) ---------------------------------------------------------------------------
def write_configs(out: Path, calib_dir: Path) -> dict[str, Path]:
    size = data.SIZE
    paths = {"dataset": out / "calib_dataset.py", "tensorrt": out / "deploy_tensorrt_int8.py",
             "onnxruntime": out / "deploy_onnxruntime_int8.py"}
    paths["dataset"].write_text(f"""data = dict(samples_per_gpu=8, workers_per_gpu=1, val=dict(
    type='ImageFolder', data_prefix='{calib_dir}',
    pipeline=[dict(type='LoadImageFromFile'), dict(type='Normalize', mean=[{data.MEAN}] * 3, std=[{data.STD}] * 3, to_rgb=True),
              dict(type='ImageToTensor', keys=['img']), dict(type='Collect', keys=['img'])]))
""")
    paths["tensorrt"].write_text(f"""_base_ = ['{REPO}/configs/classification/classification_tensorrt-int8_static-224x224.py']
onnx_config = dict(input_shape=[{size}, {size}])
backend_config = dict(model_inputs=[dict(input_shapes=dict(input=dict(
    min_shape=[1, 3, {size}, {size}], opt_shape=[1, 3, {size}, {size}], max_shape=[1, 3, {size}, {size}])))])
calib_config = dict(num_samples=100000)
""")
    paths["onnxruntime"].write_text(f"""_base_ = ['{REPO}/configs/classification/classification_onnxruntime-int8_static.py']
onnx_config = dict(input_shape=[{size}, {size}])
calib_config = dict(num_samples=100000)
""")
    return paths


def convert(cfg: Path, factory: str, ckpt: Path, work: Path, dataset_cfg: Path) -> float:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "trtdeploy", "convert", str(cfg), f"{Path(__file__).resolve()}:{factory}",
                           "--checkpoint", str(ckpt), "--work-dir", str(work), "--calib-dataset-cfg", str(dataset_cfg)],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"convert failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t


def logits(onnx_path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def trtdeploy_method(work: Path, cfg_path: Path, method: str, out: Path) -> Path:
    """The TensorRT-scheme Q/DQ graph with ``method`` ranges: what `convert` writes as end2end_int8.onnx."""
    from trtdeploy.backends.tensorrt.qdq_scheme import SCHEME
    from trtdeploy.calibration.qdq import quantized_graph
    from trtdeploy.config import load_deploy_config

    cfg = load_deploy_config(cfg_path)
    cfg.calib["method"] = method
    ranges_dir = work / f"ranges_{method}"
    ranges_dir.mkdir(exist_ok=True)
    qdq, _, _ = quantized_graph(work / "end2end.onnx", ranges_dir, cfg, work / "calib_data.h5", SCHEME)
    import onnx

    onnx.save(qdq, str(out))
    return out


def ort_quantize_static(fp32: Path, calib_h5: Path, out: Path, method: str) -> Path:
    """onnxruntime's quantize_static (QDQ, per-channel, symmetric like TensorRT wants) on the same samples."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from trtdeploy.calibration import CalibrationFile

    class Reader(CalibrationDataReader):
        def __init__(self):
            with CalibrationFile(calib_h5) as f:
                self.samples = iter([{"input": s[f.input_names[0]]} for s in f])

        def get_next(self):
            return next(self.samples, None)

    pre = out.with_name(out.stem + "_pre.onnx")
    quant_pre_process(str(fp32), str(pre))
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    calibrate_method=getattr(CalibrationMethod, method),
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    return out


def modelopt(python: str, fp32: Path, calib_h5: Path, out: Path, method: str) -> Path | None:
    """NVIDIA ModelOpt's ONNX INT8 (FP32 elsewhere) in its own venv, on the same samples; None if it failed."""
    from trtdeploy.calibration import CalibrationFile

    npy = out.parent / "calib.npy"
    if not npy.exists():
        with CalibrationFile(calib_h5) as f:
            np.save(npy, np.concatenate([s[f.input_names[0]] for s in f]))
    src = out.with_name(out.stem + "_input.onnx")  # ModelOpt rewrites its input in place
    shutil.copy(fp32, src)
    proc = subprocess.run([python, "-m", "modelopt.onnx.quantization", "--onnx_path", str(src), "--quantize_mode", "int8",
                           "--calibration_method", method, "--calibration_data_path", str(npy), "--calibration_eps",
                           "cpu", "--high_precision_dtype", "fp32", "--output_path", str(out)],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        print(f"ModelOpt {method} failed: {proc.stderr[-500:]}", file=sys.stderr)
        return None
    return out


def quantized_tensors(path: Path) -> dict[str, set[str]]:
    """Activation tensors that go through QuantizeLinear, with the op types reading their DequantizeLinear."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    consts = {i.name for i in graph.initializer}
    readers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    found: dict[str, set[str]] = {}
    for q in graph.node:
        if q.op_type == "QuantizeLinear" and q.input[0] not in consts:
            for dq in readers.get(q.output[0], []):
                for consumer in readers.get(dq.output[0], []):
                    found.setdefault(q.input[0], set()).add(consumer.op_type)
    return found


def latency_ratio(fp32: Path, int8: Path, x: np.ndarray, runs: int) -> tuple[float, float]:
    """Median ms of each graph on ONNX Runtime CPU, runs interleaved (paired) after a warm-up."""
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (fp32, int8)]
    feed = {"input": x[:1]}
    times = [[], []]
    for _ in range(5):
        for s in sessions:
            s.run(None, feed)
    for _ in range(runs):
        for k, s in enumerate(sessions):
            t = time.perf_counter()
            s.run(None, feed)
            times[k].append(time.perf_counter() - t)
    return float(np.median(times[0]) * 1e3), float(np.median(times[1]) * 1e3)


def cmd_evaluate(args) -> int:
    from trtdeploy.passes.quantize import DEFAULT_METHOD, RANGE_METHODS

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    calib_dir = out / "calib_images"
    if not calib_dir.exists():
        data.write_image_folder(calib_dir, *data.make_split(N_CALIB, data.SEEDS["calib"]))
    x_img, y = data.make_split(args.test, data.SEEDS["test"])
    x = data.normalise(x_img)
    cfgs = write_configs(out, calib_dir)
    report = {}
    for name in args.models:
        ckpt = load_fp32(args.ckpt, name, out)
        work = out / name
        factory = MODELS[name][0].__name__
        convert_s = convert(cfgs["tensorrt"], factory, ckpt, work / "tensorrt", cfgs["dataset"])
        trt_work = work / "tensorrt"
        rows = {"FP32 (end2end.onnx)": trt_work / "end2end.onnx",
                f"trtdeploy INT8 default ({DEFAULT_METHOD}; convert, TensorRT-RTX engine built)": trt_work / "end2end_int8.onnx"}
        for method, _ in RANGE_METHODS.items():
            rows[f"trtdeploy INT8 {method}"] = trtdeploy_method(trt_work, cfgs["tensorrt"], method,
                                                                work / f"trtdeploy_{method}.onnx")
        for method in ("MinMax", "Entropy", "Percentile"):
            rows[f"ORT quantize_static {method}"] = ort_quantize_static(trt_work / "end2end.onnx", trt_work / "calib_data.h5",
                                                                        work / f"ort_qs_{method}.onnx", method)
        if args.modelopt:
            for method in ("max", "entropy"):
                path = modelopt(args.modelopt, trt_work / "end2end.onnx", trt_work / "calib_data.h5",
                                work / f"modelopt_{method}.onnx", method)
                if path is not None:
                    rows[f"ModelOpt {method} (FP32 elsewhere)"] = path
        ort_s = convert(cfgs["onnxruntime"], factory, ckpt, work / "onnxruntime", cfgs["dataset"])
        rows["trtdeploy INT8 for ONNX Runtime (integer kernels)"] = work / "onnxruntime/end2end_int8.onnx"
        ref = None
        table = []
        for label, path in rows.items():
            lg = logits(path, x)
            ref = lg if ref is None else ref
            table.append({"model": label, "top1": 100.0 * float(np.mean(lg.argmax(1) == y)),
                          "agree": 100.0 * float(np.mean(lg.argmax(1) == ref.argmax(1))),
                          "logit_err": float(np.abs(lg - ref).mean()), "path": str(path)})
        fp32_ms, int8_ms = latency_ratio(trt_work / "end2end.onnx", work / "onnxruntime/end2end_int8.onnx", x, args.runs)
        ours = quantized_tensors(trt_work / "end2end_int8.onnx")
        placement = {"trtdeploy": len(ours)}
        for method in ("max",):
            mo = work / f"modelopt_{method}.onnx"
            if mo.exists():
                theirs = quantized_tensors(mo)
                relevant = {t for t, ops in theirs.items() if ops & {"Conv", "Gemm", "MatMul", "Add"}}
                placement.update(modelopt=len(theirs), modelopt_conv_gemm_matmul_add=len(relevant),
                                 missing_in_trtdeploy=sorted(relevant - set(ours)),
                                 only_in_trtdeploy=sorted(set(ours) - set(theirs)))
        report[name] = {"rows": table, "latency_ms": {"fp32": fp32_ms, "int8": int8_ms}, "placement": placement,
                        "convert_s": {"tensorrt": convert_s, "onnxruntime": ort_s}}
        print(f"\n{name}: {len(y)} test images (seed {data.SEEDS['test']}), {N_CALIB} calibration images "
              f"(seed {data.SEEDS['calib']}); ONNX Runtime CPU")
        print(f"{'model':<72} {'top-1 %':>8} {'same as FP32 %':>15} {'mean |logit err|':>17}")
        for r in table:
            print(f"{r['model']:<72} {r['top1']:8.2f} {r['agree']:15.2f} {r['logit_err']:17.4f}")
        print(f"ONNX Runtime latency, median of {args.runs} paired runs: FP32 {fp32_ms:.2f} ms, INT8 {int8_ms:.2f} ms "
              f"= {int8_ms / fp32_ms:.2f}x")
        print(f"placement: {json.dumps(placement)}", flush=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    return 0


def cmd_placement(args) -> int:
    """Quantized tensors of trtdeploy's TensorRT scheme against ModelOpt's on torchvision RetinaNet (random weights:
    placement does not depend on them), 320x320, 4 calibration images."""
    import onnx

    from trtdeploy.backends.tensorrt.qdq_scheme import SCHEME
    from trtdeploy.passes import quantize

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = out / "retinanet_ort.py"
    cfg.write_text(f"_base_ = ['{REPO}/configs/detection/detection_onnxruntime_static.py']\n"
                   f"onnx_config = dict(input_shape=[320, 320])\n"
                   f"codebase_config = dict(post_processing=dict(pre_top_k=1000))\n")
    work = out / "retinanet"
    if not (work / "end2end.onnx").exists():
        subprocess.run([sys.executable, "-m", "trtdeploy", "convert", str(cfg), "torchvision://retinanet_resnet50_fpn",
                        "--work-dir", str(work)], check=True, capture_output=True, cwd=REPO)
    fp32 = work / "end2end.onnx"
    model = onnx.load(str(fp32))
    targets = quantize.quantization_targets(model, output_layers=False)
    placement = quantize.place(model, targets, SCHEME)
    ours_path = work / "trtdeploy_int8.onnx"
    onnx.save(quantize.insert_qdq(model, targets, dict.fromkeys(placement.edges, 1.0), placement, SCHEME), str(ours_path))
    x = data.make_split(4, data.SEEDS["calib"])[0].repeat(5, 1).repeat(5, 2)  # 64 -> 320
    mean, std = np.array([123.675, 116.28, 103.53], np.float32), np.array([58.395, 57.12, 57.375], np.float32)
    npy = work / "calib.npy"
    np.save(npy, ((x - mean) / std).transpose(0, 3, 1, 2).astype(np.float32))
    src = work / "modelopt_input.onnx"
    shutil.copy(fp32, src)
    theirs_path = work / "modelopt_max.onnx"
    subprocess.run([args.modelopt, "-m", "modelopt.onnx.quantization", "--onnx_path", str(src), "--quantize_mode", "int8",
                    "--calibration_method", "max", "--calibration_data_path", str(npy), "--calibration_eps", "cpu",
                    "--high_precision_dtype", "fp32", "--output_path", str(theirs_path)], check=True, capture_output=True)
    ours, theirs = quantized_tensors(ours_path), quantized_tensors(theirs_path)
    relevant = {t for t, ops in theirs.items() if ops & {"Conv", "Gemm", "MatMul", "Add"}}
    producer = {o: n for n in model.graph.node for o in n.output}
    print(f"RetinaNet 320x320: trtdeploy quantizes {len(ours)} activation tensors, ModelOpt {len(theirs)} "
          f"({len(relevant)} read by Conv/Gemm/MatMul/Add)")
    for t in sorted(relevant - set(ours)):
        readers = sorted(theirs[t])
        print(f"  ModelOpt only: {t} (from {producer[t].op_type if t in producer else 'input'}, read by {readers})")
    print(f"  trtdeploy only: {sorted(set(ours) - set(theirs)) or 'none'}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train")
    tr.add_argument("--out", type=Path, required=True)
    tr.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    tr.add_argument("--workers", type=int, default=8)
    ev = sub.add_parser("evaluate")
    ev.add_argument("--ckpt", type=Path, required=True, help="folder with the *.fp16.pt files `train` wrote")
    ev.add_argument("--out", type=Path, default=REPO / "work_dirs/bench_int8_trained")
    ev.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ev.add_argument("--test", type=int, default=N_TEST, help="test images")
    ev.add_argument("--runs", type=int, default=40, help="paired latency runs")
    ev.add_argument("--modelopt", help="python of a venv with nvidia-modelopt[onnx] (kept out of the main env)")
    pl = sub.add_parser("placement")
    pl.add_argument("--out", type=Path, default=REPO / "work_dirs/bench_int8_placement")
    pl.add_argument("--modelopt", required=True, help="python of a venv with nvidia-modelopt[onnx]")
    args = ap.parse_args()
    return {"train": cmd_train, "evaluate": cmd_evaluate, "placement": cmd_placement}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
