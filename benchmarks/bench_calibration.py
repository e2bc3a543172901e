"""Calibration throughput of the seed's pipeline, this checkout against another one, paired in one run (CPU).

    git worktree add --detach /tmp/old <commit>
    python benchmarks/bench_calibration.py --baseline /tmp/old [--images 24 --rounds 3]

Rows: the baseline checkout, this one with its default ``calib_config.compression`` and this one
with ``compression='none'``.

The seed's ``configs/calibration/calibration_dataset.py`` (resize to 1333x800 keeping the ratio,
normalise, pad to /32: 1x3x800x1088 float32 per image, its 2 workers) over photo-like 640x480
JPEGs (random crops of demo/demo.jpg). Each round makes ``calib_data.h5`` once with each checkout, in
alternating order, each in a fresh process (``prepare_calibration_file``, the INT8 convert's first
step, with torch's DataLoader imported before the clock starts, as in a convert from PyTorch); the
figures are images/s over the whole call (pipeline, compression, writing) and the CPU
time per image of the process and its loader workers (steadier than wall time on a shared machine).
Also reports the file sizes and checks that the files hold the same samples.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ONE_RUN = """
import resource, sys, time
from pathlib import Path
import torch.utils.data  # noqa: F401  (loaded already in a convert from PyTorch; not a per-image cost)
from trtdeploy.calibration import prepare_calibration_file
from trtdeploy.config import load_deploy_config
cfg = load_deploy_config(Path(sys.argv[1]) / "configs/classification/classification_tensorrt-int8_static-224x224.py")
work, dataset, n = Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
if sys.argv[5]:
    cfg.calib["compression"] = sys.argv[5]
(work / "calib_data.h5").unlink(missing_ok=True)
def cpu():
    return sum(r.ru_utime + r.ru_stime for r in map(resource.getrusage, (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)))
t, c = time.perf_counter(), cpu()
prepare_calibration_file(cfg, work, "input", dataset)
print("RESULT", n / (time.perf_counter() - t), (cpu() - c) / n)  # images/s, CPU s per image (workers included)
"""


def make_images(root: Path, n: int) -> None:
    """``n`` 640x480 JPEGs cut from demo/demo.jpg at random places and scales, and a COCO-style list."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    demo = Image.open(REPO / "demo" / "demo.jpg").convert("RGB")
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        w = int(demo.width * rng.uniform(0.4, 0.9))
        h = int(w * 0.75)
        x, y = rng.integers(0, demo.width - w + 1), rng.integers(0, max(demo.height - h, 0) + 1)
        crop = demo.crop((x, y, x + w, y + h)).resize((640, 480))
        (crop.transpose(Image.FLIP_LEFT_RIGHT) if i % 2 else crop).save(root / f"{i}.jpg", quality=90)
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480} for i in range(n)]
    (root / "val_annotations.json").write_text(json.dumps({"images": images, "annotations": [], "categories": []}))


def run(checkout: Path, work: Path, dataset: Path, n: int, compression: str) -> tuple[float, float]:
    """One calibration in a fresh process -> (images/s, CPU seconds per image over the process and its workers)."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    proc = subprocess.run([sys.executable, "-c", ONE_RUN, str(checkout), str(work), str(dataset), str(n), compression],
                          capture_output=True, text=True, env=env, cwd=checkout, timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"calibration with {checkout} failed:\n{proc.stderr[-2000:]}")
    rate, cpu = proc.stdout.split("RESULT")[-1].split()
    return float(rate), float(cpu)


def same_samples(a: Path, b: Path) -> bool:
    import h5py
    import numpy as np

    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        ga, gb = fa["calib_data/end2end/input"], fb["calib_data/end2end/input"]
        return sorted(ga) == sorted(gb) and all(np.array_equal(ga[k][...], gb[k][...]) for k in ga)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout (e.g. a git worktree)")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_calibration_") as tmp:
        tmp = Path(tmp)
        make_images(tmp / "images", args.images)
        dataset = tmp / "calibration_dataset.py"
        seed = (REPO / "configs/calibration/calibration_dataset.py").read_text()
        dataset.write_text(seed.replace("data_root = 'calibration/dataset/root'", f"data_root = '{tmp / 'images'}/'"))
        # name -> (checkout, calib_config.compression: "" leaves the config's)
        runs = {"baseline": (args.baseline.resolve(), ""), "new": (REPO, ""), "new, none": (REPO, "none")}
        rates: dict[str, list[float]] = {name: [] for name in runs}
        cpus: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(args.rounds):
            for name in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                rate, cpu = run(runs[name][0], tmp / name.replace(", ", "_"), dataset, args.images, runs[name][1])
                rates[name].append(rate)
                cpus[name].append(cpu)
                print(f"round {r + 1}: {name:10s} {rate:6.2f} images/s  {1e3 * cpu:6.0f} CPU ms/image", flush=True)
        files = {name: tmp / name.replace(", ", "_") / "calib_data.h5" for name in runs}
        base, base_cpu = statistics.median(rates["baseline"]), statistics.median(cpus["baseline"])
        print(f"\n{args.images} images, seed pipeline (1x3x800x1088), {args.rounds} rounds, medians:")
        for name in runs:
            rate, cpu = statistics.median(rates[name]), statistics.median(cpus[name])
            print(f"  {name:10s} {rate:6.2f} images/s x{rate / base:4.2f}   {1e3 * cpu:5.0f} CPU ms/image "
                  f"x{base_cpu / cpu:4.2f} less   file {files[name].stat().st_size / 1e6:6.1f} MB   "
                  f"same samples as baseline: {same_samples(files['baseline'], files[name])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
