"""The work of trtdeploy's Python-backend models, free of Triton so it can be tested on its own.

Each stage says which tensors it takes and returns (for ``config.pbtxt``) and turns a list of
requests (dicts of arrays with a leading batch dimension) into a list of answers, an
exception standing in for a request that failed, so one bad request never fails its neighbours.
``python_backend_model.py`` is the thin Triton shell around these.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ..backends.base import Runner, TensorSpec, profiles_from_json
from ..backends.sidecar import read_sidecar
from ..errors import BackendUnavailableError, EngineCompatibilityError, InputError
from ..registry import Registry
from ..tasks import get_task
from ..utils.logging import logger

IMAGE_INPUT = "image"  # encoded image bytes (JPEG, PNG, ...), one per batch row
META = "meta"  # JSON of what pre-processing recorded, handed to post-processing


@dataclass(frozen=True)
class StageTensor:
    """One input or output of a stage, as config.pbtxt declares it (dims without the batch)."""

    name: str
    dtype: str
    dims: tuple[int, ...]


Answer = dict[str, np.ndarray] | Exception


class Stage:
    """Base: built from the model file inside the Triton model's version folder."""

    name = ""
    needs_model_file = True  # False: the sidecar alone is enough (shipped without the ONNX)

    def __init__(self, model_file: Path):
        self.model_file = Path(model_file)

    @staticmethod
    def io(sidecar: Mapping) -> tuple[list[StageTensor], list[StageTensor]]:
        raise NotImplementedError

    def __call__(self, requests: list[dict[str, np.ndarray]]) -> list[Answer]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the runner, if the stage holds one."""


STAGES: Registry[type[Stage]] = Registry("serving stage")


def model_specs(sidecar: Mapping) -> tuple[list[TensorSpec], list[TensorSpec]]:
    return ([TensorSpec.from_dict(d) for d in sidecar["inputs"]],
            [TensorSpec.from_dict(d) for d in sidecar["outputs"]])


def _per_image(spec: TensorSpec) -> StageTensor:
    return StageTensor(spec.name, spec.dtype, tuple(d if isinstance(d, int) and d > 0 else -1 for d in spec.shape[1:]))


def _task_io(sidecar: Mapping) -> list[StageTensor]:
    return [StageTensor(t.name, t.dtype, t.dims) for t in get_task(sidecar.get("task")).served_outputs]


class _SpecsOnly(Runner):
    """Stands in for a runner where a stage needs only the model's input specs and profiles."""

    def infer_impl(self, feed, profile):
        raise NotImplementedError("a pre- or post-processing stage does not run the model")


def _deployed(model_file: Path, run_model: bool):
    """The model as trtdeploy runs it; without ``run_model`` only its task and input shapes.

    An engine runs where TensorRT and a GPU can run it; elsewhere (our CPU machines, or an engine
    built for another GPU) the ONNX model it was converted from runs on ONNX Runtime instead,
    pre-processed to the same shapes.
    """
    from ..api import DeployedModel, load
    from ..artefacts import task_for

    if not run_model:
        sidecar = read_sidecar(model_file, required=True)
        inputs, outputs = model_specs(sidecar)
        runner = _SpecsOnly(inputs, outputs, profiles_from_json(sidecar.get("profiles")), source=str(model_file))
        return DeployedModel(runner, task_for(sidecar), sidecar)
    try:
        return load(model_file)
    except (BackendUnavailableError, EngineCompatibilityError) as e:
        sidecar = read_sidecar(model_file) or {}
        fallback = model_file.with_name(sidecar.get("onnx_file") or model_file.stem + ".onnx")
        if fallback == model_file or not fallback.is_file():
            raise
        logger.warning("%s; serving %s on ONNX Runtime instead", e, fallback.name)
        model = load(fallback, device="cpu")
        model.sidecar.update({k: v for k, v in sidecar.items() if k in ("profiles", "export_shapes")})
        return model


def decode_image(data) -> np.ndarray:
    """Encoded bytes (one batch row of the ``image`` input) -> RGB array."""
    from PIL import Image, UnidentifiedImageError

    raw = data[0] if isinstance(data, np.ndarray) else data
    try:
        with Image.open(io.BytesIO(bytes(raw))) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, TypeError) as e:
        raise InputError(f"input {IMAGE_INPUT!r} must hold an encoded image (JPEG or PNG bytes), "
                         f"got {len(bytes(raw)) if isinstance(raw, (bytes, bytearray)) else type(raw).__name__} "
                         f"that cannot be decoded ({e})") from None


def max_rows(runner: Runner) -> int | None:
    """How many rows one call may carry: the profiles' smallest max batch, 1 for a static batch, else no limit."""
    batch = runner.inputs[0].shape[0] if runner.inputs and runner.inputs[0].shape else None
    limits = [rng.max[0] for p in runner.profiles for rng in p.values()]
    if limits:
        return min(limits)
    return batch if isinstance(batch, int) and batch > 0 else None


def run_batched(run: Callable[[dict], dict], feeds: list[dict[str, np.ndarray]], limit: int | None) -> list[Answer]:
    """Run requests together where their shapes agree: concatenate rows, split the outputs back.

    This is what makes Triton's dynamic batching pay off inside a Python-backend model.
    """
    answers: list[Answer] = [RuntimeError("not run")] * len(feeds)
    groups: dict[tuple, list[int]] = {}
    for i, feed in enumerate(feeds):
        groups.setdefault(tuple((k, v.shape[1:], v.dtype.str) for k, v in sorted(feed.items())), []).append(i)
    for members in groups.values():
        sizes = [len(next(iter(feeds[i].values()))) for i in members]
        merged = {k: np.concatenate([feeds[i][k] for i in members]) for k in feeds[members[0]]}
        total = sum(sizes)
        step = limit or total
        try:
            chunks = [run({k: v[s:s + step] for k, v in merged.items()}) for s in range(0, total, step)]
            outputs = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
        except Exception as e:  # every request of the group gets the runner's own sentence
            for i in members:
                answers[i] = e
            continue
        start = 0
        for i, n in zip(members, sizes):
            answers[i] = {k: v[start:start + n] for k, v in outputs.items()}
            start += n
    return answers


def preprocess_requests(model, requests) -> list[tuple[dict[str, np.ndarray], list[dict]] | Exception]:
    """Per request: its images decoded and pre-processed into one feed, with their pre-processing records; a request
    that fails gets its exception, the others go on."""
    shape = model.input_shape()
    name = model.runner.input_names[0]
    prepared: list[tuple[dict[str, np.ndarray], list[dict]] | Exception] = []
    for request in requests:
        try:
            pairs = [model.task.prepare(decode_image(row), shape) for row in request[IMAGE_INPUT]]
            prepared.append(({name: np.concatenate([b for b, _ in pairs])}, [m for _, m in pairs]))
        except Exception as e:
            prepared.append(e)
    return prepared


@STAGES.register("pipeline")
class Pipeline(Stage):
    """Encoded image in, the task's answer out: decode, pre-process, run, post-process."""

    def __init__(self, model_file: Path):
        super().__init__(model_file)
        self.model = _deployed(self.model_file, run_model=True)

    @staticmethod
    def io(sidecar):
        return [StageTensor(IMAGE_INPUT, "bytes", (1,))], _task_io(sidecar)

    def __call__(self, requests):
        prepared = preprocess_requests(self.model, requests)
        ok = [p for p in prepared if not isinstance(p, Exception)]
        ran = iter(run_batched(self.model.runner, [feed for feed, _ in ok], max_rows(self.model.runner)))
        return [p if isinstance(p, Exception) else self._answer(next(ran), p[1]) for p in prepared]

    def _answer(self, outputs: Answer, metas: list[dict]) -> Answer:
        if isinstance(outputs, Exception):
            return outputs
        results = [self.model.task.postprocess({k: v[i:i + 1] for k, v in outputs.items()}, meta)[0]
                   for i, meta in enumerate(metas)]
        return self.model.task.to_tensors(results)

    def close(self):
        self.model.close()


@STAGES.register("preprocess")
class Preprocess(Stage):
    """Encoded image in, the model's input tensor and the pre-processing record out."""

    needs_model_file = False

    def __init__(self, model_file: Path):
        super().__init__(model_file)
        self.model = _deployed(self.model_file, run_model=False)

    @staticmethod
    def io(sidecar):
        spec = model_specs(sidecar)[0][0]
        return [StageTensor(IMAGE_INPUT, "bytes", (1,))], [_per_image(spec), StageTensor(META, "bytes", (1,))]

    def __call__(self, requests):
        return [p if isinstance(p, Exception) else {**p[0], META: np.array([[json.dumps(m).encode()] for m in p[1]],
                                                                             dtype=object)}
                for p in preprocess_requests(self.model, requests)]


@STAGES.register("infer")
class Infer(Stage):
    """Model tensors in, model tensors out, through trtdeploy's runner."""

    def __init__(self, model_file: Path):
        super().__init__(model_file)
        self.model = _deployed(self.model_file, run_model=True)

    @staticmethod
    def io(sidecar):
        inputs, outputs = model_specs(sidecar)
        return [_per_image(s) for s in inputs], [_per_image(s) for s in outputs]

    def __call__(self, requests):
        return run_batched(self.model.runner, requests, max_rows(self.model.runner))

    def close(self):
        self.model.close()


@STAGES.register("postprocess")
class Postprocess(Stage):
    """Model tensors and the pre-processing record in, the task's answer out."""

    needs_model_file = False

    def __init__(self, model_file: Path):
        super().__init__(model_file)
        self.model = _deployed(self.model_file, run_model=False)
        self.output_names = self.model.runner.output_names

    @staticmethod
    def io(sidecar):
        return [_per_image(s) for s in model_specs(sidecar)[1]] + [StageTensor(META, "bytes", (1,))], _task_io(sidecar)

    def __call__(self, requests):
        answers: list[Answer] = []
        for request in requests:
            try:
                metas = [json.loads(bytes(row[0])) for row in request[META]]
                results = [self.model.task.postprocess({k: request[k][i:i + 1] for k in self.output_names}, meta)[0]
                           for i, meta in enumerate(metas)]
                answers.append(self.model.task.to_tensors(results))
            except Exception as e:
                answers.append(e)
        return answers
