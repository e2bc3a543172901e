"""The image transforms calibration configs use: MMDetection 2.x and 3.x names, MMPretrain basics.

Each transform takes and returns a ``results`` dict as OpenMMLab's do: ``img`` (HWC, BGR after
``LoadImageFromFile``, as mmcv loads it), ``img_shape``, ``ori_shape``, ``scale``, ``flip``...
Only inference-time behaviour is implemented: calibration must see what deployment sees.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
from PIL import Image

from ..errors import ConfigError
from ..registry import Registry
from ..utils.image import load_image

TRANSFORMS: Registry[Callable[..., "Transform"]] = Registry("transform type")

Results = dict


class Transform:
    """A step of the pipeline: ``__call__(results) -> results``."""

    def __call__(self, results: Results) -> Results:
        raise NotImplementedError


def build_transform(cfg: Mapping, where: str) -> Transform:
    """Instantiate one ``dict(type=..., **args)``; unknown types and arguments name the known ones."""
    if not isinstance(cfg, Mapping) or "type" not in cfg:
        raise ConfigError(f"{where} must be dict(type=..., ...), got {cfg!r}")
    args = {k: v for k, v in cfg.items() if k != "type"}
    cls = TRANSFORMS.get(cfg["type"], field=f"{where}.type")
    try:
        return cls(**args)
    except TypeError as e:
        raise ConfigError(f"{where}: {cfg['type']} does not take these arguments ({e}); check its fields") from None


class Compose(Transform):
    """Run the steps in order; a step may fan one result out into several (test-time augmentation)."""

    def __init__(self, steps: list, where: str = "pipeline"):
        if not isinstance(steps, (list, tuple)):
            raise ConfigError(f"{where} must be a list of dict(type=...), got {type(steps).__name__}")
        self.steps = [build_transform(s, f"{where}[{i}]") for i, s in enumerate(steps)]

    def __call__(self, results: Results) -> Results | list[Results]:
        batch = [results]
        for step in self.steps:
            out = []
            for r in batch:
                r = step(r)
                out.extend(r if isinstance(r, list) else [r])
            batch = out
        return batch[0] if len(batch) == 1 else batch


def _size(value, where: str) -> tuple[int, int]:
    """An OpenMMLab ``(w, h)`` pair or a single int."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value), int(value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    raise ConfigError(f"{where} must be an int or a (width, height) pair, got {value!r}")


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    if img.shape[1] == w and img.shape[0] == h:
        return img
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))


@TRANSFORMS.register("LoadImageFromFile")
class LoadImageFromFile(Transform):
    def __init__(self, to_float32: bool = False, color_type: str = "color", channel_order: str = "bgr", **ignored: Any):
        self.to_float32 = to_float32
        self.bgr = channel_order == "bgr"

    def __call__(self, results: Results) -> Results:
        path = results.get("img_path") or results.get("filename")
        img = load_image(path)
        img = img[..., ::-1].copy() if self.bgr else img
        if self.to_float32:
            img = img.astype(np.float32)
        results.update(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2])
        return results


@TRANSFORMS.register("LoadAnnotations")
class LoadAnnotations(Transform):
    """Calibration needs no labels; accepted so that users' test pipelines work unchanged."""

    def __init__(self, **ignored: Any):
        pass

    def __call__(self, results: Results) -> Results:
        return results


@TRANSFORMS.register("MultiScaleFlipAug")
class MultiScaleFlipAug(Transform):
    """MMDetection 2.x test-time augmentation: one result per (scale, flip)."""

    def __init__(self, transforms: list, img_scale=None, scale_factor=None, flip: bool = False,
                 flip_direction="horizontal"):
        if img_scale is None and scale_factor is None:
            raise ConfigError("MultiScaleFlipAug needs img_scale or scale_factor")
        scales = img_scale if img_scale is not None else scale_factor
        self.scales = scales if isinstance(scales, list) else [scales]
        self.key = "scale" if img_scale is not None else "scale_factor"
        self.flips = [False, True] if flip else [False]
        self.transforms = Compose(transforms, "MultiScaleFlipAug.transforms")

    def __call__(self, results: Results) -> list[Results]:
        out = []
        for scale in self.scales:
            for flip in self.flips:
                r = self.transforms({**results, self.key: scale, "flip": flip})
                out.extend(r if isinstance(r, list) else [r])
        return out


@TRANSFORMS.register("Resize")
class Resize(Transform):
    """``img_scale`` (2.x) / ``scale`` (3.x) as (w, h), or ``size`` (MMPretrain 0.x, -1 keeps the ratio)."""

    def __init__(self, img_scale=None, scale=None, size=None, keep_ratio: bool = True, scale_factor=None,
                 **ignored: Any):
        self.size = size
        self.scale = img_scale if img_scale is not None else scale
        if isinstance(self.scale, list) and self.scale and isinstance(self.scale[0], (list, tuple)):
            self.scale = self.scale[0]  # several train scales: test with the first
        self.scale_factor = scale_factor
        self.keep_ratio = keep_ratio

    def __call__(self, results: Results) -> Results:
        img = results["img"]
        h, w = img.shape[:2]
        if self.size is not None:
            tw, th = _size(self.size, "Resize.size")
            if th == -1:   # (short edge, -1)
                f = tw / min(h, w)
                tw, th = round(w * f), round(h * f)
            new_w, new_h = tw, th
        else:
            scale = results.get("scale", self.scale)
            factor = results.get("scale_factor") if scale is None else None
            if scale is None and factor is None:
                factor = self.scale_factor
            if factor is not None:
                new_w, new_h = round(w * float(factor)), round(h * float(factor))
            elif scale is None:
                raise ConfigError("Resize needs img_scale/scale (or to sit inside MultiScaleFlipAug with img_scale)")
            elif self.keep_ratio:
                long_edge, short_edge = max(_size(scale, "Resize.scale")), min(_size(scale, "Resize.scale"))
                f = min(long_edge / max(h, w), short_edge / min(h, w))
                new_w, new_h = int(w * f + 0.5), int(h * f + 0.5)
            else:
                new_w, new_h = _size(scale, "Resize.scale")
        results["img"] = _resize(img, new_w, new_h)
        results["img_shape"] = (new_h, new_w)
        results["scale_factor"] = (new_w / w, new_h / h)
        return results


@TRANSFORMS.register("ResizeEdge")
class ResizeEdge(Transform):
    """MMPretrain: scale so that one edge (``short`` by default) becomes ``scale``."""

    def __init__(self, scale: int, edge: str = "short", **ignored: Any):
        self.scale, self.edge = int(scale), edge

    def __call__(self, results: Results) -> Results:
        img = results["img"]
        h, w = img.shape[:2]
        ref = {"short": min(h, w), "long": max(h, w), "width": w, "height": h}[self.edge]
        f = self.scale / ref
        results["img"] = _resize(img, round(w * f), round(h * f))
        results["img_shape"] = results["img"].shape[:2]
        return results


@TRANSFORMS.register("CenterCrop")
class CenterCrop(Transform):
    def __init__(self, crop_size, **ignored: Any):
        self.w, self.h = _size(crop_size, "CenterCrop.crop_size")

    def __call__(self, results: Results) -> Results:
        img = results["img"]
        top, left = max(0, (img.shape[0] - self.h) // 2), max(0, (img.shape[1] - self.w) // 2)
        results["img"] = img[top:top + self.h, left:left + self.w]
        results["img_shape"] = results["img"].shape[:2]
        return results


@TRANSFORMS.register("RandomFlip")
class RandomFlip(Transform):
    """Flips when MultiScaleFlipAug asked for it; a ``prob`` alone flips a fixed, index-seeded share."""

    def __init__(self, flip_ratio=None, prob=None, direction="horizontal", **ignored: Any):
        self.prob = prob if prob is not None else flip_ratio
        self.direction = direction

    def __call__(self, results: Results) -> Results:
        flip = results.get("flip")
        if flip is None and self.prob:
            flip = np.random.default_rng(results.get("sample_idx", 0)).random() < float(self.prob)
        if flip:
            axis = 0 if self.direction == "vertical" else 1
            results["img"] = np.flip(results["img"], axis=axis).copy()
        results["flip"] = bool(flip)
        return results


@TRANSFORMS.register("Normalize")
class Normalize(Transform):
    def __init__(self, mean, std, to_rgb: bool = True):
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.to_rgb = to_rgb

    def __call__(self, results: Results) -> Results:
        img = results["img"]
        img = np.subtract(img[..., ::-1] if self.to_rgb else img, self.mean, dtype=np.float32)  # one fresh array
        img *= 1.0 / self.std
        results["img"] = img
        results["img_norm_cfg"] = dict(mean=self.mean.tolist(), std=self.std.tolist(), to_rgb=self.to_rgb)
        return results


@TRANSFORMS.register("Pad")
class Pad(Transform):
    """Pad bottom/right to ``size`` (w, h) or to a multiple of ``size_divisor``, with ``pad_val``."""

    def __init__(self, size=None, size_divisor=None, pad_val=0, pad_to_square: bool = False, **ignored: Any):
        if size is None and size_divisor is None and not pad_to_square:
            raise ConfigError("Pad needs size, size_divisor or pad_to_square=True")
        self.size, self.divisor, self.square = size, size_divisor, pad_to_square
        self.value = pad_val.get("img", 0) if isinstance(pad_val, Mapping) else pad_val

    def __call__(self, results: Results) -> Results:
        img = results["img"]
        h, w = img.shape[:2]
        if self.square:
            h = w = max(h, w)
        if self.size is not None:
            tw, th = _size(self.size, "Pad.size")
            h, w = max(h, th), max(w, tw)
        if self.divisor:
            d = int(self.divisor)
            h, w = -(-h // d) * d, -(-w // d) * d
        padded = np.empty((h, w, *img.shape[2:]), dtype=img.dtype)  # each element written once
        padded[:img.shape[0], :img.shape[1]] = img
        padded[img.shape[0]:] = self.value
        padded[:img.shape[0], img.shape[1]:] = self.value
        results["img"] = padded
        results["pad_shape"] = padded.shape[:2]
        return results


@TRANSFORMS.register("ImageToTensor")
class ImageToTensor(Transform):
    def __init__(self, keys=("img",)):
        self.keys = list(keys)

    def __call__(self, results: Results) -> Results:
        for key in self.keys:
            img = results[key]
            results[key] = (img[..., None] if img.ndim == 2 else img).transpose(2, 0, 1)
        results["chw"] = True
        return results


@TRANSFORMS.register("DefaultFormatBundle")
class DefaultFormatBundle(ImageToTensor):
    def __init__(self, **ignored: Any):
        super().__init__(("img",))


@TRANSFORMS.register("Collect")
class Collect(Transform):
    def __init__(self, keys=("img",), meta_keys=None):
        self.keys = list(keys)

    def __call__(self, results: Results) -> Results:
        missing = [k for k in self.keys if k not in results]
        if missing:
            raise ConfigError(f"Collect: the pipeline produced no {missing}; calibration collects 'img'")
        return results


class _Pack(Transform):
    """MMDetection/MMPretrain 3.x: CHW image; normalisation is left to the model's data_preprocessor."""

    def __init__(self, meta_keys=None, **ignored: Any):
        pass

    def __call__(self, results: Results) -> Results:
        if not results.get("chw"):
            img = results["img"]
            results["img"] = (img[..., None] if img.ndim == 2 else img).transpose(2, 0, 1)
            results["chw"] = True
        results["packed"] = True
        return results


for _name in ("PackDetInputs", "PackClsInputs", "PackInputs", "PackSegInputs"):
    TRANSFORMS.register(_name)(_Pack)
