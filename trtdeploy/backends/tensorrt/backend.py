"""The TensorRT backend: ONNX -> engine (+ sidecar), engine -> runner."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Mapping

import onnx

from ...config import DeployConfig
from ...errors import BackendUnavailableError, EngineCompatibilityError
from ...passes import to_fp16
from ...utils.fileio import atomic_write_bytes
from ...utils.gpu import current_compute_capability
from ..base import BACKENDS, Backend, BuildResult, Runner
from ..sidecar import read_sidecar
from .compat import INSTALL_HINT, import_tensorrt

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
    install_hint = INSTALL_HINT

    def is_available(self) -> bool:
        return any(importlib.util.find_spec(m) is not None for m in ("tensorrt", "tensorrt_rtx"))

    def require(self) -> None:
        import_tensorrt()  # raises with the install hint, and checks TENSORRT_DIR

    def unsupported_nodes(self, model: onnx.ModelProto) -> list[dict]:
        trt = import_tensorrt()
        table = UNBUILDABLE_OPS.get(trt.flavour, {})
        found = []
        for node in _all_nodes(model.graph):
            if node.domain in ("", "ai.onnx") and node.op_type in table:
                found.append({"name": node.name, "op_type": node.op_type, "domain": node.domain or "ai.onnx",
                              "hint": table[node.op_type]})
            elif node.domain not in ("", "ai.onnx"):
                from ...ops import plugin_for  # custom ops need a registered plugin

                if plugin_for(node.domain, node.op_type) is None:
                    found.append({"name": node.name, "op_type": node.op_type, "domain": node.domain,
                                  "hint": "no TensorRT plugin is registered for it"})
        return found

    def build(self, onnx_path: Path, work_dir: Path, cfg: DeployConfig) -> BuildResult:
        from .builder import build_engine

        trt = import_tensorrt()
        strongly_typed = bool(cfg.common.get("strongly_typed", trt.strongly_typed_only))
        if trt.strongly_typed_only and not strongly_typed:
            raise BackendUnavailableError(f"{trt.label} builds only strongly typed networks; "
                                          f"remove backend_config.common_config.strongly_typed=False")
        model = onnx.load(str(onnx_path), load_external_data=False)
        default_shapes = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in model.graph.input}
        source = Path(onnx_path)
        if cfg.fp16 and strongly_typed:
            # Strongly typed TensorRT takes FP16 from the graph's tensor types.
            source = Path(work_dir) / f"{source.stem}_fp16.onnx"
            atomic_write_bytes(source, to_fp16(onnx.load(str(onnx_path))).SerializeToString())
        engine_path = Path(work_dir) / f"{Path(onnx_path).stem}.engine"
        facts = build_engine(trt, source, engine_path, cfg, cfg_default_shapes(cfg, default_shapes), strongly_typed)
        facts.update(flavour=trt.flavour, backend_version=trt.version, precision=cfg.precision,
                     built_from=source.name)
        return BuildResult(engine_path, facts)

    def load(self, path: Path, sidecar: Mapping | None = None, device: str = "cuda") -> Runner:
        from .runner import TensorRTRunner

        trt = import_tensorrt()
        sidecar = dict(sidecar or read_sidecar(path, required=True))
        check_engine_compatible(trt, sidecar, Path(path))
        return TensorRTRunner(trt, Path(path), sidecar, device)

    def describe(self) -> dict:
        try:
            trt = import_tensorrt()
        except BackendUnavailableError as e:
            return {"available": False, "error": str(e)}
        return {"available": True, "flavour": trt.flavour, "version": trt.version, "location": trt.origin,
                "how": trt.how, "strongly_typed_only": trt.strongly_typed_only,
                "implicit_int8": trt.has_implicit_int8}


def cfg_default_shapes(cfg: DeployConfig, onnx_shapes: dict) -> dict:
    """Static-profile shapes for inputs: the ONNX's own fixed dims, else the config's export shape."""
    return {name: cfg.export_shape(name, shape) if any(d <= 0 for d in shape) else shape
            for name, shape in onnx_shapes.items()}


def check_engine_compatible(trt, sidecar: Mapping, path: Path) -> None:
    """Refuse an engine built by another TensorRT flavour/version or for another GPU, with the facts."""
    built_flavour, built_version = sidecar.get("flavour"), str(sidecar.get("backend_version", ""))
    built = f"{'TensorRT-RTX' if built_flavour == 'tensorrt_rtx' else 'TensorRT'} {built_version}"
    caps = sidecar.get("compute_capabilities") or []
    target = f" for {'/'.join(caps)}" if caps else ""
    here_cc = current_compute_capability()
    here = f"{trt.label}" + (f" on SM{here_cc[0]}{here_cc[1]}" if here_cc else "")
    same_version = built_version.split(".")[:3] == trt.version.split(".")[:3]
    if built_flavour != trt.flavour or (not same_version and "version_compatible" not in sidecar.get("options", [])):
        raise EngineCompatibilityError(f"{path.name} was built with {built}{target}; this is {here}: "
                                       f"rebuild it here with `trtdeploy convert`")
    if here_cc and caps and trt.flavour == "tensorrt" and f"SM{here_cc[0]}{here_cc[1]}" not in caps \
            and sidecar.get("hardware_compatibility_level") in (None, "NONE"):
        raise EngineCompatibilityError(f"{path.name} was built with {built}{target}; this GPU is "
                                       f"SM{here_cc[0]}{here_cc[1]}: rebuild it on this GPU or with "
                                       f"hardware_compatibility_level='AMPERE_PLUS'")


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g is not None and attr.g.node:
                yield from _all_nodes(attr.g)
            for g in attr.graphs:
                yield from _all_nodes(g)
