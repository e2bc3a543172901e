"""Tolerances for comparing outputs: absolute, relative and minimum cosine similarity, per output.

Written on the command line as ``--atol 1e-3`` (every output) or ``--atol dets:1e-2`` (one output),
or in a deploy config as ``compare_config = dict(atol=1e-3, rtol=dict(dets=1e-2), cosine=0.999)``.
An element passes when ``|a - b| <= atol + rtol * |b|`` (numpy's ``allclose`` rule, b the reference).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ..errors import ConfigError

DEFAULTS = {"atol": 1e-4, "rtol": 1e-3, "cosine": 0.999}
BOUNDS = {"atol": (0.0, math.inf), "rtol": (0.0, math.inf), "cosine": (-1.0, 1.0)}


def _number(text: str, kind: str, where: str, written: str | None = None) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    low, high = BOUNDS[kind]
    if not (math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"{where}: {text if written is None else written!r} is not a valid {kind} tolerance; write a number in [{low}, {high}], "
                          f"e.g. --{kind} 1e-3 or --{kind} OUTPUT:1e-3")
    return value


def parse_tolerance(values: Iterable[str] | str | float | Mapping | None, kind: str, where: str = "") -> dict[str, float]:
    """Read ``--atol 1e-3 dets:1e-2``-style values (or a config's number/dict) into {output or '': value}."""
    where = where or f"--{kind}"
    if values is None:
        return {}
    if isinstance(values, Mapping):
        return {str(k): _number(str(v), kind, f"{where}.{k}") for k, v in values.items()}
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        return {"": _number(str(values), kind, where)}
    if isinstance(values, str):
        values = [values]
    parsed: dict[str, float] = {}
    for item in values:
        if not isinstance(item, str):
            raise ConfigError(f"{where}: {item!r} is not a tolerance; give a number or OUTPUT:number")
        name, sep, number = item.rpartition(":")
        if sep and not name:
            raise ConfigError(f"{where}: {item!r} has no output name before ':'; write OUTPUT:{number} or {number}")
        parsed[name] = _number(number, kind, where, item)
    return parsed


@dataclass(frozen=True)
class Tolerances:
    """Per-output tolerances; the '' key holds the value for outputs not named."""

    atol: dict[str, float] = field(default_factory=dict)
    rtol: dict[str, float] = field(default_factory=dict)
    cosine: dict[str, float] = field(default_factory=dict)

    def for_output(self, name: str) -> tuple[float, float, float]:
        return tuple(getattr(self, kind).get(name, getattr(self, kind).get("", DEFAULTS[kind]))
                     for kind in ("atol", "rtol", "cosine"))

    @classmethod
    def from_sources(cls, cli: Mapping[str, object] | None = None, config: Mapping | None = None,
                     config_source: str = "compare_config") -> "Tolerances":
        """Config values first, then the command line's on top (per output)."""
        merged = {}
        for kind in DEFAULTS:
            values = parse_tolerance((config or {}).get(kind), kind, f"{config_source}.{kind}")
            values.update(parse_tolerance((cli or {}).get(kind), kind))
            merged[kind] = values
        unknown = sorted(set(config or {}) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"{config_source}: unknown field(s) {unknown}; compare_config takes {sorted(DEFAULTS)}")
        return cls(**merged)

    def describe(self) -> str:
        def one(kind):
            values = getattr(self, kind)
            text = f"{values.get('', DEFAULTS[kind]):g}"
            return text + "".join(f", {k}:{v:g}" for k, v in values.items() if k)
        return f"atol {one('atol')}; rtol {one('rtol')}; min cosine {one('cosine')}"
