"""A seeded synthetic detection set (circles, squares, triangles) in YOLO and COCO format, for issue 14's accuracy run.

Layout under ROOT: images/{train,val}/*.jpg, labels/{train,val}/*.txt (YOLO: class cx cy w h, normalised),
data.yaml (ultralytics' dataset file) and annotations/{train,val}.json (COCO: boxes and polygons, category ids
1..3 named like the YOLO classes, so `trtdeploy test` maps labels by name). Same seed, same files.

    python benchmarks/make_shapes_dataset.py /tmp/h3/shapes --train 2000 --val 200 --seed 0
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """The outline of one shape: a 32-gon, a square or an equilateral triangle around (cx, cy), radius r."""
    corners = {"circle": 32, "square": 4, "triangle": 3}[kind]
    start = angle if kind != "circle" else 0.0
    return [(cx + r * math.cos(start + 2 * math.pi * k / corners), cy + r * math.sin(start + 2 * math.pi * k / corners))
            for k in range(corners)]


def make_image(rng: np.random.Generator, size: tuple[int, int]) -> tuple[Image.Image, list[tuple[int, list]]]:
    """One picture with 1-5 shapes that overlap little; returns it and [(class index, polygon), ...]."""
    h, w = size
    background = rng.integers(0, 256, 3)
    pixels = np.clip(background + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    draw = ImageDraw.Draw(img)
    placed: list[tuple[float, float, float]] = []
    objects = []
    for _ in range(int(rng.integers(1, 6))):
        for _attempt in range(20):
            r = float(rng.uniform(0.05, 0.2) * min(h, w))
            cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
            if all(math.hypot(cx - x, cy - y) > 0.8 * (r + q) for x, y, q in placed):
                break
        else:
            continue
        kind = int(rng.integers(len(CLASSES)))
        colour = rng.integers(0, 256, 3)
        while np.abs(colour - background).sum() < 150:  # keep every shape visible against the background
            colour = rng.integers(0, 256, 3)
        polygon = _polygon(CLASSES[kind], cx, cy, r, float(rng.uniform(0, 2 * math.pi)))
        draw.polygon(polygon, fill=tuple(int(c) for c in colour))
        placed.append((cx, cy, r))
        objects.append((kind, polygon))
    return img, objects


def write_split(root: Path, split: str, count: int, seed: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(seed)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        img, objects = make_image(rng, size)
        name = f"{split}_{i:05d}.jpg"
        img.save(root / "images" / split / name, quality=95)
        h, w = size
        lines = []
        images.append({"id": i + 1, "file_name": name, "height": h, "width": w})
        for kind, polygon in objects:
            xs, ys = [p[0] for p in polygon], [p[1] for p in polygon]
            x1, y1, x2, y2 = max(min(xs), 0), max(min(ys), 0), min(max(xs), w), min(max(ys), h)
            lines.append(f"{kind} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}")
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": kind + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0,
                                "segmentation": [[round(v, 2) for p in polygon for v in p]]})
        (root / "labels" / split / f"{split}_{i:05d}.txt").write_text("\n".join(lines) + "\n")
    (root / "annotations").mkdir(exist_ok=True)
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)]}
    (root / "annotations" / f"{split}.json").write_text(json.dumps(coco))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--val", type=int, default=200)
    p.add_argument("--size", type=int, default=320, help="square image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="train uses SEED, val SEED + 1")
    args = p.parse_args()
    size = (args.size, args.size)
    write_split(args.root, "train", args.train, args.seed, size)
    write_split(args.root, "val", args.val, args.seed + 1, size)
    names = "\n".join(f"  {k}: {n}" for k, n in enumerate(CLASSES))
    (args.root / "data.yaml").write_text(f"path: {args.root.resolve()}\ntrain: images/train\nval: images/val\n"
                                         f"names:\n{names}\n")
    print(f"{args.train} train and {args.val} val images in {args.root}")


if __name__ == "__main__":
    main()
