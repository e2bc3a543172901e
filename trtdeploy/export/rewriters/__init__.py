"""Export-time rewrites of detectors and their detector families: importing this package registers them.

Each module names, with ``FUNCTION_REWRITER.register('<dotted name>')``, the torchvision
function it replaces while ``rewrite_context`` is active. Together they turn a detector
into one graph: a pre-processed batch ``input`` [N, 3, H, W] in; ``dets`` [N, K, 5]
(x1, y1, x2, y2, score), ``labels`` [N, K] (+ ``masks`` [N, K, M, M]) out, padded to
K = keep_top_k with score 0 and label -1. No NonZero, no data-dependent shapes.
"""
from . import single_stage, torchvision_families, transform, two_stage  # noqa: F401  (registration on import)
# after torchvision: RT-DETR refines YOLO's family (the family registered last wins); ultralytics is imported only
# when a model needs it
from . import ultralytics_rtdetr, ultralytics_yolo  # noqa: F401,E402
from . import hf_detr  # noqa: F401,E402  (transformers, too, is imported only by a model that needs it)
from .graphs import DetectorGraph, SegmentorGraph

__all__ = ["DetectorGraph", "SegmentorGraph"]
