"""FP16 and BF16 for the TensorRT backend, with what 16 bits cannot hold kept in FP32.

- strongly typed TensorRT (TensorRT-RTX, TensorRT >= 11, or ``strongly_typed=True``): precision
  comes from the graph's types, so trtdeploy writes ``end2end_fp16.onnx`` / ``end2end_bf16.onnx``
  (passes/fp16.py: the network body in 16 bits, the guards' nodes and ``fp32_nodes`` in FP32);
- weakly typed TensorRT (<= 10): BuilderFlag.FP16/BF16 on the FP32 graph, with the same nodes'
  layers pinned to FP32 through precision constraints (``layer.precision`` and
  PREFER_PRECISION_CONSTRAINTS, OBEY_PRECISION_CONSTRAINTS when the user named nodes).

Either way the 16-bit numerics are first checked on ONNX Runtime (passes/numerics.py): a graph
whose outputs turn NaN/inf is refused before the build, naming the first node at fault.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import onnx

from ...config import DeployConfig
from ...errors import BackendUnavailableError
from ...passes.fp16 import fragile_nodes, matching_nodes, to_fp16_body
from ...passes.numerics import check_low_precision_finite, random_sample
from ...utils.fileio import atomic_write_bytes
from ...utils.logging import logger
from .compat import TensorRT

FLAGS = {"fp16": "FP16", "bf16": "BF16"}  # BuilderFlag of weakly typed TensorRT per precision


@dataclass
class LowPrecisionPlan:
    """The graph to parse, a builder-config hook, and what the sidecar records."""

    onnx_path: Path
    configure: Callable | None = None
    facts: dict = field(default_factory=dict)


def fp32_node_names(model: onnx.ModelProto, patterns, where: str) -> list[str]:
    """Node names matching ``patterns`` (fnmatch); a pattern that matches nothing is a warning with close names."""
    names = [n.name for n in model.graph.node if n.name]
    for pattern in patterns:
        if not matching_nodes(model, [pattern]):
            close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.5)
            logger.warning("%s: %r matches no node of the graph%s", where, pattern,
                           f"; close names: {', '.join(close)}" if close else
                           "; `trtdeploy inspect` lists the node names")
    return matching_nodes(model, patterns)


def prepare_low_precision(trt: TensorRT, onnx_path: Path, work_dir: Path, cfg: DeployConfig, strongly_typed: bool,
                          keep: list[str], shapes: Mapping[str, tuple],
                          sample: tuple[Mapping[str, np.ndarray], str] | None = None) -> LowPrecisionPlan:
    """Check the 16-bit numerics on ``sample`` (feed, where it came from; default random input at ``shapes``),
    then write the 16-bit graph (strongly typed) or prepare the precision constraints (weakly typed).

    ``keep`` are node names that stay FP32 beside the guards and ``fp32_nodes`` (e.g. plugin nodes).
    """
    precision = cfg.precision
    model = onnx.load(str(onnx_path))
    user = fp32_node_names(model, cfg.common.get("fp32_nodes") or (), f"{cfg.source}: common_config.fp32_nodes")
    guards = fragile_nodes(model, precision)
    kept = sorted(set(keep) | set(user))
    logger.info("%s: %d node(s) kept in FP32 by the guards%s", precision.upper(), len(guards),
                f" and {len(user)} by fp32_nodes" if user else "")
    feed, origin = sample if sample is not None else random_sample(model, shapes)
    emulated = to_fp16_body(model, keep_fp32=kept, precision=precision, emulate=True)
    check_low_precision_finite(model, emulated, feed, precision, onnx_path.name, origin)
    facts = {"fp32_nodes": user, "fp32_guards": sorted(guards)}
    if strongly_typed:
        # Strongly typed TensorRT takes the precision from the graph's tensor types.
        source = work_dir / f"{onnx_path.stem}_{precision}.onnx"
        atomic_write_bytes(source, to_fp16_body(model, keep_fp32=kept, precision=precision).SerializeToString())
        if precision == "bf16":  # ONNX Runtime has no BF16 kernels on the CPU: stand-ins run the emulation
            emulation = work_dir / f"{onnx_path.stem}_{precision}_emulated.onnx"
            atomic_write_bytes(emulation, emulated.SerializeToString())
            facts["check_with"] = emulation.name
        return LowPrecisionPlan(source, None, facts)
    flag = FLAGS[precision]
    if flag not in trt.module.BuilderFlag.__members__:
        raise BackendUnavailableError(f"{trt.label} has no BuilderFlag.{flag}, so it cannot build {precision.upper()}; "
                                      f"use precision 'fp16', or TensorRT >= 9 / TensorRT-RTX for BF16")
    fp32_layers = set(guards) | set(kept)

    def configure(builder, builder_config, network) -> None:
        builder_config.set_flag(getattr(trt.module.BuilderFlag, flag))
        pinned = pin_fp32(trt, builder_config, network, fp32_layers, obey=bool(user))
        logger.info("%s: %d layer(s) pinned to FP32 by precision constraints", precision.upper(), len(pinned))

    return LowPrecisionPlan(onnx_path, configure, facts)


def pin_fp32(trt: TensorRT, builder_config, network, names: set[str], obey: bool = False) -> list[str]:
    """Weakly typed networks: run the layers named ``names`` (the parser names layers after their ONNX nodes) in
    FP32, outputs included; PREFER_PRECISION_CONSTRAINTS (OBEY with ``obey``: fail rather than ignore one)."""
    mod = trt.module
    floats = {getattr(mod.DataType, t) for t in ("FLOAT", "HALF", "BF16") if t in mod.DataType.__members__}
    pinned = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name in names:
            layer.precision = mod.DataType.FLOAT
            for k in range(layer.num_outputs):
                if layer.get_output(k).dtype in floats:  # Shape-like outputs keep their integer type
                    layer.set_output_type(k, mod.DataType.FLOAT)
            pinned.append(layer.name)
    if pinned:
        builder_config.set_flag(mod.BuilderFlag.OBEY_PRECISION_CONSTRAINTS if obey
                                else mod.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    return pinned
