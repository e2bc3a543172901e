"""trtdeploy sensitivity: which INT8 layers cost the most accuracy, and which to keep in higher precision."""
from __future__ import annotations

import argparse


def register(sub, common) -> None:
    p = sub.add_parser(
        "sensitivity", parents=[common], help="per-layer INT8 sensitivity of a converted model",
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
    p.set_defaults(func=run)


def run(args) -> int:
    report_sensitivity(args.work_dir, args.samples, args.top)
    return 0


def report_sensitivity(work_dir, samples: int = 32, top: int = 15) -> None:
    """Measure (``int8_sensitivity``) and print the ranking, the totals and the proposal."""
    from ..backends.tensorrt.int8 import SENSITIVITY_FILE, int8_sensitivity

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
