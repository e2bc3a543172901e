"""Every detector of issue 4 in the plugin route: builds with TensorRT-RTX, and equals the plugin-free route on ONNX Runtime.

    python benchmarks/prove_plugin_route_detectors.py [--models fasterrcnn_resnet50_fpn ...] [--work-dir DIR]

Per detector (random init, made decisive as in tests/test_detection.py): ``trtdeploy.convert``
with the shipped ONNX Runtime detection config and ``backend_config.custom_ops='plugin'``,
so end2end.onnx keeps the mmdeploy nodes; the same graph lowered plugin-free; both run on
ONNX Runtime on two input sizes and compared as matched detection sets; then the plugin-route
graph is built with TensorRT-RTX and the shipped dynamic profile (child process). Prints a table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import onnx
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

DETECTORS = ["retinanet_resnet50_fpn", "fcos_resnet50_fpn", "ssdlite320_mobilenet_v3_large",
             "fasterrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn"]
SIZES = [(1, 3, 256, 320), (2, 3, 320, 256)]


def plugin_route(name: str, work: Path) -> tuple[Path, Path]:
    """(plugin-route end2end.onnx, the same graph lowered plugin-free)."""
    import trtdeploy
    from test_detection import build, ort_config
    from trtdeploy.passes import lower_custom_ops

    cfg = ort_config(name)
    cfg["backend_config"]["custom_ops"] = "plugin"
    cfg["onnx_config"]["simplify"] = False  # the comparison needs no onnxslim pass, and it is slow here
    result = trtdeploy.convert(cfg, build(name), work_dir=work)
    free = work / "plugin-free.onnx"
    onnx.save(lower_custom_ops(onnx.load(str(result.onnx_path)), "plugin-free"), str(free))
    return result.onnx_path, free


def custom_ops_in(path: Path) -> list[str]:
    return sorted({f"{n.domain}::{n.op_type}" for n in onnx.load(str(path)).graph.node if n.domain})


def compare_on_onnxruntime(plugin: Path, free: Path) -> int:
    """Matched detection sets of the two routes at two sizes; returns how many detections were compared."""
    from test_detection import assert_same_detections
    from trtdeploy.backends.onnxruntime import OnnxRuntimeRunner

    ours, theirs = OnnxRuntimeRunner(plugin), OnnxRuntimeRunner(free)
    compared = 0
    for shape in SIZES:
        torch.manual_seed(1)
        batch = (torch.rand(shape) * 4 - 2).numpy()
        a, b = ours(batch), theirs(batch)
        assert_same_detections(a, b, shape[2:])
        compared += int((b["labels"] >= 0).sum())
    return compared


BUILD = """
import json
from pathlib import Path
from trtdeploy.backends.base import get_backend
from trtdeploy.config import load_deploy_config
cfg = load_deploy_config({cfg!r})
built = get_backend("tensorrt").build(Path({onnx!r}), Path({work!r}), cfg)
print(json.dumps({{"bytes": built.path.stat().st_size, "plugins": built.facts["plugins"]}}))
"""


def build_with_tensorrt_rtx(name: str, plugin: Path, work: Path) -> dict:
    import json

    from conftest import CONFIGS, run_python

    folder = "instance-seg" if name.startswith("maskrcnn") else "detection"
    cfg = CONFIGS / folder / f"{folder}_tensorrt_dynamic-320x320-1344x1344.py"
    proc = run_python(BUILD.format(cfg=str(cfg), onnx=str(plugin), work=str(work)))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=DETECTORS, choices=DETECTORS)
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()
    root = Path(args.work_dir or tempfile.mkdtemp(prefix="plugin_route_"))
    print(f"{'detector':32s} {'custom nodes kept':58s} {'ORT equal':>9s} {'engine':>9s} {'seconds':>8s}")
    for name in args.models:
        start = time.perf_counter()
        work = root / name
        plugin, free = plugin_route(name, work)
        compared = compare_on_onnxruntime(plugin, free)
        built = build_with_tensorrt_rtx(name, plugin, work)
        print(f"{name:32s} {', '.join(custom_ops_in(plugin)):58s} {compared:5d} det {built['bytes'] / 1e6:6.1f} MB "
              f"{time.perf_counter() - start:8.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
