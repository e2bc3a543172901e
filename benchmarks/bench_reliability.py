"""What the safety nets cost: the engine integrity check on load, atomic writes, check-env.

Usage: python benchmarks/bench_reliability.py WORK_DIR [--repeat N]
WORK_DIR holds an engine and its sidecar (from `trtdeploy convert` with a TensorRT config).
Prints a Markdown table for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trtdeploy.backends.tensorrt.backend import check_engine_file
from trtdeploy.utils.fileio import atomic_write_bytes


def timed(fn, repeat: int) -> tuple[float, float]:
    """Median and minimum wall time of ``fn`` in milliseconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), min(times)


def plain_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    engine = next(args.work_dir.glob("*.engine"))
    sidecar = json.loads(engine.with_name(engine.name + ".json").read_text())
    data = engine.read_bytes()
    mb = len(data) / 1e6
    rows = [("engine integrity check on load (size + sha256)", *timed(lambda: check_engine_file(engine, sidecar),
                                                                         args.repeat))]
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        target = Path(tmp) / "copy.engine"
        rows.append(("plain write (no fsync)", *timed(lambda: plain_write(target, data), args.repeat)))
        rows.append(("atomic write (temp + fsync + rename)", *timed(lambda: atomic_write_bytes(target, data),
                                                                     args.repeat)))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rows.append(("`trtdeploy check-env --json` (whole process)",
                 *timed(lambda: subprocess.run([sys.executable, "-m", "trtdeploy", "check-env", "--json"], env=env,
                                               capture_output=True, check=True), max(1, args.repeat // 2))))
    print(f"engine: {engine} ({mb:.1f} MB), {args.repeat} repeats\n")
    print("| step | median ms | min ms |")
    print("| --- | ---: | ---: |")
    for name, median, best in rows:
        print(f"| {name} | {median:.1f} | {best:.1f} |")


if __name__ == "__main__":
    main()
