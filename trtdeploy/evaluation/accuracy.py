"""``trtdeploy test``: the accuracy (and per-image latency) of each target on one test set.

Every target sees the same images through its task's pre-processing; targets that cannot run
here stay in the table with the reason, so the table always lists what was asked for.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..datasets.evaluation import EvalDataset
from ..errors import ConfigError, DatasetError
from ..tasks import Metric, get_task
from ..utils.fileio import ensure_writable_dir
from ..utils.image import load_image
from ..passes.numerics import nonfinite_outputs
from ..utils.logging import logger, progress
from ..utils.table import format_table
from .report import reason_notes
from .targets import Target, runnable_or_fail


@dataclass
class TargetAccuracy:
    """One row of the table."""

    target: str
    backend: str
    precision: str
    source: str
    scores: dict[str, float] = field(default_factory=dict)
    images: int = 0
    latency_ms: float | None = None   # mean inference time per image (pre/post-processing excluded)
    status: str = "ok"
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def metric_for(task_name: str, dataset: EvalDataset, class_names: list[str] | None) -> Metric:
    """The task's own metric (``Task.metric``) over ``dataset``."""
    task = get_task(task_name)
    if task.metric is None:
        raise ConfigError(f"task {task.name!r} defines no metric (Task.metric), so `trtdeploy test` cannot score it; "
                          f"give the task class a Metric subclass")
    return task.metric(dataset, class_names)


def evaluate(targets: list[Target], dataset: EvalDataset, max_images: int | None = None,
             show_dir: str | os.PathLike | None = None, class_names: list[str] | None = None) -> list[TargetAccuracy]:
    """Run every runnable target over the dataset (first ``max_images``) and score it.

    ``show_dir``: also draw each target's result on each image there (one sub-folder per target).
    ``class_names``: the model's classes in its output order (``--classes``), over what the sidecars say.
    """
    if max_images is not None and max_images < 1:
        raise DatasetError(f"--max-images must be at least 1, got {max_images}")
    dataset = dataset.head(max_images)
    if not len(dataset):
        raise DatasetError(f"{dataset.source} holds no test images")
    runnable = runnable_or_fail(targets, "test")
    pictures = {id(t): ensure_writable_dir(Path(show_dir) / _folder_name(t)) for t in runnable} if show_dir else {}
    metrics = {id(t): metric_for(t.model.task.name, dataset, class_names or t.model.task.settings.get("class_names"))
               for t in runnable}
    for note in dict.fromkeys(getattr(m, "order_note", "") for m in metrics.values()):
        if note:
            logger.warning(note)
    seconds = {id(t): 0.0 for t in runnable}
    nonfinite: dict[int, str] = {}  # the first image on which a target's outputs hold NaN/inf
    _warm_up(runnable, dataset.samples[0].path)
    for n, sample in enumerate(progress(dataset.samples, desc="test", unit="img")):
        image = load_image(sample.path)
        prepared = {}
        for t in runnable:
            shape = t.model.input_shape()
            if shape not in prepared:
                prepared[shape] = t.model.task.prepare(image, shape)
            batch, meta = prepared[shape]
            start = time.perf_counter()
            outputs = t.model.runner(batch)
            seconds[id(t)] += time.perf_counter() - start
            bad = nonfinite_outputs(outputs)
            if bad and id(t) not in nonfinite:
                nonfinite[id(t)] = f"non-finite outputs {', '.join(bad)} on {sample.path.name}"
            result = t.model.task.postprocess(outputs, meta)[0]
            metrics[id(t)].update(result, sample)
            if pictures:
                t.model.task.visualize(image, [result], pictures[id(t)] / f"{n:05d}_{sample.path.stem}.png")
    rows = []
    for t in targets:
        row = TargetAccuracy(t.label, t.backend, t.precision, t.source)
        if t.runnable:
            row.scores = metrics[id(t)].compute()
            row.images = len(dataset)
            row.latency_ms = 1000.0 * seconds[id(t)] / len(dataset)
            if id(t) in nonfinite:
                row.status, row.reason = "FAIL (NaN/inf)", nonfinite[id(t)]
        else:
            row.status, row.reason = f"cannot run here ({t.why})", t.reason
        rows.append(row)
    return rows


def _folder_name(target: Target) -> str:
    """A file-system-safe folder name per target, e.g. onnxruntime_fp16_end2end_fp16."""
    parts = (target.backend, target.precision, Path(target.source).stem)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(p for p in parts if p))


def _warm_up(targets: list[Target], image_path) -> None:
    """One untimed inference each, so first-call set-up does not count as latency."""
    image = load_image(image_path)
    for t in targets:
        batch, _ = t.model.task.prepare(image, t.model.input_shape())
        t.model.runner(batch)


def format_accuracy(rows: list[TargetAccuracy]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r.scores))
    headers = ["target", *columns, "ms/img", "images", "status"]
    table = format_table(headers, [[r.target, *(r.scores.get(c) for c in columns), r.latency_ms, r.images or None,
                                    r.status] for r in rows])
    notes = reason_notes([(r.target, r.status, r.reason) for r in rows])
    return table + ("\n" + "\n".join(notes) if notes else "")
