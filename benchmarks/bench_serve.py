"""Serving overhead: the same converted model in-process and behind Triton (bundled server, Python backend).

Exports WORK_DIR to a temporary repository (with the ensemble), starts the real server on
127.0.0.1 with free ports, runs bench-serve's load generator at each concurrency over HTTP and
gRPC, and times ``DeployedModel.predict`` on the same encoded image in this process (decode,
pre-process, ONNX Runtime, post-process: the work the served pipeline model does).
Prints a Markdown table for benchmarks/RESULTS.md.

    python benchmarks/bench_serve.py work_dirs/resnet18 --image demo/demo.jpg --requests 200 --concurrency 1,8
"""
from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from trtdeploy.api import load
from trtdeploy.serving.bench import bench_serve, parse_concurrency
from trtdeploy.serving.repository import export_triton
from trtdeploy.serving.server import Endpoints, TritonServer, free_port


def in_process(work_dir: Path, image: Path, requests: int) -> dict:
    model = load(next(p for p in sorted(work_dir.glob("*.onnx")) if p.with_name(p.name + ".json").exists()))
    data = image.read_bytes()
    for _ in range(5):
        model.predict(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    lat = []
    start = time.perf_counter()
    for _ in range(requests):
        t = time.perf_counter()
        model.predict(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        lat.append((time.perf_counter() - t) * 1e3)
    seconds = time.perf_counter() - start
    model.close()
    p50, p90, p99 = np.percentile(lat, [50, 90, 99])
    return {"throughput": requests / seconds, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work_dir", type=Path)
    ap.add_argument("--image", type=Path, default=Path("demo/demo.jpg"))
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--name", default="model")
    args = ap.parse_args()
    levels = parse_concurrency(args.concurrency)

    rows = [("in-process `predict`", "-", 1, in_process(args.work_dir, args.image, args.requests))]
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        export_triton(args.work_dir, repo, name=args.name, ensemble=True)
        endpoints = Endpoints("127.0.0.1", free_port(), free_port(), free_port())
        with TritonServer(repo, endpoints, Path(tmp) / "server.log"):
            for model, url in ((args.name, f"http://{endpoints.http}"), (args.name, f"grpc://{endpoints.grpc}"),
                               (f"{args.name}_ensemble", f"http://{endpoints.http}")):
                for r in bench_serve(url, model, levels, args.requests, image=str(args.image)):
                    rows.append((f"Triton `{model}`", url.split(":")[0], r.concurrency, vars(r)))
    print("| path | protocol | concurrency | req/s | p50 ms | p90 ms | p99 ms |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for path, proto, conc, r in rows:
        print(f"| {path} | {proto} | {conc} | {r['throughput']:.1f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
              f"{r['p99_ms']:.2f} |")


if __name__ == "__main__":
    main()
