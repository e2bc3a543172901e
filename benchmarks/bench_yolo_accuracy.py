"""Issue 14 accuracy: a YOLOv8n trained with ultralytics (train_yolo_shapes.py) through PyTorch, ONNX Runtime,
the FP16 graph and INT8, on the shapes val set (make_shapes_dataset.py), all with the shipped 320x320 configs.

    python benchmarks/make_shapes_dataset.py /tmp/h3/shapes --train 3000 --val 300 --seed 0
    python benchmarks/bench_yolo_accuracy.py /tmp/h3/yolo_shapes/best.pt /tmp/h3/shapes --work /tmp/h3/acc

Writes WORK/<route>/ per conversion and prints `trtdeploy test`'s table. Engines need a GPU: where there is none,
`test` checks the graph each engine was built from on ONNX Runtime in its place (the FP16 graph, the INT8 Q/DQ
twin). The calibration images are the first 200 training images, through YOLO's own letterbox (the sidecar's).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATIC_320 = REPO / "configs/detection/detection_tensorrt_static-320x320.py"
ROUTES = {
    "onnxruntime": f"_base_ = ['{REPO}/configs/detection/detection_onnxruntime_dynamic.py']\n"
                   "onnx_config = dict(input_shape=[320, 320])\n",
    "fp16": f"_base_ = ['{STATIC_320}']\nbackend_config = dict(common_config=dict(fp16_mode=True))\n",
    "int8": f"_base_ = ['{STATIC_320}']\nbackend_config = dict(common_config=dict(int8_mode=True))\n",
}


def trtdeploy(*args) -> None:
    print("$ trtdeploy", " ".join(map(str, args)), flush=True)
    subprocess.run([sys.executable, "-m", "trtdeploy", *map(str, args)], check=True, cwd=REPO)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path, help="best.pt from train_yolo_shapes.py")
    p.add_argument("data_root", type=Path, help="folder written by make_shapes_dataset.py")
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--calib-images", type=int, default=200)
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    calib = args.work / "calib_dataset.py"
    calib.write_text(f"data = dict(val=dict(type='CocoDataset', ann_file='{args.data_root}/annotations/train.json', "
                     f"img_prefix='{args.data_root}/images/train'))\n")
    model = f"ultralytics://{args.checkpoint}"
    files = []
    for route, text in ROUTES.items():
        cfg = args.work / f"yolo_{route}.py"
        cfg.write_text(text + (f"calib_config = dict(num_samples={args.calib_images})\n" if route == "int8" else ""))
        extra = ["--calib-dataset-cfg", calib] if route == "int8" else []
        trtdeploy("convert", cfg, model, "--work-dir", args.work / route, *extra)
        files.append(args.work / route / ("end2end.onnx" if route == "onnxruntime" else "end2end.engine"))
    trtdeploy("test", args.work / "yolo_onnxruntime.py", model, *files, "--dataset",
              args.data_root / "annotations/val.json", "--img-prefix", args.data_root / "images/val",
              "--out", args.work / "accuracy.json")


if __name__ == "__main__":
    main()
