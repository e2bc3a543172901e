"""A task added from outside the package: one Task subclass registered here, nothing else.

It converts through the public API on ONNX Runtime, predicts, is scored by its own metric and
packs its served answer, the way docs/architecture.md ("Add a task") says a new task plugs in.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import trtdeploy
from conftest import CONFIGS
from trtdeploy.evaluation import metric_for
from trtdeploy.tasks import TASKS, Metric, OutputTensor, Task


class MeanError(Metric):
    """Mean absolute error of the predicted brightness against a brightness written in each file name."""

    def __init__(self, dataset, class_names=None):
        super().__init__(dataset, class_names)
        self.errors: list[float] = []

    def update(self, prediction, sample) -> None:
        self.errors.append(abs(prediction[0] - float(Path(sample.path).stem.split("_")[1])))

    def compute(self) -> dict[str, float]:
        return {"MAE": float(np.mean(self.errors))}


@TASKS.register("ToyBrightness")
class ToyBrightness(Task):
    """The model returns the mean of its input per image; the answer is that mean in [0, 1]."""

    name = "ToyBrightness"
    default_input_shape = (1, 3, 16, 16)
    metric = MeanError
    served_outputs = (OutputTensor("brightness", "float32", ()),)

    def preprocess(self, image, input_shape):
        h, w = input_shape[2:]
        img = np.asarray(image, np.float32)[:h, :w] / 255.0
        return img.transpose(2, 0, 1)[None].copy(), {}

    def postprocess(self, outputs, meta):
        return [float(v) for v in np.asarray(next(iter(outputs.values()))).reshape(-1)]

    @classmethod
    def to_tensors(cls, results):
        return {"brightness": np.asarray(results, np.float32)}

    @classmethod
    def from_tensors(cls, arrays):
        return [float(v) for v in arrays["brightness"]]


class Mean(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(1, 2, 3))


def test_toy_task_converts_predicts_scores_and_serves(tmp_path):
    cfg = tmp_path / "toy.py"
    cfg.write_text(f"_base_ = ['{CONFIGS}/classification/classification_onnxruntime_dynamic.py']\n"
                   "codebase_config = dict(task='ToyBrightness')\n")
    result = trtdeploy.convert(cfg, Mean(), work_dir=tmp_path / "work")
    model = trtdeploy.load(result.backend_path)
    assert isinstance(model.task, ToyBrightness)
    image = np.full((16, 16, 3), 51, np.uint8)  # 51 / 255 = 0.2
    (answer,) = model.predict(image)
    assert abs(answer - 0.2) < 1e-6

    class Sample:
        path = "img_0.25.png"
    metric = metric_for("ToyBrightness", dataset=None, class_names=None)
    metric.update([answer], Sample())
    assert abs(metric.compute()["MAE"] - 0.05) < 1e-6
    assert ToyBrightness.from_tensors(ToyBrightness.to_tensors([answer])) == [answer]
    model.close()
