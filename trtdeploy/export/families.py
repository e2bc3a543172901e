"""Detector families: what the detection task must know about a kind of detector to export, run and check it.

A family is one file (torchvision's are ``rewriters/torchvision_families.py``, Ultralytics' YOLO
``rewriters/ultralytics_yolo.py``, RT-DETR ``rewriters/ultralytics_rtdetr.py``, Hugging Face DETR
``rewriters/hf_detr.py``) that registers

- the rewriters of the functions that make the detector's post-processing a fixed-size graph, each keyed by the
  dotted name of the function it replaces (``@FUNCTION_REWRITER.register('pkg.mod.Class.method')``), and
- one ``DetectorFamily`` (``@DETECTOR_FAMILIES.register('name')`` over a factory, or ``DETECTOR_FAMILIES.add``):
  how to recognise the model (a class on its MRO, named by dotted path so nothing is imported to check), which
  functions its export rewrites, how images become its input, how ``codebase_config.post_processing`` applies, and
  its eager result on a pre-processed batch (the reference the exported graph is checked against).

Every family's graph takes ``input`` [N, 3, H, W] and returns ``dets`` [N, K, 5], ``labels`` [N, K] and the
family's extra outputs (``masks``, ``keypoints``), padded to K = keep_top_k with score 0 and label -1.
The README's "Adding a detector family" section walks through a new one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..registry import Registry


def _nothing(model: Any) -> None:
    return None


@dataclass(frozen=True)
class DetectorFamily:
    """One kind of detector. Callables take the eval-mode model (``post_processing``: MMDeploy's dict)."""

    class_path: str                                    # the model's class or a base class, e.g. 'pkg.mod.MyDetector'
    num_classes: Callable[[Any], int]
    rewritten: Callable[[Any], list[Callable]]         # the functions its export replaces (each needs a rewriter)
    configure: Callable[[Any, dict], dict]             # apply post_processing; returns the thresholds in effect
    eager: Callable[[Any, Any, dict], list[dict]]      # (model, batch, post_processing) -> per image boxes/scores/labels/..
    preprocess: Callable[[Any], dict]                  # mean/std/keep_ratio/pad_value/center/bgr for the task's pipeline
    class_names: Callable[[Any], list[str] | None] = _nothing
    extra_outputs: Callable[[Any], tuple[str, ...]] = lambda model: ()  # 'masks', 'keypoints' beyond dets/labels
    check: Callable[[Any], None] = _nothing            # raise ModelError for a variant the family cannot export
    mask_layout: str = "box"                           # masks [K, M, M] per box ('box') or over the input ('image')
    int8_exclude: Callable[[Any], list[str]] = lambda model: []  # ONNX node patterns kept out of INT8 by default

    def recognises(self, model: Any) -> bool:
        """True when ``class_path`` is on the model's MRO (nothing is imported to find out)."""
        return any(f"{c.__module__}.{c.__qualname__}" == self.class_path for c in type(model).__mro__)


class DetectorFamilies(Registry[DetectorFamily]):
    def add(self, name: str, family: DetectorFamily) -> DetectorFamily:
        return self.register(name)(family)

    def of(self, model: Any) -> tuple[str, DetectorFamily] | None:
        """The family that recognises ``model`` (the one registered last wins, so a subclass can refine a base)."""
        found = [(name, f) for name, f in self.items() if f.recognises(model)]
        return found[-1] if found else None


DETECTOR_FAMILIES = DetectorFamilies("detector family")
