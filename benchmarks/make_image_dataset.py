"""A 10-class image set drawn from seeds (no download): 5 shapes and 5 textures on noisy gradient backgrounds.

Used by benchmarks/bench_int8_trained.py to train and test classifiers that the test suite never sees.
The same (n, seed) gives the same images on any machine (numpy's PCG64 generator, no system fonts or codecs).

    python benchmarks/make_image_dataset.py --out DIR --n 200 --seed 2   # PNGs in DIR/<class>/ (ImageFolder)
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SIZE = 64
CLASSES = ["circle", "square", "triangle", "ring", "cross",
           "h_stripes", "v_stripes", "checker", "dots", "diagonal"]
# Seeds of the splits the benchmark uses; training never sees the calibration or test seeds.
SEEDS = {"train": 0, "calib": 1, "test": 2}
MEAN, STD = 127.5, 64.0  # pre-processing of the trained models: (pixel - MEAN) / STD, RGB


def _shape_mask(kind: int, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    d = np.hypot(u, v)
    if kind == 0:
        return d < r
    if kind == 1:
        return (np.abs(u) < 0.8 * r) & (np.abs(v) < 0.8 * r)
    if kind == 2:  # equilateral triangle: three half-planes
        angles = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.all([u * np.cos(a) + v * np.sin(a) < 0.5 * r for a in angles], axis=0)
    if kind == 3:
        return (d < r) & (d > 0.55 * r)
    return ((np.abs(u) < 0.28 * r) & (np.abs(v) < r)) | ((np.abs(v) < 0.28 * r) & (np.abs(u) < r))


def _texture_mask(kind: int, x: np.ndarray, y: np.ndarray, period: float, phase: float, sign: float) -> np.ndarray:
    w = 2 * np.pi / period
    if kind == 5:
        return np.sin(w * y + phase) > 0
    if kind == 6:
        return np.sin(w * x + phase) > 0
    if kind == 7:
        return (np.sin(w * x + phase) > 0) ^ (np.sin(w * y + phase) > 0)
    if kind == 8:
        px, py = np.mod(x + phase, period) - period / 2, np.mod(y + phase, period) - period / 2
        return np.hypot(px, py) < 0.3 * period
    return np.sin(w * (x + sign * y) / np.sqrt(2) + phase) > 0


def draw(label: int, rng: np.random.Generator) -> np.ndarray:
    """One HxWx3 uint8 image of class ``label``."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    bg = rng.uniform(30, 225, 3)
    fg = rng.uniform(30, 225, 3)
    while np.abs(fg - bg).sum() < 110:  # keep the figure visible
        fg = rng.uniform(0, 255, 3)
    gx, gy = rng.uniform(-0.6, 0.6, 2)
    ramp = (gx * (x - SIZE / 2) + gy * (y - SIZE / 2))[..., None]
    if label < 5:
        cx, cy = rng.uniform(20, SIZE - 20, 2)
        r = rng.uniform(7, 16)
        theta = rng.uniform(0, 2 * np.pi)
        u = (x - cx) * np.cos(theta) + (y - cy) * np.sin(theta)
        v = -(x - cx) * np.sin(theta) + (y - cy) * np.cos(theta)
        mask = _shape_mask(label, u, v, r)
    else:
        x0, y0 = rng.integers(0, SIZE // 4, 2)
        x1, y1 = SIZE - rng.integers(0, SIZE // 4, 2)
        patch = (x >= x0) & (x < x1) & (y >= y0) & (y < y1)
        mask = patch & _texture_mask(label, x, y, rng.uniform(6, 14), rng.uniform(0, 2 * np.pi), rng.choice([-1.0, 1.0]))
    img = np.where(mask[..., None], fg, bg) + ramp + rng.normal(0, rng.uniform(6, 28), (SIZE, SIZE, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_split(n: int, seed: int, workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (N, H, W, 3) uint8 and labels (N,), classes in turn; image i is drawn from seed (seed, i)."""
    labels = np.arange(n) % len(CLASSES)
    jobs = [(int(c), seed, i) for i, c in enumerate(labels)]
    if workers > 1:
        from multiprocessing import Pool

        with Pool(workers) as pool:
            return np.stack(pool.starmap(_draw_seeded, jobs, chunksize=256)), labels
    return np.stack([_draw_seeded(*job) for job in jobs]), labels


def _draw_seeded(label: int, seed: int, index: int) -> np.ndarray:
    return draw(label, np.random.default_rng((seed, index)))


def normalise(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 as the models were trained."""
    return ((images.astype(np.float32) - np.float32(MEAN)) / np.float32(STD)).transpose(0, 3, 1, 2).copy()


def write_image_folder(out: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """PNG files under ``out/<class>/`` (an ImageFolder dataset)."""
    from PIL import Image

    for i, (img, c) in enumerate(zip(images, labels)):
        folder = out / f"{int(c)}_{CLASSES[int(c)]}"  # sorted names keep the label order
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:05d}.png")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--seed", type=int, default=SEEDS["calib"])
    args = ap.parse_args()
    write_image_folder(args.out, *make_split(args.n, args.seed))


if __name__ == "__main__":
    main()
