"""The task interface. A task knows its model's inputs and outputs; backends know nothing of tasks.

A task is one module (``tasks/<task>.py``): export checks, pre/post-processing, drawing, its metric
(``Task.metric``, for ``trtdeploy test``) and what a served model answers (``Task.served_outputs``,
``to_tensors``/``from_tensors``). Registering a ``Task`` subclass in ``TASKS`` is all a new task needs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np

from ..config import DeployConfig
from ..config.deploy_config import DEFAULTS
from ..registry import Registry
from ..utils.image import channels_last

if TYPE_CHECKING:
    from ..datasets.evaluation import EvalDataset, EvalSample

# The task of a sidecar or config that names none (files written before sidecars recorded the task): the one
# MMDeploy's codebase_config defaults to, written once in the config's defaults.
DEFAULT_TASK: str = DEFAULTS["codebase_config"]["task"]


class Metric:
    """Accumulate (post-processed prediction, sample) pairs of one test set; ``compute`` gives {score name: percent}."""

    def __init__(self, dataset: "EvalDataset", class_names: Sequence[str] | None = None):
        self.dataset = dataset
        self.class_names = list(class_names) if class_names else None

    def update(self, prediction: Any, sample: "EvalSample") -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


@dataclass(frozen=True)
class OutputTensor:
    """One tensor a served model answers: name, numpy dtype name (or "bytes"), dims per image (-1 where the count varies)."""

    name: str
    dtype: str
    dims: tuple[int, ...]


class Task:
    """Base: subclasses fill pre/post-processing for one kind of model."""

    name = ""
    default_input_shape: tuple[int, ...] = (1, 3, 224, 224)
    metric: ClassVar[type[Metric] | None] = None              # scores predictions in `trtdeploy test`
    served_outputs: ClassVar[tuple[OutputTensor, ...]] = ()   # empty: the task cannot be served
    serves_labels: ClassVar[bool] = False                     # Triton's classification extension (labels.txt)

    def __init__(self, settings: Mapping | None = None):
        # settings: codebase_config merged with what the sidecar recorded (class names, preprocess).
        self.settings = dict(settings or {})

    @classmethod
    def from_config(cls, cfg: DeployConfig) -> "Task":
        return cls(cfg.codebase)

    # -- export -----------------------------------------------------------
    def check_model(self, model) -> None:
        """Raise ModelError when ``model`` is not a model of this task."""

    def int8_exclude_nodes(self, model) -> list[str]:
        """ONNX node-name patterns this model keeps out of INT8 unless ``calib_config.exclude_nodes`` is set."""
        return []

    def example_inputs(self, cfg: DeployConfig, device: str = "cpu") -> tuple:
        """One tensor per ``onnx_config.input_names`` entry to trace with. The first is the image (the task's
        default size unless the config gives one) unless ``input_dtypes`` says otherwise; the others take their
        profile's opt shape. Integer and boolean inputs are ones: valid token ids, mask values and indices."""
        import torch

        tensors = []
        for i, name in enumerate(cfg.input_names):
            dtype = cfg.input_dtypes.get(name)
            shape = cfg.export_shape(name, self.default_input_shape if i == 0 and dtype is None else None)
            torch_dtype = getattr(torch, dtype or "float32")
            tensors.append(torch.rand(shape, device=device, dtype=torch_dtype) if torch_dtype.is_floating_point
                           else torch.ones(shape, device=device, dtype=torch_dtype))
        return tuple(tensors)

    def torch_wrapper(self, model):
        """The module to export (a task may wrap the model to fix its output layout)."""
        return model

    def sidecar_facts(self, model, model_spec: Any) -> dict:
        """Task facts the runner needs later (class names, pre-processing)."""
        return {"task": self.name}

    # -- an ONNX file instead of a PyTorch model ---------------------------
    def adapt_graph(self, model):
        """An ONNX file as this task's graph (``onnx.ModelProto``): a task may append what the config asks for
        (detection: decoding and NMS after a raw head); the base keeps the graph as it is."""
        return model

    def graph_facts(self, outputs: list) -> dict:
        """``sidecar_facts`` for a model that came as an ONNX file: what the deploy config says (class names,
        pre-processing, post-processing), since there is no PyTorch model to ask."""
        facts = {"task": self.name, "class_names": self.settings.get("class_names")}
        preprocess = getattr(self, "preprocess_cfg", None)
        if preprocess is not None:
            facts["preprocess"] = preprocess
        if self.settings.get("post_processing"):
            facts["post_processing"] = dict(self.settings["post_processing"])
        return facts

    # -- inference --------------------------------------------------------
    def preprocess(self, image, input_shape: tuple[int, ...]) -> tuple[np.ndarray, dict]:
        """The image as a batch of ``input_shape`` [N, C, H, W] (every task writes NCHW), and what postprocess needs."""
        raise NotImplementedError

    def prepare(self, image, input_shape: tuple[int, ...]) -> tuple[np.ndarray, dict]:
        """``preprocess`` in the model's own layout: NCHW, or channels-last [N, H, W, C] (``channels_last``), which
        is the NCHW batch transposed."""
        if not channels_last(input_shape):
            return self.preprocess(image, input_shape)
        n, h, w, c = input_shape
        batch, meta = self.preprocess(image, (n, c, h, w))
        return np.ascontiguousarray(batch.transpose(0, 2, 3, 1)), meta

    def postprocess(self, outputs: Mapping[str, np.ndarray], meta: dict) -> Any:
        raise NotImplementedError

    def format_result(self, result: Any) -> str:
        return str(result)

    def visualize(self, image: np.ndarray, result: Any, out_path: str | Path) -> None:
        raise NotImplementedError

    def output_difference(self, ours: Mapping[str, np.ndarray], theirs: Mapping[str, np.ndarray]) -> float:
        """How far the deployed outputs are from PyTorch's: the largest absolute difference."""
        return max((float(np.max(np.abs(ours[k].astype(np.float64) - theirs[k].astype(np.float64))))
                    if ours[k].size else 0.0 for k in ours), default=0.0)

    def describe_difference(self, ours: Mapping[str, np.ndarray], theirs: Mapping[str, np.ndarray]) -> str:
        """``output_difference`` in words, for convert's --test-img line."""
        return f"max abs difference {self.output_difference(ours, theirs):.3g}"

    # -- serving ------------------------------------------------------------
    @classmethod
    def to_tensors(cls, results: list) -> dict[str, np.ndarray]:
        """Pack one result per image (one row of ``postprocess``) into ``served_outputs`` arrays with a batch dimension."""
        raise NotImplementedError(f"{cls.name} defines no served outputs")

    @classmethod
    def from_tensors(cls, arrays: Mapping[str, np.ndarray]) -> list:
        """Unpack served arrays into one result per image, the structure ``postprocess`` gives and ``run`` prints."""
        raise NotImplementedError(f"{cls.name} defines no served outputs")

    def torch_outputs(self, model, batch: np.ndarray | tuple, output_names: list[str]) -> dict[str, np.ndarray]:
        """Run the eager model the way the exported graph runs (``batch``: its input, or a tuple of its inputs)."""
        import torch

        param = next(model.parameters(), None)
        device = param.device if param is not None else "cpu"
        arrays = batch if isinstance(batch, tuple) else (batch,)  # several inputs: a tuple in the graph's order
        with torch.no_grad():
            out = self.torch_wrapper(model)(*(torch.from_numpy(a).to(device) for a in arrays))
        # a dict-like output (transformers' ModelOutput) is flattened as torch.onnx flattens it: its values in order
        outs = tuple(out.values()) if isinstance(out, Mapping) else out if isinstance(out, (tuple, list)) else (out,)
        return {n: o.detach().cpu().numpy() for n, o in zip(output_names, outs)}


def fit_image(image, size_hw: tuple[int, int], mean, std, keep_ratio: bool,
              pad_value: float = 0.0, center: bool = False) -> tuple[np.ndarray, dict]:
    """Resize ``image`` into ``size_hw`` (keeping its aspect ratio if asked), normalise, pad bottom/right
    (``center``: pad both sides evenly, ultralytics' letterbox).

    Shared by run, test and calibration so every backend sees the same tensor; ``meta``
    says how to map results back (``scale`` = input pixels per original pixel, y then x;
    ``pad`` = the top and left padding in input pixels).
    """
    from ..utils.image import as_rgb_array, resize

    img = as_rgb_array(image)
    h, w = int(size_hw[0]), int(size_hw[1])
    oh, ow = img.shape[:2]
    if keep_ratio:
        ratio = min(h / oh, w / ow)
        rh, rw = min(h, max(1, round(oh * ratio))), min(w, max(1, round(ow * ratio)))
    else:
        rh, rw = h, w
    resized = resize(img, (rh, rw)).astype(np.float32)
    resized = (resized - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    batch = np.full((1, 3, h, w), pad_value, np.float32)
    top, left = (round((h - rh) / 2 - 0.1), round((w - rw) / 2 - 0.1)) if center else (0, 0)  # as ultralytics rounds
    batch[0, :, top:top + rh, left:left + rw] = resized.transpose(2, 0, 1)
    meta = {"orig_shape": [oh, ow], "valid_shape": [rh, rw], "scale": [rh / oh, rw / ow], "pad": [top, left],
            "input_shape": [h, w]}
    return batch, meta


TASKS: Registry[type[Task]] = Registry("task")


def get_task(name: str | None) -> type[Task]:
    """The task class registered as ``name``; None (a file that names no task) is ``DEFAULT_TASK``."""
    from . import classification, detection, segmentation  # noqa: F401  (registration on import)

    return TASKS.get(name or DEFAULT_TASK, field="codebase_config.task")


def text_values(values) -> list[str]:
    """Served string tensors come back as bytes (or str): as str."""
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]
