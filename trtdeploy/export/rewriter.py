"""Rewriters keyed by the dotted path of the function they replace.

``@FUNCTION_REWRITER.register('torchvision.models.detection.retinanet.RetinaNet.postprocess_detections')``
swaps that function for the rewriter, but only inside ``rewrite_context(cfg)``, i.e.
during export: eager PyTorch stays untouched. A rewriter receives a ``RewriteContext``
first (the original function as ``ctx.origin``, the deploy config as ``ctx.cfg``),
then the original arguments. Grep the dotted name to find the rewrite.
"""
from __future__ import annotations

import contextlib
import importlib
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator


@dataclass
class RewriteContext:
    origin: Callable
    cfg: Any


class FunctionRewriter:
    def __init__(self) -> None:
        self._rewrites: dict[str, Callable] = {}

    def register(self, target: str) -> Callable[[Callable], Callable]:
        def deco(fn: Callable) -> Callable:
            if target in self._rewrites:
                raise KeyError(f"{target} already has a rewriter")
            self._rewrites[target] = fn
            return fn
        return deco

    def targets(self) -> list[str]:
        return sorted(self._rewrites)

    @contextlib.contextmanager
    def rewrite_context(self, cfg: Any) -> Iterator[None]:
        """Patch every registered target for the duration of the block."""
        undo: list[tuple[Any, str, Any]] = []
        try:
            for target, rewrite in self._rewrites.items():
                if target.partition(".")[0] not in sys.modules:
                    continue  # a library nobody imported holds no part of the model (and stays unimported)
                owner, attr = _resolve_owner(target)
                if owner is None:
                    continue  # the library that holds the target is not installed
                origin = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
                undo.append((owner, attr, origin))
                setattr(owner, attr, _bind(rewrite, origin, cfg))
            yield
        finally:
            for owner, attr, origin in reversed(undo):
                setattr(owner, attr, origin)


def _resolve_owner(target: str) -> tuple[Any, str]:
    """Split 'pkg.mod.Class.method' into (Class, 'method'), importing the longest module prefix."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:-1]:
            obj = getattr(obj, name)
        return obj, parts[-1]
    return None, parts[-1]


def _bind(rewrite: Callable, origin: Any, cfg: Any) -> Any:
    func = origin.__func__ if isinstance(origin, (staticmethod, classmethod)) else origin

    def patched(*args, **kwargs):
        return rewrite(RewriteContext(origin=func, cfg=cfg), *args, **kwargs)

    patched.__wrapped__ = func
    if isinstance(origin, staticmethod):
        return staticmethod(patched)
    if isinstance(origin, classmethod):
        return classmethod(patched)
    return patched


FUNCTION_REWRITER = FunctionRewriter()
