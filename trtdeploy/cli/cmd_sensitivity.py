"""trtdeploy sensitivity: which INT8 layers cost the most accuracy, and which to keep in higher precision."""
from __future__ import annotations

import argparse


def register(sub, common) -> None:
    p = sub.add_parser(
        "sensitivity", parents=[common], help="per-layer INT8 sensitivity, or the nodes FP16/BF16 must keep in FP32",
        description="After an INT8 `trtdeploy convert`, quantize one layer at a time (Q/DQ on ONNX Runtime, FP32 "
                    "elsewhere, the calibration ranges of the build) and measure the output error against FP32 on "
                    "calibration samples. Prints the layers most sensitive first, proposes the few to keep out of "
                    "INT8 with the error that leaves, and writes int8_sensitivity.json into WORK_DIR.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  trtdeploy sensitivity work_dirs/r18-int8 --samples 32\n"
               "then add the proposal to the deploy config and convert again (calibration data and ranges are reused):\n"
               "  calib_config = dict(exclude_nodes=['/layer4/layer4.1/conv2/Conv'])")
    p.add_argument("work_dir", help="--work-dir of an INT8 conversion (holds the engine, its sidecar, calib_data.h5)")
    p.add_argument("--samples", type=int, default=32, help="calibration samples to measure on (default: %(default)s)")
    p.add_argument("--top", type=int, default=15, help="rows to print (default: %(default)s)")
    p.add_argument("--precision", choices=("int8", "fp16", "bf16"), default="int8",
                   help="int8: rank the INT8 layers; fp16/bf16: bisect which nodes must stay FP32 to meet "
                        "--atol/--rtol (emulated on ONNX Runtime; default: %(default)s)")
    for kind in ("atol", "rtol"):
        p.add_argument(f"--{kind}", nargs="+", metavar="[OUTPUT:]VALUE", help=f"--precision fp16/bf16: {kind} per output")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.precision == "int8":
        report_sensitivity(args.work_dir, args.samples, args.top)
    else:
        report_precision(args.work_dir, args.precision, {"atol": args.atol, "rtol": args.rtol}, args.samples)
    return 0


def report_precision(work_dir, precision: str, tolerances: dict, samples: int = 32) -> None:
    """Bisect the 16-bit nodes that must stay FP32 (``precision_sensitivity``) and print the config line."""
    from ..evaluation.precision import precision_sensitivity, work_dir_feeds
    from ..evaluation import Tolerances

    tol = Tolerances.from_sources(tolerances)
    model, feeds, origin = work_dir_feeds(work_dir, samples)
    found = precision_sensitivity(model, feeds, tol, precision)
    print(f"{precision.upper()} (emulated on ONNX Runtime) against FP32 on {origin}, {tol.describe()}: "
          f"{found['candidates']} nodes in {precision.upper()}, {found['runs']} runs")
    if not found["fp32_nodes"]:
        print("every output is within tolerance with the guards alone: nothing more to keep in FP32")
        return
    print(f"{len(found['fp32_nodes'])} node(s) must stay FP32; proposal for the deploy config:")
    print(f"backend_config = dict(common_config=dict(fp32_nodes={found['fp32_nodes']!r}))")


def report_sensitivity(work_dir, samples: int = 32, top: int = 15) -> None:
    """Measure (``int8_sensitivity``) and print the ranking, the totals and the proposal."""
    from ..evaluation.precision import SENSITIVITY_FILE, int8_sensitivity

    report = int8_sensitivity(work_dir, samples)
    layers = report["layers"]
    print(f"output error (relative L2 vs FP32, {report['samples']} samples) when only one layer is INT8, "
          f"{min(top, len(layers))} of {len(layers)} layers:")
    width = max((len(layer["node"]) for layer in layers[:top]), default=4)
    for rank, layer in enumerate(layers[:top], 1):
        print(f"  {rank:3d}. {layer['node']:<{width}}  {layer['op_type']:<7} {layer['error']:.5f}")
    print(f"all {len(layers)} layers INT8: error {report['all_int8_error']:.5f}")
    kept = report["proposed_exclude_nodes"]
    print(f"keeping {len(kept)} layer(s) out of INT8: error {report['error_with_proposal']:.5f}")
    print(f"proposal for the deploy config: calib_config = dict(exclude_nodes={kept!r})")
    print(f"report: {work_dir}/{SENSITIVITY_FILE}")
