"""The mmdeploy custom nodes on ONNX Runtime (CPU): our onnxruntime-extensions Python ops vs the plugin-free lowering.

    python benchmarks/bench_ort_custom_ops.py [--repeat 5]

Each op alone, at a detector's sizes, exported once by our torch-level function: the plugin
route keeps the node (served by ``ops/<op>/ort.py`` through onnxruntime-extensions), the
plugin-free route lowers it to standard ONNX ops. Prints the median latency of each and the
largest difference between the two routes' outputs.
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from trtdeploy.backends.onnxruntime import OnnxRuntimeRunner
from trtdeploy.ops.batched_nms import multiclass_nms
from trtdeploy.ops.multi_level_roi_align import multi_level_roi_align
from trtdeploy.ops.roi_align import roi_align
from trtdeploy.passes import lower_custom_ops

STRIDES = (4, 8, 16, 32)


class NMS(torch.nn.Module):
    def forward(self, boxes, scores):
        return multiclass_nms(boxes, scores, iou_threshold=0.5, score_threshold=0.05, pre_top_k=1000, keep_top_k=100)


class RoIAlign(torch.nn.Module):
    def forward(self, features, rois):
        return roi_align(features, rois, 7, 0.25, 2, False)


class MultiLevel(torch.nn.Module):
    def forward(self, rois, p2, p3, p4, p5):
        return multi_level_roi_align([p2, p3, p4, p5], rois, 7, STRIDES, 2, False)


def rois(n: int, gen: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([1200.0, 700.0])
    return torch.cat([torch.zeros(n, 1), xy, xy + torch.rand(n, 2, generator=gen) ** 2 * 600 + 8], 1)


def cases(gen: torch.Generator):
    xy = torch.rand(1, 1000, 2, generator=gen) * 1000
    boxes = torch.cat([xy, xy + torch.rand(1, 1000, 2, generator=gen) * 300], -1)
    yield "batched NMS 1000 boxes x 80 classes, pre_top_k 1000, keep 100", NMS(), \
        {"boxes": boxes, "scores": torch.rand(1, 1000, 80, generator=gen) ** 6}
    yield "RoIAlign 1000 RoIs x 256 ch -> 7x7, 200x336 map", RoIAlign(), \
        {"features": torch.randn(1, 256, 200, 336, generator=gen), "rois": rois(1000, gen)}
    yield "multi-level RoIAlign 1000 RoIs x 256 ch -> 7x7, 4 levels", MultiLevel(), \
        {"rois": rois(1000, gen), **{f"p{i + 2}": torch.randn(1, 256, 800 // s, 1344 // s, generator=gen)
                                     for i, s in enumerate(STRIDES)}}


def median_ms(runner, feed, repeat: int) -> float:
    runner(feed)  # warm-up (and, for the Python ops, their registration)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        runner(feed)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="bench_ort_ops_"))
    print(f"{'case':62s} {'ext. Python op':>15s} {'plugin-free':>12s} {'max |diff|':>11s}")
    for name, module, inputs in cases(gen):
        buf = io.BytesIO()
        torch.onnx.export(module, tuple(inputs.values()), buf, input_names=list(inputs), opset_version=17,
                          dynamo=False)
        feed = {k: v.numpy() for k, v in inputs.items()}
        ms, outs = {}, {}
        for route in ("plugin", "plugin-free"):
            path = work / f"{route}.onnx"
            onnx.save(lower_custom_ops(onnx.load_from_string(buf.getvalue()), route), str(path))
            runner = OnnxRuntimeRunner(path)
            ms[route] = median_ms(runner, feed, args.repeat)
            outs[route] = runner(feed)
        diff = max(float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
                   for a, b in zip(outs["plugin"].values(), outs["plugin-free"].values()))
        print(f"{name:62s} {ms['plugin']:12.1f} ms {ms['plugin-free']:9.1f} ms {diff:11.2e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
