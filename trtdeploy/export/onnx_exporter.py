"""Export a module to ONNX with the legacy (TorchScript) exporter.

The dynamo exporter fails on detectors (data-dependent guards), so we use the
legacy one for everything: one code path, measured to work on every model we ship.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from typing import Iterator

from ..config import DeployConfig
from ..errors import BuildError
from .rewriter import FUNCTION_REWRITER


@contextlib.contextmanager
def _fast_path_off() -> Iterator[None]:
    """nn.MultiheadAttention's fused fast path (taken under no_grad) exports to a node ONNX lacks: keep it off."""
    import torch

    was = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(was)


@contextlib.contextmanager
def _stdout_to_nowhere() -> Iterator[None]:
    """The exporter's C++ side prints the whole TorchScript graph (100s of KB) to stdout when a node fails."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def export_onnx(model, example_inputs: tuple, cfg: DeployConfig):
    """Trace ``model`` on ``example_inputs`` (rewriters active) and return the ONNX ModelProto."""
    import onnx
    import torch

    buffer = io.BytesIO()
    names_in = cfg.input_names[: len(example_inputs)]
    try:
        with FUNCTION_REWRITER.rewrite_context(cfg), torch.no_grad(), warnings.catch_warnings(), _fast_path_off(), \
                _stdout_to_nowhere():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, example_inputs, buffer,
                dynamo=False,
                opset_version=cfg.opset,
                input_names=names_in,
                output_names=cfg.output_names,
                dynamic_axes=cfg.dynamic_axes or None,
                export_params=cfg.onnx.get("export_params", True),
                keep_initializers_as_inputs=cfg.onnx.get("keep_initializers_as_inputs", False),
                do_constant_folding=True,
            )
    except KeyboardInterrupt:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BuildError(f"ONNX export failed: {first}; if it comes from post-processing, register a rewriter "
                         f"for that function with trtdeploy.export.FUNCTION_REWRITER.register('<dotted.name>')") from e
    model_proto = onnx.load_from_string(buffer.getvalue())
    produced = [o.name for o in model_proto.graph.output]
    if len(produced) != len(cfg.output_names):
        raise BuildError(f"the model has {len(produced)} outputs but onnx_config.output_names lists "
                         f"{len(cfg.output_names)} ({cfg.output_names}); give one name per output")
    return model_proto
