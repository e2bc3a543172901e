"""Load, validate and query a deploy config.

The file is read with mmengine's ``Config`` rules (the library MMDeploy uses; ``reader.py`` reads plain
``_base_`` chains itself and hands any other file to mmengine), so ``_base_`` chains, ``{{_base_.x}}``
references and overrides behave as MMDeploy users expect. Validation happens once, here, before any export starts.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import ConfigError, ShapeError
from ..registry import did_you_mean
from ..utils.logging import logger
from .schema import (DEPLOY_SCHEMA, HARDWARE_COMPATIBILITY_LEVELS, INPUT_DTYPES, PRECISIONS, PROFILING_VERBOSITIES,
                     SHAPE_RANGE, TACTIC_SOURCES, TOP_LEVEL_REQUIRED)

DEFAULTS = {
    "onnx_config": dict(type="onnx", export_params=True, keep_initializers_as_inputs=False,
                        opset_version=17, save_file="end2end.onnx", input_names=["input"],
                        output_names=["output"], input_shape=None, optimize=True),
    "codebase_config": dict(type="torchvision", task="Classification"),
    "backend_config": dict(type="onnxruntime"),
}

# Checks the layers above add to every config read: what a backend builds is its own knowledge, and config sits
# below backends (backends/base.py adds the refusal of a precision the chosen backend does not build).
CONFIG_CHECKS: list[Callable[["DeployConfig"], None]] = []


@dataclass(frozen=True)
class ShapeRange:
    """One input's min/opt/max shapes in an optimization profile."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    def contains(self, shape) -> int | None:
        """Index of the first dimension of ``shape`` outside the range, or None."""
        for d, (lo, x, hi) in enumerate(zip(self.min, shape, self.max)):
            if not lo <= x <= hi:
                return d
        return None

    def to_dict(self) -> dict:
        return {"min_shape": list(self.min), "opt_shape": list(self.opt), "max_shape": list(self.max)}


def _type_name(t) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    return {type(None): "None"}.get(t, t.__name__)


def _check_section(value: Any, spec: Any, where: str, source: str) -> None:
    """Recursively check ``value`` against ``spec`` (see schema.py)."""
    if spec is object:
        return
    if isinstance(spec, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: {where} must be a dict, got {type(value).__name__}")
        for key, sub in value.items():
            if key in spec:
                _check_section(sub, spec[key], f"{where}.{key}", source)
                continue
            hint = did_you_mean(key, spec)
            if hint:
                raise ConfigError(f"{source}: unknown field {where}.{key}{hint}")
            logger.warning("%s: %s.%s is not a trtdeploy field; it is ignored", source, where, key)
        return
    expected = spec if isinstance(spec, tuple) else (spec,)
    # bool is an int in Python; a bool where a number is expected is almost always a slip.
    if isinstance(value, bool) and bool not in expected:
        ok = False
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise ConfigError(f"{source}: {where} must be {_type_name(spec)}, got {type(value).__name__} {value!r}")


def _as_shape(value: Any, where: str, source: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in value):
        raise ConfigError(f"{source}: {where} must be a list of positive integers, got {value!r}")
    return tuple(value)


def _normalize_dynamic_axes(axes: Mapping | None, source: str) -> dict[str, dict[int, str]]:
    """MMDeploy allows ``{name: {axis: label}}`` and ``{name: [axis, ...]}``; keep the first form."""
    out: dict[str, dict[int, str]] = {}
    for name, spec in (axes or {}).items():
        if isinstance(spec, Mapping):
            items = spec.items()
        elif isinstance(spec, (list, tuple)):
            items = ((a, f"{name}_dim{a}") for a in spec)
        else:
            raise ConfigError(f"{source}: onnx_config.dynamic_axes.{name} must be a dict or a list of axes")
        axes_of = {}
        for axis, label in items:
            if not isinstance(axis, int) or isinstance(axis, bool) or axis < 0:
                raise ConfigError(f"{source}: onnx_config.dynamic_axes.{name} has axis {axis!r}; axes are integers >= 0")
            axes_of[axis] = str(label)
        out[str(name)] = axes_of
    return out


def normalize_compute_capability(cap: Any) -> str:
    """'8.6', 8.6, 86, 'sm_86' and 'SM86' all name SM86; raises ValueError for anything else."""
    text = str(cap).strip().upper().replace("SM_", "").removeprefix("SM")
    major, dot, minor = text.partition(".")
    digits = major + minor if dot else text
    if not digits.isdigit() or not 2 <= len(digits) <= 3 or (dot and len(minor) != 1):
        raise ValueError(cap)
    return f"SM{digits}"


def _int_range(lo: int, hi: int | None = None) -> Callable[[Any], str | None]:
    def check(value):
        if value < lo or (hi is not None and value > hi):
            return f"must be {lo}..{hi}" if hi is not None else f"must be >= {lo}"
        return None
    return check


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value):
        if str(value).upper() not in choices:
            return f"must be one of {list(choices)}{did_you_mean(str(value).upper(), choices)}"
        return None
    return check


def _tactic_sources(entries) -> str | None:
    for entry in entries:
        name = str(entry).lstrip("+-").upper()
        if not isinstance(entry, str) or name not in TACTIC_SOURCES:
            return (f"has {entry!r}; entries are NAME, +NAME or -NAME with NAME one of {list(TACTIC_SOURCES)}"
                    f"{did_you_mean(name, TACTIC_SOURCES)}")
    return None


def _compute_capabilities(caps) -> str | None:
    for cap in caps:
        try:
            normalize_compute_capability(cap)
        except ValueError:
            return f"has {cap!r}; write compute capabilities as 'SM86' or '8.6'"
    return None


# Value checks beyond the types in schema.py: field -> check(value) returning what is wrong, or None.
COMMON_CONFIG_VALUES: dict[str, Callable[[Any], str | None]] = {
    "builder_optimization_level": _int_range(0, 5),
    "max_workspace_size": _int_range(0),
    "hardware_compatibility_level": _one_of(HARDWARE_COMPATIBILITY_LEVELS),
    "profiling_verbosity": _one_of(PROFILING_VERBOSITIES),
    "tactic_sources": _tactic_sources,
    "compute_capabilities": _compute_capabilities,
}


class DeployConfig:
    """A validated deploy config with the questions the pipeline asks of it."""

    def __init__(self, cfg: Mapping, source: str = "<dict>"):
        self.source = source
        self.raw = cfg
        for key in cfg:
            if key.startswith("_") or key in DEPLOY_SCHEMA:
                continue
            hint = did_you_mean(key, DEPLOY_SCHEMA)
            if hint:
                raise ConfigError(f"{source}: unknown top-level field {key!r}{hint}")
        missing = [k for k in TOP_LEVEL_REQUIRED if k not in cfg]
        if missing:
            raise ConfigError(f"{source}: the config has no {' and no '.join(missing)}; add backend_config = "
                              f"dict(type='onnxruntime') (or 'tensorrt'), or inherit a shipped one with _base_ = "
                              f"['<trtdeploy checkout>/configs/_base_/backends/onnxruntime.py']")
        for key, spec in DEPLOY_SCHEMA.items():
            if key in cfg:
                _check_section(cfg[key], spec, key, source)
        self.onnx = {**DEFAULTS["onnx_config"], **dict(cfg.get("onnx_config") or {})}
        self.codebase = {**DEFAULTS["codebase_config"], **dict(cfg.get("codebase_config") or {})}
        self.backend_cfg = {**DEFAULTS["backend_config"], **dict(cfg.get("backend_config") or {})}
        self.common = dict(self.backend_cfg.get("common_config") or {})
        self._check_values()
        self.calib = dict(cfg.get("calib_config") or {})
        self.dynamic_axes = _normalize_dynamic_axes(self.onnx.get("dynamic_axes"), source)
        self.profiles = self._read_profiles()
        self._check_dynamic_axes_names()
        for check in CONFIG_CHECKS:
            check(self)

    # -- simple questions -------------------------------------------------
    @property
    def backend(self) -> str:
        return self.backend_cfg["type"]

    @property
    def task(self) -> str:
        return self.codebase["task"]

    @property
    def opset(self) -> int:
        return int(self.onnx["opset_version"])

    @property
    def input_names(self) -> list[str]:
        return list(self.onnx["input_names"])

    @property
    def input_dtypes(self) -> dict[str, str]:
        """Inputs that are not float32 (token ids, masks): name -> dtype; ``onnx_config.input_dtypes``."""
        return dict(self.onnx.get("input_dtypes") or {})

    @property
    def output_names(self) -> list[str]:
        return list(self.onnx["output_names"])

    @property
    def named_precision(self) -> str | None:
        """``common_config.precision`` (or MMDeploy-style ``backend_config.precision``) when the config names one."""
        return self.common.get("precision") or self.backend_cfg.get("precision")

    @property
    def fp16(self) -> bool:
        """FP16 for the engine, or for what INT8 leaves (int8_mode with fp16_mode)."""
        return bool(self.common.get("fp16_mode", False)) or self.named_precision == "fp16"

    @property
    def int8(self) -> bool:
        return bool(self.common.get("int8_mode", False)) or self.named_precision == "int8"

    @property
    def precision(self) -> str:
        """One of PRECISIONS: what the engine is built in."""
        return "int8" if self.int8 else self.named_precision or ("fp16" if self.fp16 else "fp32")

    @property
    def save_file(self) -> str:
        return self.onnx.get("save_file") or "end2end.onnx"

    def export_shape(self, name: str, default: tuple[int, ...] | None) -> tuple[int, ...]:
        """The shape to trace with: the first profile's opt shape, else ``input_shape``, else ``default``; an
        input with no default (not the image: token ids, a mask, a second input) needs a profile."""
        for i, profile in enumerate(self.profiles):
            if name in profile:
                opt = profile[name].opt
                if default is not None and len(opt) != len(default):
                    raise ShapeError(f"{self.source}: backend_config.model_inputs[{i}].input_shapes.{name} has rank "
                                     f"{len(opt)} but the model takes rank-{len(default)} input (such as "
                                     f"{list(default)}); give {len(default)} dimensions")
                return opt
        if default is None:
            raise ConfigError(f"{self.source}: input {name!r} needs a shape to export with: give "
                              f"backend_config.model_inputs=[dict(input_shapes=dict({name}=dict(min_shape=[...], "
                              f"opt_shape=[...], max_shape=[...])))] (the opt_shape is traced)")
        wh = self.onnx.get("input_shape")
        if wh:
            if len(wh) != 2:
                raise ConfigError(f"{self.source}: onnx_config.input_shape is [width, height], got {list(wh)}")
            return (*default[:-2], int(wh[1]), int(wh[0]))
        return default

    # -- profiles ---------------------------------------------------------
    def _read_profiles(self) -> list[dict[str, ShapeRange]]:
        profiles = []
        for i, entry in enumerate(self.backend_cfg.get("model_inputs") or []):
            where = f"backend_config.model_inputs[{i}]"
            if not isinstance(entry, Mapping) or not isinstance(entry.get("input_shapes"), Mapping):
                raise ConfigError(f"{self.source}: {where} must be dict(input_shapes=dict(<input name>=dict(min_shape=..., opt_shape=..., max_shape=...)))")
            profile = {}
            for name, shapes in entry["input_shapes"].items():
                w = f"{where}.input_shapes.{name}"
                _check_section(shapes, SHAPE_RANGE, w, self.source)
                missing = [k for k in SHAPE_RANGE if k not in shapes]
                if missing:
                    raise ConfigError(f"{self.source}: {w} lacks {', '.join(missing)}")
                lo, opt, hi = (_as_shape(shapes[k], f"{w}.{k}", self.source) for k in SHAPE_RANGE)
                if not len(lo) == len(opt) == len(hi):
                    raise ConfigError(f"{self.source}: {w}: min_shape, opt_shape and max_shape must have the same rank "
                                      f"(got {len(lo)}, {len(opt)}, {len(hi)})")
                for d in range(len(lo)):
                    if not lo[d] <= opt[d] <= hi[d]:
                        raise ConfigError(
                            f"{self.source}: {w}: dimension {d} must satisfy min_shape <= opt_shape <= max_shape, "
                            f"got {lo[d]} <= {opt[d]} <= {hi[d]}; fix min_shape/opt_shape/max_shape[{d}]")
                profile[name] = ShapeRange(lo, opt, hi)
            profiles.append(profile)
        return profiles

    def _check_values(self) -> None:
        for key, check in COMMON_CONFIG_VALUES.items():
            value = self.common.get(key)
            problem = check(value) if value is not None else None
            if problem:
                raise ConfigError(f"{self.source}: backend_config.common_config.{key} {problem}, got {value!r}")
        self._check_precision()
        opset, newest = self.onnx["opset_version"], _newest_opset()
        if not 7 <= opset <= newest:
            raise ConfigError(f"{self.source}: onnx_config.opset_version must be 7..{newest} (the installed onnx "
                              f"knows no newer one), got {opset}; 17 is a safe choice")
        for key in ("input_names", "output_names"):
            names = self.onnx[key]
            if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
                raise ConfigError(f"{self.source}: onnx_config.{key} must be a non-empty list of distinct names, "
                                  f"got {names!r}")
        for name, dtype in self.input_dtypes.items():
            if name not in self.input_names:
                raise ConfigError(f"{self.source}: onnx_config.input_dtypes names {name!r}, which is not one of "
                                  f"onnx_config.input_names {self.input_names}; name an input or drop it")
            if dtype not in INPUT_DTYPES:
                raise ConfigError(f"{self.source}: onnx_config.input_dtypes.{name} must be one of "
                                  f"{', '.join(INPUT_DTYPES)}, got {dtype!r}")

    def _check_precision(self) -> None:
        """Precision names, and the combinations no backend builds, each refused in one sentence."""
        named = {f"{key}.precision": section.get("precision") for key, section in
                 (("backend_config.common_config", self.common), ("backend_config", self.backend_cfg))
                 if section.get("precision") is not None}
        for where, value in named.items():
            if value not in PRECISIONS:
                raise ConfigError(f"{self.source}: {where} must be one of {', '.join(PRECISIONS)}, got {value!r}"
                                  f"{did_you_mean(str(value), PRECISIONS)}")
        if len(set(named.values())) > 1:
            raise ConfigError(f"{self.source}: {' and '.join(f'{k}={v!r}' for k, v in named.items())} disagree; "
                              f"keep one of them")
        precision = next(iter(named.values()), None)
        modes = [m for m in ("fp16_mode", "int8_mode") if self.common.get(m)]
        if precision in ("fp32", "bf16") and modes:
            raise ConfigError(f"{self.source}: precision {precision!r} conflicts with common_config."
                              f"{'/'.join(modes)}=True; remove {'them' if len(modes) > 1 else 'it'} or the precision")

    def _check_dynamic_axes_names(self) -> None:
        known = self.input_names + self.output_names
        for name in self.dynamic_axes:
            if name not in known:
                raise ConfigError(f"{self.source}: onnx_config.dynamic_axes names {name!r}, which is neither in "
                                  f"input_names nor in output_names ({known}){did_you_mean(name, known)}")

    def check_export_axes(self) -> None:
        """Before a PyTorch export: every profile names an ``onnx_config.input_names`` entry and ranges only
        over axes ``onnx_config.dynamic_axes`` declares. (An ONNX file brings its own names and dynamic
        dimensions; ``check_profiles`` checks the profiles against those instead.)"""
        names = self.input_names
        for i, profile in enumerate(self.profiles):
            for name, rng in profile.items():
                where = f"backend_config.model_inputs[{i}].input_shapes.{name}"
                if name not in names:
                    raise ConfigError(f"{self.source}: {where} names an input the model does not have; "
                                      f"onnx_config.input_names is {names}{did_you_mean(name, names)}")
                declared = self.dynamic_axes.get(name, {})
                for d, (lo, hi) in enumerate(zip(rng.min, rng.max)):
                    if lo != hi and d not in declared:
                        raise ConfigError(
                            f"{self.source}: {where} lets dimension {d} range from {lo} to {hi} but "
                            f"onnx_config.dynamic_axes does not declare axis {d} of {name!r} dynamic; "
                            f"add it (e.g. dynamic_axes={{'{name}': {{{d}: 'dim{d}'}}}}) or make min_shape[{d}] == max_shape[{d}]")

    def check_profiles(self, model_inputs: Mapping[str, Sequence], origin: str | None = None) -> None:
        """Check every profile against the model's inputs (name -> shape; dynamic dims are strings or
        negative): each input present, ranks equal, and dims the graph fixes kept fixed. ``origin`` names
        an ONNX file the graph came from (its fixed dims cannot be declared dynamic in the config)."""
        model = origin or "the model"
        fix_axis = (f"export {origin} again with that axis dynamic" if origin
                    else "declare axis {d} in onnx_config.dynamic_axes")
        for i, profile in enumerate(self.profiles):
            for name in model_inputs:
                if name not in profile:
                    raise ConfigError(f"{self.source}: backend_config.model_inputs[{i}].input_shapes lacks the model "
                                      f"input {name!r}: it names {list(profile)} but {model} has inputs "
                                      f"{list(model_inputs)}; give min/opt/max shapes for each of them")
            for name, rng in profile.items():
                where = f"backend_config.model_inputs[{i}].input_shapes.{name}"
                if name not in model_inputs:
                    raise ConfigError(f"{self.source}: {where}: {model} has no input {name!r}; its inputs are "
                                      f"{list(model_inputs)} and the profile names {list(profile)}"
                                      f"{did_you_mean(name, model_inputs)}")
                shape = list(model_inputs[name])
                if len(shape) != len(rng.min):
                    raise ShapeError(f"{self.source}: {where} has rank {len(rng.min)} but the model input {name!r} "
                                     f"has rank {len(shape)} (shape {shape}{f' in {origin}' if origin else ''}); "
                                     f"give {len(shape)} dimensions")
                for d, fixed in enumerate(shape):
                    if isinstance(fixed, int) and fixed > 0 and not rng.min[d] == rng.opt[d] == rng.max[d] == fixed:
                        raise ShapeError(f"{self.source}: {where} dimension {d} must be {fixed} ({origin or 'the exported graph'} "
                                         f"fixes it), got min/opt/max {rng.min[d]}/{rng.opt[d]}/{rng.max[d]}; fix the "
                                         f"shapes or {fix_axis.format(d=d)}")

    def to_dict(self) -> dict:
        """A plain, JSON-safe copy of the resolved config (for sidecars)."""
        return _plain(dict(self.raw))


def _newest_opset() -> int:
    import onnx

    return onnx.defs.onnx_opset_version()


def _plain(obj):
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def load_deploy_config(cfg: str | os.PathLike | Mapping | DeployConfig) -> DeployConfig:
    """Read a deploy config file (or take a dict) and validate it."""
    if isinstance(cfg, DeployConfig):
        return cfg
    if isinstance(cfg, Mapping):
        return DeployConfig(cfg)
    path = Path(cfg)
    return DeployConfig(read_config_file(path), source=str(path))


def read_config_file(path: Path) -> Mapping:
    """Read an OpenMMLab-style config file into a dict; any failure is a ConfigError naming the file."""
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist; pass the path of a deploy config such as "
                          f"configs/classification/classification_onnxruntime_dynamic.py")
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; pass a config file (.py)")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"config file {path} is not readable; check its permissions")
    if path.suffix not in (".py", ".json", ".yaml", ".yml"):
        raise ConfigError(f"config file {path} must be a .py (or .json/.yaml) file")
    from .reader import read_config

    try:
        return read_config(path)
    except SyntaxError as e:
        # mmengine parses the source itself, so the SyntaxError's filename is '<unknown>'
        where = e.filename if e.filename and not e.filename.startswith("<") else path
        raise ConfigError(f"{where}: syntax error at line {e.lineno}: {e.msg}") from None
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: a file it inherits from (_base_) is missing: {e.filename or e}") from None
    except Exception as e:  # anything the config's own code raised
        raise ConfigError(f"{path}: cannot be loaded: {type(e).__name__}: {e}") from None
