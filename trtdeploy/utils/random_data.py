"""Seeded stand-in data for a model input when the user gives none (numerics checks, compare, profile, bench)."""
from __future__ import annotations

import numpy as np


def random_array(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Standard normal floats (what normalised images look like); 0/1 for integer and boolean inputs, which stay
    valid token ids, mask values and indices whatever the model's vocabulary or table size."""
    dtype = np.dtype(dtype)
    values = rng.standard_normal(tuple(shape)) if dtype.kind in "fc" else rng.integers(0, 2, tuple(shape))
    return values.astype(dtype)
