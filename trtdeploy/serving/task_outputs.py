"""What a served model answers for each task: the task's result as named tensors, and back.

The server side packs ``Task.postprocess`` results with ``to_tensors``; a client (tests,
bench-serve, users) reads them back with ``from_tensors`` into the very structure
``trtdeploy run`` prints, so both can be compared item by item.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..registry import Registry


@dataclass(frozen=True)
class OutputTensor:
    name: str
    dtype: str  # numpy dtype name, or "bytes"
    dims: tuple[int, ...]  # per image, -1 where the count varies


class TaskOutputs:
    """Base: the tensors one task's served model returns."""

    tensors: tuple[OutputTensor, ...] = ()

    def to_tensors(self, results: list) -> dict[str, np.ndarray]:
        """Pack one result per image (one row of ``Task.postprocess``) into arrays with a batch dimension."""
        raise NotImplementedError

    def from_tensors(self, arrays: Mapping[str, np.ndarray]) -> list:
        """Unpack arrays with a batch dimension into one result per image; ``task.format_result([row])`` prints one."""
        raise NotImplementedError


TASK_OUTPUTS: Registry[type[TaskOutputs]] = Registry("served task")


def task_outputs(task_name: str) -> TaskOutputs:
    return TASK_OUTPUTS.get(task_name, field="the sidecar's task")()


def _text(values) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


@TASK_OUTPUTS.register("Classification")
class ClassificationOutputs(TaskOutputs):
    """Top-k classes per image: ids, probabilities and names (Classification.postprocess order)."""

    tensors = (OutputTensor("class_ids", "int64", (-1,)), OutputTensor("scores", "float32", (-1,)),
               OutputTensor("class_names", "bytes", (-1,)))

    def to_tensors(self, results: list) -> dict[str, np.ndarray]:
        return {"class_ids": np.array([[i for i, _, _ in top] for top in results], dtype=np.int64),
                "scores": np.array([[p for _, _, p in top] for top in results], dtype=np.float32),
                "class_names": np.array([[n.encode() for _, n, _ in top] for top in results], dtype=object)}

    def from_tensors(self, arrays: Mapping[str, np.ndarray]) -> list:
        return [[(int(i), name, float(p)) for i, name, p in zip(ids, _text(names), scores)]
                for ids, names, scores in zip(arrays["class_ids"], arrays["class_names"], arrays["scores"])]


@TASK_OUTPUTS.register("ObjectDetection")
class DetectionOutputs(TaskOutputs):
    """Boxes (x1, y1, x2, y2 in original-image pixels), scores, labels and names per image.

    Images of one request have different detection counts: rows are padded with label -1, which
    ``from_tensors`` drops. Instance masks are not served (they are image-sized per detection).
    """

    tensors = (OutputTensor("boxes", "float32", (-1, 4)), OutputTensor("scores", "float32", (-1,)),
               OutputTensor("labels", "int64", (-1,)), OutputTensor("class_names", "bytes", (-1,)))

    def to_tensors(self, results: list) -> dict[str, np.ndarray]:
        n, most = len(results), max([len(r["scores"]) for r in results] + [0])
        out = {"boxes": np.zeros((n, most, 4), np.float32), "scores": np.zeros((n, most), np.float32),
               "labels": np.full((n, most), -1, np.int64), "class_names": np.full((n, most), b"", dtype=object)}
        for i, r in enumerate(results):
            k = len(r["scores"])
            out["boxes"][i, :k] = r["boxes"]
            out["scores"][i, :k] = r["scores"]
            out["labels"][i, :k] = r["labels"]
            out["class_names"][i, :k] = [name.encode() for name in r["names"]]
        return out

    def from_tensors(self, arrays: Mapping[str, np.ndarray]) -> list:
        results = []
        for boxes, scores, labels, names in zip(arrays["boxes"], arrays["scores"], arrays["labels"],
                                                arrays["class_names"]):
            keep = labels >= 0
            results.append({"boxes": boxes[keep].astype(np.float32), "scores": scores[keep].astype(np.float32),
                            "labels": labels[keep].astype(np.int64), "names": _text(names[keep])})
        return results
