"""Read an OpenMMLab-style ``.py`` config the way mmengine's ``Config.fromfile(path).to_dict()`` does.

Importing mmengine costs 0.3-0.5 s of a process that, for an ONNX file, builds an engine in about a second.
The configs people write for deployment are Python assignments inheriting through ``_base_`` = relative
paths; those are read here with mmengine's rules (bases merged left to right, the file's dicts merged into
theirs key by key unless they set ``_delete_=True``, functions and ``__names`` dropped). A file in the
chain using anything beyond that (``{{ }}`` placeholders, ``_base_.x`` references, imports, ``pkg::``
bases, ``custom_imports``, ``_deprecation_``, reserved or clashing keys, JSON/YAML) is read by mmengine
itself, so its semantics and its errors are mmengine's.
"""
from __future__ import annotations

import ast
import os
import types
from pathlib import Path

BASE_KEY, DELETE_KEY = "_base_", "_delete_"
# Keys mmengine gives meaning to (or refuses) beyond plain values.
MMENGINE_KEYS = {"custom_imports", "_deprecation_", "filename", "text", "pretty_text", "env_variables"}


class _NeedsMmengine(Exception):
    """The chain uses a feature only mmengine implements."""


def read_config(path: str | os.PathLike) -> dict:
    """``Config.fromfile(path).to_dict()``: plain dicts, lists and tuples."""
    try:
        return _plain(_file_to_dict(Path(os.path.abspath(os.path.expanduser(path)))))
    except _NeedsMmengine:
        from mmengine import Config

        return Config.fromfile(str(path)).to_dict()


def _file_to_dict(path: Path) -> dict:
    if path.suffix != ".py":
        raise _NeedsMmengine
    if not path.is_file():
        raise FileNotFoundError(f'file "{path}" does not exist')  # mmengine's words
    source = path.read_text(encoding="utf-8")
    if "{{" in source:
        raise _NeedsMmengine
    tree = ast.parse(source, filename=str(path))
    bases = _base_files(tree)
    base: dict = {}
    for name in bases:
        if "::" in name:
            raise _NeedsMmengine
        one = _file_to_dict(path.parent / name)
        if base.keys() & one.keys():
            raise _NeedsMmengine  # mmengine's error names the clashing keys
        base.update(one)
    tree.body = [s for s in tree.body if not _assigns_base(s)]
    scope: dict = {}
    exec(compile(tree, str(path), "exec"), scope, scope)
    own = {k: v for k, v in scope.items()
           if not k.startswith("__") and not isinstance(v, (types.FunctionType, types.ModuleType))}
    if own.keys() & MMENGINE_KEYS:
        raise _NeedsMmengine
    return {k: v for k, v in _merge(own, base).items() if not k.startswith("__")}


def _assigns_base(stmt: ast.stmt) -> bool:
    return (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
            and stmt.targets[0].id == BASE_KEY)


def _base_files(tree: ast.Module) -> list[str]:
    """The ``_base_`` list of a file whose only use of the name is one top-level ``_base_ = <literal>``."""
    assigns = [s for s in tree.body if _assigns_base(s)]
    uses = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == BASE_KEY]
    if len(uses) != len(assigns) or len(assigns) > 1 or any(
            isinstance(n, (ast.Import, ast.ImportFrom, ast.With)) for n in ast.walk(tree)):
        raise _NeedsMmengine
    if not assigns:
        return []
    try:
        value = ast.literal_eval(assigns[0].value)
    except ValueError:
        raise _NeedsMmengine from None
    files = value if isinstance(value, list) else [value]
    if not all(isinstance(f, str) for f in files):
        raise _NeedsMmengine
    return files


def _merge(child: dict, base: dict) -> dict:
    """mmengine's ``Config._merge_a_into_b``: the child's dicts merge into the base's unless ``_delete_``."""
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and key in merged and not value.pop(DELETE_KEY, False):
            if not isinstance(merged[key], dict):
                raise _NeedsMmengine  # mmengine's TypeError explains _delete_
            merged[key] = _merge(value, merged[key])
        else:
            merged[key] = value
    return merged


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value
