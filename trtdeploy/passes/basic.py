"""The passes every conversion runs: simplify, shape inference, checking, FP16."""
from __future__ import annotations

import warnings

import onnx

from ..errors import BuildError
from ..utils.logging import logger
from ..utils.onnx_graph import all_nodes


# Ops some onnxslim pass (0.1.x: eliminations, fusions, shape folding) rewrites whatever their inputs are.
SLIM_REWRITES = frozenset({
    "Identity", "Dropout", "Pad", "Cast", "Reshape", "Slice", "Expand", "Transpose", "Concat", "Split", "Resize",
    "Unsqueeze", "Squeeze", "Shape", "Size", "Gather", "BatchNormalization", "MatMul", "Erf", "Constant",
    "ConstantOfShape", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "Where", "Range"})
# Ops it rewrites when one operand is a constant (x * 1, x + 0, Conv followed by Add/Mul of a constant).
SLIM_CONSTANT_OPERAND = frozenset({"Add", "Sub", "Mul", "Div"})


def nothing_to_simplify(model: onnx.ModelProto) -> bool:
    """True when onnxslim would return ``model`` unchanged: no node it rewrites by op type, no arithmetic on a
    constant, no node whose inputs are all constant (folding), no duplicate node (CSE), no dead node. Plain
    exported CNNs (Conv, Relu, pooling, residual Add, Flatten, Gemm) are such graphs; skipping saves onnxslim's
    import (sympy) and a serialisation of the weights."""
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    consumed = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    seen = set()
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type in SLIM_REWRITES or any(a.g.node for a in node.attribute):
            return False
        inputs = [i for i in node.input if i]
        if inputs and all(i in constants for i in inputs):
            return False
        if node.op_type in SLIM_CONSTANT_OPERAND and any(i in constants for i in inputs):
            return False
        key = (node.op_type, tuple(node.input), tuple(a.SerializeToString() for a in node.attribute))
        if key in seen or not any(o in consumed for o in node.output):
            return False
        seen.add(key)
    return True


def _bypass_identities(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop (in place) the Identity nodes that are not graph outputs, their readers reading the source instead
    (torch.onnx writes one per reuse of a folded weight); graphs with subgraphs are left alone."""
    graph = model.graph
    if any(a.g.node or a.graphs for n in graph.node for a in n.attribute):
        return model
    outputs = {o.name for o in graph.output}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.domain in ("", "ai.onnx")
             and n.output[0] not in outputs}
    if not alias:
        return model

    def source(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name
    kept = [n for n in graph.node if not (n.op_type == "Identity" and n.output and n.output[0] in alias)]
    for node in kept:
        node.input[:] = [source(i) for i in node.input]
    del graph.node[:]
    graph.node.extend(kept)
    return model


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants and remove dead/identity nodes with onnxslim; outputs are unchanged.

    A graph with nothing to simplify (``nothing_to_simplify``) is returned as it is, without running onnxslim.
    If onnxslim fails on an unusual graph the unsimplified model is kept (with a warning):
    simplification is an optimisation, never a reason to fail a conversion.
    """
    if nothing_to_simplify(_bypass_identities(model)):
        logger.debug("onnxslim has nothing to rewrite in this graph; skipped")
        return model
    import onnxslim

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slim = onnxslim.slim(model)
    except Exception as e:  # onnxslim raises many kinds of errors on exotic graphs
        logger.warning("onnxslim could not simplify the graph (%s); continuing with the exported graph", e)
        return model
    return slim if isinstance(slim, onnx.ModelProto) else model


def name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give (in place) every unnamed node, and every node whose name an earlier node took, a unique name
    ('<op_type>_<index>'): INT8's Q/DQ placement, fp32_nodes patterns, sensitivity and bisect address nodes by
    name, and ONNX allows files without them (hand-written and some converters' graphs). Only names change."""
    taken = {n.name for n in model.graph.node if n.name}
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if node.name and node.name not in seen:
            seen.add(node.name)
            continue
        name, k = f"{node.op_type}_{i}", 0
        while name in taken or name in seen:
            k += 1
            name = f"{node.op_type}_{i}_{k}"
        node.name = name
        seen.add(name)
    return model


def builds_as_read(model: onnx.ModelProto) -> bool:
    """A prediction, made before the passes run: whether they will leave the file ``model`` building the engine
    it builds as read (no custom-domain node to lower, no parser fix to make, nothing for onnxslim once Identity
    aliases are bypassed, which this does in place and which changes no value). ``builds_the_same`` checks after."""
    from .parser_fixes import parser_problems

    nodes = list(all_nodes(model.graph))
    if any(n.domain not in ("", "ai.onnx") for n in nodes) or any(parser_problems(n) for n in nodes):
        return False
    return nothing_to_simplify(_bypass_identities(model))


def builds_the_same(model: onnx.ModelProto, original_nodes: list[bytes]) -> bool:
    """Whether ``model``'s nodes are ``original_nodes`` (serialized, as read) after no rewrite but the ones that
    change no value: Identity nodes bypassed (``simplify``) and nodes named (``name_nodes``). With every other
    field as read, such a graph builds the engine the file as read builds."""
    light = onnx.ModelProto()
    light.graph.node.extend(onnx.NodeProto.FromString(b) for b in original_nodes)
    light.graph.output.extend(model.graph.output)
    name_nodes(_bypass_identities(light))
    return [n.SerializeToString() for n in light.graph.node] == [n.SerializeToString() for n in model.graph.node]


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Annotate intermediate tensors with shapes where ONNX can infer them."""
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception as e:
        logger.debug("shape inference failed: %s", e)
        return model


def check(model: onnx.ModelProto) -> onnx.ModelProto:
    """Raise BuildError unless the model passes ``onnx.checker`` (structure, types, opsets; the weights' bytes
    are not sent to the checker, which only asks that they exist: ``weightless``)."""
    from ..utils.onnx_graph import weightless

    try:
        onnx.checker.check_model(weightless(model), full_check=False)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0]
        raise BuildError(f"the ONNX graph is invalid: {first}") from None
    return model

