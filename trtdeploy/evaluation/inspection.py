"""``trtdeploy inspect``: what an ONNX file or an engine holds, as a dict (for --json) and as text.

The backend whose artefact it is describes it (``Backend.inspect``: ``backends/<name>/inspect.py``);
this module picks the backend and formats the dict for people.
"""
from __future__ import annotations

import os

from ..artefacts import resolve_model
from ..backends.base import backend_for_file
from ..errors import ModelError
from ..utils.table import format_table


def inspect_file(path: str | os.PathLike) -> dict:
    """Describe ``path`` (.onnx or an engine) as a JSON-ready dict."""
    path = resolve_model(path)
    if not path.is_file():
        raise ModelError(f"{path} does not exist; pass an .onnx file or an engine (.engine/.plan/.trt)")
    return backend_for_file(path).inspect(path)


def _io_rows(info: dict) -> list[list]:
    return [[kind, t["name"], t["dtype"], "x".join(str(d) for d in t["shape"])]
            for kind in ("inputs", "outputs") for t in info.get(kind, [])]


def format_inspection(info: dict) -> str:
    """The dict of ``inspect_file`` as text for people; the artefact's backend words its own facts."""
    summary, details = backend_for_file(info["file"]).inspection_text(info)
    lines = [f"{info['file']} ({info['kind']}, {info['size_bytes'] / 1e6:.2f} MB)", *summary]
    lines += ["", format_table(["", "name", "dtype", "shape"], _io_rows(info))]
    for i, profile in enumerate(info.get("profiles") or []):
        lines.append(f"\nprofile {i}:")
        lines.append(format_table(["input", "min", "opt", "max"], [
            [name, *("x".join(map(str, r[k])) for k in ("min_shape", "opt_shape", "max_shape"))]
            for name, r in profile.items()]))
    return "\n".join(lines + details)
