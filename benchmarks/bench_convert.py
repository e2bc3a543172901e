"""Issue 3 benchmark, in one run:
(a) ONNX Runtime CPU latency of the converted resnet18 vs torch eager (median of N runs, batch 1, 224x224);
(b) wall time of `trtdeploy convert` (TensorRT, dynamic profile) vs the same steps written by hand
    (torch.onnx.export + onnxslim + TensorRT parse/profile/build), each in a fresh process, interleaved.

    python benchmarks/bench_convert.py [--runs 50] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CFG = REPO / "configs/classification/classification_tensorrt_dynamic-224x224-320x320.py"

MANUAL = textwrap.dedent("""
    import sys, torch, torchvision, onnx, onnxslim
    try:
        import tensorrt as trt
    except ImportError:
        import tensorrt_rtx as trt
    out = sys.argv[1]
    model = torchvision.models.resnet18(weights=None).eval()
    torch.onnx.export(model, torch.rand(4, 3, 224, 224), out + "/m.onnx", dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "b", 2: "h", 3: "w"}, "output": {0: "b"}})
    onnx.save(onnxslim.slim(onnx.load(out + "/m.onnx")), out + "/m.onnx")
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(out + "/m.onnx")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 224, 224), (4, 3, 224, 224), (16, 3, 320, 320))
    config.add_optimization_profile(profile)
    open(out + "/m.engine", "wb").write(builder.build_serialized_network(network, config))
""")


def latency(fn, runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def bench_latency(runs: int) -> dict:
    import torch
    import torchvision

    import trtdeploy

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    with tempfile.TemporaryDirectory() as work:
        result = trtdeploy.convert(REPO / "configs/classification/classification_onnxruntime_static.py", model,
                                   work_dir=work)
        deployed = trtdeploy.load(result.backend_path)
        x = torch.rand(1, 3, 224, 224)
        xn = x.numpy()
        with torch.inference_mode():
            torch_ms = latency(lambda: model(x), runs)
        ort_ms = latency(lambda: deployed(xn), runs)
        with torch.inference_mode():
            diff = float(np.abs(deployed(xn)["output"] - model(x).numpy()).max())
    return {"torch_ms": torch_ms, "ort_ms": ort_ms, "ratio": ort_ms / torch_ms, "max_abs_diff": diff,
            "torch_threads": torch.get_num_threads()}


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=REPO)
    return time.perf_counter() - start


def bench_convert(repeats: int) -> dict:
    ours, manual = [], []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "manual.py"
        script.write_text(MANUAL)
        for i in range(repeats):
            ours.append(timed([sys.executable, "-m", "trtdeploy", "convert", str(CFG), "torchvision://resnet18",
                               "--work-dir", f"{tmp}/ours{i}", "--log-level", "error"]))
            Path(f"{tmp}/manual{i}").mkdir()
            manual.append(timed([sys.executable, str(script), f"{tmp}/manual{i}"]))
    o, m = statistics.median(ours), statistics.median(manual)
    return {"convert_s": o, "manual_s": m, "ratio": o / m, "all_convert_s": ours, "all_manual_s": manual}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    lat = bench_latency(args.runs)
    print(f"(a) resnet18 b1 224x224, median of {args.runs}: torch eager {lat['torch_ms']:.2f} ms "
          f"({lat['torch_threads']} threads), ONNX Runtime {lat['ort_ms']:.2f} ms, ratio {lat['ratio']:.2f} "
          f"(goal <= 0.70), max |diff| {lat['max_abs_diff']:.2e}")
    conv = bench_convert(args.repeats)
    print(f"(b) convert resnet18 -> TensorRT engine, median of {args.repeats}: trtdeploy convert "
          f"{conv['convert_s']:.2f} s, by hand {conv['manual_s']:.2f} s, ratio {conv['ratio']:.2f} (goal <= 1.15); "
          f"runs: {[round(t, 2) for t in conv['all_convert_s']]} vs {[round(t, 2) for t in conv['all_manual_s']]}")


if __name__ == "__main__":
    main()
