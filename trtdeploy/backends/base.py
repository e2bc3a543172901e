"""The backend interface (build, load, describe) and the runner base shared by all backends.

A runner checks its inputs in one place (``Runner.check_inputs``): names, dtypes, ranks,
static dimensions and optimization profiles, and picks the profile the inputs fit. Backends implement
only ``activate_impl`` / ``infer_impl`` / ``deactivate_impl``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..config import CONFIG_CHECKS, DeployConfig, ShapeRange
from ..errors import BackendUnavailableError, ConfigError, InputError, ModelError, ShapeError, TrtDeployError
from ..registry import Registry
from ..utils.logging import logger


@dataclass
class TensorSpec:
    """A model input or output: name, numpy dtype name, shape (-1 or a string for dynamic dims)."""

    name: str
    dtype: str
    shape: list

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "TensorSpec":
        return cls(d["name"], d["dtype"], list(d["shape"]))


@dataclass
class BuildResult:
    """What ``Backend.build`` made: the artefact and the facts that go into its sidecar."""

    path: Path
    facts: dict = field(default_factory=dict)


@dataclass
class CheckedGraph:
    """The graph a caller has read and checked, the bytes it writes to the ``onnx_path`` it builds from, and the
    shapes that file's sidecar records: a backend takes them rather than reading and parsing the file again.
    ``written()`` returns once the file and its sidecar are on disk (raising what writing them raised): the
    caller writes them while the build runs where the backend ``builds_from_memory``, else before it."""

    model: Any  # onnx.ModelProto
    data: bytes
    export_shapes: Mapping[str, list]
    written: Callable[[], object]
    prebuilt: Any = None  # the backend's ``prebuild`` of a file that builds the same as this graph, to take


def profiles_to_json(profiles: list[dict[str, ShapeRange]]) -> list[dict]:
    return [{name: rng.to_dict() for name, rng in p.items()} for p in profiles]


def profiles_from_json(data: list[Mapping]) -> list[dict[str, ShapeRange]]:
    return [{name: ShapeRange(tuple(r["min_shape"]), tuple(r["opt_shape"]), tuple(r["max_shape"]))
             for name, r in p.items()} for p in data or []]


class Runner(ABC):
    """Runs one model, with a lifecycle: ``activate()`` acquires the backend's resources (session,
    engine, context, buffers), ``infer(feed)`` (or calling the runner) checks the feed once here and runs
    it, ``deactivate()`` frees them again; ``with runner:`` does both. Backends implement only
    ``activate_impl`` / ``infer_impl`` / ``deactivate_impl``.
    """

    def __init__(self, inputs: list[TensorSpec], outputs: list[TensorSpec],
                 profiles: list[dict[str, ShapeRange]] | None = None, source: str = ""):
        self.inputs = inputs
        self.outputs = outputs
        self.profiles = profiles or []
        self.source = source
        self.is_active = False

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self.outputs]

    def activate(self) -> "Runner":
        """Acquire the backend's resources; a no-op on an active runner. Returns the runner."""
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        """Free the backend's resources; ``activate()`` acquires them again."""
        if self.is_active:
            self.is_active = False
            self.deactivate_impl()

    def infer(self, feed: Mapping[str, Any] | np.ndarray) -> dict[str, np.ndarray]:
        """Check ``feed`` against the model's inputs and profiles, run it, return the outputs by name."""
        if not self.is_active:
            raise ModelError(f"{self.source}: the runner is not active (it was deactivated); call activate() "
                             f"or use `with runner:`")
        checked = self.check_inputs(feed)
        profile = self.select_profile(checked)
        try:
            return self.infer_impl(checked, profile)
        except TrtDeployError:
            raise
        except Exception as e:  # the backend's own exception types stop here
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ModelError(f"{self.source}: the backend failed to run the model ({type(e).__name__}: {first[:300]}); "
                             f"check the model with `trtdeploy inspect` and convert it again") from e

    __call__ = infer

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def activate_impl(self) -> None:
        """Acquire what ``infer_impl`` needs; runners that hold nothing leave this empty."""

    @abstractmethod
    def infer_impl(self, feed: dict[str, np.ndarray], profile: int) -> dict[str, np.ndarray]:
        """Run a checked feed; ``profile`` is the index of the optimization profile it fits (0 without profiles)."""

    def deactivate_impl(self) -> None:
        """Free what ``activate_impl`` acquired."""

    def check_inputs(self, feed: Mapping[str, Any] | np.ndarray) -> dict[str, np.ndarray]:
        """Validate and convert ``feed``; every mismatch is a ShapeError that names the fix."""
        if not isinstance(feed, Mapping):
            if len(self.inputs) != 1:
                raise ShapeError(f"{self.source}: the model has {len(self.inputs)} inputs "
                                 f"({self.input_names}); pass a dict of name -> array")
            feed = {self.inputs[0].name: feed}
        unknown = [k for k in feed if k not in self.input_names]
        missing = [n for n in self.input_names if n not in feed]
        if unknown or missing:
            raise ShapeError(f"{self.source}: inputs must be {self.input_names}; "
                             f"missing {missing}, unexpected {unknown}")
        out = {}
        for spec in self.inputs:
            try:
                arr = np.ascontiguousarray(np.asarray(feed[spec.name]), dtype=np.dtype(spec.dtype))
            except (TypeError, ValueError) as e:
                raise InputError(f"{self.source}: input {spec.name!r} cannot be read as a {spec.dtype} array "
                                 f"({type(e).__name__}: {e}); pass a numeric array of shape {spec.shape}") from None
            if arr.ndim != len(spec.shape):
                raise ShapeError(f"{self.source}: input {spec.name!r} must have rank {len(spec.shape)} "
                                 f"(shape {spec.shape}), got shape {list(arr.shape)}")
            for d, (want, got) in enumerate(zip(spec.shape, arr.shape)):
                if isinstance(want, int) and want >= 0 and want != got:
                    raise ShapeError(f"{self.source}: input {spec.name!r} dimension {d} is fixed to {want} "
                                     f"(the model was built for shape {spec.shape}), got {got}; "
                                     f"resize the input or convert with a dynamic config")
            out[spec.name] = arr
        self.select_profile(out)
        return out

    def select_profile(self, feed: Mapping[str, np.ndarray]) -> int:
        """The first optimization profile whose bounds hold every input of ``feed`` (0 without profiles).

        All inputs must fit the same profile: an engine runs one profile at a time. When none fits,
        the ShapeError names the first profile's offending dimension and the config field to change.
        """
        first_error = None
        for i, profile in enumerate(self.profiles):
            for name, rng in profile.items():
                d = rng.contains(feed[name].shape) if name in feed else None
                if d is not None:
                    got = feed[name].shape[d]
                    bound, key = (rng.max[d], "max_shape") if got > rng.max[d] else (rng.min[d], "min_shape")
                    first_error = first_error or (
                        f"{self.source}: input {name!r} has shape {list(feed[name].shape)}: dimension {d} is {got}, "
                        f"outside the engine's profile {i} ({'max' if key == 'max_shape' else 'min'} {bound})"
                        f"{f' and its {len(self.profiles) - 1} other profile(s)' if len(self.profiles) > 1 else ''}; "
                        f"resize the input, or {'raise' if key == 'max_shape' else 'lower'} "
                        f"backend_config.model_inputs[{i}].input_shapes.{name}.{key}[{d}] and convert again")
                    break
            else:
                return i
        if first_error:
            raise ShapeError(first_error)
        return 0


@dataclass
class LayerTime:
    """Mean time of one layer (node) per inference, and its share of all layers."""

    name: str
    op_type: str
    mean_ms: float
    share: float


def layer_times_from_totals(totals: Mapping[str, float], op_types: Mapping[str, str], runs: int) -> list[LayerTime]:
    """Per-layer totals over ``runs`` inferences as LayerTimes, slowest first."""
    whole = sum(totals.values()) or 1.0
    return sorted((LayerTime(name, op_types.get(name, ""), t / runs, 100.0 * t / whole) for name, t in totals.items()),
                  key=lambda lt: -lt.mean_ms)


class Backend(ABC):
    """One inference backend, everything trtdeploy knows about it in its folder ``backends/<name>/``:
    whether it runs here, what it builds and loads, how it describes its artefacts, times their layers
    and reports itself in check-env. A new backend subclasses this and registers in ``BACKENDS``."""

    name: str = ""
    file_suffixes: tuple[str, ...] = ()  # the artefacts it loads
    artefact_suffix: str = ""             # what ``build`` writes; ".onnx": the ONNX file itself, nothing to build
    default_device: str = "cpu"
    install_hint: str = ""
    # Precisions not every backend builds: name -> how this one builds it. A config asking one of them of a
    # backend that does not declare it is refused when it is read (``refuse_unbuilt_precision``).
    builds_precisions: Mapping[str, str] = {}
    triton_platform: str = ""             # Triton's platform that serves its artefact natively ("": none does)

    def builds_for(self, cfg: DeployConfig) -> bool:
        """Whether ``convert`` has a build step for ``cfg`` (it writes something besides the ONNX file)."""
        return self.artefact_suffix != ".onnx"

    @abstractmethod
    def is_available(self) -> bool:
        ...

    def require(self) -> None:
        if not self.is_available():
            raise BackendUnavailableError(f"backend {self.name!r} is not installed here: {self.install_hint}")

    def unsupported_nodes(self, model) -> list[dict]:
        """Nodes of ``model`` this backend cannot build: dicts with name, op_type, domain, hint."""
        return []

    def serves_custom_op(self, key: str) -> bool:
        """Whether it builds and runs the custom node ``key`` ('domain::op_type') as it is (a plugin, a kernel);
        the 'auto' custom_ops route keeps such nodes unless their op prefers its lowering."""
        return False

    def prebuild(self, data: bytes, source: Path, cfg: DeployConfig) -> Any:
        """Start building the ONNX file ``source`` (its bytes ``data``) in the background while convert reads and
        checks it, or None (the default: no such build). Asked only where the backend ``builds_from_memory``. convert discards the handle (``discard()``), or, when its
        passes left a graph that builds the same, hands it to ``build`` as ``CheckedGraph.prebuilt``."""
        return None

    def builds_from_memory(self, cfg: DeployConfig) -> bool:
        """Whether ``build(model=CheckedGraph)`` for ``cfg`` reads neither ``onnx_path`` nor its sidecar and calls
        ``model.written()`` before it writes its artefact: convert then writes them while the backend builds."""
        return False

    @abstractmethod
    def build(self, onnx_path: Path, work_dir: Path, cfg: DeployConfig, sample=None, model=None) -> BuildResult:
        """``sample``: (feed, where it came from), real input for checks a build makes (FP16/BF16 numerics);
        ``model``: the ``CheckedGraph`` of ``onnx_path`` when the caller holds it (not read again)."""

    @abstractmethod
    def load(self, path: Path, sidecar: Mapping | None = None, device: str = "cpu") -> Runner:
        ...

    @abstractmethod
    def describe(self) -> dict:
        """Version and origin facts for check-env and sidecars."""

    def check_config(self, cfg: DeployConfig) -> None:
        """Refuse, before any slow step, what ``cfg`` asks and this installation of the backend cannot do (what
        the backend never builds is refused as the config is read: ``builds_precisions``)."""

    def inspect(self, path: Path) -> dict:
        """What the artefact ``path`` holds, as a JSON-ready dict (``trtdeploy inspect``)."""
        raise ModelError(f"{self.name} cannot describe {path}; inspect the ONNX file it was built from")

    def inspection_text(self, info: dict) -> tuple[list[str], list[str]]:
        """``inspect``'s dict as text: lines under the title, and sections after the inputs, outputs and
        profiles tables that every artefact has."""
        return [], []

    def layer_times(self, runner: Runner, feed: dict, iterations: int) -> list[LayerTime] | None:
        """Per-layer times of ``runner`` over ``iterations`` runs of ``feed``, or None where the backend has none."""
        return None

    def env_findings(self, gpus: list[dict]) -> list:
        """Its check-env rows (``utils.findings.Finding``): installed, usable, what to fix. ``gpus``: visible GPUs."""
        return []

    def custom_op_status(self) -> dict[str, tuple[str, str]]:
        """Per custom op ('domain::op_type'): what this backend has for it in words, and a fix where that is broken."""
        return {}

    def gpu_support(self, cc: tuple[int, int]) -> tuple[bool, str, str] | None:
        """Whether it can build and run for a GPU of compute capability ``cc``: (ok, detail, fix), or None (no view)."""
        return None

    def serving_notes(self, artefact: Path, sidecar: Mapping) -> list[str]:
        """What a user must know before Triton serves ``artefact`` natively (``export-triton`` prints it)."""
        return []

    def cuda_runtime(self) -> tuple[str, int] | None:
        """(its package, the CUDA major version that package is built for), for check-env's driver check; None if
        it brings no CUDA runtime of its own."""
        return None


BACKENDS: Registry[type[Backend]] = Registry("backend type")
ENTRY_POINT_GROUP = "trtdeploy.backends"  # a third-party package adds a backend by naming its module here


def discover_backends() -> list[str]:
    """Import every backend once: each ``backends/<name>/`` package, then each ``trtdeploy.backends`` entry point
    (the module registers its Backend in ``BACKENDS`` on import). Returns the registered names."""
    global _discovered
    if not _discovered:
        _discovered = True
        import importlib
        import importlib.metadata
        import pkgutil

        from . import __path__ as here

        for info in pkgutil.iter_modules(here):
            if info.ispkg:
                importlib.import_module(f"{__package__}.{info.name}")
        for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                entry.load()
            except Exception as e:  # one broken package must not take the other backends down with it
                logger.warning("the backend entry point %r (%s) fails to load (%s: %s); reinstall or uninstall that "
                               "package", entry.name, entry.value, type(e).__name__, e)
    return list(BACKENDS)


_discovered = False


def refuse_unbuilt_precision(cfg: DeployConfig) -> None:
    """A precision some backends build (``Backend.builds_precisions``) asked of one that does not: the config
    is refused as it is read, not after an export, naming the backends that build it."""
    discover_backends()
    if cfg.backend not in BACKENDS or cfg.precision in BACKENDS.get(cfg.backend).builds_precisions:
        return  # an unknown type is refused by get_backend, with its did-you-mean
    builders = {name: b.builds_precisions[cfg.precision] for name, b in BACKENDS.items()
                if cfg.precision in b.builds_precisions}
    if builders:
        raise ConfigError(f"{cfg.source}: precision {cfg.precision!r} is built by {' or '.join(builders.values())}, "
                          f"but backend_config.type is {cfg.backend!r}, which runs the FP32 graph; set "
                          f"{' or '.join(f'type={name!r}' for name in builders)}")


CONFIG_CHECKS.append(refuse_unbuilt_precision)


def get_backend(name: str) -> Backend:
    discover_backends()
    return BACKENDS.get(name, field="backend_config.type")()


def all_backends() -> list[Backend]:
    """One instance of every backend, in discovery order."""
    return [get_backend(name) for name in discover_backends()]


def build_from_onnx(onnx_path: str | Path, deploy_cfg, work_dir: str | Path) -> BuildResult:
    """The front door from an ONNX file to a backend artefact.

    Checks, in order and before any slow step: the config, the backend's presence, the ONNX file
    (``read_onnx``), the config's profiles against the model's inputs, the nodes the backend cannot
    build. Every failure is a TrtDeployError; the work dir gets a complete artefact or nothing new.
    """
    from ..config import load_deploy_config
    from ..errors import UnsupportedOpError
    from ..utils.fileio import clean_stale_temps, ensure_writable_dir
    from ..utils.onnx_file import read_onnx

    cfg = load_deploy_config(deploy_cfg)
    backend = get_backend(cfg.backend)
    backend.require()
    model = read_onnx(onnx_path)
    cfg.check_profiles({v.name: [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
                        for v in model.graph.input})
    bad = backend.unsupported_nodes(model)
    if bad:
        listing = "; ".join(f"{b['name'] or '<unnamed>'} ({b['domain']}::{b['op_type']}): {b['hint']}" for b in bad)
        raise UnsupportedOpError(f"{len(bad)} node(s) of {onnx_path} cannot be built by {cfg.backend}: {listing}")
    work = ensure_writable_dir(work_dir)
    clean_stale_temps(work)
    return backend.build(Path(onnx_path), work, cfg)


def backend_for_file(path: str | Path) -> Backend:
    discover_backends()
    suffix = Path(path).suffix.lower()
    for _, backend in BACKENDS.items():
        if suffix in backend.file_suffixes:
            return backend()
    known = sorted(s for _, b in BACKENDS.items() for s in b.file_suffixes)
    raise ModelError(f"cannot tell the backend of {path}: its suffix must be one of {known}")
