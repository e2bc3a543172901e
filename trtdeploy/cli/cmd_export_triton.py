"""trtdeploy export-triton: a Triton Inference Server model repository for a converted work dir."""
from __future__ import annotations

import argparse


def register(sub, common) -> None:
    p = sub.add_parser(
        "export-triton", parents=[common], help="write a Triton model repository for a converted model",
        description="Write Triton models for WORK_DIR (the --work-dir of `trtdeploy convert`): NAME (Python backend: "
                    "encoded image in, the task's answer out, trtdeploy's runner inside), NAME_onnx "
                    "(onnxruntime_onnx) and NAME_trt (tensorrt_plan, when the work dir has a plugin-free engine). "
                    "Every config.pbtxt is checked with Triton's ModelConfig schema before it is written.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  trtdeploy export-triton work_dirs/r18 --repo model_repository --name resnet18\n"
               "  trtdeploy export-triton work_dirs/r18 --repo model_repository --ensemble --instances 2 --force")
    p.add_argument("work_dir", help="work dir written by `trtdeploy convert`")
    p.add_argument("--repo", required=True, help="model repository folder to write (must be empty unless --force)")
    p.add_argument("--name", help="model name (default: the work dir's folder name)")
    p.add_argument("--max-batch", type=int, default=None,
                   help="max_batch_size (default: the engine's profile max for NAME_trt, 8 for the others; "
                        "0 turns batching off for the ONNX and TensorRT models)")
    p.add_argument("--instances", type=int, default=1, help="model instances per server (default: %(default)s)")
    p.add_argument("--ensemble", action="store_true",
                   help="also write pre-processing, model and post-processing as an ensemble (NAME_ensemble)")
    p.add_argument("--ensemble-model", default="python", choices=["python", "onnxruntime_onnx", "tensorrt_plan"],
                   help="the model step of the ensemble (default: %(default)s; the others need a full Triton)")
    p.add_argument("--force", action="store_true", help="replace models of the same name in a non-empty repository")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..serving.repository import export_triton

    result = export_triton(args.work_dir, args.repo, name=args.name, max_batch=args.max_batch,
                           instances=args.instances, ensemble=args.ensemble, ensemble_model=args.ensemble_model,
                           force=args.force)
    print(f"model repository {result.repo}:")
    for model in result.written:
        print(f"  {model.name:<28} {model.kind:<22} max_batch_size {model.config['max_batch_size']}")
    for name, why in result.skipped.items():
        print(f"  skipped {name}: {why}")
    for note in result.notes:
        print(f"note: {note}")
    print(f"serve it: trtdeploy serve {result.repo}")
    return 0
