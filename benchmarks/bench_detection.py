"""Issue 4 benchmark: end-to-end detectors on ONNX Runtime (CPU) vs torch eager, and conversion time.

For each torchvision detector (random init, BatchNorm statistics re-estimated so it detects
something): convert with the shipped dynamic ONNX Runtime config (wall time of
``trtdeploy.convert``), then time the graph on ONNX Runtime and the detector's own eager
forward on the same pre-processed batch (median of --runs after one warm-up), and the
TensorRT-RTX conversion with the shipped dynamic TensorRT config in a fresh process.

    python benchmarks/bench_detection.py [--runs 5] [--models retinanet_resnet50_fpn,...] [--no-tensorrt]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

REPO = Path(__file__).resolve().parents[1]
MODELS = {  # name -> (config folder, input H x W); SSDlite is a 320x320 model
    "retinanet_resnet50_fpn": ("detection", (800, 1344)),
    "fcos_resnet50_fpn": ("detection", (800, 1344)),
    "ssdlite320_mobilenet_v3_large": ("detection", (320, 320)),
    "fasterrcnn_resnet50_fpn": ("detection", (800, 1344)),
    "maskrcnn_resnet50_fpn": ("instance-seg", (800, 1344)),
}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, weights_backbone=None)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    with torch.no_grad():
        model.backbone(torch.rand(2, 3, 256, 256) * 4 - 2)
    return model.eval()


def median_seconds(fn, runs: int) -> tuple[float, float]:
    """Median wall and median CPU seconds (this process, all threads) of ``runs`` calls after one warm-up.

    On a shared machine the CPU seconds move less with other jobs than the wall time (both runtimes' worker
    threads spin a little while waiting, which counts as CPU time)."""
    fn()  # warm-up
    walls, cpus = [], []
    for _ in range(runs):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def bench_model(name: str, runs: int, with_tensorrt: bool) -> dict:
    import trtdeploy
    from mmengine import Config
    from trtdeploy.export.rewriters.torchvision_families import preprocessed_input

    folder, (h, w) = MODELS[name]
    cfg = Config.fromfile(str(REPO / f"configs/{folder}/{folder}_onnxruntime_dynamic.py")).to_dict()
    cfg["onnx_config"]["input_shape"] = [w, h]
    model = build(name)
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        result = trtdeploy.convert(cfg, model, work_dir=work)
        convert_s = time.perf_counter() - start
        deployed = trtdeploy.load(result.backend_path)
        batch, _ = deployed.task.preprocess(REPO / "demo/demo.jpg", (1, 3, h, w))
        ort_s, ort_cpu = median_seconds(lambda: deployed(batch), runs)
        count = int((deployed(batch)["labels"] >= 0).sum())
        deployed.task.configure(model)
        x = torch.from_numpy(batch)
        with torch.no_grad(), preprocessed_input(model):
            torch_s, torch_cpu = median_seconds(lambda: model(x), runs)
    row = {"model": name, "size": f"{h}x{w}", "convert_ort_s": convert_s, "ort_ms": 1e3 * ort_s,
           "torch_ms": 1e3 * torch_s, "ratio": ort_s / torch_s, "detections": count,
           "ort_cpu_ms": 1e3 * ort_cpu, "torch_cpu_ms": 1e3 * torch_cpu, "cpu_ratio": ort_cpu / torch_cpu}
    if with_tensorrt:
        row["convert_trt_s"], row["trt_note"] = convert_tensorrt(name, folder)
    return row


def convert_tensorrt(name: str, folder: str) -> tuple[float | None, str]:
    cfg = REPO / f"configs/{folder}/{folder}_tensorrt_dynamic-320x320-1344x1344.py"
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "trtdeploy", "convert", str(cfg), f"torchvision://{name}",
                               "--work-dir", work], capture_output=True, text=True, cwd=REPO)
        seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return None, proc.stderr.strip().splitlines()[-1][:300]
    return seconds, "built"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--no-tensorrt", action="store_true", help="skip the TensorRT-RTX conversions")
    args = parser.parse_args()
    print(f"load average {Path('/proc/loadavg').read_text().split()[0]}; torch threads {torch.get_num_threads()}")
    print("| model | input | detections | ORT ms | torch ms | ORT / torch | ORT CPU ms | torch CPU ms | CPU ratio "
          "| convert ORT s | convert TensorRT-RTX s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |", flush=True)
    for name in args.models.split(","):
        r = bench_model(name, args.runs, not args.no_tensorrt)
        trt = (f"{r['convert_trt_s']:.1f}" if r.get("convert_trt_s") else r.get("trt_note", "not run"))
        print(f"| {r['model']} | {r['size']} | {r['detections']} | {r['ort_ms']:.0f} | {r['torch_ms']:.0f} | "
              f"{r['ratio']:.2f} | {r['ort_cpu_ms']:.0f} | {r['torch_cpu_ms']:.0f} | {r['cpu_ratio']:.2f} | "
              f"{r['convert_ort_s']:.1f} | {trt} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
