"""Issue 15 benchmark: INT8 on classifiers trained here (resnet18 and a small ViT), against FP32, onnxruntime's
quantize_static and NVIDIA ModelOpt, plus ONNX Runtime INT8 latency.

    python benchmarks/bench_int8_trained.py train --out DIR        # on a GPU: writes DIR/*.fp16.pt (state dicts)
    python benchmarks/bench_int8_trained.py evaluate --ckpt DIR --out WORK [--modelopt /tmp/h6/mo/bin/python]

Data: benchmarks/make_image_dataset.py (10 classes of drawn shapes and textures, 64x64); train seed 0,
calibration seed 1 (200 images, written as PNGs and read through an ImageFolder dataset config), test seed 2.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_image_dataset as data  # noqa: E402

N_TRAIN, N_CALIB, N_TEST = 16000, 200, 1000
CHUNK_BYTES = 15 << 20  # files that come back from the GPU machine must stay under 16 MiB


def build_resnet18():
    """torchvision resnet18 with a 10-class head."""
    import torchvision

    return torchvision.models.resnet18(num_classes=len(data.CLASSES))


def build_vit():
    """A small ViT: 64x64 input, 8x8 patches (64 tokens), 4 layers, width 192, 3 heads."""
    from torchvision.models import VisionTransformer

    return VisionTransformer(image_size=data.SIZE, patch_size=8, num_layers=4, num_heads=3, hidden_dim=192,
                             mlp_dim=384, num_classes=len(data.CLASSES))


MODELS = {"resnet18": (build_resnet18, dict(epochs=12, lr=2e-3, wd=5e-4)),
          "vit": (build_vit, dict(epochs=60, lr=1e-3, wd=0.05))}


# -- train (GPU) ------------------------------------------------------------------------------
def _fit(model, x, y, epochs: int, lr: float, wd: float, device: str) -> float:
    import torch

    torch.manual_seed(0)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    steps = epochs * ((len(x) + 255) // 256)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    start = time.perf_counter()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), device=device).split(256):
            xb = x[idx]
            shift = torch.randint(-4, 5, (2,))
            xb = torch.roll(xb, shifts=(int(shift[0]), int(shift[1])), dims=(2, 3))
            if torch.rand(()) < 0.5:
                xb = xb.flip(3)
            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(xb), y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return time.perf_counter() - start


def _accuracy(model, x, y) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(xb).argmax(1) for xb in x.split(500)])
    return 100.0 * float((pred == y).float().mean())


def save_fp16(state: dict, out: Path, name: str) -> list[Path]:
    """The state dict in FP16, split into files under CHUNK_BYTES."""
    import torch

    chunks, current, size = [], {}, 0
    for k, v in state.items():
        v = v.half() if v.is_floating_point() else v
        nbytes = v.numel() * v.element_size()
        if current and size + nbytes > CHUNK_BYTES:
            chunks.append(current)
            current, size = {}, 0
        current[k], size = v.cpu(), size + nbytes
    chunks.append(current)
    paths = []
    for i, chunk in enumerate(chunks):
        paths.append(out / f"{name}.{i}.fp16.pt")
        torch.save(chunk, paths[-1])
    return paths


def load_fp32(ckpt_dir: Path, name: str, out: Path) -> Path:
    """Join the FP16 chunks into one FP32 state dict file that ``trtdeploy convert --checkpoint`` reads."""
    import torch

    state = {}
    for part in sorted(ckpt_dir.glob(f"{name}.*.fp16.pt")):
        state.update(torch.load(part, map_location="cpu"))
    if not state:
        raise SystemExit(f"no {name}.*.fp16.pt in {ckpt_dir}; run `train` first")
    path = out / f"{name}.pth"
    torch.save({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, path)
    return path


def cmd_train(args) -> int:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    x_train, y_train = data.make_split(N_TRAIN, data.SEEDS["train"], workers=args.workers)
    x_test, y_test = data.make_split(N_TEST, data.SEEDS["test"], workers=args.workers)
    print(f"generated {N_TRAIN} + {N_TEST} images in {time.perf_counter() - t:.1f} s", flush=True)
    x = torch.from_numpy(data.normalise(x_train)).to(device)
    y = torch.from_numpy(y_train).long().to(device)
    xt = torch.from_numpy(data.normalise(x_test)).to(device)
    yt = torch.from_numpy(y_test).long().to(device)
    for name in args.models:
        factory, hp = MODELS[name]
        model = factory()
        seconds = _fit(model, x, y, hp["epochs"], hp["lr"], hp["wd"], device)
        model.float()
        print(f"{name}: {hp['epochs']} epochs in {seconds:.1f} s on {device}, test top-1 {_accuracy(model, xt, yt):.2f} %",
              flush=True)
        save_fp16(model.state_dict(), args.out, name)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train")
    tr.add_argument("--out", type=Path, required=True)
    tr.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    tr.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()
    return {"train": cmd_train}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
