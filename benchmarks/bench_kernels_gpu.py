"""Triton kernels of the custom-op plugins vs torchvision CUDA, side by side in one run (needs a CUDA GPU).

    python benchmarks/bench_kernels_gpu.py --out bench_kernels.json [--baseline OLD_CHECKOUT]

``--baseline`` names another checkout (e.g. ``git worktree add /tmp/old <commit>``) whose kernels
are timed in the same run, in their own column.

Times (median of ``triton.testing.do_bench``, warm) at realistic detector sizes:
- batched NMS: 1,000 / 5,000 / 10,000 boxes x 80 classes, the 1,000 / 5,000 best candidates,
  keep 100. torchvision's side is the same semantics done the usual way: threshold, top-k of the
  (box, class) pairs, ``torchvision.ops.batched_nms``, first keep_top_k.
- RoIAlign: 1,000 RoIs x 256 channels -> 7x7 on one 200x336 map (torchvision.ops.roi_align);
- multi-level RoIAlign: 1,000 RoIs x 256 channels -> 7x7 from 4 FPN levels of an 800x1344 image
  (torchvision.ops.MultiScaleRoIAlign). Ours with the autotuned tile (the default), then every tile.
NMS is also timed as a CUDA-graph replay (what TensorRT runs when it captures the engine's stream).
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


def import_kernels(root: Path = REPO, package: str = "trtdeploy") -> dict:
    """The kernel modules of the checkout ``root``, imported as ``package`` without its ``__init__``s.

    The kernels need only torch and triton (a GPU machine may lack onnx, mmengine...), and a
    second checkout imported under another package name can be timed beside this one.
    """
    import importlib

    try:
        if package != "trtdeploy":
            raise ImportError(package)
        import trtdeploy  # noqa: F401
    except Exception:  # only the top package is bypassed (ops/ imports onnx, not torch or mmengine) ...
        stubs = [package]
        if package != "trtdeploy":  # ... except for an older checkout, whose op packages needed more
            stubs += [f"{package}.ops", *(f"{package}.ops.{op}" for op in OPS)]
        for name in stubs:
            module = types.ModuleType(name)
            module.__path__ = [str(root.joinpath("trtdeploy", *name.split(".")[1:]))]
            sys.modules[name] = module
    names = [f"{package}.ops.{op}.{part}" for op in OPS for part in ("kernel", "reference")]
    return {name.removeprefix(f"{package}.ops."): importlib.import_module(name) for name in names}


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


def bench_graph(fn) -> float:
    """Median ms of one replay of ``fn`` captured in a CUDA graph (``fn`` must not allocate or sync)."""
    from triton.testing import do_bench_cudagraph

    fn()  # compile and tune outside the capture
    torch.cuda.synchronize()
    return float(do_bench_cudagraph(fn, rep=300, return_mode="median"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench_kernels.json", help="where to write the figures (JSON)")
    parser.add_argument("--baseline", type=Path, help="another checkout whose kernels to time in the same run")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench_kernels_gpu.py needs a CUDA GPU; none is visible here", file=sys.stderr)
        return 2
    k = import_kernels()
    old = import_kernels(args.baseline, "baseline_trtdeploy") if args.baseline else None
    device = "cuda"
    import torchvision

    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "torchvision": torchvision.__version__, "triton": __import__("triton").__version__, "rows": []}

    def row(name, ours, theirs, before=None, **extra):
        results["rows"].append({"case": name, "ours_ms": ours, "torchvision_ms": theirs, "baseline_ms": before,
                                "speedup": theirs / ours, **extra})
        was = f"  before {before:8.3f} ms" if before is not None else ""
        print(f"{name:62s} ours {ours:8.3f} ms{was}  torchvision {theirs:8.3f} ms  x{theirs / ours:5.2f}", flush=True)

    nms = k["batched_nms.kernel"]
    for num_boxes in (1000, 5000, 10000):
        for topk in (1000, 5000):
            boxes, scores = detector_scores(1, num_boxes, 80, device)
            kw = dict(topk=topk, keep_topk=100, score_threshold=0.05, iou_threshold=0.5)
            theirs = bench(lambda: torchvision_nms(boxes, scores, **kw))
            ours = bench(lambda: nms.batched_nms(boxes, scores, **kw))
            before = bench(lambda: old["batched_nms.kernel"].batched_nms(boxes, scores, **kw)) if old else None
            name = f"batched NMS {num_boxes} boxes x 80 classes, topk {topk}, keep 100"
            row(name, ours, theirs, before)
            out = nms.batched_nms(boxes, scores, **kw)
            workspace = torch.empty(nms.workspace_bytes(1, num_boxes * 80, min(topk, num_boxes * 80)),
                                    dtype=torch.uint8, device=device)
            row(name + ", CUDA graph", bench_graph(lambda: nms.batched_nms(boxes, scores, workspace=workspace,
                                                                            out=out, **kw)), theirs)

    features, rois, boxes, size = fpn_case(1000, 256, device)
    roi = k["roi_align.kernel"]
    results["tiles"] = {}
    for sampling_ratio, aligned, label in ((2, False, "sr 2"), (0, True, "adaptive, aligned")):
        theirs = bench(lambda: torchvision.ops.roi_align(features[0], rois, (7, 7), 0.25, sampling_ratio, aligned))
        before = bench(lambda: old["roi_align.kernel"].roi_align_levels(features[:1], rois, (7, 7), [0.25],
                                                                       sampling_ratio, aligned)) if old else None
        ours = bench(lambda: roi.roi_align_levels(features[:1], rois, (7, 7), [0.25], sampling_ratio, aligned))
        row(f"RoIAlign 1000 x 256 -> 7x7, 200x336 map, {label}, autotuned", ours, theirs, before)
        sweep = {f"C{c} W{w} {('all', 'row', 'row x2')[row]}": bench(
            lambda: roi.roi_align_levels(features[:1], rois, (7, 7), [0.25], sampling_ratio, aligned,
                                         tile=(c, w, row)))
                 for c, w, row in roi.TILES if row in ((0, 1) if sampling_ratio else (1, 2))}
        results["tiles"][label] = sweep
        print(f"  tiles ({label}): " + ", ".join(f"{t} {ms:.3f}" for t, ms in sweep.items()), flush=True)

    pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
    named = OrderedDict((str(i), f) for i, f in enumerate(features))
    theirs = bench(lambda: pooler(named, [boxes], [size]))
    strides = [1 / 4, 1 / 8, 1 / 16, 1 / 32]  # finest_scale 56: torchvision's defaults
    before = bench(lambda: old["roi_align.kernel"].roi_align_levels(features, rois, (7, 7), strides, 2, False)) \
        if old else None
    ours = bench(lambda: roi.roi_align_levels(features, rois, (7, 7), strides, 2, False))
    row("multi-level RoIAlign 1000 x 256 -> 7x7, 4 levels, sr 2, autotuned", ours, theirs, before)
    results["autotuned"] = {str(key): str(config) for key, config in roi._tuned_kernel.cache.items()}
    print("autotuned tiles:", results["autotuned"], flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
