"""ONNX -> engine as a whole process (resnet18, TensorRT-RTX on the CPU): this checkout against another one, paired.

    git worktree add --detach /tmp/old <commit>
    python benchmarks/bench_onnx_build.py --baseline /tmp/old [--rounds 5]

resnet18 (random weights) is exported to ONNX once. Each round then runs, once per checkout and in
alternating order, a fresh ``python`` process that imports trtdeploy and builds the engine
(``backends.base.build_from_onnx`` with the static TensorRT config); the figure is the process's
wall time, start to exit, measured from outside. Each process also reports which heavy modules it
imported, and one ``python -X importtime`` run per checkout names the slowest imports.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/classification/classification_tensorrt_static-224x224.py"
HEAVY = ("torch", "torchvision", "triton", "onnxruntime", "onnxslim", "mmengine", "tensorrt_rtx")

BUILD = """
import sys
from trtdeploy.backends.base import build_from_onnx
build_from_onnx(sys.argv[1], sys.argv[2], sys.argv[3])
print("IMPORTED", ",".join(m for m in {heavy!r} if m in sys.modules))
""".format(heavy=HEAVY)


def export_resnet18(path: Path) -> None:
    import torch
    import torchvision

    model = torchvision.models.resnet18().eval()
    torch.onnx.export(model, torch.randn(1, 3, 224, 224), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"])


def run(checkout: Path, args: list[str], importtime: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(checkout), TRTDEPLOY_TENSORRT="tensorrt_rtx")
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", BUILD, *args]
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode:
        sys.exit(f"{checkout}: build failed:\n{proc.stderr[-2000:]}")
    return proc


def slowest_imports(stderr: str, n: int = 6) -> list[tuple[str, float]]:
    """Top-level imports by cumulative time, from ``-X importtime`` output (seconds)."""
    rows = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
            if cumulative.isdigit() and not name.startswith(" ") and "." not in name.strip():
                rows.append((name.strip(), int(cumulative) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, type=Path, help="another checkout (git worktree) to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    opts = parser.parse_args()
    checkouts = {"baseline": opts.baseline.resolve(), "this": REPO}
    with tempfile.TemporaryDirectory(prefix="bench_onnx_build_") as tmp:
        onnx_path = Path(tmp) / "resnet18.onnx"
        export_resnet18(onnx_path)
        times: dict[str, list[float]] = {k: [] for k in checkouts}
        imported = {}
        for r in range(opts.rounds):
            order = list(checkouts) if r % 2 == 0 else list(reversed(checkouts))
            for name in order:
                work = Path(tmp) / f"{name}_{r}"
                start = time.perf_counter()
                proc = run(checkouts[name], [str(onnx_path), str(checkouts[name] / CONFIG), str(work)])
                times[name].append(time.perf_counter() - start)
                imported[name] = next(line.split(" ", 1)[1] for line in proc.stdout.splitlines()
                                      if line.startswith("IMPORTED"))
        for name, checkout in checkouts.items():
            proc = run(checkout, [str(onnx_path), str(checkout / CONFIG), str(Path(tmp) / f"{name}_importtime")],
                       importtime=True)
            print(f"{name} ({checkout}): whole process median {statistics.median(times[name]):.2f} s "
                  f"(runs: {', '.join(f'{t:.2f}' for t in times[name])}); imported: {imported[name]}")
            print("  slowest imports (-X importtime, cumulative): "
                  + ", ".join(f"{m} {s:.2f} s" for m, s in slowest_imports(proc.stderr)))
        ratio = statistics.median(times["this"]) / statistics.median(times["baseline"])
        print(f"this / baseline: {ratio:.2f}x the wall time")


if __name__ == "__main__":
    main()
