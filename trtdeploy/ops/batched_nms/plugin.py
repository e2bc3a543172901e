"""TensorRT plugin for ``mmdeploy::TRTBatchedNMS`` (MMDeploy's node: names, fields, output order).

Inputs: boxes [N, B, 1 or C, 4] float32 (x1, y1, x2, y2), scores [N, B, C] float32.
Outputs: dets [N, keep_topk, 5] float32 (x1, y1, x2, y2, score), labels [N, keep_topk] int64
and, with return_index=1, the box index [N, keep_topk] int64. int64 because the exported graph
declares them so and TensorRT >= 10 refuses a graph output whose plugin type differs. Padding
rows: dets 0, label -1, index -1. What is computed: ``function.py``'s semantics, in ``reference.py``'s steps (the best
``topk`` (box, class) pairs, class-aware greedy NMS, the first ``keep_topk`` survivors).
``is_normalized`` is accepted for MMDeploy compatibility and changes nothing (IoU is
torchvision's, no +1 pixel); ``clip_boxes=1`` clamps box coordinates to [0, 1] first.
"""
from __future__ import annotations

from typing import Mapping

from ..plugins import PluginSpec


class BatchedNMSPlugin(PluginSpec):
    def check_values(self, values: Mapping, where: str) -> None:
        from ...errors import BuildError

        if values["num_classes"] == -1:  # MMDeploy's plugin requires it; it is checked against the scores
            raise BuildError(f"{where}: required attribute 'num_classes' is missing; add it to the node")

    def num_outputs(self, values: Mapping) -> int:
        return 3 if values["return_index"] else 2

    def output_dtypes(self, trt, values: Mapping, input_types: list) -> list:
        return [trt.DataType.FLOAT] + [trt.DataType.INT64] * (self.num_outputs(values) - 1)

    def io_types(self, trt, values: Mapping, num_inputs: int) -> list:
        return [trt.DataType.FLOAT] * num_inputs + self.output_dtypes(trt, values, [])

    def output_shapes(self, trt, values: Mapping, inputs: list, exprs) -> list:
        keep = exprs.constant(values["keep_topk"])
        dets = trt.DimsExprs(3)
        dets[0], dets[1], dets[2] = inputs[0][0], keep, exprs.constant(5)
        outs = [dets]
        for _ in range(self.num_outputs(values) - 1):
            per_image = trt.DimsExprs(2)
            per_image[0], per_image[1] = inputs[0][0], keep
            outs.append(per_image)
        return outs

    def check_inputs(self, values: Mapping, shapes: list[tuple], where: str) -> None:
        from ...errors import BuildError

        if len(shapes) != 2 or len(shapes[0]) != 4 or len(shapes[1]) != 3 or shapes[0][3] not in (-1, 4):
            raise BuildError(f"{where}: takes boxes [N, B, 1 or C, 4] and scores [N, B, C], got shapes {shapes}")
        classes = shapes[1][2]
        if classes != -1 and classes != values["num_classes"]:
            raise BuildError(f"{where}: attribute 'num_classes' is {values['num_classes']} but scores have "
                             f"{classes} classes (shape {list(shapes[1])}); export num_classes={classes}")
        if shapes[0][2] not in (-1, 1, classes):
            raise BuildError(f"{where}: boxes dimension 2 must be 1 (shared) or {classes} (per class), "
                             f"got shape {list(shapes[0])}")

    def workspace_size(self, values: Mapping, input_shapes: list[tuple], output_shapes: list[tuple]) -> int:
        """The scratch arrays of ``kernel.Workspace`` for these shapes (histograms, keys, ranked candidates, bits)."""
        from .workspace import candidates, workspace_bytes

        num_images, num_boxes, num_classes = input_shapes[1]
        pairs = num_boxes * num_classes
        return workspace_bytes(num_images, pairs, candidates(pairs, values["topk"]))

    def enqueue(self, values: Mapping, inputs: list, outputs: list, workspace) -> None:
        import torch

        from .kernel import batched_nms

        batched_nms(inputs[0], inputs[1], topk=values["topk"], keep_topk=values["keep_topk"],
                    score_threshold=values["score_threshold"], iou_threshold=values["iou_threshold"],
                    background_label_id=values["background_label_id"], clip_boxes=bool(values["clip_boxes"]),
                    workspace=workspace, out=(outputs[0], outputs[1], outputs[2] if len(outputs) > 2 else
                                              torch.empty_like(outputs[1])))

