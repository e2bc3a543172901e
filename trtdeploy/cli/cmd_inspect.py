"""trtdeploy inspect: what an ONNX file or an engine holds."""
from __future__ import annotations

import json


def register(sub, common) -> None:
    p = sub.add_parser(
        "inspect", parents=[common], help="show inputs, outputs, profiles, ops and backend support of a model file",
        description="ONNX: inputs, outputs, opsets, op histogram, custom ops and whether each backend can build the "
                    "graph. Engine: inputs/outputs, profiles, precision, TensorRT flavour/version and target compute "
                    "capabilities, from TensorRT when it can load the engine here, else from its sidecar JSON.")
    p.add_argument("file", help=".onnx, an engine (.engine/.plan/.trt), or the work dir of a conversion")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..evaluation.inspection import format_inspection, inspect_file
    from ..evaluation.report import json_safe

    info = inspect_file(args.file)
    print(json.dumps(json_safe(info), indent=2) if args.json else format_inspection(info))
    return 0
