"""An op added from outside the package: one CustomOp description registered here, nothing else.

Its symbolic writes the node through the description, a convert on ONNX Runtime lowers it with the
description's checked values, and the 'auto' route keeps or lowers it per op and per backend, the way
docs/architecture.md ("Add an op") says a new op plugs in.
"""
from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch

import trtdeploy
from conftest import CONFIGS
from trtdeploy.errors import BuildError
from trtdeploy.ops import CustomOp, Field, register_op
from trtdeploy.passes import lower_custom_ops


def lower_scale_add(values: dict, node: onnx.NodeProto, e) -> None:
    """y = x * scale + bias, in standard ONNX ops, from the node's checked field values."""
    scaled = e.op("Mul", node.input[0], e.const(np.float32(values["scale"])))
    e.output(e.op("Add", scaled, e.const(np.float32(values["bias"]))), node.output[0])


FIELDS = (Field("scale", "float", valid=lambda v: v > 0, expected="a number > 0"), Field("bias", "float", 0.0))
SCALE_ADD = register_op(CustomOp("toy", "ScaleAdd", FIELDS, lowering=lower_scale_add))
# the same node under another name, whose op prefers to stay a node where the backend serves it
KEPT_SCALE_ADD = register_op(CustomOp("toy", "KeptScaleAdd", FIELDS, lowering=lower_scale_add, prefer_lowering=False))


class ScaleAddFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, bias, op):
        return x * scale + bias

    @staticmethod
    def symbolic(g, x, scale, bias, op):
        out = op.emit(g, x, scale=scale, bias=bias)
        out.setType(x.type())
        return out


class Model(torch.nn.Module):
    def __init__(self, scale: float, op: CustomOp = SCALE_ADD):
        super().__init__()
        self.scale, self.op = scale, op

    def forward(self, x):
        return ScaleAddFunction.apply(x, self.scale, 0.5, self.op).mean(dim=(2, 3))


def _cfg(tmp_path):
    cfg = tmp_path / "toy.py"
    cfg.write_text(f"_base_ = ['{CONFIGS}/classification/classification_onnxruntime_dynamic.py']\n")
    return cfg


def test_toy_op_exports_lowers_and_runs(tmp_path):
    result = trtdeploy.convert(_cfg(tmp_path), Model(2.0), work_dir=tmp_path / "work")
    graph = onnx.load(str(result.onnx_path))
    assert not [n for n in graph.graph.node if n.domain == "toy"]  # lowered ('auto': the op prefers it)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    model = trtdeploy.load(result.backend_path)
    np.testing.assert_allclose(model(x)["output"], (x * 2.0 + 0.5).mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)
    model.close()
    with pytest.raises(BuildError, match="attribute 'scale' is -1.0 but must be a number > 0"):
        trtdeploy.convert(_cfg(tmp_path), Model(-1.0), work_dir=tmp_path / "bad")


def test_auto_route_decides_per_op_and_backend():
    buffer = io.BytesIO()
    torch.onnx.export(Model(3.0, KEPT_SCALE_ADD), (torch.rand(1, 3, 4, 4),), buffer, dynamo=False, opset_version=17)
    exported = buffer.getvalue()

    def kept(route, serves):
        graph = lower_custom_ops(onnx.load_from_string(exported), route, serves=serves).graph
        return [n.op_type for n in graph.node if n.domain == "toy"]
    assert kept("auto", lambda key: key == "toy::KeptScaleAdd") == ["KeptScaleAdd"]  # the backend serves it
    assert kept("auto", lambda key: False) == []                                     # it does not: lowered
    assert kept("plugin-free", lambda key: True) == []
