"""trtdeploy run: run an .onnx or .engine file on an image and print (or draw) the result, or on tensors from an
.npz/.npy file and print each output."""
from __future__ import annotations


def register(sub, common) -> None:
    p = sub.add_parser("run", parents=[common], help="run a converted model on an image",
                       description="Run an .onnx (ONNX Runtime) or .engine (TensorRT) file on an image. The "
                                   "sidecar written by `convert` supplies the task, class names and pre-processing; "
                                   "--deploy-cfg overrides them.")
    p.add_argument("model_file", help="end2end.onnx, end2end.engine, or the work dir of a conversion (its engine, else its ONNX)")
    p.add_argument("--input", required=True, help="image file, or an .npz of arrays named after the model's inputs "
                                                   "(.npy for a one-input model) to feed as they are")
    p.add_argument("--deploy-cfg", help="deploy config (needed only for files without a sidecar)")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda for engines, cpu for ONNX)")
    p.add_argument("--out", help="write a picture of the result here (.png or .jpg)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..api import load
    from ..evaluation.targets import TENSOR_SUFFIXES, tensor_feed
    from ..utils.image import load_image

    model = load(args.model_file, deploy_cfg=args.deploy_cfg, device=args.device)
    if Path(args.input).suffix.lower() in TENSOR_SUFFIXES:
        try:
            outputs = model(tensor_feed(Path(args.input), model.runner))
        finally:
            model.close()
        for name, value in outputs.items():
            flat = value.ravel()
            head = ", ".join(f"{v:.6g}" for v in flat[:8]) + (", ..." if flat.size > 8 else "")
            print(f"{name}: {value.dtype} {list(value.shape)}  [{head}]")
        return 0
    image = load_image(args.input)
    try:
        result = model.predict(image)
    finally:
        model.close()
    print(model.task.format_result(result))
    if args.out:
        model.task.visualize(image, result, args.out)
        print(f"picture: {args.out}")
    return 0
