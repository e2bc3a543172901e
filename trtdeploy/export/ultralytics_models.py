"""``ultralytics://`` MODELs: an ultralytics model yaml (random init) or a checkpoint trained with ultralytics.

``ultralytics://yolov8n.yaml`` builds the model from ultralytics' own yaml (scale letter included: yolo11s.yaml,
yolov8n-seg.yaml, rtdetr-l.yaml; or a path to your own yaml); ``ultralytics://runs/detect/train/weights/best.pt``
loads a checkpoint saved by ultralytics' trainer (its EMA weights) with ultralytics' restricted loader
(weights_only plus the known-class allow-list). Nothing is downloaded: ``YOLO_OFFLINE=1`` is set for ultralytics.
ultralytics is an optional dependency (``pip install 'trtdeploy[yolo]'``, AGPL-3.0).
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from ..errors import ModelError
from ..registry import did_you_mean

ULTRALYTICS_SCHEME = "ultralytics://"
SCALES = "nslmx"


def _ultralytics(spec: str):
    os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics never reaches the network from here
    try:
        import ultralytics
    except ImportError:
        raise ModelError(f"MODEL {spec!r} needs ultralytics, which is not installed; pip install 'trtdeploy[yolo]' "
                         f"(or pip install ultralytics; it is AGPL-3.0)") from None
    return ultralytics


@lru_cache(maxsize=1)
def known_yaml_names() -> tuple[str, ...]:
    """Every model yaml name ultralytics resolves: its cfg/models files and, for scaled ones, each scale."""
    import yaml
    from ultralytics.cfg import __file__ as cfg_init

    names = set()
    for path in Path(cfg_init).parent.glob("models/**/*.yaml"):
        names.add(path.name)
        scales = (yaml.safe_load(path.read_text()) or {}).get("scales") or {}
        for scale in scales:
            names.add(re.sub(r"(\d+)", rf"\g<1>{scale}", path.name, count=1))
    return tuple(sorted(names))


def _model_class(cfg: dict):
    from ultralytics.nn import tasks

    head = str(cfg["head"][-1][-2])
    if head == "RTDETRDecoder":
        return tasks.RTDETRDetectionModel
    by_task = {"detect": tasks.DetectionModel, "segment": tasks.SegmentationModel, "pose": tasks.PoseModel,
               "obb": tasks.OBBModel}
    task = tasks.guess_model_task(cfg)
    if task not in by_task:
        raise ModelError(f"{cfg.get('yaml_file')} is an ultralytics {task} model; trtdeploy exports ultralytics "
                         f"detect and segment models and RT-DETR (e.g. ultralytics://yolov8n.yaml)")
    return by_task[task]


def _from_yaml(spec: str, name: str):
    from ultralytics.nn.tasks import yaml_model_load

    if not Path(name).is_file() and name not in known_yaml_names():
        raise ModelError(f"MODEL {spec!r}: ultralytics has no model yaml {name!r}"
                         f"{did_you_mean(name, known_yaml_names())}; give one of its names (yolov8n.yaml, "
                         f"yolo11s-seg.yaml, rtdetr-l.yaml, ...) or the path to your own yaml")
    cfg = yaml_model_load(name)
    return _model_class(cfg)(cfg, verbose=False)


def _from_checkpoint(spec: str, path: Path):
    import torch
    from ultralytics.nn.tasks import torch_safe_load

    if not path.is_file():
        raise ModelError(f"MODEL {spec!r}: checkpoint {path} does not exist")
    hint = "pass a .pt saved by ultralytics (e.g. runs/detect/train/weights/best.pt)"
    try:
        ckpt, _ = torch_safe_load(str(path), safe_only=True)
    except Exception as e:  # ultralytics raises TypeError/ModuleNotFoundError/UnpicklingError with multi-line text
        first = re.sub(r"^ERROR\W*", "", (str(e).strip().splitlines() or [type(e).__name__])[0])
        raise ModelError(f"MODEL {spec!r}: {path} is not an ultralytics checkpoint ({type(e).__name__}: {first}); "
                         f"{hint}") from None
    model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"MODEL {spec!r}: {path} is not an ultralytics checkpoint (it holds no 'model' or 'ema' "
                         f"module; a plain state dict goes with --checkpoint); {hint}")
    return model.float()


def ultralytics_model(spec: str):
    """The eval-mode model an ``ultralytics://`` MODEL names (see the module doc)."""
    _ultralytics(spec)
    target = spec[len(ULTRALYTICS_SCHEME):]
    if target.endswith((".yaml", ".yml")):
        return _from_yaml(spec, target).eval()
    if target.endswith(".pt"):
        return _from_checkpoint(spec, Path(target)).eval()
    raise ModelError(f"MODEL {spec!r}: write ultralytics://<model>.yaml (random init, e.g. yolov8n.yaml) or "
                     f"ultralytics://<path>/best.pt (a checkpoint trained with ultralytics)")
