"""The deployed graph takes the batch the task's pipeline already resized, normalised and padded.

torchvision detectors resize and normalise inside ``model.transform``; in the graph that
work is skipped, and boxes stay in the coordinates of the input tensor (the task maps
them back to the original image).
"""
from __future__ import annotations

from torchvision.models.detection.image_list import ImageList

from ..rewriter import FUNCTION_REWRITER


@FUNCTION_REWRITER.register("torchvision.models.detection.transform.GeneralizedRCNNTransform.forward")
def transform_forward(ctx, self, images, targets=None):
    # One size for the whole batch: the traced H and W of the input keep the graph dynamic.
    return ImageList(images, [tuple(images.shape[-2:])]), targets


@FUNCTION_REWRITER.register("torchvision.models.detection.transform.GeneralizedRCNNTransform.postprocess")
def transform_postprocess(ctx, self, result, image_shapes, original_image_sizes):
    # Masks stay [N, K, M, M] in the graph; pasting them into the image is the task's job.
    return result
