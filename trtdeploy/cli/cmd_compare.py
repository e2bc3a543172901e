"""trtdeploy compare: the same inputs through PyTorch / ONNX Runtime / TensorRT, outputs judged against tolerances."""
from __future__ import annotations

import argparse
from pathlib import Path

EXIT_MISMATCH = 1


def register(sub, common) -> None:
    p = sub.add_parser(
        "compare", parents=[common], help="compare outputs across PyTorch, ONNX Runtime and TensorRT",
        description="Run the same inputs through each file (and the PyTorch model with --model) and report, per "
                    "output, the max absolute and relative error and the cosine similarity against the reference "
                    "(PyTorch if given, else the first file). Exits 1 when an output is outside tolerance. An element "
                    "passes when |got - ref| <= atol + rtol * |ref|. --bisect marks every intermediate tensor of two "
                    "ONNX graphs as an output and names the first node where they diverge (e.g. end2end.onnx vs the "
                    "FP16 graph end2end_fp16.onnx that an FP16 TensorRT build writes).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  trtdeploy compare work_dirs/r18/end2end.onnx work_dirs/r18/end2end.engine --model torchvision://resnet18 "
               "--input demo/demo.jpg --atol 1e-3\n"
               "  trtdeploy compare work_dirs/r18/end2end.onnx work_dirs/r18/end2end_fp16.onnx --bisect --atol 1e-2 "
               "--rtol 1e-2")
    p.add_argument("files", nargs="+", help=".onnx and .engine files, or work dirs of `trtdeploy convert` (each stands for its model)")
    p.add_argument("--model", help="the PyTorch model as reference: torchvision://<name> or <module or file.py>:<factory>")
    p.add_argument("--checkpoint", help="state dict for --model")
    p.add_argument("--deploy-cfg", help="deploy config: task settings, and tolerances from its compare_config")
    p.add_argument("--input", nargs="+", help="images to pre-process as inputs, or .npz files of arrays named after "
                                              "the inputs (.npy: a one-input model); the report keeps the worst case "
                                              "(default: random normal data, 0/1 for integer inputs)")
    p.add_argument("--shape", action="append", help="input shape, e.g. 1x3x224x224 or input:1x3x224x224 (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input (default: %(default)s)")
    for kind, text in (("atol", "absolute"), ("rtol", "relative"), ("cosine", "minimum cosine similarity")):
        p.add_argument(f"--{kind}", nargs="+", metavar="[OUTPUT:]VALUE",
                       help=f"{text} tolerance for every output, or OUTPUT:VALUE for one")
    p.add_argument("--bisect", action="store_true", help="find the first node where two ONNX graphs diverge")
    p.add_argument("--save-outputs", help="write the inputs and every model's outputs to this .npz (e.g. on a GPU "
                                          "machine, to compare elsewhere with --load-outputs)")
    p.add_argument("--load-outputs", help="an .npz from --save-outputs: its inputs are used, and its outputs are "
                                          "compared like the models' own")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda for engines, cpu otherwise)")
    p.add_argument("--json", dest="json_out", help="also write the results as JSON here")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..config import load_deploy_config
    from ..errors import InputError, ModelError
    from ..evaluation import Tolerances, compare_outputs, format_table, open_targets, worst_case, write_json
    from ..evaluation.compare import save_outputs
    from ..evaluation.targets import runnable_or_fail

    for image in args.input or []:  # before the models: a missing image is the answer, not "nothing to compare"
        if not Path(image).is_file():
            raise InputError(f"--input {image} does not exist; pass image files (JPEG or PNG), or leave --input out "
                             f"to compare on random data")
    cfg = load_deploy_config(args.deploy_cfg) if args.deploy_cfg else None
    tol = Tolerances.from_sources({k: getattr(args, k) for k in ("atol", "rtol", "cosine")},
                                  cfg.raw.get("compare_config") if cfg else None, f"{args.deploy_cfg}: compare_config")
    targets = open_targets(args.files, cfg, args.model, args.checkpoint, args.device)
    try:
        runnable = runnable_or_fail(targets, "compare")
        if len(runnable) < 2 and not (args.load_outputs or args.save_outputs):
            raise ModelError(f"nothing to compare: only {runnable[0].label} runs here; pass a second model file, "
                             f"the PyTorch model with --model, or outputs saved elsewhere with --load-outputs")
        reference = runnable[0]
        feeds, saved = _inputs(args, reference)
        for feed, origin in feeds:
            print(f"inputs: {', '.join(f'{k} {list(v.shape)}' for k, v in feed.items())} from {origin}")
        print(f"reference: {reference.label}; tolerances: {tol.describe()}")
        runs, produced = [], []
        for i, (feed, _) in enumerate(feeds):
            outputs = {t.label: t.model(feed) for t in runnable}
            produced.append(outputs)
            candidates = {**{label: v for label, v in outputs.items() if label != reference.label},
                          **{f"saved: {label}": v for label, v in (saved[i] if saved else {}).items()}}
            runs.append([r for label, got in candidates.items()
                         for r in compare_outputs(outputs[reference.label], got, tol, reference.label, label)])
        results = worst_case(runs)
        if args.save_outputs:
            save_outputs(args.save_outputs, [feed for feed, _ in feeds], produced)
        bisected = _bisect(runnable, feeds[0][0], tol, results if len(feeds) == 1 else []) if args.bisect else None
    finally:
        for t in targets:
            t.close()
    if results:
        print(format_table(["candidate", "output", "max abs", "max rel", "mean abs", "cosine", "result"],
                           [[r.candidate, r.output, r.max_abs, r.max_rel, r.mean_abs, f"{r.cosine:.6f}",
                             "PASS" if r.passed else f"FAIL{' (' + r.note + ')' if r.note else ''}"] for r in results],
                           digits=6))
    for t in targets:
        if not t.runnable:
            print(f"{t.label}: cannot run here ({t.why}): {t.reason}")
    if bisected is not None:
        print(bisected["text"])
    if args.json_out:
        write_json(args.json_out, {"reference": reference.label, "inputs": [origin for _, origin in feeds],
                                   "tolerances": tol.__dict__,
                                   "results": [r.to_dict() for r in results],
                                   "bisect": bisected["data"] if bisected else None})
        print(f"results: {args.json_out}")
    if args.save_outputs:
        print(f"inputs and outputs saved: {args.save_outputs}")
    if not results:
        print("nothing compared (one model): its inputs and outputs are saved")
        return 0
    failed = [r for r in results if not r.passed]
    diverged = bool(bisected and bisected["data"]["divergence"])
    print(f"FAILED: {len(failed)} of {len(results)} output comparisons outside tolerance" if failed else
          f"PASSED: {len(results)} output comparisons within tolerance")
    return EXIT_MISMATCH if failed or diverged else 0


def _inputs(args, reference) -> tuple[list[tuple[dict, str]], list[dict] | None]:
    """The feeds (with where each came from) and, with --load-outputs, the saved outputs per feed."""
    from ..errors import ConfigError
    from ..evaluation.compare import load_outputs
    from ..evaluation.targets import make_feed, parse_shapes

    if args.load_outputs:
        if args.input or args.shape:
            raise ConfigError(f"--load-outputs {args.load_outputs} brings its own inputs; drop --input/--shape")
        feeds, saved = load_outputs(args.load_outputs)
        return [(feed, f"{args.load_outputs} (run {i})") for i, feed in enumerate(feeds)], saved
    shapes = parse_shapes(args.shape, reference.model.runner.input_names)
    return [make_feed(reference, image, shapes, args.seed) for image in args.input or [None]], None


def _bisect(runnable, feed, tol, table) -> dict:
    """Bisect the first two ONNX files among the runnable targets (an engine's stand-in counts).

    A divergence at a graph output whose row is in ``table`` (the same pair on the same input) points
    to that row instead of printing other figures for it: graph optimisations, on in the table's
    sessions and off in the hunt, may move the last digits.
    """
    from ..errors import ModelError
    from ..evaluation import bisect_onnx

    graphs = [t for t in runnable if t.source.endswith(".onnx")]
    if len(graphs) < 2:
        raise ModelError(f"--bisect needs two ONNX graphs that run here; got {[t.label for t in runnable]}: pass two "
                         f".onnx files (e.g. end2end.onnx and end2end_fp16.onnx)")
    a, b = graphs[:2]
    divergence, compared = bisect_onnx(a.source, b.source, feed, tol)
    head = f"bisect {a.label} vs {b.label}: {compared} shared tensors compared in graph order"
    if divergence is None:
        text = f"{head}; no divergence: every shared tensor agrees within tolerance"
    else:
        c = divergence.comparison
        row = next((r for r in table if r.output == c.output and r.reference == a.label and r.candidate == b.label), None)
        figures = ("(its row above)" if row is not None else
                   f"max abs {c.max_abs:.4g}, max rel {c.max_rel:.4g}, cosine {c.cosine:.6f}")
        text = (f"{head}\nfirst divergence: node {divergence.node!r} ({divergence.op_type}), output {c.output!r}: "
                f"{figures}; its inputs differ by at most {divergence.input_max_abs:.4g}")
    return {"text": text, "data": {"reference": a.source, "candidate": b.source, "compared_tensors": compared,
                                   "divergence": divergence.to_dict() if divergence else None}}
