"""Builder options from ``backend_config.common_config``: one applier per option.

Values were checked when the config was loaded (config/deploy_config.py). An applier sets
its option when the installed TensorRT has it; otherwise it warns, naming the version
that added or dropped it, instead of failing with an AttributeError.
"""
from __future__ import annotations

from typing import Any, Callable

from ...config.deploy_config import normalize_compute_capability
from ...config.schema import TACTIC_SOURCES
from ...registry import Registry
from ...utils.logging import logger
from .compat import TensorRT

# An applier gets (trt, builder_config, value) and returns a note for the sidecar's "options", or None.
BUILDER_OPTIONS: Registry[Callable[[TensorRT, Any, Any], "str | None"]] = Registry("builder option")


def _ignored(trt: TensorRT, option: str, what: str) -> None:
    logger.warning("backend_config.common_config.%s: %s, so %s ignores it", option, what, trt.label)


@BUILDER_OPTIONS.register("builder_optimization_level")
def _optimization_level(trt: TensorRT, builder_config, level: int) -> str | None:
    if not hasattr(builder_config, "builder_optimization_level"):
        _ignored(trt, "builder_optimization_level", "optimization levels were added in TensorRT 8.6")
        return None
    builder_config.builder_optimization_level = level
    return f"builder_optimization_level={level}"


@BUILDER_OPTIONS.register("tactic_sources")
def _tactic_sources(trt: TensorRT, builder_config, entries: list[str]) -> str | None:
    """Entries are NAME or +NAME (enable) and -NAME (disable), e.g. ['-CUBLAS_LT'] for the cuBLAS assertion."""
    members = trt.module.TacticSource.__members__
    mask = builder_config.get_tactic_sources()
    applied = []
    for entry in entries:
        name = entry.lstrip("+-").upper()
        if name not in members:
            _ignored(trt, "tactic_sources", f"TacticSource.{name} is {TACTIC_SOURCES.get(name, 'unknown')} "
                                            f"(this one has {', '.join(members)})")
            continue
        bit = 1 << int(members[name])
        mask = mask & ~bit if entry.startswith("-") else mask | bit
        applied.append(entry)
    builder_config.set_tactic_sources(mask)
    return f"tactic_sources={applied}" if applied else None


@BUILDER_OPTIONS.register("version_compatible")
def _version_compatible(trt: TensorRT, builder_config, on: bool) -> str | None:
    if not on:
        return None
    if "VERSION_COMPATIBLE" not in trt.module.BuilderFlag.__members__:
        _ignored(trt, "version_compatible", "BuilderFlag.VERSION_COMPATIBLE was added in TensorRT 8.6")
        return None
    builder_config.set_flag(trt.module.BuilderFlag.VERSION_COMPATIBLE)
    return "version_compatible"


@BUILDER_OPTIONS.register("hardware_compatibility_level")
def _hardware_compatibility(trt: TensorRT, builder_config, level: str) -> str | None:
    if not trt.has_hardware_compatibility:
        _ignored(trt, "hardware_compatibility_level", "hardware compatibility levels came with TensorRT 8.6 and "
                                                      "TensorRT-RTX has none (use compute_capabilities there)")
        return None
    levels = trt.module.HardwareCompatibilityLevel
    if level.upper() not in levels.__members__:
        _ignored(trt, "hardware_compatibility_level", f"HardwareCompatibilityLevel.{level.upper()} is not in it")
        return None
    builder_config.hardware_compatibility_level = levels.__members__[level.upper()]
    return f"hardware_compatibility_level={level.upper()}"


@BUILDER_OPTIONS.register("compute_capabilities")
def _compute_capabilities(trt: TensorRT, builder_config, caps: list) -> str | None:
    if not hasattr(builder_config, "set_compute_capability"):
        _ignored(trt, "compute_capabilities", "choosing target GPUs is a TensorRT-RTX feature "
                                              "(TensorRT builds for the GPU it runs on)")
        return None
    members = trt.module.ComputeCapability.__members__
    wanted = [normalize_compute_capability(c) for c in caps]
    unknown = [w for w in wanted if w not in members]
    if unknown:
        _ignored(trt, "compute_capabilities", f"{unknown} are not targets it knows "
                                              f"({[m for m in members if m.startswith('SM')]})")
        wanted = [w for w in wanted if w in members]
    if not wanted:
        return None
    builder_config.num_compute_capabilities = len(wanted)
    for i, w in enumerate(wanted):
        builder_config.set_compute_capability(members[w], i)
    return f"compute_capabilities={wanted}"


@BUILDER_OPTIONS.register("profiling_verbosity")
def _profiling_verbosity(trt: TensorRT, builder_config, verbosity: str) -> str | None:
    members = trt.module.ProfilingVerbosity.__members__
    if verbosity.upper() not in members:
        _ignored(trt, "profiling_verbosity", f"ProfilingVerbosity.{verbosity.upper()} is not in it "
                                             f"(it has {', '.join(members)}; DEFAULT/VERBOSE were renamed in 8.2)")
        return None
    builder_config.profiling_verbosity = members[verbosity.upper()]
    return None


def apply_builder_options(trt: TensorRT, builder_config, common: dict) -> list[str]:
    """Apply every option ``common`` sets; returns notes on what was applied (for the sidecar)."""
    notes = []
    for option, applier in BUILDER_OPTIONS.items():
        value = common.get(option)
        if value is not None and value != []:
            note = applier(trt, builder_config, value)
            if note:
                notes.append(note)
    return notes
