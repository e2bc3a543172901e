"""The modules that are exported: a model plus the fixed output layout of its task."""
from __future__ import annotations

from typing import Mapping

import torch


class DetectorGraph(torch.nn.Module):
    """A torchvision detector as one graph; meaningful only inside ``FUNCTION_REWRITER.rewrite_context``.

    The rewriters make the detector's own ``forward`` take the pre-processed batch and return
    ``(dets, labels)`` or ``(dets, labels, masks)``; this module only fixes the output tuple.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.train(model.training)  # the exporter restores the wrapper's mode onto the model afterwards

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(input))


class SegmentorGraph(torch.nn.Module):
    """A segmentation model whose graph ends in the class map [N, 1, H, W] (or the scores [N, C, H, W])."""

    def __init__(self, model: torch.nn.Module, with_argmax: bool = True):
        super().__init__()
        self.model = model
        self.with_argmax = with_argmax
        self.train(model.training)  # the exporter restores the wrapper's mode onto the model afterwards

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out = self.model(input)
        scores = out["out"] if isinstance(out, Mapping) else out
        return scores.argmax(dim=1, keepdim=True) if self.with_argmax else scores
