"""Build a serialized TensorRT engine from ONNX, with profiles, precision and builder options.

Same code for TensorRT 8.6-11 and TensorRT-RTX: version differences are asked of
``compat.TensorRT``. Nothing is written until the build has succeeded, and then atomically.
"""
from __future__ import annotations

import contextlib
import re
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ...config import DeployConfig, ShapeRange
from ...errors import BuildError, ConfigError, UnsupportedOpError, WorkDirError
from ...utils.fileio import (atomic_write_bytes, atomic_write_hashed, clean_stale_temps, ensure_writable_dir,
                             human_size)
from ...utils.logging import logger
from ..base import CheckedGraph, TensorSpec, profiles_to_json
from .compat import TensorRT
from .options import apply_builder_options

_DTYPE_NAMES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
                "BOOL": "bool", "UINT8": "uint8", "BF16": "bfloat16", "FP8": "float8", "INT4": "int4"}


def numpy_dtype_name(dtype) -> str:
    return _DTYPE_NAMES.get(getattr(dtype, "name", str(dtype)).split(".")[-1], "float32")


def make_logger(trt: TensorRT):
    """A TensorRT logger that forwards to ours and remembers errors for the final message."""
    mod = trt.module
    levels = {mod.ILogger.Severity.INTERNAL_ERROR: "error", mod.ILogger.Severity.ERROR: "error",
              mod.ILogger.Severity.WARNING: "debug", mod.ILogger.Severity.INFO: "debug",
              mod.ILogger.Severity.VERBOSE: "debug"}

    class CollectingLogger(mod.ILogger):
        def __init__(self):
            mod.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            level = levels.get(severity, "debug")
            if level == "error":
                self.errors.append(msg)
                logger.debug("TensorRT: %s", msg)
            else:
                getattr(logger, level)("TensorRT: %s", msg)

    return CollectingLogger()


def _progress_monitor(trt: TensorRT, cancel: threading.Event):
    """A progress bar over the builder's top-level phases; cancels the build when asked."""
    mod = trt.module
    if not hasattr(mod, "IProgressMonitor"):
        return None
    from ...utils.logging import progress

    class BuildProgress(mod.IProgressMonitor):
        def __init__(self):
            mod.IProgressMonitor.__init__(self)
            self.bar = None
            self.top = None

        def phase_start(self, phase_name, parent_phase, num_steps):
            if parent_phase is None and self.bar is None:
                self.top = phase_name
                self.bar = progress(total=num_steps, desc=phase_name, unit="step")

        def step_complete(self, phase_name, step):
            if phase_name == self.top and self.bar is not None:
                self.bar.update(1)
            return not cancel.is_set()

        def phase_finish(self, phase_name):
            if phase_name == self.top and self.bar is not None:
                self.bar.close()
                self.bar = None

    return BuildProgress()


@contextlib.contextmanager
def _interrupt_cancels(cancel: threading.Event) -> Iterator[None]:
    """Turn Ctrl-C or SIGTERM during the (blocking, C++) build into a cancellation request."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        cancel.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _one_line(text: str, limit: int = 1000) -> str:
    """TensorRT's messages span lines; ours are one line (and bounded: a fuzzed graph can fail at every node)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " ..."


def parse_onnx(trt: TensorRT, onnx_path: Path, network, trt_logger, data: bytes | None = None) -> None:
    """Parse ONNX into ``network`` (``data``: the bytes of ``onnx_path``, when the caller holds them; they must
    outlive the build); on failure list every failing node with the parser's reason."""
    parser = trt.module.OnnxParser(network, trt_logger)
    ok = parser.parse_from_file(str(onnx_path)) if data is None else parser.parse(data, str(onnx_path))
    if ok:
        return
    problems = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node = getattr(err, "node_name", lambda: "")() or f"node #{err.node()}"
        op = getattr(err, "node_operator", lambda: "")()
        problems.append(f"{node}{f' ({op})' if op else ''}: {err.desc()}")
    detail = _one_line("; ".join(problems) or "; ".join(getattr(trt_logger, "errors", [])[-3:]) or "unknown parser error")
    cls = UnsupportedOpError if any("plugin" in p.lower() or "unsupported" in p.lower() or "no importer" in p.lower()
                                    for p in problems) else BuildError
    raise cls(f"{trt.label} cannot parse {onnx_path.name}: {detail}")


def network_io(network) -> tuple[list[TensorSpec], list[TensorSpec]]:
    def spec(t):
        return TensorSpec(t.name, numpy_dtype_name(t.dtype), list(t.shape))
    return ([spec(network.get_input(i)) for i in range(network.num_inputs)],
            [spec(network.get_output(i)) for i in range(network.num_outputs)])


def resolve_profiles(cfg: DeployConfig, inputs: list[TensorSpec],
                     default_shapes: dict[str, tuple[int, ...]]) -> list[dict[str, ShapeRange]]:
    """The config's profiles, checked against the network; a static one when the config has none."""
    profiles = cfg.profiles
    if not profiles:
        if any(not isinstance(d, int) or d < 0 for s in inputs for d in s.shape):
            profiles = [{s.name: ShapeRange(*(tuple(default_shapes[s.name]),) * 3) for s in inputs}]
            logger.info("no backend_config.model_inputs: building a static profile %s",
                        {k: list(v.opt) for k, v in profiles[0].items()})
        return profiles
    cfg.check_profiles({s.name: s.shape for s in inputs})
    return profiles


def check_timing_cache_path(path: str | None) -> None:
    """Refuse a timing-cache path we could not write, before the build rather than after it."""
    if not path:
        return
    cache_file = Path(path)
    if cache_file.is_dir():
        raise ConfigError(f"backend_config.common_config.timing_cache={path} is a directory; name a file, "
                          f"e.g. {cache_file / 'timing.cache'}")
    ensure_writable_dir(cache_file.parent)
    clean_stale_temps(cache_file.parent)  # a cache shared between work dirs lives outside them


@contextlib.contextmanager
def _timing_cache(trt: TensorRT, builder_config, path: str | None) -> Iterator[None]:
    """Load a persistent timing cache before the build and save it (atomically) after."""
    if not path or not hasattr(builder_config, "create_timing_cache"):
        yield
        return
    cache_file = Path(path)
    blob = b""
    if cache_file.is_file():
        try:
            blob = cache_file.read_bytes()
        except OSError as e:
            raise WorkDirError(f"timing cache {cache_file} is not readable ({e.strerror}); fix its permissions "
                               f"or delete it") from None
    cache = builder_config.create_timing_cache(blob)
    if cache is None and blob:
        logger.warning("timing cache %s is unreadable (another TensorRT version, or damaged); it will be "
                       "replaced by a new one after this build", cache_file)
        cache = builder_config.create_timing_cache(b"")
    builder_config.set_timing_cache(cache, ignore_mismatch=True)
    yield
    data = memoryview(builder_config.get_timing_cache().serialize())
    atomic_write_bytes(cache_file, data)
    logger.info("timing cache saved to %s (%d bytes)", cache_file, data.nbytes)


# Builder failures whose cause the log states only indirectly: log text -> what to do.
BUILD_FAILURE_HINTS = {
    "libnvinfer_lean": "; version-compatible engines need TensorRT's lean runtime library, which this install "
                       "lacks: remove backend_config.common_config.version_compatible or install full TensorRT",
}


REQUESTED_SIZE = re.compile(r"Requested size was (\d+) bytes")


def out_of_memory_hint(errors: list[str], workspace: int | None) -> str:
    """For a build TensorRT stopped for lack of memory: the size it asked for and the config field that caps it.
    TensorRT-RTX says so three ways (measured on the CPU): ``OutOfMemory (Requested size was N bytes.)`` and
    ``std::bad_alloc`` when an allocation fails, ``no tactics ... within workspace limit`` under a small cap."""
    if workspace and any("within workspace limit" in e for e in errors):
        return (f"; no tactic fits in backend_config.common_config.max_workspace_size = {workspace} "
                f"({human_size(workspace)}): raise it (e.g. 1 << 30) or remove it (no cap)")
    sizes = [int(m) for e in errors for m in REQUESTED_SIZE.findall(e)]
    if not sizes and not any("OutOfMemory" in e or "out of memory" in e.lower() or "bad_alloc" in e for e in errors):
        return ""
    asked = f"TensorRT asked for {max(sizes)} bytes ({max(sizes) / 2**30:.2f} GiB)" if sizes else "TensorRT ran out of memory"
    cap = (f"backend_config.common_config.max_workspace_size is {workspace} ({workspace / 2**30:.2f} GiB)"
           if workspace else "backend_config.common_config.max_workspace_size is unset (no cap: all memory)")
    narrow = "narrow the profile's max_shape (backend_config.model_inputs), which sets the sizes TensorRT plans for"
    if sizes and workspace and max(sizes) > workspace:  # a tactic wanted more than the cap allows
        # measured (swin_v2_t, TensorRT-RTX 1.7 on the CPU): the request was the cap plus 59 MB at caps of 0.25, 1
        # and 2 GiB, and the build passed with no cap; so the cap goes, rather than up
        return f"; {asked} and {cap}: set max_workspace_size = 0 (no cap), or {narrow}"
    return f"; {asked} and {cap}: set max_workspace_size below what this machine has free (e.g. 1 << 30), or {narrow}"


@dataclass
class Built:
    """A finished build, not yet written: the serialized engine and what its sidecar says of it."""

    serialized: Any  # TensorRT's IHostMemory
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    profiles: list[dict[str, ShapeRange]]
    notes: list[str]
    builder_config: Any


def _build(trt: TensorRT, onnx_path: Path, cfg: DeployConfig, default_shapes: dict[str, tuple[int, ...]],
           strongly_typed: bool, configure: Callable | None, data: bytes | None, cancel: threading.Event,
           shown: bool = True) -> Built:
    """Parse, configure and build; ``data``: the bytes of ``onnx_path`` when the caller holds them; ``shown``:
    with a progress bar."""
    mod = trt.module
    # unshown (a build beside Python work): TensorRT's own logger, since each call into a Python one waits for the
    # GIL that the work beside it holds (a thousand log lines a build); failing, it is built again, with ours
    trt_logger = make_logger(trt) if shown else mod.Logger(mod.Logger.ERROR)
    builder = mod.Builder(trt_logger)
    network = builder.create_network(trt.network_flags(strongly_typed))
    parse_onnx(trt, onnx_path, network, trt_logger, data)
    inputs, outputs = network_io(network)
    profiles = resolve_profiles(cfg, inputs, default_shapes)

    builder_config = builder.create_builder_config()
    trt.set_workspace(builder_config, int(cfg.common.get("max_workspace_size", 0) or 0))
    if cfg.fp16 and not strongly_typed:
        builder_config.set_flag(mod.BuilderFlag.FP16)
    for profile in profiles:
        p = builder.create_optimization_profile()
        for name, rng in profile.items():
            p.set_shape(name, rng.min, rng.opt, rng.max)
        builder_config.add_optimization_profile(p)
    notes = apply_builder_options(trt, builder_config, cfg.common)
    if configure is not None:
        configure(builder, builder_config, network)

    # unshown, no monitor either: its calls into Python would wait for the GIL too (measured: a 0.45 s ResNet-18
    # build took 0.7 s beside 0.3 s of Python with it, 0.5 s without); such a build cannot be cancelled
    monitor = _progress_monitor(trt, cancel) if shown else None
    if monitor is not None:
        builder_config.progress_monitor = monitor
    with _timing_cache(trt, builder_config, cfg.common.get("timing_cache")):
        serialized = builder.build_serialized_network(network, builder_config)
    if cancel.is_set():
        raise KeyboardInterrupt
    if serialized is None:
        errors = getattr(trt_logger, "errors", [])  # TensorRT's own logger (an unshown build) keeps none
        detail = _one_line("; ".join(dict.fromkeys(errors[-3:])) or "no reason given")
        hint = (out_of_memory_hint(errors, cfg.common.get("max_workspace_size"))
                or next((h for needle, h in BUILD_FAILURE_HINTS.items() if needle in detail), ""))
        raise BuildError(f"{trt.label} failed to build {onnx_path.name}: {detail}{hint}")
    return Built(serialized, inputs, outputs, profiles, notes, builder_config)


class Prebuild:
    """A build of an ONNX file's own bytes, started in a thread before convert has read and checked the file
    (TensorRT releases the GIL while it builds, so the checks run beside it on another core). ``result()`` is
    the ``Built`` or None (it failed or was discarded: the caller builds as usual, and gets the usual error);
    ``discard()`` marks it discarded and waits for it: with no monitor (see ``_build``) it cannot be stopped. convert uses it only when its passes left the graph equivalent to the
    file: for the file as it is, the build is the one convert would have started later."""

    def __init__(self, trt: TensorRT, data: bytes, source: Path, cfg: DeployConfig, strongly_typed: bool):
        self.cancel = threading.Event()
        self._built: Built | None = None
        self._thread = threading.Thread(target=self._run, args=(trt, data, source, cfg, strongly_typed),
                                        name="trtdeploy-prebuild", daemon=True)
        self._thread.start()

    def _run(self, trt: TensorRT, data: bytes, source: Path, cfg: DeployConfig, strongly_typed: bool) -> None:
        try:
            self._built = _build(trt, source, cfg, {}, strongly_typed, None, data, self.cancel, shown=False)
        except BaseException as e:  # noqa: BLE001  (any failure: the caller's own build reports it)
            logger.debug("the build started before the checks stopped (%s: %s); building after them", type(e).__name__, e)

    def result(self) -> Built | None:
        self._thread.join()
        return None if self.cancel.is_set() else self._built

    def discard(self) -> None:
        self.cancel.set()
        self._thread.join()


def build_engine(trt: TensorRT, onnx_path: Path, engine_path: Path, cfg: DeployConfig,
                 default_shapes: dict[str, tuple[int, ...]], strongly_typed: bool,
                 configure: Callable | None = None, graph: CheckedGraph | None = None) -> dict:
    """Parse, configure, build and atomically write the engine; returns the facts for its sidecar.

    ``configure(builder, builder_config, network)`` adds what a precision needs (INT8 flag, calibrator);
    ``graph``: ``onnx_path`` as the caller holds it, parsed from its bytes while the caller may still be writing
    the file, which is waited for before the engine is written (a failed write leaves the previous engine);
    its ``prebuilt`` build (a ``Prebuild`` of the same graph) is taken instead of building again.
    """
    check_timing_cache_path(cfg.common.get("timing_cache"))
    built = graph.prebuilt.result() if graph is not None and graph.prebuilt is not None else None
    if built is None:
        cancel = threading.Event()
        with _interrupt_cancels(cancel):
            built = _build(trt, onnx_path, cfg, default_shapes, strongly_typed, configure,
                           graph.data if graph is not None else None, cancel)
    else:
        logger.info("the engine was built from the input file while its graph was checked (the same graph)")
    engine = memoryview(built.serialized)
    if graph is not None:
        graph.written()
    sha256 = atomic_write_hashed(engine_path, engine)
    return {
        "engine_bytes": engine.nbytes,
        "engine_sha256": sha256,
        "inputs": [s.to_dict() for s in built.inputs],
        "outputs": [s.to_dict() for s in built.outputs],
        "profiles": profiles_to_json(built.profiles),
        "strongly_typed": strongly_typed,
        "options": built.notes,
        "compute_capabilities": _target_capabilities(trt, built.builder_config),
        "hardware_compatibility_level": (built.builder_config.hardware_compatibility_level.name
                                         if trt.has_hardware_compatibility else None),
    }


def _target_capabilities(trt: TensorRT, builder_config) -> list[str]:
    """Which GPUs the engine is for: TensorRT-RTX's targets, or this machine's GPU for TensorRT."""
    if hasattr(builder_config, "num_compute_capabilities") and builder_config.num_compute_capabilities:
        return [builder_config.get_compute_capability(i).name for i in range(builder_config.num_compute_capabilities)]
    if trt.flavour == "tensorrt_rtx":
        return ["SM75", "SM80", "SM86", "SM89", "SM120"]  # the library's default targets
    from ...utils.gpu import current_compute_capability

    cc = current_compute_capability()
    return [f"SM{cc[0]}{cc[1]}"] if cc else []
