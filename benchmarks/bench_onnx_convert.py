"""Issue 13 benchmark: an ONNX file to a TensorRT-RTX engine, `trtdeploy convert CFG model.onnx` vs
`polygraphy convert model.onnx -o x.engine`, whole processes, same file, same profile, interleaved pairs.

    pip install polygraphy
    python benchmarks/bench_onnx_convert.py [--model resnet18] [--pairs 5]

The file is torchvision's model (random init) exported once with torch.onnx (dynamic batch, height, width).
Both commands get the profile of configs/classification/classification_tensorrt_dynamic-224x224-320x320.py
(1x3x224x224 .. 16x3x320x320, opt 4x3x224x224) and its 1 GiB workspace. Each pair runs the two commands back to
back in fresh processes, alternating which goes first; the ratio is of the medians. ``--compiled``: both run
with their bytecode cached (in a private PYTHONPYCACHEPREFIX filled by the warm-up run), as a pip install has it;
without it, an environment with PYTHONDONTWRITEBYTECODE compiles an editable checkout's modules at every start
while polygraphy's come compiled from pip.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CFG = REPO / "configs/classification/classification_tensorrt_dynamic-224x224-320x320.py"
SHAPES = {"min": "[1,3,224,224]", "opt": "[4,3,224,224]", "max": "[16,3,320,320]"}


def export(model_name: str, path: Path) -> None:
    import torch
    import torchvision

    model = torchvision.models.get_model(model_name, weights=None).eval()
    torch.onnx.export(model, torch.rand(1, 3, 224, 224), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "b", 2: "h", 3: "w"}, "output": {0: "b"}})


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of ``cmd``: on a shared machine the CPU time
    moves less with the other jobs than the wall time does."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--compiled", action="store_true", help="both with cached bytecode (see the module docstring)")
    args = ap.parse_args()
    env = {**os.environ, "POLYGRAPHY_USE_TENSORRT_RTX": "1", "TRTDEPLOY_TENSORRT": "tensorrt_rtx"}
    with tempfile.TemporaryDirectory(prefix="bench-onnx-convert-") as tmp:
        if args.compiled:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        onnx_path = Path(tmp) / f"{args.model}.onnx"
        export(args.model, onnx_path)
        ours = [sys.executable, "-m", "trtdeploy", "convert", str(CFG), str(onnx_path), "--work-dir",
                str(Path(tmp) / "work"), "--log-level", "warning"]
        polygraphy = ["polygraphy", "convert", str(onnx_path), "-o", str(Path(tmp) / "x.engine"),
                      "--trt-min-shapes", f"input:{SHAPES['min']}", "--trt-opt-shapes", f"input:{SHAPES['opt']}",
                      "--trt-max-shapes", f"input:{SHAPES['max']}", "--pool-limit", "workspace:1G"]
        timed(ours, env), timed(polygraphy, env)  # warm the page cache and any lazily written caches
        times, cpu = {"trtdeploy": [], "polygraphy": []}, {"trtdeploy": [], "polygraphy": []}
        for i in range(args.pairs):
            order = [("trtdeploy", ours), ("polygraphy", polygraphy)]
            for name, cmd in order if i % 2 == 0 else order[::-1]:
                wall, used = timed(cmd, env)
                times[name].append(wall)
                cpu[name].append(used)
        load = os.getloadavg()[0]
    ours_s, theirs_s = statistics.median(times["trtdeploy"]), statistics.median(times["polygraphy"])
    print(f"model {args.model}, {args.pairs} pairs, load average {load:.1f}{', cached bytecode' if args.compiled else ''}")
    for name, values in times.items():
        print(f"  {name:<10} median {statistics.median(values):.2f} s  runs {', '.join(f'{v:.2f}' for v in values)}"
              f"  (CPU median {statistics.median(cpu[name]):.2f} s)")
    pairs = statistics.median(a / b for a, b in zip(times["trtdeploy"], times["polygraphy"]))
    print(f"ratio trtdeploy / polygraphy: {ours_s / theirs_s:.2f} (goal <= 1.25); median of the pairs' ratios "
          f"{pairs:.2f}; CPU {statistics.median(cpu['trtdeploy']) / statistics.median(cpu['polygraphy']):.2f}")


if __name__ == "__main__":
    main()
