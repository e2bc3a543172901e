"""What a conversion left behind, asked in one place by every caller (api, evaluation, serving, cli).

``trtdeploy convert`` writes files with sidecars into a work dir: the ONNX graph and, when a
backend builds something, the artefact built from it (whose sidecar names the graph). Three
questions about them are answered here and nowhere else:

- ``resolve_model(path)``: the model file a path stands for; a work dir stands for its deployed
  artefact, so ``trtdeploy run work_dirs/r18 --input img.jpg`` works wherever a file does;
- ``stand_in_onnx(artefact, sidecar)``: the ONNX graph ONNX Runtime runs in an engine's place
  where the engine cannot run here (its FP32-scale twin for INT8, else the graph it was built from);
- ``task_for(sidecar, cfg)``: the task the sidecar records, overridden by an explicit deploy config.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from .backends.sidecar import sidecars_in
from .config import DeployConfig
from .errors import ModelError
from .tasks import Task, get_task

# sidecar keys that name another file of the same conversion: the graphs an artefact was made from
SOURCE_KEYS = ("onnx_file", "built_from", "check_with")


def deployed_artefact(work_dir: str | os.PathLike) -> Path:
    """The file a work dir stands for: the converted file no other one there was built from (an engine over its ONNX)."""
    work = Path(work_dir)
    files = sidecars_in(work)
    sources = {sidecar.get(key) for path, sidecar in files for key in SOURCE_KEYS if sidecar.get(key) != path.name}
    top = [path for path, _ in files if path.name not in sources]
    if not top:
        raise ModelError(f"{work} holds no converted model (no file with a .json sidecar); "
                         f"run `trtdeploy convert ... --work-dir {work}` first")
    if len(top) > 1:
        raise ModelError(f"{work} holds {len(top)} converted models ({', '.join(p.name for p in top)}); "
                         f"pass the one you mean, e.g. {top[0]}")
    return top[0]


def resolve_model(path: str | os.PathLike) -> Path:
    """``path`` itself, or for a work dir the artefact it stands for (``deployed_artefact``)."""
    path = Path(path)
    return deployed_artefact(path) if path.is_dir() else path


def stand_in_onnx(artefact: Path, sidecar: Mapping) -> Path | None:
    """The ONNX graph beside ``artefact`` that computes what it computes, or None when there is none."""
    for name in (sidecar.get("check_with"), sidecar.get("built_from"), sidecar.get("onnx_file"),
                 artefact.stem + ".onnx"):
        candidate = artefact.with_name(name) if name else None
        if candidate is not None and candidate.suffix == ".onnx" and candidate != artefact and candidate.is_file():
            return candidate
    return None


def task_for(sidecar: Mapping | None, cfg: DeployConfig | None = None) -> Task:
    """The task of a converted model: what its sidecar recorded, overridden by an explicit deploy config."""
    layers = [(sidecar or {}).get("deploy_config", {}).get("codebase_config") or {},
              {k: (sidecar or {}).get(k) for k in ("class_names", "preprocess", "mask_layout")},
              cfg.codebase if cfg is not None else {}]
    settings = {k: v for layer in layers for k, v in layer.items() if v is not None}
    task_name = (cfg.task if cfg else None) or (sidecar or {}).get("task")
    return get_task(task_name)(settings)
