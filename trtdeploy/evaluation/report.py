"""Plain-text tables and JSON files for the evaluation commands."""
from __future__ import annotations

import math
import os
from typing import Any, Sequence

from ..utils.fileio import atomic_write_json


def cell(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return f"{value:.{digits}f}" if abs(value) >= 10 ** -digits or value == 0 else f"{value:.2e}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 2) -> str:
    """Left-aligned columns separated by two spaces, with a rule under the header."""
    text = [[cell(v, digits) for v in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in text)) if text else len(str(h)) for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in text]
    return "\n".join(lines)


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
