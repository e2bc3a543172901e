"""Triton kernels of the custom-op plugins vs torchvision CUDA, side by side in one run (needs a CUDA GPU).

    python benchmarks/bench_kernels_gpu.py --out bench_kernels.json

Times (median of ``triton.testing.do_bench``, warm) at realistic detector sizes:
- batched NMS: 1,000 / 5,000 / 10,000 boxes x 80 classes, the 1,000 / 5,000 best candidates,
  keep 100. torchvision's side is the same semantics done the usual way: threshold, top-k of the
  (box, class) pairs, ``torchvision.ops.batched_nms``, first keep_top_k.
- RoIAlign: 1,000 RoIs x 256 channels -> 7x7 on one 200x336 map (torchvision.ops.roi_align);
- multi-level RoIAlign: 1,000 RoIs x 256 channels -> 7x7 from 4 FPN levels of an 800x1344 image
  (torchvision.ops.MultiScaleRoIAlign); both RoIAlign cases over a sweep of block_c / num_warps.
Prints a table and writes every figure to --out (JSON).
"""
from __future__ import annotations

import argparse
import json
import sys
import types
from collections import OrderedDict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
OPS = ("batched_nms", "roi_align", "multi_level_roi_align")
TILES = [(c, w) for c in (1, 2, 4, 8) for w in (1, 4)]  # RoIAlign kernel: channels per program, warps


def import_kernels() -> dict:
    """The kernel modules, without trtdeploy's package ``__init__``s when their other needs are missing."""
    import importlib

    try:
        import trtdeploy  # noqa: F401
    except Exception:  # e.g. a GPU machine without onnx/mmengine: the kernels need only torch and triton
        sys.path.insert(0, str(REPO))
        for name in ("trtdeploy", "trtdeploy.ops", *(f"trtdeploy.ops.{op}" for op in OPS)):
            module = types.ModuleType(name)
            module.__path__ = [str(REPO.joinpath(*name.split(".")))]
            sys.modules[name] = module
    names = [f"trtdeploy.ops.{op}.{part}" for op in OPS for part in ("kernel", "reference")]
    return {name.removeprefix("trtdeploy.ops."): importlib.import_module(name) for name in names}


def detector_scores(num_images: int, num_boxes: int, num_classes: int, device: str, seed: int = 0):
    """Boxes on an 800x1344 image and scores shaped like a detector's: most low, a few confident, ties."""
    g = torch.Generator(device=device).manual_seed(seed)
    xy = torch.rand(num_images, num_boxes, 1, 2, generator=g, device=device) * torch.tensor([1344.0, 800.0], device=device)
    wh = torch.rand(num_images, num_boxes, 1, 2, generator=g, device=device) * 300 + 4
    boxes = torch.cat([xy, xy + wh], -1)
    scores = torch.rand(num_images, num_boxes, num_classes, generator=g, device=device) ** 6
    scores = (scores * 4096).round() / 4096  # ties, as low-precision heads produce
    return boxes, scores


def torchvision_nms(boxes, scores, *, topk, keep_topk, score_threshold, iou_threshold, exact=False):
    """The same semantics with torchvision: per image, threshold, best topk pairs, batched_nms, first keep_topk.

    Returns each image's kept pairs as ``box * C + class``. ``exact`` runs ``torchvision.ops.nms``
    per class (what batched_nms does for large inputs; its coordinate-offset shortcut for small
    ones rounds coordinates) on the candidates' ranks instead of their scores, so that equal
    scores keep the stable rank order (torchvision's sort does not promise one): keep sets are
    then comparable exactly.
    """
    from torchvision.ops import batched_nms, nms

    out = []
    num_classes = scores.shape[2]
    for image_boxes, image_scores in zip(boxes[:, :, 0], scores):
        flat = image_scores.reshape(-1)
        pairs = (flat > score_threshold).nonzero().flatten()
        order = flat[pairs].sort(descending=True, stable=True).indices[:topk]
        pairs = pairs[order]
        cand_boxes, classes = image_boxes[pairs // num_classes], pairs % num_classes
        if exact:
            rank = -torch.arange(len(pairs), dtype=torch.float32, device=flat.device)
            kept = [members[nms(cand_boxes[members], rank[members], iou_threshold)]
                    for members in ((classes == c).nonzero().flatten() for c in classes.unique())]
            keep = torch.cat(kept).sort().values if kept else pairs.new_zeros(0)
        else:
            keep = batched_nms(cand_boxes, flat[pairs], classes, iou_threshold)
        out.append(pairs[keep[:keep_topk]])
    return out


def fpn_case(num_rois: int, channels: int, device: str, seed: int = 0):
    g = torch.Generator(device=device).manual_seed(seed)
    size = (800, 1344)
    features = [torch.randn(1, channels, size[0] // s, size[1] // s, generator=g, device=device)
                for s in (4, 8, 16, 32)]
    xy = torch.rand(num_rois, 2, generator=g, device=device) * torch.tensor([1200.0, 700.0], device=device)
    wh = torch.rand(num_rois, 2, generator=g, device=device) ** 2 * 600 + 8
    boxes = torch.cat([xy, xy + wh], 1)
    rois = torch.cat([torch.zeros(num_rois, 1, device=device), boxes], 1)
    return features, rois, boxes, size


def bench(fn) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=50, rep=300, return_mode="median"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_kernels.json", help="where to write the figures (JSON)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_kernels_gpu.py needs a CUDA GPU; none is visible here", file=sys.stderr)
        return 2
    k = import_kernels()
    device = "cuda"
    import torchvision

    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "torchvision": torchvision.__version__, "triton": __import__("triton").__version__, "rows": []}

    def row(name, ours, theirs, **extra):
        results["rows"].append({"case": name, "ours_ms": ours, "torchvision_ms": theirs,
                                "speedup": theirs / ours, **extra})
        print(f"{name:58s} ours {ours:8.3f} ms  torchvision {theirs:8.3f} ms  x{theirs / ours:5.2f}", flush=True)

    for num_boxes in (1000, 5000, 10000):
        for topk in (1000, 5000):
            boxes, scores = detector_scores(1, num_boxes, 80, device)
            kw = dict(topk=topk, keep_topk=100, score_threshold=0.05, iou_threshold=0.5)
            ours = bench(lambda: k["batched_nms.kernel"].batched_nms(boxes, scores, **kw))
            theirs = bench(lambda: torchvision_nms(boxes, scores, **kw))
            row(f"batched NMS {num_boxes} boxes x 80 classes, topk {topk}, keep 100", ours, theirs)

    nms, ref = k["batched_nms.kernel"], k["batched_nms.reference"]
    boxes, scores = detector_scores(1, 10000, 80, device)
    kw = dict(topk=1000, score_threshold=0.05, background_label_id=-1, clip_boxes=False)
    results["nms_parts_ms"] = {
        "select_candidates (PyTorch)": bench(lambda: ref.select_candidates(boxes, scores, **kw)),
        "whole batched_nms": bench(lambda: nms.batched_nms(boxes, scores, keep_topk=100, iou_threshold=0.5, **kw))}
    print("batched NMS 10000 x 80, topk 1000 (ms):", results["nms_parts_ms"], flush=True)

    features, rois, boxes, size = fpn_case(1000, 256, device)
    single = k["roi_align.kernel"].roi_align_levels
    for sampling_ratio, aligned, label in ((2, False, "sr 2"), (0, True, "adaptive, aligned")):
        theirs = bench(lambda: torchvision.ops.roi_align(features[0], rois, (7, 7), 0.25, sampling_ratio, aligned))
        for block_c, num_warps in TILES:
            ours = bench(lambda: single(features[:1], rois, (7, 7), [0.25], sampling_ratio, aligned,
                                        block_c=block_c, num_warps=num_warps))
            row(f"RoIAlign 1000 x 256 -> 7x7, 200x336 map, {label}, C{block_c} W{num_warps}", ours, theirs,
                block_c=block_c, num_warps=num_warps)

    pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    named = OrderedDict((str(i), f) for i, f in enumerate(features))
    theirs = bench(lambda: pooler(named, [boxes], [size]))
    for block_c, num_warps in TILES:  # strides 4..32, finest_scale 56: torchvision's defaults
        ours = bench(lambda: single(features, rois, (7, 7), [1 / 4, 1 / 8, 1 / 16, 1 / 32], 2, False,
                                    block_c=block_c, num_warps=num_warps))
        row(f"multi-level RoIAlign 1000 x 256 -> 7x7, 4 levels, C{block_c} W{num_warps}", ours, theirs,
            block_c=block_c, num_warps=num_warps)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
