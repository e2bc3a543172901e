"""Every lowered op graph, with static and with dynamic shapes, parses and builds with TensorRT(-RTX).

The graphs are exported and lowered here; each build runs in a child process (conftest.run_python).
"""
from __future__ import annotations

import io
import json

import onnx
import pytest
import torch

from conftest import run_python
from trtdeploy.ops.batched_nms import multiclass_nms
from trtdeploy.ops.multi_level_roi_align import multi_level_roi_align
from trtdeploy.ops.roi_align import roi_align
from trtdeploy.passes import lower_custom_ops, simplify

STRIDES = (4, 8, 16, 32)


class NMS(torch.nn.Module):
    def forward(self, boxes, scores):
        # pre_top_k 5000 (MMDeploy's default) is above TensorRT's TopK limit of 3840: selected in pages.
        return multiclass_nms(boxes, scores, iou_threshold=0.5, score_threshold=0.05, pre_top_k=5000,
                              keep_top_k=100, return_index=True)


class RoIAlign(torch.nn.Module):
    def forward(self, features, rois):
        return roi_align(features, rois, 7, 0.25, 0, True)  # adaptive sampling: data-dependent trip count


class MultiLevel(torch.nn.Module):
    def forward(self, rois, *features):
        return multi_level_roi_align(list(features), rois, 7, STRIDES, 2, False)


def _rois(n: int) -> torch.Tensor:
    xy = torch.rand(n, 2) * 100
    return torch.cat([torch.zeros(n, 1), xy, xy + torch.rand(n, 2) * 100], 1)


def _levels(n: int, side: int) -> list[torch.Tensor]:
    return [torch.randn(n, 16, side // s, side // s) for s in STRIDES]


# name -> (module, example inputs, input names, dynamic axes, {input: (min, opt, max)} for the dynamic build)
CASES = {
    "nms": (NMS(), (torch.rand(1, 500, 4), torch.rand(1, 500, 8)), ["boxes", "scores"],
            {"boxes": {0: "n", 1: "b"}, "scores": {0: "n", 1: "b"}},
            {"boxes": ((1, 1, 4), (1, 500, 4), (2, 4000, 4)), "scores": ((1, 1, 8), (1, 500, 8), (2, 4000, 8))}),
    "roi_align": (RoIAlign(), (torch.randn(1, 16, 40, 40), _rois(100)), ["features", "rois"],
                  {"features": {0: "n", 2: "h", 3: "w"}, "rois": {0: "r"}},
                  {"features": ((1, 16, 8, 8), (1, 16, 40, 40), (2, 16, 96, 96)),
                   "rois": ((1, 5), (50, 5), (1000, 5))}),
    "multi_level_roi_align": (
        MultiLevel(), (_rois(50), *_levels(1, 128)), ["rois", "p2", "p3", "p4", "p5"],
        {"rois": {0: "r"}, **{f"p{i + 2}": {0: "n", 2: f"h{i}", 3: f"w{i}"} for i in range(4)}},
        {"rois": ((1, 5), (50, 5), (1000, 5)),
         **{f"p{i + 2}": ((1, 16, 64 // s, 64 // s), (1, 16, 128 // s, 128 // s), (2, 16, 256 // s, 256 // s))
            for i, s in enumerate(STRIDES)}}),
}

BUILD = """
import json, sys
from trtdeploy.backends.tensorrt import import_tensorrt

trt = import_tensorrt()
logger = trt.module.Logger(trt.module.Logger.ERROR)
results = {}
for key, (path, shapes) in json.loads(sys.argv[1]).items():
    builder = trt.module.Builder(logger)
    network = builder.create_network(trt.network_flags(strongly_typed=True))
    parser = trt.module.OnnxParser(network, logger)
    if not parser.parse_from_file(path):
        results[key] = "parse failed: " + "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        continue
    config = builder.create_builder_config()
    if shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in shapes.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    results[key] = "built" if engine is not None and engine.nbytes > 0 else "build failed"
print("RESULTS " + json.dumps(results))
"""


def export_lowered(name: str, dynamic: bool, path) -> None:
    module, args, names, axes, _ = CASES[name]
    buffer = io.BytesIO()
    torch.onnx.export(module, args, buffer, dynamo=False, opset_version=17, input_names=names,
                      dynamic_axes=axes if dynamic else None)
    model = simplify(lower_custom_ops(onnx.load_from_string(buffer.getvalue())))
    assert not [n for n in model.graph.node if n.domain not in ("", "ai.onnx")]
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def build_results(tmp_path_factory) -> dict:
    """Export every case static and dynamic, then build them all in one child process."""
    work = tmp_path_factory.mktemp("lowered_ops")
    jobs = {}
    for name in CASES:
        for dynamic in (False, True):
            path = work / f"{name}_{'dynamic' if dynamic else 'static'}.onnx"
            export_lowered(name, dynamic, path)
            jobs[f"{name}-{'dynamic' if dynamic else 'static'}"] = (str(path), CASES[name][4] if dynamic else {})
    proc = run_python(f"import sys; sys.argv = ['build', {json.dumps(jobs)!r}]\n" + BUILD)
    return json.loads(proc.stdout.split("RESULTS ", 1)[1])


@pytest.mark.slow
@pytest.mark.parametrize("shapes", ["static", "dynamic"])
@pytest.mark.parametrize("name", list(CASES))
def test_lowered_graph_builds_with_tensorrt(name, shapes, build_results):
    assert build_results[f"{name}-{shapes}"] == "built"
