"""Issue 4 benchmark: the plugin-free lowerings vs the raw ONNX ops torchvision exports, on ONNX Runtime CPU.

(a) batched NMS: our lowered TRTBatchedNMS (TopK + IoU matrix + fixed-point Loop) vs torchvision's own
    post-processing exported as is (score filter with NonZero, top-k, batched_nms -> NonMaxSuppression),
    B boxes x C classes, pre_top_k candidates, keep_top_k detections, batch 1;
(b) multi-level RoIAlign: our lowered MMCVMultiLevelRoiAlign vs torchvision's MultiScaleRoIAlign exported
    as is (per-level RoiAlign + NonZero + ScatterND), R RoIs x C channels x 7x7 over 4 FPN levels;
(c) single-level RoIAlign: our lowered MMCVRoIAlign vs ONNX RoiAlign (adaptive sampling, as MMDeploy's default).

Both graphs of a pair see the same inputs; their outputs are compared before timing. Median of --runs
after warm-up, the two graphs interleaved run by run so that load from other processes hits both alike.

    python benchmarks/bench_ops.py [--runs 20] [--threads 2]
"""
from __future__ import annotations

import argparse
import io
import statistics
import time
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision

from trtdeploy.ops.batched_nms import multiclass_nms
from trtdeploy.ops.multi_level_roi_align import multi_level_roi_align
from trtdeploy.ops.roi_align import roi_align
from trtdeploy.passes import lower_custom_ops, simplify

STRIDES = (4, 8, 16, 32)


def session(module: torch.nn.Module, args: tuple, names: list[str], threads: int) -> ort.InferenceSession:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=17, input_names=names)
    model = simplify(lower_custom_ops(onnx.load_from_string(buffer.getvalue())))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def interleaved_ms(sessions: list[ort.InferenceSession], feeds: list[dict], runs: int) -> list[float]:
    for s, feed in zip(sessions, feeds):
        for _ in range(3):
            s.run(None, feed)
    times = [[] for _ in sessions]
    for _ in range(runs):
        for t, s, feed in zip(times, sessions, feeds):
            start = time.perf_counter()
            s.run(None, feed)
            t.append(time.perf_counter() - start)
    return [statistics.median(t) * 1000 for t in times]


class LoweredNMS(torch.nn.Module):
    def __init__(self, pre_top_k: int, keep_top_k: int):
        super().__init__()
        self.pre_top_k, self.keep_top_k = pre_top_k, keep_top_k

    def forward(self, boxes, scores):
        return multiclass_nms(boxes, scores, iou_threshold=0.5, score_threshold=0.05, pre_top_k=self.pre_top_k,
                              keep_top_k=self.keep_top_k)


class TorchvisionNMS(torch.nn.Module):
    """torchvision detectors' post-processing for one image: filter, top-k, batched_nms, first keep_top_k."""

    def __init__(self, pre_top_k: int, keep_top_k: int):
        super().__init__()
        self.pre_top_k, self.keep_top_k = pre_top_k, keep_top_k

    def forward(self, boxes, scores):
        flat = scores[0].flatten()
        ids = torch.where(flat > 0.05)[0]
        kept_scores = flat[ids]
        top, order = kept_scores.topk(torch.clamp(torch.tensor(self.pre_top_k), max=kept_scores.shape[0]))
        ids = ids[order]
        labels = ids % scores.shape[2]
        picked = boxes[0, ids // scores.shape[2]]
        keep = torchvision.ops.batched_nms(picked, top, labels, 0.5)[: self.keep_top_k]
        return torch.cat([picked[keep], top[keep, None]], 1), labels[keep]


def detector_like_inputs(n_boxes: int, n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Boxes clustered around a few dozen objects; scores mostly tiny, as a trained detector's sigmoid."""
    centers = rng.uniform(0, 1000, (40, 2))
    picked = centers[rng.integers(0, len(centers), n_boxes)] + rng.normal(0, 15, (n_boxes, 2))
    wh = rng.uniform(20, 200, (n_boxes, 2))
    boxes = np.concatenate([picked - wh / 2, picked + wh / 2], 1)[None].astype(np.float32)
    scores = (rng.uniform(0, 1, (1, n_boxes, n_classes)) ** 12).astype(np.float32)
    return boxes, scores


def bench_nms(n_boxes: int, n_classes: int, pre_top_k: int, keep_top_k: int, runs: int, threads: int) -> dict:
    boxes, scores = detector_like_inputs(n_boxes, n_classes, np.random.default_rng(0))
    args = (torch.from_numpy(boxes), torch.from_numpy(scores))
    ours = session(LoweredNMS(pre_top_k, keep_top_k), args, ["boxes", "scores"], threads)
    raw = session(TorchvisionNMS(pre_top_k, keep_top_k), args, ["boxes", "scores"], threads)
    feed = {"boxes": boxes, "scores": scores}
    dets, labels = ours.run(None, feed)
    raw_dets, raw_labels = raw.run(None, feed)
    k = int((labels >= 0).sum())
    same = k == len(raw_labels) and (labels[0, :k] == raw_labels).all() and (dets[0, :k] == raw_dets).all()
    candidates = int((scores > 0.05).sum())
    ms = interleaved_ms([ours, raw], [feed, feed], runs)
    return {"case": f"NMS {n_boxes} boxes x {n_classes} classes ({candidates} above 0.05), pre_top_k {pre_top_k}, "
                    f"keep {keep_top_k}", "ours_ms": ms[0], "raw_ms": ms[1], "agree": f"same {k} detections"
            if same else "DIFFERENT"}


class LoweredMultiLevel(torch.nn.Module):
    def forward(self, rois, *features):
        return multi_level_roi_align(list(features), rois, 7, STRIDES, 2, False)


class TorchvisionMultiLevel(torch.nn.Module):
    def __init__(self, image_size: tuple[int, int]):
        super().__init__()
        self.pooler = torchvision.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
        self.image_size = image_size

    def forward(self, rois, *features):
        return self.pooler({str(i): f for i, f in enumerate(features)}, [rois[:, 1:]], [self.image_size])


def proposals(n: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """RPN-like boxes inside the image: sizes log-uniform 16..600 px, aspect ratios 0.5..2."""
    size = np.exp(rng.uniform(np.log(16), np.log(600), n))
    ratio = np.exp(rng.uniform(np.log(0.5), np.log(2), n))
    w, h = size * np.sqrt(ratio), size / np.sqrt(ratio)
    x1, y1 = rng.uniform(0, width - w.clip(max=width - 1)), rng.uniform(0, height - h.clip(max=height - 1))
    return np.stack([np.zeros(n), x1, y1, np.minimum(x1 + w, width), np.minimum(y1 + h, height)], 1).astype(np.float32)


def bench_multi_level(n_rois: int, channels: int, image: tuple[int, int], runs: int, threads: int) -> dict:
    rng = np.random.default_rng(1)
    features = [rng.standard_normal((1, channels, image[0] // s, image[1] // s)).astype(np.float32) for s in STRIDES]
    rois = proposals(n_rois, *image, rng)
    names = ["rois"] + [f"p{i}" for i in range(len(STRIDES))]
    args = (torch.from_numpy(rois), *map(torch.from_numpy, features))
    ours = session(LoweredMultiLevel(), args, names, threads)
    raw = session(TorchvisionMultiLevel(image), args, names, threads)
    feed = dict(zip(names, [rois, *features]))
    diff = float(np.abs(ours.run(None, feed)[0] - raw.run(None, feed)[0]).max())
    ms = interleaved_ms([ours, raw], [feed, feed], runs)
    return {"case": f"multi-level RoIAlign {n_rois} RoIs x {channels} ch x 7x7, 4 levels of {image[0]}x{image[1]}, "
                    f"sampling_ratio 2", "ours_ms": ms[0], "raw_ms": ms[1], "agree": f"max |diff| {diff:.1e}"}


class LoweredRoIAlign(torch.nn.Module):
    def forward(self, features, rois):
        return roi_align(features, rois, 7, 0.25, 0, True)


class OnnxRoIAlign(torch.nn.Module):
    def forward(self, features, rois):
        return torchvision.ops.roi_align(features, rois, 7, 0.25, 0, True)


def bench_roi_align(n_rois: int, channels: int, image: tuple[int, int], runs: int, threads: int) -> dict:
    rng = np.random.default_rng(2)
    features = rng.standard_normal((1, channels, image[0] // 4, image[1] // 4)).astype(np.float32)
    rois = proposals(n_rois, image[0], image[1], rng)
    rois[:, 3:] = np.minimum(rois[:, 1:3] + (rois[:, 3:] - rois[:, 1:3]) * 0.25, rois[:, 3:])  # small boxes for P2
    args = (torch.from_numpy(features), torch.from_numpy(rois))
    ours = session(LoweredRoIAlign(), args, ["features", "rois"], threads)
    raw = session(OnnxRoIAlign(), args, ["features", "rois"], threads)
    feed = {"features": features, "rois": rois}
    reference = torchvision.ops.roi_align(*args, 7, 0.25, 0, True).numpy()
    diff = float(np.abs(ours.run(None, feed)[0] - reference).max())
    diff_raw = float(np.abs(raw.run(None, feed)[0] - reference).max())
    ms = interleaved_ms([ours, raw], [feed, feed], runs)
    return {"case": f"RoIAlign {n_rois} RoIs x {channels} ch x 7x7 on {features.shape[2]}x{features.shape[3]}, "
                    f"adaptive sampling, aligned", "ours_ms": ms[0], "raw_ms": ms[1],
            "agree": f"max |diff| vs torchvision: ours {diff:.1e}, RoiAlign {diff_raw:.1e}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows = [bench_nms(b, 80, 1000, 100, args.runs, args.threads) for b in (1000, 5000)]
    rows.append(bench_nms(5000, 80, 5000, 100, args.runs, args.threads))  # MMDeploy's default: TopK in pages
    rows.append(bench_multi_level(1000, 256, (800, 1344), args.runs, args.threads))
    rows.append(bench_roi_align(1000, 256, (800, 1344), args.runs, args.threads))
    print(f"onnxruntime {ort.__version__}, {args.threads} threads, median of {args.runs} runs\n")
    print("| case | lowered (ms) | raw ONNX op (ms) | ratio | outputs |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['ours_ms']:.1f} | {r['raw_ms']:.1f} | {r['ours_ms'] / r['raw_ms']:.2f}x "
              f"| {r['agree']} |")


if __name__ == "__main__":
    main()
