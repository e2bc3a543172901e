"""Train YOLOv8n from scratch (ultralytics' trainer, random init, offline) on the shapes set of make_shapes_dataset.py.

Run on a GPU machine; the checkpoint is the accuracy reference of issue 14 (never committed):

    YOLO_OFFLINE=1 python benchmarks/train_yolo_shapes.py /tmp/h3/shapes --epochs 40 --out /tmp/h3/run
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_root", type=Path, help="folder written by make_shapes_dataset.py")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hours", type=float, default=None, help="ultralytics' time budget (fits the schedule to it)")
    p.add_argument("--out", type=Path, required=True, help="where best.pt and metrics.json go")
    args = p.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")
    # amp=False: ultralytics' AMP check downloads yolo26n.pt; plots=False: plotting fetches a font.
    model.train(data=str(args.data_root / "data.yaml"), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch,
                seed=args.seed, deterministic=True, amp=False, plots=False, workers=8, device=0,
                project=str(args.out), name="train", exist_ok=True, verbose=False,
                **({"time": args.hours} if args.hours else {}))
    best = args.out / "train" / "weights" / "best.pt"
    metrics = YOLO(str(best)).val(data=str(args.data_root / "data.yaml"), imgsz=args.imgsz, batch=32, plots=False,
                                  device=0, conf=0.001, iou=0.7, verbose=False)
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copy(best, args.out / "best.pt")
    summary = {"ultralytics_val_mAP50-95": float(metrics.box.map) * 100, "ultralytics_val_mAP50": float(metrics.box.map50) * 100,
               "epochs": args.epochs, "hours": args.hours, "imgsz": args.imgsz, "batch": args.batch, "seed": args.seed}
    (args.out / "metrics.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
