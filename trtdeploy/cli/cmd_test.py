"""trtdeploy test: accuracy of the deployed model on a test set, PyTorch / ONNX Runtime / TensorRT side by side."""
from __future__ import annotations

import argparse


def register(sub, common) -> None:
    p = sub.add_parser(
        "test", parents=[common], help="measure accuracy on a dataset across PyTorch, ONNX Runtime and TensorRT",
        description="Run the PyTorch model and each converted file over a test set and print one table: top-1/top-5 "
                    "(classification, image folder <class>/<image>), COCO bbox/segm mAP (detection and instance "
                    "segmentation, COCO JSON) or mIoU (semantic segmentation, COCO JSON with segmentations), with the "
                    "mean inference time per image. An engine that cannot run here is listed with the reason, and "
                    "the ONNX graph it was built from (for INT8, its FP32-scale Q/DQ twin) is tested on ONNX Runtime in its place.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  trtdeploy test configs/classification/classification_onnxruntime_dynamic.py "
               "torchvision://resnet18 work_dirs/r18/end2end.onnx --checkpoint r18.pth --dataset data/val")
    p.add_argument("deploy_cfg", help="the deploy config the files were converted with")
    p.add_argument("model", help="the PyTorch model: torchvision://<name> or <module or file.py>:<factory>; "
                                 "'none' leaves PyTorch out")
    p.add_argument("backend_files", nargs="+", help=".onnx and .engine files written by `trtdeploy convert`, or its work dirs")
    p.add_argument("--dataset", required=True, help="image folder (<class>/<image>) or COCO annotation file (.json)")
    p.add_argument("--img-prefix", help="folder of the images a COCO file names (default: beside the file)")
    p.add_argument("--checkpoint", help="state dict for the PyTorch model")
    p.add_argument("--classes", help="the model's class names in its output order, comma-separated or a .txt file "
                                   "(one per line); needed when the folder names are not the model's class names "
                                   "(else sorted folder i is taken as class i, with a warning)")
    p.add_argument("--max-images", type=int, help="test only the first N images")
    p.add_argument("--device", default=None, help="cpu or cuda[:N] (default: cuda for engines, cpu otherwise)")
    p.add_argument("--out", help="also write the table as JSON here")
    p.add_argument("--show-dir", help="draw every target's result on every image into this folder "
                                      "(one sub-folder per target)")
    p.set_defaults(func=run)


EXIT_FAILED = 1  # a target's outputs held NaN/inf


def _classes(text: str | None) -> list[str] | None:
    """--classes a,b,c or --classes classes.txt (one name a line)."""
    from pathlib import Path

    from ..errors import InputError

    if text is None:
        return None
    if text.endswith(".txt"):
        if not Path(text).is_file():
            raise InputError(f"--classes {text} does not exist; pass a text file with one class name a line, or "
                             f"the names comma-separated")
        names = [line.strip() for line in Path(text).read_text().splitlines() if line.strip()]
    else:
        names = [name.strip() for name in text.split(",") if name.strip()]
    if len(set(names)) != len(names) or not names:
        raise InputError(f"--classes {text}: give each class name once, in the model's output order")
    return names


def run(args) -> int:
    from ..evaluation import evaluate, format_accuracy, open_dataset, open_targets, write_json

    classes = _classes(args.classes)
    dataset = open_dataset(args.dataset, args.img_prefix)  # before loading models: a wrong path fails fast
    targets = open_targets(args.backend_files, args.deploy_cfg, None if args.model == "none" else args.model,
                           args.checkpoint, args.device)
    try:
        rows = evaluate(targets, dataset, args.max_images, args.show_dir, classes)
    finally:
        for t in targets:
            t.close()
    print(f"dataset: {dataset.source} ({max(r.images for r in rows)} images)")
    print(format_accuracy(rows))
    if args.out:
        write_json(args.out, {"dataset": dataset.source, "results": [r.to_dict() for r in rows]})
        print(f"results: {args.out}")
    if args.show_dir:
        print(f"pictures: {args.show_dir}")
    failed = [r.target for r in rows if r.status.startswith("FAIL")]
    if failed:
        print(f"FAILED: {', '.join(failed)} gave NaN/inf outputs")
    return EXIT_FAILED if failed else 0
