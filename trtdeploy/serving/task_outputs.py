"""What a served model answers for each task: the task's result as named tensors, and back.

The server side packs ``Task.postprocess`` results with ``to_tensors``; a client (tests,
bench-serve, users) reads them back with ``from_tensors`` into the very structure
``trtdeploy run`` prints, so both can be compared item by item.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

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
        """Pack one result per image into arrays with a leading batch dimension."""
        raise NotImplementedError

    def from_tensors(self, arrays: Mapping[str, np.ndarray]) -> list:
        """Unpack arrays with a leading batch dimension into one result per image."""
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
        tops = [top[0] for top in results]  # Classification.postprocess returns one list per batch row
        return {"class_ids": np.array([[i for i, _, _ in t] for t in tops], dtype=np.int64),
                "scores": np.array([[p for _, _, p in t] for t in tops], dtype=np.float32),
                "class_names": np.array([[n.encode() for _, n, _ in t] for t in tops], dtype=object)}

    def from_tensors(self, arrays: Mapping[str, np.ndarray]) -> list:
        return [[[(int(i), name, float(p)) for i, name, p in zip(ids, _text(names), scores)]]
                for ids, names, scores in zip(arrays["class_ids"], arrays["class_names"], arrays["scores"])]
