"""Judge outputs against a reference, and hunt for the first node where two ONNX graphs diverge.

Running and judging stay apart: runners produce dicts of arrays; this module only compares them.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import ModelError, ShapeError
from ..passes.numerics import nonfinite_count
from .tolerance import Tolerances


@dataclass
class OutputComparison:
    """One output of one candidate against the reference."""

    output: str
    reference: str
    candidate: str
    shape: list
    max_abs: float
    max_rel: float
    mean_abs: float
    cosine: float
    atol: float
    rtol: float
    min_cosine: float
    passed: bool
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def compare_arrays(name: str, ref: np.ndarray, got: np.ndarray, tol: Tolerances,
                   reference: str = "", candidate: str = "") -> OutputComparison:
    """Max abs/rel error and cosine of ``got`` against ``ref``; pass means allclose and cosine both hold."""
    atol, rtol, min_cos = tol.for_output(name)
    if ref.shape != got.shape:
        return OutputComparison(name, reference, candidate, list(got.shape), np.inf, np.inf, np.inf, 0.0,
                                atol, rtol, min_cos, False, f"shape {list(got.shape)} != reference {list(ref.shape)}")
    a, b = got.astype(np.float64), ref.astype(np.float64)
    if a.size == 0:
        return OutputComparison(name, reference, candidate, list(a.shape), 0.0, 0.0, 0.0, 1.0,
                                atol, rtol, min_cos, True, "empty")
    # NaN/inf is a failure on either side, even where both agree; the figures measure the finite elements.
    finite = np.isfinite(a) & np.isfinite(b)
    diff = np.abs(np.where(finite, a, 0.0) - np.where(finite, b, 0.0))
    rel = diff / np.maximum(np.abs(b), np.finfo(np.float64).tiny)
    nonfinite = "; ".join(f"{who} holds {what}" for who, values in (("output", a), ("reference", b))
                          for what in [nonfinite_count(values)] if what)
    cos = cosine_similarity(np.where(finite, a, 0.0), np.where(finite, b, 0.0))
    within = bool(np.all(diff <= atol + rtol * np.abs(np.where(finite, b, 0.0))))
    return OutputComparison(name, reference, candidate, list(a.shape), float(diff.max()),
                            float(np.where(diff == 0, 0.0, rel).max()), float(diff.mean()), cos,
                            atol, rtol, min_cos, within and cos >= min_cos and not nonfinite, nonfinite)


def compare_outputs(ref: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray], tol: Tolerances,
                    reference: str = "", candidate: str = "") -> list[OutputComparison]:
    """Every output the reference has; an output missing from ``got`` fails with a note."""
    results = []
    for name, ref_value in ref.items():
        if name not in got:
            atol, rtol, min_cos = tol.for_output(name)
            results.append(OutputComparison(name, reference, candidate, [], np.inf, np.inf, np.inf, 0.0, atol, rtol,
                                            min_cos, False, f"missing from {candidate}"))
            continue
        results.append(compare_arrays(name, np.asarray(ref_value), np.asarray(got[name]), tol, reference, candidate))
    return results


def worst_case(runs: list[list[OutputComparison]]) -> list[OutputComparison]:
    """One comparison per (candidate, output) over several inputs: the largest errors, the lowest cosine."""
    merged: dict[tuple[str, str], OutputComparison] = {}
    for run in runs:
        for c in run:
            key = (c.candidate, c.output)
            if key not in merged:
                merged[key] = OutputComparison(**c.to_dict())
                continue
            m = merged[key]
            m.max_abs, m.max_rel = max(m.max_abs, c.max_abs), max(m.max_rel, c.max_rel)
            m.mean_abs, m.cosine = max(m.mean_abs, c.mean_abs), min(m.cosine, c.cosine)
            m.passed, m.note = m.passed and c.passed, m.note or c.note
    return list(merged.values())


# -- outputs saved on one machine, compared on another -------------------------------------------------

SEPARATOR = "::"


def save_outputs(path: str | os.PathLike, feeds: list[Mapping[str, np.ndarray]],
                 outputs: list[Mapping[str, Mapping[str, np.ndarray]]]) -> None:
    """Write the inputs and every model's outputs (``outputs[i][label][name]``) to an .npz, atomically."""
    from ..utils.fileio import atomic_write

    arrays = {}
    for i, (feed, by_label) in enumerate(zip(feeds, outputs)):
        arrays.update({SEPARATOR.join((str(i), "input", k)): v for k, v in feed.items()})
        for label, values in by_label.items():
            arrays.update({SEPARATOR.join((str(i), label, k)): v for k, v in values.items()})
    with atomic_write(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def load_outputs(path: str | os.PathLike) -> tuple[list[dict], list[dict[str, dict]]]:
    """Read what ``save_outputs`` wrote: the inputs per run, and per run {label: {output: array}}."""
    from ..errors import InputError

    try:
        with np.load(path, allow_pickle=False) as data:
            items = {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is not a file written by `trtdeploy compare --save-outputs` ({e})") from None
    runs: dict[int, tuple[dict, dict]] = {}
    for key, value in items.items():
        parts = key.split(SEPARATOR)
        if len(parts) != 3 or not parts[0].isdigit():
            raise InputError(f"{path} holds {key!r}, which `trtdeploy compare --save-outputs` does not write; "
                             f"save the outputs again")
        feed, by_label = runs.setdefault(int(parts[0]), ({}, {}))
        if parts[1] == "input":
            feed[parts[2]] = value
        else:
            by_label.setdefault(parts[1], {})[parts[2]] = value
    ordered = [runs[i] for i in sorted(runs)]
    if not ordered or any(not feed for feed, _ in ordered):
        raise InputError(f"{path} holds no saved inputs; save the outputs again with `trtdeploy compare --save-outputs`")
    return [feed for feed, _ in ordered], [by_label for _, by_label in ordered]


# -- bisect -------------------------------------------------------------------------------------------

@dataclass
class Divergence:
    """The first node (in graph order) whose output differs between two graphs beyond tolerance."""

    node: str
    op_type: str
    comparison: OutputComparison
    input_max_abs: float   # the largest difference among its inputs: small means this node made the jump
    compared_tensors: int

    def to_dict(self) -> dict:
        return {"node": self.node, "op_type": self.op_type, "input_max_abs": self.input_max_abs,
                "compared_tensors": self.compared_tensors, **self.comparison.to_dict()}


def _run_all_tensors(path: Path, feed: Mapping[str, np.ndarray]) -> tuple[object, dict[str, np.ndarray]]:
    import onnx

    from ..passes.numerics import run_onnx

    try:
        original = onnx.load(str(path))
    except Exception as e:
        raise ModelError(f"{path} is not a readable ONNX file ({type(e).__name__}); pass the .onnx that "
                         f"`trtdeploy convert` wrote") from None
    return original, run_onnx(original, feed, all_tensors=True, where=str(path))


def twin_name(name: str) -> str:
    """The FP32 graph's name of a tensor of its FP16/BF16 twin (``X__fp16`` is ``X``; the emulation's ``X__bf16``
    too). INT8 Q/DQ twins keep the activations' names."""
    from ..passes.fp16 import LOW_SUFFIXES

    for suffix in LOW_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def bisect_onnx(reference: str | os.PathLike, candidate: str | os.PathLike, feed: Mapping[str, np.ndarray],
                tol: Tolerances) -> tuple[Divergence | None, int]:
    """Run both graphs on ONNX Runtime with every intermediate tensor as an output; find the first divergence.

    Tensors are matched by name (graphs exported from the same model, or one derived from the other:
    the FP16/BF16 twin's ``X__fp16`` is ``X``, see ``twin_name``). The first node in graph order whose
    output leaves tolerance has its inputs within it (they were compared before it). Returns the
    divergence (None when every shared tensor agrees) and how many tensors were compared.
    """
    ref_model, ref_values = _run_all_tensors(Path(reference), feed)
    _, raw = _run_all_tensors(Path(candidate), feed)
    # A twin's 16-bit tensor and its FP32 copy under the original name hold the same values: either will do.
    cand_values = {twin_name(n): v.astype(np.float32) if v.dtype.kind == "f" else v for n, v in raw.items()}
    shared = [n for n in ref_values if n in cand_values]
    if not shared:
        raise ModelError(f"{reference} and {candidate} share no tensor names, so they cannot be compared node by node; "
                         f"bisect two graphs exported from the same model (e.g. end2end.onnx and end2end_fp16.onnx)")
    max_abs: dict[str, float] = {}
    compared = 0
    for node in ref_model.graph.node:
        for out in node.output:
            if out not in ref_values or out not in cand_values:
                continue
            compared += 1
            result = compare_arrays(out, ref_values[out], cand_values[out], tol, str(reference), str(candidate))
            max_abs[out] = result.max_abs
            if not result.passed:
                worst_input = max((max_abs.get(i, 0.0) for i in node.input), default=0.0)
                return Divergence(node.name or f"<unnamed {node.op_type} producing {out}>", node.op_type, result,
                                  worst_input, compared), compared
    return None, compared
