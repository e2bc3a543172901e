"""trtdeploy bench-serve: throughput and p50/p90/p99 latency of a served model per concurrency."""
from __future__ import annotations

import argparse


def _shape(text: str) -> tuple[str, list[int]]:
    name, _, dims = text.rpartition(":")
    try:
        shape = [int(d) for d in dims.lower().split("x")]
    except ValueError:
        shape = []
    if not name or not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"{text!r} must look like input:1x3x224x224")
    return name, shape


def register(sub, common) -> None:
    p = sub.add_parser(
        "bench-serve", parents=[common], help="load-test a model served by Triton (throughput, p50/p90/p99)",
        description="Send --requests requests to MODEL at each --concurrency level (closed loop: every client waits "
                    "for its answer before sending again, like perf_analyzer) and print throughput and latency "
                    "percentiles. Image models (a BYTES input) send --input; tensor models send random data.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  trtdeploy bench-serve http://127.0.0.1:8000 --model resnet18 --input demo/demo.jpg\n"
               "  trtdeploy bench-serve grpc://127.0.0.1:8001 --model resnet18_infer --concurrency 1,4,8 "
               "--requests 500 --shape input:1x3x224x224")
    p.add_argument("url", help="http://HOST:PORT (HTTP) or grpc://HOST:PORT (gRPC)")
    p.add_argument("--model", required=True, help="model name in the repository")
    p.add_argument("--concurrency", default="1,8", help="comma-separated client counts (default: %(default)s)")
    p.add_argument("--requests", type=int, default=200, help="measured requests per level (default: %(default)s)")
    p.add_argument("--input", help="image file for models that take encoded images")
    p.add_argument("--shape", type=_shape, action="append", default=[],
                   help="NAME:D0xD1x... for a tensor input with dynamic dims (repeatable)")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured requests before each level (default: %(default)s)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..serving.bench import bench_serve, parse_concurrency
    from ..utils.fileio import atomic_write_json

    results = bench_serve(args.url, args.model, parse_concurrency(args.concurrency), args.requests,
                          image=args.input, shapes=dict(args.shape), warmup=max(0, args.warmup))
    print(f"model {args.model} at {args.url}, {args.requests} requests per level")
    print(f"{'concurrency':>11} {'requests':>8} {'errors':>6} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}")
    for r in results:
        print(f"{r.concurrency:>11} {r.requests:>8} {r.errors:>6} {r.throughput:>9.1f} {r.p50_ms:>8.2f} "
              f"{r.p90_ms:>8.2f} {r.p99_ms:>8.2f}")
    for r in results:
        if r.errors:
            print(f"concurrency {r.concurrency}: {r.errors} request(s) failed; first: {r.first_error}")
    if args.json:
        atomic_write_json(args.json, [r.to_dict() for r in results])
    return 1 if any(r.errors for r in results) else 0
