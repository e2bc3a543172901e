"""ONNX Runtime's Q/DQ scheme: the QDQ patterns its CPU provider fuses into integer kernels (QLinearConv, QGemm,
MatMulInteger, QLinearAdd), with uint8 activations, int32 biases and uint8 weights (zero point 128).

uint8 weights select its U8U8 kernels: on x86 CPUs without VNNI (AVX2, AVX-512 before Cascade Lake / Zen 4)
the U8S8 kernels add pairs of products in int16 (vpmaddubsw), which saturates. Measured on an AVX2 EPYC: an
MMDeploy-style detector matched 5 of 10 detections with int8 weights, 8 of 10 with 7-bit ones (ONNX Runtime's
"reduce_range"), 10 of 10 with uint8 weights. The artefact runs wherever it is copied, so it is uint8 on every
machine."""
from __future__ import annotations

from typing import Iterable

import onnx

from ...passes import quantize

# Ops ONNX Runtime fuses into integer kernels when every float input comes from DequantizeLinear and the output
# goes to QuantizeLinear, and ops it runs on the integers when input and output share one scale.
ORT_COMPUTE_OPS = ("Conv", "Gemm", "MatMul", "Add", "Mul", "Concat", "GlobalAveragePool", "AveragePool")
ORT_SAME_SCALE_OPS = ("MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Resize")


def onnxruntime_placement(model: onnx.ModelProto, targets: list[quantize.QuantTarget], exclude_nodes: Iterable[str] = (),
                          exclude_op_types: Iterable[str] = ()) -> quantize.Placement:
    """ONNX Runtime's QDQ format: Q/DQ on the inputs and the output (after a following Relu, which the uint8 zero
    point makes redundant) of each quantized op, and one scale across data-movement ops."""
    exclude_nodes, exclude_op_types = list(exclude_nodes), list(exclude_op_types)
    view = quantize.GraphView(model)
    placement = quantize.weight_placement(targets)
    weighted = {t.node for t in targets}
    features = _features(view, quantize.quantization_targets(model))  # every weighted layer, quantized or not

    def quantize_output(tensor: str) -> str:
        after = view.consumers.get(tensor, [])
        if len(after) == 1 and after[0].op_type == "Relu" and tensor not in view.outputs:
            tensor = after[0].output[0]
        if tensor not in view.outputs:
            for consumer in view.consumers.get(tensor, []):
                placement.add(tensor, consumer.name)
        return tensor

    for node in model.graph.node:
        if quantize.excluded(node, exclude_nodes, exclude_op_types):
            continue
        acts = view.activations(node)
        only_activations = bool(acts) and len(acts) == len([i for i in node.input if i])
        if node.name in weighted or (node.op_type in ORT_COMPUTE_OPS and node.op_type not in ("Conv", "Gemm")
                                     and only_activations and node.output[0] in features):
            for tensor in acts:
                placement.add(tensor, node.name)
            if node.output[0] in features:  # a last layer's output (a head's boxes and scores) stays float
                quantize_output(node.output[0])
        elif node.op_type in ORT_SAME_SCALE_OPS and acts and acts[0] in placement.edges and node.output[0] in features:
            placement.add(acts[0], node.name)
            placement.groups.append({acts[0], quantize_output(node.output[0])})
    return placement


def _features(view: quantize.GraphView, layers: list[quantize.QuantTarget]) -> set[str]:
    """The float tensors that flow into a weighted layer's input and reach no graph output through unweighted nodes
    only. The rest (a head's logits and boxes, their decoding, a lowered NMS or RoIAlign's coordinates) is
    post-processing: in INT8 its offsets and coordinates lose the precision the result depends on (an MMDeploy-style
    detector matched 3 of 10 detections with the NMS quantized, 6 of 10 with only its float path to the outputs
    kept float)."""
    upstream: set[str] = set()
    stack = [t.activation for t in layers]
    while stack:
        tensor = stack.pop()
        if tensor not in upstream:
            upstream.add(tensor)
            stack.extend(view.activations(view.producer[tensor]) if tensor in view.producer else ())
    weighted, tail = {t.node for t in layers}, set()
    stack = list(view.outputs)
    while stack:
        tensor = stack.pop()
        if tensor not in tail:
            tail.add(tensor)
            node = view.producer.get(tensor)
            stack.extend(view.activations(node) if node is not None and node.name not in weighted else ())
    return upstream - tail


SCHEME = "onnxruntime"
quantize.SCHEMES.register(SCHEME)(quantize.Scheme(place=onnxruntime_placement, unsigned_activations=True,
                                                  int32_bias=True, unsigned_weights=True))
