"""Issue 7 benchmark: `trtdeploy test` and `trtdeploy profile` on the INT8 issue's locally trained classifier.

The model, data and INT8 configs are issue 6's (benchmarks/bench_int8.py: scikit-learn's digits upscaled to
3x32x32, a small CNN trained here). Its checkpoint and INT8 engine are reused from --int8-dir when that
benchmark has run; otherwise this script trains and converts the same way itself (and says so). It then:
  1. converts FP32 (ONNX Runtime) and FP16 (TensorRT-RTX engine) with `trtdeploy convert`;
  2. writes the held-out split as an image folder (<digit>/<n>.png);
  3. runs `trtdeploy test` over PyTorch, FP32, FP16 and INT8 side by side (engines cannot run here: their
     graphs stand in on ONNX Runtime: end2end_fp16.onnx, and the INT8 engine's FP32-scale Q/DQ twin);
  4. runs `trtdeploy profile` on the same files for p50/p99 latency at batch 1.

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

REPO = Path(__file__).resolve().parents[1]
BENCH_INT8 = REPO / "benchmarks" / "bench_int8.py"


def bench_int8_module():
    spec = importlib.util.spec_from_file_location("bench_int8", BENCH_INT8)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trtdeploy(*args, cwd=REPO) -> tuple[str, float]:
    """Run the CLI; PyTorch gets one intra-op thread (OMP_NUM_THREADS=1): on a shared 2-core machine its
    default two spin against the other processes and batch-1 latency of this tiny net jumps 100-fold."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "trtdeploy", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"trtdeploy {' '.join(map(str, args))} failed:\n{proc.stderr}")
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--int8-dir", type=Path, default=REPO / "work_dirs/bench_int8",
                    help="where benchmarks/bench_int8.py left its checkpoint and INT8 engine")
    ap.add_argument("--out", type=Path, default=REPO / "work_dirs/bench_test_table")
    ap.add_argument("--iterations", type=int, default=300, help="timed calls per file for `trtdeploy profile`")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    bench = bench_int8_module()

    data = bench.make_images(out, 256)
    int8_dir = args.int8_dir.resolve()
    theirs = [int8_dir / "digits_net.pth", int8_dir / "int8_entropy/end2end.engine", int8_dir / "int8_entropy/end2end.engine.json"]
    finished = int8_dir / "results.json"  # written last: the checkpoint and the engine belong to one finished run
    ckpt, int8_engine = out / "digits_net.pth", out / "int8_entropy" / "end2end.engine"
    if finished.is_file() and all(p.is_file() and p.stat().st_mtime <= finished.stat().st_mtime for p in theirs):
        shutil.copy(theirs[0], ckpt)  # a snapshot: that benchmark may be run again while this one runs
        shutil.copytree(int8_dir / "int8_entropy", int8_engine.parent, dirs_exist_ok=True)
        print(f"model and INT8 engine: copied from {int8_dir} (a finished run of benchmarks/bench_int8.py)")
    else:
        train_s = bench.train(data, 8, ckpt)
        dataset_cfg, int8_configs = bench.write_configs(out, data["calib_dir"])
        trtdeploy("convert", int8_configs["entropy"], f"{BENCH_INT8}:build_digits_net", "--checkpoint", ckpt,
                  "--work-dir", int8_engine.parent, "--calib-dataset-cfg", dataset_cfg)
        print(f"model and INT8 engine: trained ({train_s:.0f} s) and converted here the way benchmarks/bench_int8.py "
              f"does (no finished run of it in {int8_dir})")
    configs = write_configs(out, bench)
    model = f"{BENCH_INT8}:build_digits_net"
    files = {}
    for precision, cfg in configs.items():
        _, seconds = trtdeploy("convert", cfg, model, "--checkpoint", ckpt, "--work-dir", out / precision)
        files[precision] = out / precision / ("end2end.onnx" if precision == "fp32" else "end2end.engine")
        print(f"convert {precision}: {seconds:.1f} s")
    files["int8"] = int8_engine
    folder = out / "test_images"
    if not folder.is_dir():
        write_test_folder(data["x_test"], data["y_test"], folder)

    command = ["test", configs["fp32"], model, "--checkpoint", ckpt, *files.values(), "--dataset", folder,
               "--out", out / "test.json"]
    table, seconds = trtdeploy(*command)
    print(f"\n$ trtdeploy {' '.join(str(c).replace(str(REPO) + '/', '') for c in command)}   ({seconds:.1f} s)\n{table}")
    command = ["profile", *files.values(), "--model", model, "--checkpoint", ckpt, "--iterations", args.iterations,
               "--warmup", 20, "--json", out / "profile.json"]
    table, seconds = trtdeploy(*command)
    print(f"$ trtdeploy {' '.join(str(c).replace(str(REPO) + '/', '') for c in command)}   ({seconds:.1f} s)\n{table}")
    results = json.loads((out / "test.json").read_text())["results"]
    print("summary (top-1 %, ms/img):", {r["target"]: (r["scores"].get("top-1"), r["latency_ms"]) for r in results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
