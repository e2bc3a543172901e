"""trtdeploy convert: the counterpart of MMDeploy's tools/deploy.py."""
from __future__ import annotations

import argparse

from ..utils.logging import logger


def register(sub, common) -> None:
    p = sub.add_parser(
        "convert", parents=[common], help="export a PyTorch model to ONNX (or take an .onnx file) and build the backend model",
        description="Export MODEL to ONNX (rewriters active) or read the ONNX file given, simplify and check the "
                    "graph, and build the backend named by backend_config.type (onnxruntime or tensorrt). Writes "
                    "end2end.onnx, the engine and JSON sidecars into --work-dir, atomically.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  trtdeploy convert configs/classification/classification_onnxruntime_dynamic.py "
               "torchvision://resnet18 --work-dir work_dirs/r18 --test-img demo/demo.jpg\n"
               "  trtdeploy convert configs/classification/classification_tensorrt-fp16_dynamic-224x224-320x320.py "
               "my_models.py:build --checkpoint best.pth --work-dir work_dirs/mine\n"
               "  trtdeploy convert my_trt_fp16.py model.onnx --work-dir work_dirs/onnx    "
               "(an ONNX file: profiles keyed by its own input names; README, 'Your own ONNX file')")
    p.add_argument("deploy_cfg", help="deploy config (.py, OpenMMLab style with _base_)")
    p.add_argument("model", help="torchvision://<name>[?num_classes=N] (seeded random weights unless --checkpoint; "
                                 "?weights=DEFAULT for torchvision's), <module or file.py>:<factory>, or an ONNX file "
                                 "(model.onnx: no export, no torch)")
    p.add_argument("--checkpoint", help="state dict to load into the model")
    p.add_argument("--work-dir", default="work_dirs/trtdeploy", help="where files go (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="device to export on: cpu or cuda[:N] (default: %(default)s)")
    p.add_argument("--test-img", help="image to run through the converted model and PyTorch (or, for an ONNX file, "
                                      "that file on ONNX Runtime), printing both")
    p.add_argument("--calib-dataset-cfg", help="dataset config for INT8 calibration (MMDetection style)")
    p.add_argument("--sensitivity", action="store_true",
                   help="INT8: then rank the layers by the error each adds alone (as `trtdeploy sensitivity`)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..api import convert

    kwargs = {}
    if args.calib_dataset_cfg:
        kwargs["calib_dataset_cfg"] = args.calib_dataset_cfg
    result = convert(args.deploy_cfg, args.model, checkpoint=args.checkpoint, work_dir=args.work_dir,
                     device=args.device, test_img=args.test_img, **kwargs)
    report = result.test_report
    if report:
        print(f"{report['reference']}:\n{report['reference_formatted']}")
        print(f"{report['backend']}:\n{report['formatted']}")
    print(result.summary())
    if args.sensitivity:
        from .cmd_sensitivity import report_sensitivity

        report_sensitivity(result.work_dir)
    logger.debug("convert finished")
    return 0
