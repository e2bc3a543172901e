"""Rewrites that make valid ONNX graphs acceptable to TensorRT's ONNX parser.

ONNX Runtime accepts these graphs and TensorRT's parser rejects them, so a file from another
exporter fails at the build with a parser message. Each fix is registered in ``PARSER_FIXES``
with ``finds(node)`` (the pre-build scan of ``TensorRTBackend.unsupported_nodes`` uses it to
name nodes no fix was applied to) and ``fix(node)`` (rewrites the node in place).

Guarantee of ``fix_for_parser``: every node some fix ``finds`` is rewritten so that no fix
finds it any more, and the graph computes the same values on ONNX Runtime as before (each
fix changes spelling, never semantics). A node a fix cannot rewrite is left as it was, and
the scan then names it.
"""
from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Callable

import onnx
from onnx import helper

from ..registry import Registry
from ..utils.onnx_graph import all_nodes


@dataclass(frozen=True)
class ParserFix:
    """One parser restriction: which nodes break it, how to rewrite them, and what to say if we cannot."""

    op_type: str
    finds: Callable[[onnx.NodeProto], bool]
    fix: Callable[[onnx.NodeProto], bool]  # True when the node was rewritten
    hint: str


PARSER_FIXES: Registry[ParserFix] = Registry("parser fix")


def _attribute(node: onnx.NodeProto, name: str):
    return next((a for a in node.attribute if a.name == name), None)


def _equation(node: onnx.NodeProto) -> str:
    attr = _attribute(node, "equation")
    value = helper.get_attribute_value(attr) if attr is not None else b""
    return value.decode() if isinstance(value, bytes) else str(value)


def _einsum_is_canonical(equation: str) -> bool:
    return all(c in string.ascii_lowercase or c in ",->." for c in equation)


def canonical_einsum(equation: str) -> str | None:
    """``equation`` with spaces dropped and every label a lower-case letter, or None when there are more
    than 26 labels. Labels are renamed consistently (a label that is already lower-case keeps its
    letter; the others take unused letters), so the contraction is the same."""
    compact = equation.replace(" ", "")
    labels = list(dict.fromkeys(c for c in compact if c.isalpha()))
    if len(labels) > 26 or any(not (c.isalpha() and c.isascii()) and c not in ",->." for c in compact):
        return None
    mapping = {c: c for c in labels if c in string.ascii_lowercase}
    spare = [c for c in string.ascii_lowercase if c not in mapping]
    for c in labels:
        if c not in mapping:
            mapping[c] = c.lower() if c.lower() in spare else spare[0]
            spare.remove(mapping[c])
    return "".join(mapping.get(c, c) for c in compact)


def _fix_einsum(node: onnx.NodeProto) -> bool:
    fixed = canonical_einsum(_equation(node))
    if fixed is None:
        return False
    attr = _attribute(node, "equation")
    attr.CopyFrom(helper.make_attribute("equation", fixed))
    return True


PARSER_FIXES.register("einsum-lowercase")(ParserFix(
    "Einsum", lambda node: not _einsum_is_canonical(_equation(node)), _fix_einsum,
    "TensorRT's parser takes Einsum equations of lower-case letters only (e.g. torchvision's MaxViT writes "
    "'B G H I D, B G H J D -> B G H I J'); convert it with `trtdeploy convert`, whose parser fixes rewrite it, "
    "or use at most 26 labels"))


def parser_problems(node: onnx.NodeProto) -> list[ParserFix]:
    """The registered restrictions ``node`` breaks."""
    return [f for _, f in PARSER_FIXES.items() if f.op_type == node.op_type and f.finds(node)]


def fix_for_parser(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite, in place, every node (subgraphs included) that breaks a registered parser restriction."""
    for node in all_nodes(model.graph):
        for problem in parser_problems(node):
            problem.fix(node)
    return model
