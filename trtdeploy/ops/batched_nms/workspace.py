"""The scratch arrays of one ``kernel.batched_nms`` call, laid out in one workspace buffer.

Plain arithmetic (no Triton, no GPU), so the plugin reports the same size to TensorRT's
``get_workspace_size`` at build time on any machine that the kernel then uses at ``enqueue``.
"""
from __future__ import annotations

from dataclasses import dataclass

DIGIT = 10       # key bits one radix pass settles (tl.histogram's cost grows with its 2**DIGIT bins)
SPARE_BITS = 12  # low key bits the passes may leave unsettled: the boundary bin's <= 2**12 keys are ranked instead


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _aligned(size: int) -> int:
    return _cdiv(size, 256) * 256


@dataclass(frozen=True)
class Workspace:
    """Byte offsets of one call's scratch arrays (each 256-byte aligned); ``zeroed`` bytes are cleared first.

    The radix passes settle the keys' top bits only, ``DIGIT`` a pass, and stop with at most ``SPARE_BITS``
    unsettled: the compaction then takes every key at or above the boundary bin, fewer than ``k`` above it
    and at most ``2**low_bits`` in it, so ``slots = k + 2**low_bits`` keys per image, ranked by counting.
    """

    num_images: int
    pairs: int
    k: int

    @property
    def index_bits(self) -> int:
        return max(self.pairs - 1, 1).bit_length()

    @property
    def num_passes(self) -> int:
        return max(1, _cdiv(32 + self.index_bits - SPARE_BITS, DIGIT))

    @property
    def low_bits(self) -> int:
        """Key bits below the last settled digit (0 <= low_bits <= SPARE_BITS since DIGIT <= SPARE_BITS)."""
        return max(32 + self.index_bits - self.num_passes * DIGIT, 0)

    @property
    def slots(self) -> int:
        return self.k + (1 << self.low_bits)

    def _sizes(self) -> dict[str, int]:
        n, k = self.num_images, self.k
        return {"hist": n * self.num_passes * (1 << DIGIT) * 4, "counter": n * 4, "keys": n * self.slots * 8,
                "boxes": n * k * 16, "scores": n * k * 4, "labels": n * k * 4, "index": n * k * 4}

    def offsets(self) -> dict[str, int]:
        out, at = {}, 0
        for name, size in self._sizes().items():
            out[name] = at
            at += _aligned(size)
        out["end"] = at
        return out

    @property
    def nbytes(self) -> int:
        return self.offsets()["end"]

    @property
    def zeroed(self) -> int:
        return self.offsets()["keys"]  # the histograms and the counters


def candidates(pairs: int, topk: int) -> int:
    """Candidates per image: the ``topk`` best (box, class) pairs, or all of them when ``topk`` <= 0."""
    return min(topk, pairs) if topk > 0 else pairs


def workspace_bytes(num_images: int, pairs: int, k: int) -> int:
    """Bytes of workspace one ``batched_nms`` call needs: ``pairs`` (box, class) pairs, ``k`` candidates per image."""
    return Workspace(num_images, pairs, k).nbytes if num_images and k else 0
