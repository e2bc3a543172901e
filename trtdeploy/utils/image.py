"""Image reading shared by run, test and calibration."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as an RGB uint8 array of shape (H, W, 3)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise InputError(f"{path} is not a readable image ({e}); pass a JPEG or PNG file") from None


def as_rgb_array(image) -> np.ndarray:
    """Accept a path, a PIL image or an HWC uint8 array."""
    if isinstance(image, (str, Path)):
        return load_image(image)
    if hasattr(image, "convert"):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"an image array must be (H, W, 3) RGB, got shape {list(arr.shape)}")
    return arr


def resize(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    h, w = size_hw
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def channels_last(shape) -> bool:
    """Whether a rank-4 image input is [N, H, W, C], TensorFlow's layout (a tf2onnx or Keras file): its last
    dimension is fixed to 1 or 3 channels and its second is not."""
    def channels(d) -> bool:
        return isinstance(d, int) and d in (1, 3)
    return len(shape) == 4 and channels(shape[3]) and not channels(shape[1])


def in_layout_of(shape, nchw: tuple[int, ...]) -> tuple[int, ...]:
    """An NCHW default size (a task's ``default_input_shape``) in the layout of the input ``shape``."""
    return (nchw[0], nchw[2], nchw[3], nchw[1]) if channels_last(shape) and len(nchw) == 4 else tuple(nchw)
