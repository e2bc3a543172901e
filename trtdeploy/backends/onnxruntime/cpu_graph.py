"""FP32 for ONNX Runtime's CPU provider: the graph with its 3x3 convolutions as Winograd F(4x4, 3x3).

ONNX Runtime runs an ONNX file as it is, so for FP32 there was nothing to build; but its direct
convolutions already run near the CPU's FP32 peak, and a detector spends 60-97 % of its time in them.
``passes/winograd.py`` rewrites the convolutions where that pays (measured thresholds) into standard ops;
the artefact is ``<stem>_cpu.onnx``, beside the portable ``<stem>.onnx`` it came from, which stays what
TensorRT, a GPU or another runtime should take. ``backend_config.winograd = False`` keeps the file as it is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ...config import DeployConfig
from ...utils.fileio import atomic_write_bytes
from ...utils.logging import logger
from ...utils.onnx_file import read_onnx
from ..base import BuildResult
from ..sidecar import read_sidecar

TILE = "F(4x4,3x3)"


def winograd_enabled(cfg: DeployConfig) -> bool:
    return cfg.precision == "fp32" and bool(cfg.backend_cfg.get("winograd", True))


def build_cpu_graph(onnx_path: Path, work_dir: Path, cfg: DeployConfig, model=None) -> BuildResult:
    """Write ``<stem>_cpu.onnx`` with the eligible convolutions rewritten; with none, the artefact is
    ``onnx_path`` itself. ``model``: the graph already in memory (a ``CheckedGraph``), not read again."""
    from ...passes.winograd import MIN_IN_CHANNELS, MIN_TILES, eligible, winograd_convs

    if model is not None:
        proto, shapes = model.model, model.export_shapes
    else:
        proto, shapes = read_onnx(onnx_path), (read_sidecar(onnx_path) or {}).get("export_shapes")
    candidates = eligible(proto, shapes)  # judged at the shapes it was exported at
    if not candidates:
        logger.info("no 3x3 convolution large enough to gain from Winograd (stride 1, >= %d channels in, >= %d "
                    "4x4 output tiles at the export shapes): ONNX Runtime runs %s as it is", MIN_IN_CHANNELS,
                    MIN_TILES, onnx_path.name)
        return BuildResult(onnx_path, {"precision": "fp32"})
    rewritten, names = winograd_convs(proto, candidates)  # the weights stay W: no bigger than the graph read
    path = work_dir / f"{onnx_path.stem}_cpu.onnx"
    atomic_write_bytes(path, rewritten.SerializeToString())
    logger.info("rewrote %d of the graph's 3x3 convolutions as Winograd %s for ONNX Runtime's CPU provider: %s "
                "(backend_config.winograd = False keeps %s as it is)", len(names), TILE, path.name, onnx_path.name)
    return BuildResult(path, {"precision": "fp32", "built_from": onnx_path.name, "profiles": [],
                              "winograd": {"tile": TILE, "convs": names}})


def graph_for_device(path: Path, sidecar: Mapping | None, device: str) -> Path:
    """The file to load on ``device``: a CPU graph's source on CUDA, where cuDNN picks its own algorithms
    and the Winograd transforms would only add memory passes."""
    sidecar = sidecar or {}
    source = Path(path).with_name(sidecar.get("built_from") or Path(path).name)
    if device.startswith("cuda") and sidecar.get("winograd") and source.is_file():
        logger.info("%s is rewritten for the CPU; on %s ONNX Runtime runs %s, the graph it came from",
                    Path(path).name, device, source.name)
        return source
    return Path(path)
