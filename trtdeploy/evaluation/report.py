"""JSON files and reason notes for the evaluation commands (their tables: ``utils/table.py``)."""
from __future__ import annotations

import math
import os
from typing import Any, Sequence

from ..utils.fileio import atomic_write_json


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write a report atomically; infinities become strings so the file stays standard JSON."""
    atomic_write_json(path, json_safe(data))


def json_safe(obj):
    """A copy of ``obj`` that json.dumps accepts (numpy scalars, infinities as strings)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and (math.isinf(obj) or math.isnan(obj)):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return json_safe(obj.item())
    return obj


def reason_notes(items: Sequence[tuple[str, str, str]]) -> list[str]:
    """Notes under a table for (target label, short status, full reason): one note per kind of status, naming
    every target it holds for, so a long reason ("... needs an NVIDIA GPU ...") is printed once."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for label, status, reason in items:
        if reason:
            groups.setdefault(status or reason, []).append((label, reason))
    return [f"{', '.join(label for label, _ in members)}: {members[0][1]}" for members in groups.values()]
