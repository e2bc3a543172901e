"""The plugins' Triton kernels on a CUDA GPU against torchvision.ops (run on the lent GPU, never in CI).

    TRTDEPLOY_GPU_TESTS=1 python -m pytest tests/gpu -q     # or: python tests/gpu/test_kernels_gpu.py

batched NMS: identical keep sets (the (box, class) pairs kept, in order) to torchvision's
batched_nms on the same candidates, and identical outputs to the PyTorch reference; RoIAlign
and multi-level RoIAlign: within 1e-4 of torchvision. Across sizes, ties, empty inputs,
all-suppressed inputs and boxes off the image. Also runs each plugin's ``enqueue`` on
buffers handed over as raw pointers on a side stream, as TensorRT would.
"""
from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_kernels_gpu import detector_scores, fpn_case, import_kernels, torchvision_nms  # noqa: E402

K = import_kernels()
DEVICE = "cuda"


def _nms_cases():
    yield "small", detector_scores(2, 60, 5, DEVICE, seed=1), dict(topk=200, keep_topk=30)
    yield "1000x80", detector_scores(1, 1000, 80, DEVICE, seed=2), dict(topk=1000, keep_topk=100)
    yield "10000x80", detector_scores(1, 10000, 80, DEVICE, seed=3), dict(topk=5000, keep_topk=100)
    yield "batch 4", detector_scores(4, 3000, 20, DEVICE, seed=4), dict(topk=2000, keep_topk=300)
    boxes, scores = detector_scores(1, 500, 3, DEVICE, seed=5)
    yield "ties", (boxes, (scores * 4).round() / 4), dict(topk=1500, keep_topk=200)
    same = torch.tensor([[[[10.0, 10.0, 50.0, 50.0]]]], device=DEVICE).expand(1, 300, 1, 4).contiguous()
    yield "all suppressed", (same, torch.rand(1, 300, 4, device=DEVICE)), dict(topk=1200, keep_topk=50)
    yield "empty", (torch.zeros(2, 0, 1, 4, device=DEVICE), torch.zeros(2, 0, 80, device=DEVICE)), \
        dict(topk=100, keep_topk=10)
    yield "none above threshold", (boxes, scores * 0.01), dict(topk=100, keep_topk=10)
    off = boxes - 700  # boxes off the image (negative coordinates)
    yield "off the image", (off, scores), dict(topk=800, keep_topk=100)


def test_batched_nms_keeps_what_torchvision_keeps():
    kernel, reference = K["batched_nms.kernel"], K["batched_nms.reference"]
    for name, (boxes, scores), kw in _nms_cases():
        kw = dict(kw, score_threshold=0.05, iou_threshold=0.5)
        dets, labels, index = kernel.batched_nms(boxes, scores, **kw)
        want = torchvision_nms(boxes, scores, exact=True, **kw)
        for n, pairs in enumerate(want):
            got = (index[n] * scores.shape[2] + labels[n])[labels[n] >= 0]
            assert torch.equal(got, pairs), f"{name}: image {n} keeps {got.tolist()[:10]}..., torchvision {pairs.tolist()[:10]}..."
            assert torch.equal(dets[n, :len(pairs), 4], scores[n].reshape(-1)[pairs]), name
        if boxes.shape[1] * scores.shape[2] <= 2000:  # the reference's Python scan is slow
            ref = reference.batched_nms_reference(boxes, scores, **kw)
            assert all(torch.equal(a, b) for a, b in zip((dets, labels, index), ref)), name


def test_batched_nms_replays_in_a_cuda_graph_on_new_inputs():
    """Captured once (TensorRT's workspace and outputs), replayed on other scores: equals a direct call."""
    kernel = K["batched_nms.kernel"]
    kw = dict(topk=1000, keep_topk=100, score_threshold=0.05, iou_threshold=0.5)
    boxes, scores = detector_scores(2, 3000, 80, DEVICE, seed=11)
    workspace = torch.empty(kernel.workspace_bytes(2, 3000 * 80, 1000), dtype=torch.uint8, device=DEVICE)
    out = (torch.empty(2, 100, 5, device=DEVICE), torch.empty(2, 100, dtype=torch.int64, device=DEVICE),
           torch.empty(2, 100, dtype=torch.int64, device=DEVICE))
    kernel.batched_nms(boxes, scores, workspace=workspace, out=out, **kw)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        kernel.batched_nms(boxes, scores, workspace=workspace, out=out, **kw)
    for seed in (12, 13):
        new_boxes, new_scores = detector_scores(2, 3000, 80, DEVICE, seed=seed)
        boxes.copy_(new_boxes)
        scores.copy_(new_scores)
        for o in out:
            o.fill_(7)  # poison: every row must be written
        workspace.fill_(0xA5)  # TensorRT's workspace holds whatever the last layer left
        graph.replay()
        want = kernel.batched_nms(new_boxes, new_scores, **kw)
        assert all(torch.equal(o, w) for o, w in zip(out, want)), seed


def test_roi_align_matches_torchvision():
    import torchvision

    kernel = K["roi_align.kernel"]
    g = torch.Generator(device=DEVICE).manual_seed(0)
    for channels, height, width, num_rois, size, scale in ((3, 13, 17, 40, (7, 7), 0.5), (256, 200, 336, 1000, (7, 7), 0.25),
                                                           (64, 50, 84, 300, (14, 14), 1 / 16), (8, 32, 32, 0, (7, 7), 1.0)):
        features = torch.randn(2, channels, height, width, generator=g, device=DEVICE)
        xy = torch.rand(num_rois, 2, generator=g, device=DEVICE) * width / scale * 1.2 - 20  # some off the map
        wh = torch.rand(num_rois, 2, generator=g, device=DEVICE) * width / scale * 0.6
        rois = torch.cat([torch.randint(0, 2, (num_rois, 1), generator=g, device=DEVICE).float(), xy, xy + wh], 1)
        if num_rois:
            rois[0, 3:] = rois[0, 1:3]  # a degenerate RoI
        for sampling_ratio in (0, 2):
            for aligned in (False, True):
                want = torchvision.ops.roi_align(features, rois, size, scale, sampling_ratio, aligned)
                tuned = (None,) if channels == 256 else ()  # autotuned once per key: compiles every tile
                for tile in (*tuned, (4, 4, 1), (1, 1, 1), (2, 2, 0) if sampling_ratio else (4, 2, 2)):
                    got = kernel.roi_align_levels([features], rois, size, [scale], sampling_ratio, aligned, tile=tile)
                    assert got.shape == want.shape
                    error = (got - want).abs().max().item() if num_rois else 0.0
                    assert error <= 1e-4, f"C={channels} {num_rois} RoIs sr={sampling_ratio} {tile}: {error}"


def test_multi_level_roi_align_matches_torchvision():
    import torchvision

    kernel = K["multi_level_roi_align.kernel"]
    for num_rois in (1, 1000):
        features, rois, boxes, size = fpn_case(num_rois, 256, DEVICE, seed=num_rois)
        pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
        want = pooler(OrderedDict((str(i), f) for i, f in enumerate(features)), [boxes], [size])
        got = kernel.multi_level_roi_align(rois, features, output_size=(7, 7), featmap_strides=[4, 8, 16, 32],
                                           finest_scale=56, sampling_ratio=2, aligned=False)
        error = (got - want).abs().max().item()
        assert error <= 1e-4, f"{num_rois} RoIs: max abs error {error}"


def test_plugin_enqueue_on_raw_pointers_and_a_side_stream():
    """What PythonPlugin.enqueue does with TensorRT's buffers: wrap pointers, run on TensorRT's stream."""
    import types as pytypes

    from trtdeploy.backends.tensorrt import plugins
    from trtdeploy.ops.batched_nms import OP

    spec = OP.plugin_spec
    boxes, scores = detector_scores(2, 2000, 80, DEVICE, seed=9)
    values = dict(topk=1000, keep_topk=100, score_threshold=0.05, iou_threshold=0.5, background_label_id=-1,
                  clip_boxes=0, return_index=1, num_classes=80, is_normalized=0)

    def desc(t, type_name):
        return pytypes.SimpleNamespace(dims=tuple(t.shape), type=pytypes.SimpleNamespace(name=type_name))

    outs = [torch.full((2, 100, 5), float("nan"), device=DEVICE), torch.full((2, 100), 7, device=DEVICE),
            torch.full((2, 100), 7, device=DEVICE)]
    size = spec.workspace_size(values, [tuple(boxes.shape), tuple(scores.shape)], [])
    workspace = torch.empty(size, dtype=torch.uint8, device=DEVICE)
    stream = torch.cuda.Stream()
    ins = [plugins.device_tensor(t.data_ptr(), desc(t, "FLOAT")) for t in (boxes, scores)]
    wrapped = [plugins.device_tensor(o.data_ptr(), desc(o, n)) for o, n in zip(outs, ("FLOAT", "INT64", "INT64"))]
    torch.cuda.synchronize()
    with torch.cuda.stream(torch.cuda.ExternalStream(stream.cuda_stream)):
        spec.enqueue(values, ins, wrapped, workspace)
    stream.synchronize()
    want = K["batched_nms.kernel"].batched_nms(boxes, scores, topk=1000, keep_topk=100, score_threshold=0.05,
                                               iou_threshold=0.5)
    assert all(torch.equal(o, w) for o, w in zip(outs, want))


if __name__ == "__main__":  # the GPU machine may lack pytest
    failed = 0
    for name, fn in list(globals().items()):
        if name.startswith("test_"):
            try:
                fn()
                print(f"PASS {name}", flush=True)
            except Exception as e:  # report every test, then fail
                failed += 1
                print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
    sys.exit(1 if failed else 0)
