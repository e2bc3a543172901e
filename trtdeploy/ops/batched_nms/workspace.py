"""The scratch arrays of one ``kernel.batched_nms`` call, laid out in one workspace buffer.

Plain arithmetic (no Triton, no GPU), so the plugin reports the same size to TensorRT's
``get_workspace_size`` at build time on any machine that the kernel then uses at ``enqueue``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

DIGIT = 9        # key bits one radix pass settles (tl.histogram's cost grows with its bins)
BINS = 1 << DIGIT


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Workspace:
    """Byte offsets of one call's scratch arrays (each 256-byte aligned); ``zeroed`` bytes are cleared first."""

    num_images: int
    pairs: int
    k: int

    @property
    def index_bits(self) -> int:
        return max(self.pairs - 1, 1).bit_length()

    @property
    def num_passes(self) -> int:
        return _cdiv(32 + self.index_bits, DIGIT)

    @property
    def words(self) -> int:
        return _cdiv(self.k, 32)

    def _sizes(self) -> dict[str, int]:
        n, k = self.num_images, self.k
        return {"hist": n * self.num_passes * BINS * 4, "counter": n * 4, "keys": n * k * 8, "boxes": n * k * 16,
                "scores": n * k * 4, "labels": n * k * 4, "index": n * k * 4, "bits": n * k * self.words * 4}

    def offsets(self) -> dict[str, int]:
        out, at = {}, 0
        for name, size in self._sizes().items():
            out[name] = at
            at += _cdiv(size, 256) * 256
        out["end"] = at
        return out

    @property
    def nbytes(self) -> int:
        return self.offsets()["end"]

    @property
    def zeroed(self) -> int:
        return self.offsets()["keys"]  # the histograms and the counters

    def views(self, workspace: torch.Tensor) -> dict[str, torch.Tensor]:
        at, sizes = self.offsets(), self._sizes()
        dtypes = {"hist": torch.int32, "counter": torch.int32, "keys": torch.int64, "boxes": torch.float32,
                  "scores": torch.float32, "labels": torch.int32, "index": torch.int32, "bits": torch.int32}
        return {name: workspace[at[name]:at[name] + sizes[name]].view(dtypes[name]) for name in sizes}


def candidates(pairs: int, topk: int) -> int:
    """Candidates per image: the ``topk`` best (box, class) pairs, or all of them when ``topk`` <= 0."""
    return min(topk, pairs) if topk > 0 else pairs


def workspace_bytes(num_images: int, pairs: int, k: int) -> int:
    """Bytes of workspace one ``batched_nms`` call needs: ``pairs`` (box, class) pairs, ``k`` candidates per image."""
    return Workspace(num_images, pairs, k).nbytes if num_images and k else 0
