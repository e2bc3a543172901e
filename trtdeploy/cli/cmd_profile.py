"""trtdeploy profile: latency percentiles and throughput across shapes and batch sizes, per backend."""
from __future__ import annotations

import argparse

from ..evaluation.benchmark import DEFAULT_SECONDS, MIN_ITERATIONS


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {minimum}")
        return value
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


def _batch_sizes(text: str) -> list[int]:
    parse = _count(1)
    return [parse(part) for part in text.split(",")]


def register(sub, common) -> None:
    p = sub.add_parser(
        "profile", parents=[common], help="measure latency and throughput across shapes, batch sizes and backends",
        description="Time each file (and the PyTorch model with --model) at each input shape: warm-up, then "
                    "timed calls for --seconds (or exactly --iterations), reporting mean/p50/p90/p99 latency and "
                    "samples per second, and a one-line summary per target. By default "
                    "the shapes are the min/opt/max of every optimization profile (or the export shape); shapes stay "
                    "inside the profiles. --per-layer adds the slowest layers (ONNX Runtime's profiler; TensorRT's "
                    "IProfiler where an engine runs); --plot draws latency against shape as a PNG.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  trtdeploy profile work_dirs/r18/end2end.onnx work_dirs/r18/end2end.engine --batch-sizes 1,4,8 "
               "--per-layer --plot latency.png")
    p.add_argument("files", nargs="+", help=".onnx and .engine files, or work dirs of `trtdeploy convert` (each stands for its model)")
    p.add_argument("--model", help="also time the PyTorch model: torchvision://<name> or <module or file.py>:<factory>")
    p.add_argument("--checkpoint", help="state dict for --model")
    p.add_argument("--deploy-cfg", help="deploy config (profiles for files without a sidecar)")
    p.add_argument("--shape", action="append", help="a shape to time, e.g. 1x3x224x224 or input:1x3x224x224 "
                                                      "(comma-separated per input; repeatable)")
    p.add_argument("--batch-sizes", type=_batch_sizes, help="batch sizes to time each shape at, e.g. 1,4,8")
    p.add_argument("--warmup", type=_count(0), default=2, help="untimed calls first (default: %(default)s)")
    p.add_argument("--seconds", type=_seconds, default=DEFAULT_SECONDS,
                   help="time budget of the timed calls per target and shape (default: %(default)s; at least "
                        f"{MIN_ITERATIONS} calls)")
    p.add_argument("--iterations", type=_count(1), help="exactly this many timed calls per shape instead of --seconds")
    p.add_argument("--per-layer", action="store_true", help="add a per-layer breakdown where the backend offers one")
    p.add_argument("--top", type=_count(1), default=10, help="layers to list with --per-layer (default: %(default)s)")
    p.add_argument("--plot", help="write a PNG of latency and throughput against shape here")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda for engines, cpu otherwise)")
    p.add_argument("--json", dest="json_out", help="also write the results as JSON here")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..evaluation import open_targets, write_json
    from ..evaluation.benchmark import format_profile, plot_latency, profile_targets
    from ..evaluation.targets import parse_shape_sets, runnable_or_fail

    if args.plot and not args.plot.lower().endswith(".png"):
        from ..errors import WorkDirError

        raise WorkDirError(f"--plot {args.plot}: the plot is a PNG; give a path ending in .png")
    targets = open_targets(args.files, args.deploy_cfg, args.model, args.checkpoint, args.device)
    try:
        names = runnable_or_fail(targets, "profile")[0].model.runner.input_names
        shapes = parse_shape_sets(args.shape, names)
        results = profile_targets(targets, shapes, args.batch_sizes, args.warmup, args.iterations, args.per_layer,
                                  args.seconds)
    finally:
        for t in targets:
            t.close()
    print(format_profile(results, args.top))
    if args.plot:
        plot_latency(results, args.plot)
        print(f"plot: {args.plot}")
    if args.json_out:
        write_json(args.json_out, {"warmup": args.warmup, "iterations": args.iterations, "seconds": args.seconds,
                                   "results": [r.to_dict() for r in results]})
        print(f"results: {args.json_out}")
    return 0
