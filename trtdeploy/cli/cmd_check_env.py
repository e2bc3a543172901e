"""trtdeploy check-env: what this machine has for trtdeploy, each problem with its fix."""
from __future__ import annotations

import json

from ..utils.findings import ABSENT, FAIL, OK, WARN  # not ..env: every command's start-up imports this file

_MARKS = {OK: "ok", WARN: "WARN", FAIL: "FAIL", ABSENT: "--"}
EXIT_BROKEN = 1


def register(sub, common) -> None:
    p = sub.add_parser(
        "check-env", parents=[common], help="report Python, torch, ONNX, ONNX Runtime, TensorRT, CUDA, GPUs, plugins",
        description="Report what trtdeploy can use on this machine: Python and platform (x86_64, aarch64, Jetson), "
                    "torch/torchvision/onnx/onnxruntime (and its execution providers), TensorRT and TensorRT-RTX "
                    "(version, where and how each was found: pip, TENSORRT_DIR, LD_LIBRARY_PATH), the CUDA driver "
                    "and runtimes, GPUs with their compute capability and whether the TensorRT in use supports them, "
                    "and trtdeploy's custom ops and plugins. Every problem comes with its fix. Exits 1 only when "
                    "the default job (convert to ONNX and run it on ONNX Runtime) cannot work.")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..env import check_environment, default_job_broken, findings_as_json

    findings = check_environment()
    broken = default_job_broken(findings)
    if args.json:
        print(json.dumps(findings_as_json(findings), indent=2))
        return EXIT_BROKEN if broken else 0
    width = max(len(f.name) for f in findings)
    section = None
    for f in findings:
        if f.section != section:
            section = f.section
            print(f"{section}:")
        print(f"  [{_MARKS[f.status]:>4}] {f.name:<{width}}  {f.detail}")
        if f.fix and f.status != OK:
            print(f"  {'':6} {'':<{width}}  fix: {f.fix}")
        elif f.fix:
            print(f"  {'':6} {'':<{width}}  note: {f.fix}")
    problems = [f for f in findings if f.status in (WARN, FAIL)]
    print(f"{len(problems)} problem(s); the default job (ONNX + ONNX Runtime) "
          f"{'CANNOT run: fix the FAIL lines' if broken else 'can run'}")
    return EXIT_BROKEN if broken else 0
