"""The TensorRT backend: ONNX -> engine (+ sidecar), engine -> runner."""
from __future__ import annotations

import collections
import importlib.util
from pathlib import Path
from typing import Mapping

import onnx

from ...config import DeployConfig, ShapeRange
from ...errors import BackendUnavailableError, EngineCompatibilityError, ModelError, ShapeError
from ...utils.fileio import sha256_file
from ...utils.onnx_file import read_onnx
from ...utils.gpu import current_compute_capability
from ..base import BACKENDS, Backend, BuildResult, LayerTime, Runner, layer_times_from_totals
from ..sidecar import read_sidecar
from ...ops.plugins import plugin_op_types
from .plugins import check_engine_plugins, prepare_plugin_build
from .compat import INSTALL_HINT, flavour_label, import_tensorrt
from ...utils.onnx_graph import all_nodes
from ...passes.parser_fixes import parser_problems

# Standard ONNX ops a flavour parses but cannot build (measured with tensorrt_rtx 1.7 on the CPU),
# with what serves them instead.
UNBUILDABLE_OPS = {
    "tensorrt_rtx": {
        "NonZero": "needs a plugin TensorRT-RTX does not ship; use a rewriter that avoids data-dependent shapes",
        "RoiAlign": "needs a plugin TensorRT-RTX does not ship; use trtdeploy's plugin-free RoIAlign lowering",
        "NonMaxSuppression": "has no implementation in TensorRT-RTX; use trtdeploy's plugin-free batched NMS",
    },
    "tensorrt": {},
}


@BACKENDS.register("tensorrt")
class TensorRTBackend(Backend):
    name = "tensorrt"
    file_suffixes = (".engine", ".plan", ".trt")
    artefact_suffix = ".engine"
    default_device = "cuda"
    install_hint = INSTALL_HINT
    triton_platform = "tensorrt_plan"
    builds_precisions = {"bf16": "TensorRT (strongly typed: TensorRT-RTX, TensorRT >= 10; weakly typed: "
                                 "TensorRT 9-10 with BuilderFlag.BF16)",
                         "int8": "TensorRT (a Q/DQ graph, or its own calibration on TensorRT <= 10)"}

    def is_available(self) -> bool:
        return any(importlib.util.find_spec(m) is not None for m in ("tensorrt", "tensorrt_rtx"))

    def require(self) -> None:
        import_tensorrt()  # raises with the install hint, and checks TENSORRT_DIR

    def unsupported_nodes(self, model: onnx.ModelProto) -> list[dict]:
        trt = import_tensorrt()
        table = UNBUILDABLE_OPS.get(trt.flavour, {})
        found = []
        for node in all_nodes(model.graph):
            if node.domain in ("", "ai.onnx") and node.op_type in table:
                found.append({"name": node.name, "op_type": node.op_type, "domain": node.domain or "ai.onnx",
                              "hint": table[node.op_type]})
            elif node.domain in ("", "ai.onnx"):  # ops the parser takes only in some spellings
                found.extend({"name": node.name, "op_type": node.op_type, "domain": node.domain or "ai.onnx",
                              "hint": problem.hint} for problem in parser_problems(node))
            elif node.domain not in ("", "ai.onnx"):
                from ...ops import plugin_for  # custom ops need a registered plugin
                from ...ops.plugins import unknown_op_hint

                if plugin_for(node.domain, node.op_type) is None:
                    found.append({"name": node.name, "op_type": node.op_type, "domain": node.domain,
                                  "hint": f"no TensorRT plugin serves it: {unknown_op_hint()}"})
        return found

    def serves_custom_op(self, key: str) -> bool:
        """One of trtdeploy's plugins builds the node (TensorRT >= 10: IPluginV3)."""
        from ...ops.plugins import plugin_specs

        return key in plugin_specs() and hasattr(import_tensorrt().module, "IPluginV3OneRuntime")

    def prebuild(self, data: bytes, source: Path, cfg: DeployConfig):
        """FP32 without a timing cache (which the build would save even if discarded): the build of the file as
        it is, beside convert's checks."""
        if not self.builds_from_memory(cfg) or cfg.common.get("timing_cache"):
            return None
        from .builder import Prebuild

        trt = import_tensorrt()
        return Prebuild(trt, data, source, cfg, bool(cfg.common.get("strongly_typed", trt.strongly_typed_only)))

    def builds_from_memory(self, cfg: DeployConfig) -> bool:
        return cfg.precision == "fp32"  # INT8 and FP16/BF16 derive their graph from the written file (build)

    def build(self, onnx_path: Path, work_dir: Path, cfg: DeployConfig, sample=None, model=None) -> BuildResult:
        """``sample`` (feed, where it came from) is what FP16/BF16 numerics are checked on (default: random input);
        ``model``: the ``CheckedGraph`` of ``onnx_path``, if the caller holds it (an FP32 build parses its bytes
        and reads no file)."""
        from .builder import build_engine

        trt = import_tensorrt()
        strongly_typed = bool(cfg.common.get("strongly_typed", trt.strongly_typed_only))
        if trt.strongly_typed_only and not strongly_typed:
            raise BackendUnavailableError(f"{trt.label} builds only strongly typed networks; "
                                          f"remove backend_config.common_config.strongly_typed=False")
        checked = model
        model = checked.model if checked is not None else read_onnx(onnx_path, load_external_data=False)
        plugins = prepare_plugin_build(trt, model)  # custom nodes checked, plugins registered, before parsing
        default_shapes = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in model.graph.input}
        source = Path(onnx_path)
        exported = checked.export_shapes if checked is not None else (read_sidecar(source) or {}).get("export_shapes")
        shapes = cfg_default_shapes(cfg, default_shapes, exported)
        plan = None  # what INT8 or FP16/BF16 adds: the graph to parse, a config hook, facts
        if cfg.int8:
            from .int8 import prepare_int8

            profile = cfg.profiles[0] if cfg.profiles else {n: ShapeRange(s, s, s) for n, s in shapes.items()}
            plan = prepare_int8(trt, source, Path(work_dir), cfg, strongly_typed, profile)
            source = plan.onnx_path
        elif cfg.precision in ("fp16", "bf16"):
            from .low_precision import prepare_low_precision

            # our plugins take FP32: their nodes stay FP32, with casts around them
            plugin_nodes = [n.name for n in model.graph.node if n.op_type in plugin_op_types(model)]
            plan = prepare_low_precision(trt, source, Path(work_dir), cfg, strongly_typed, plugin_nodes, shapes, sample)
            source = plan.onnx_path
        engine_path = Path(work_dir) / f"{Path(onnx_path).stem}.engine"
        facts = build_engine(trt, source, engine_path, cfg, shapes, strongly_typed,
                             configure=plan.configure if plan else None, graph=checked if plan is None else None)
        facts.update(flavour=trt.flavour, backend_version=trt.version, precision=cfg.precision,
                     built_from=source.name, plugins=plugins, **(plan.facts if plan else {}))
        return BuildResult(engine_path, facts)

    def load(self, path: Path, sidecar: Mapping | None = None, device: str = "cuda") -> Runner:
        from .runner import TensorRTRunner

        trt = import_tensorrt()
        sidecar = dict(sidecar or read_sidecar(path, required=True))
        check_engine_file(Path(path), sidecar)
        check_engine_compatible(trt, sidecar, Path(path))
        check_engine_plugins(trt, sidecar, Path(path))
        gpu = device if device.startswith("cuda") else "cuda"  # an engine runs on a GPU whatever the default device
        return TensorRTRunner(trt, Path(path), sidecar, gpu).activate()

    def describe(self) -> dict:
        try:
            trt = import_tensorrt()
        except BackendUnavailableError as e:
            return {"available": False, "error": str(e)}
        return {"available": True, "flavour": trt.flavour, "version": trt.version, "location": trt.origin,
                "how": trt.how, "strongly_typed_only": trt.strongly_typed_only,
                "implicit_int8": trt.has_implicit_int8}

    def check_config(self, cfg: DeployConfig) -> None:
        """INT8: fail before export when the installed TensorRT has no route to it."""
        if cfg.int8:
            from .int8 import choose_route

            choose_route(import_tensorrt(), cfg)

    def inspect(self, path: Path) -> dict:
        from .inspect import inspect_engine

        return inspect_engine(path)

    def inspection_text(self, info: dict) -> tuple[list[str], list[str]]:
        from .inspect import inspection_text

        return inspection_text(info)

    def layer_times(self, runner: Runner, feed: dict, iterations: int) -> list[LayerTime]:
        """Layer times from TensorRT's IProfiler, attached to the runner's execution context."""
        mod = runner.trt.module
        totals: dict[str, float] = collections.defaultdict(float)

        class LayerTimer(mod.IProfiler):
            def __init__(self):
                mod.IProfiler.__init__(self)

            def report_layer_time(self, layer_name, ms):
                totals[layer_name] += ms

        runner.context.profiler = LayerTimer()
        try:
            for _ in range(iterations):
                runner(feed)
        finally:
            runner.context.profiler = None
        return layer_times_from_totals(totals, {}, iterations)

    def env_findings(self, gpus: list[dict]) -> list:
        from .checks import tensorrt_findings

        return tensorrt_findings()

    def custom_op_status(self) -> dict[str, tuple[str, str]]:
        from .checks import plugin_findings

        return plugin_findings()

    def gpu_support(self, cc: tuple[int, int]) -> tuple[bool, str, str] | None:
        from .checks import gpu_support

        return gpu_support(cc)

    def serving_notes(self, artefact: Path, sidecar: Mapping) -> list[str]:
        if sidecar.get("flavour") != "tensorrt_rtx":
            return []
        return [f"{artefact.name} was built with {flavour_label('tensorrt_rtx', sidecar.get('backend_version'))}; "
                f"Triton's TensorRT backend loads engines built by its own TensorRT version, so convert again with "
                f"that TensorRT (e.g. inside the Triton container) before serving it natively"]

    def cuda_runtime(self) -> tuple[str, int] | None:
        from .checks import wheel_cuda_major

        return wheel_cuda_major()


def cfg_default_shapes(cfg: DeployConfig, onnx_shapes: dict, exported: Mapping | None = None) -> dict:
    """Static-profile shapes for inputs: the ONNX's own fixed dims, else the shape its sidecar says it was exported
    (or, for a user's ONNX file, prepared) at, else the config's export shape."""
    shapes = {}
    for name, shape in onnx_shapes.items():
        if all(d > 0 for d in shape):
            shapes[name] = shape
            continue
        chosen = tuple((exported or {}).get(name) or cfg.export_shape(name, shape))
        if any(d <= 0 for d in chosen):
            raise ShapeError(f"{cfg.source}: input {name!r} has dynamic dimensions ({list(shape)}, 0 = dynamic) and "
                             f"the config gives no shape for them; add backend_config.model_inputs=[dict(input_shapes="
                             f"dict({name}=dict(min_shape=..., opt_shape=..., max_shape=...)))]")
        shapes[name] = chosen
    return shapes


def _built_with(sidecar: Mapping) -> str:
    caps = sidecar.get("compute_capabilities") or []
    return flavour_label(sidecar.get("flavour"), sidecar.get("backend_version")) + (f" for {'/'.join(caps)}" if caps else "")


def _runs_here(trt, sidecar: Mapping, here_cc: tuple[int, int] | None) -> str | None:
    """Why this TensorRT (and GPU) cannot run an engine with these sidecar facts, or None if it can."""
    built_version, here_version = str(sidecar.get("backend_version", "")), trt.version
    if sidecar.get("flavour") != trt.flavour:
        return "another TensorRT flavour"
    if built_version.split(".")[:3] != here_version.split(".")[:3]:
        forward_ok = ("version_compatible" in sidecar.get("options", []) and trt.flavour == "tensorrt"
                      and built_version.split(".")[0] == here_version.split(".")[0]
                      and _version_key(here_version) >= _version_key(built_version))
        if not forward_ok:
            return "another TensorRT version"
    if here_cc is None:
        return None
    sm = f"SM{here_cc[0]}{here_cc[1]}"
    if trt.flavour == "tensorrt_rtx" and sm not in trt.supported_targets:
        return f"a GPU ({sm}) that TensorRT-RTX does not support"
    caps = sidecar.get("compute_capabilities") or []
    ampere_plus = sidecar.get("hardware_compatibility_level") == "AMPERE_PLUS" and here_cc >= (8, 0)
    if caps and sm not in caps and "CURRENT" not in caps and not ampere_plus:
        return f"a GPU ({sm}) the engine was not built for"
    return None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def check_engine_compatible(trt, sidecar: Mapping, path: Path) -> None:
    """Refuse an engine built by another TensorRT flavour/version or for another GPU, with the sidecar's facts."""
    here_cc = current_compute_capability()
    reason = _runs_here(trt, sidecar, here_cc)
    if reason is None:
        return
    here = trt.label + (f" on SM{here_cc[0]}{here_cc[1]}" if here_cc else "")
    hint = "build for it with TensorRT (pip install tensorrt) " if "does not support" in reason else ""
    raise EngineCompatibilityError(
        f"{path.name} was built with {_built_with(sidecar)}; this is {here} ({reason}): {hint}rebuild it here with "
        f"`trtdeploy convert <deploy config> {sidecar.get('model', '<model>')} --work-dir {path.parent}`")


def check_engine_file(path: Path, sidecar: Mapping) -> None:
    """Refuse an engine whose bytes are not the ones its sidecar describes (truncated, replaced)."""
    size = path.stat().st_size
    want_size, want_sha = sidecar.get("engine_bytes"), sidecar.get("engine_sha256")
    if want_size is not None and size != want_size:
        raise ModelError(f"{path} has {size} bytes but its sidecar records {want_size}: the file is truncated or "
                         f"was replaced; convert the model again")
    if want_sha is not None and sha256_file(path) != want_sha:
        raise ModelError(f"{path} does not match its sidecar (sha256 differs): it was replaced after the build; "
                         f"convert the model again")

