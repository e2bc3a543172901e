"""What test, profile and compare run: PyTorch, ONNX Runtime and TensorRT models side by side.

A ``Target`` is one model that was asked for: loaded and runnable, or with the reason it cannot
run here (an engine on a machine without a usable GPU). Such an engine brings its stand-in: the
ONNX graph it was built from, run on ONNX Runtime, so that what the engine computes is still checked.
A backend that is not installed at all is an error that says how to install it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ..api import DeployedModel, load, load_stand_in, onnx_file_of
from ..artefacts import resolve_model, stand_in_onnx
from ..backends.base import Runner, TensorSpec, backend_for_file
from ..backends.sidecar import read_sidecar
from ..config import DeployConfig, load_deploy_config
from ..errors import (BackendUnavailableError, ConfigError, EngineCompatibilityError, InputError, ModelError,
                      ShapeError)
from ..utils.logging import logger
from ..utils.random_data import random_array


# Why an installed backend still cannot run a file here, in a few words for tables.
CANNOT_RUN = {BackendUnavailableError: "no GPU", EngineCompatibilityError: "built for another TensorRT or GPU"}


@dataclass
class Target:
    """One model to evaluate: a loaded ``DeployedModel``, or why it cannot run here."""

    backend: str            # pytorch | onnxruntime | tensorrt
    source: str             # file path or model spec
    precision: str = ""     # from the sidecar; empty when the file has none
    model: DeployedModel | None = None
    reason: str = ""        # why it cannot run here, in full
    why: str = ""           # the same in a few words ("no GPU")
    stands_in_for: str = ""  # the engine this ONNX file is checked in place of
    show_folder: bool = False  # name the file with its folder: several work dirs hold an end2end.engine

    @property
    def runnable(self) -> bool:
        return self.model is not None

    @property
    def label(self) -> str:
        path = Path(self.source)
        name = self.source if self.backend == "pytorch" else f"{path.parent.name}/{path.name}" if self.show_folder \
            else path.name
        note = f", stand-in for {self.stands_in_for}" if self.stands_in_for else ""
        precision = f" {self.precision}" if self.precision else ""
        return f"{self.backend}{precision} ({name}{note})"

    def close(self) -> None:
        if self.model is not None:
            self.model.close()


class TorchRunner(Runner):
    """The eager PyTorch model, called the way the exported graph is (through the task's wrapper)."""

    def __init__(self, module, task, inputs: list[TensorSpec], outputs: list[TensorSpec], source: str):
        super().__init__(inputs, outputs, source=source)
        self.module = module
        self.task = task
        self.threads: int | None = None  # chosen on the first call
        self._caller_threads: int | None = None  # torch's setting before, put back on deactivate

    def infer_impl(self, feed: dict[str, np.ndarray], profile: int) -> dict[str, np.ndarray]:
        batch = tuple(feed.values()) if len(feed) > 1 else next(iter(feed.values()))
        if self.threads is None:
            self.threads = self._choose_threads(batch)
        return self.task.torch_outputs(self.module, batch, self.output_names)

    def deactivate_impl(self) -> None:
        if self._caller_threads is not None:
            import torch

            torch.set_num_threads(self._caller_threads)
            self._caller_threads, self.threads = None, None

    def _choose_threads(self, batch: np.ndarray) -> int:
        """The faster of one thread and every CPU this process may use, timed on the first input.

        torch's own default counts the host's cores (too many in a container or under taskset), and its
        OpenMP threads collapse on a busy machine (a small CNN: 94 ms a call on 2 threads, 1.4 ms on 1),
        which would make every comparison with ONNX Runtime's thread pool meaningless."""
        import time

        import torch

        self._caller_threads = torch.get_num_threads()
        timings = {}
        for threads in dict.fromkeys((available_cpus(), 1)):
            torch.set_num_threads(threads)
            self.task.torch_outputs(self.module, batch, self.output_names)  # warm-up at this count
            start = time.perf_counter()
            for _ in range(3):
                self.task.torch_outputs(self.module, batch, self.output_names)
            timings[threads] = (time.perf_counter() - start) / 3
        best = min(timings, key=timings.get)
        torch.set_num_threads(best)
        logger.info("PyTorch runs with %d thread(s): %s", best,
                    ", ".join(f"{n} thread(s) {1000 * t:.3g} ms a call" for n, t in timings.items()))
        return best


def check_config_matches(cfg: DeployConfig, inputs: list[TensorSpec], source: str | os.PathLike,
                         outputs: list[TensorSpec] | None = None, task: str | None = None,
                         names_from_file: bool = False) -> None:
    """Refuse a deploy config whose task, input/output names or shapes disagree with the model file's.

    ``names_from_file``: the model was converted from an ONNX file, whose own input/output names the
    conversion kept (``onnx_config.input_names``/``output_names`` did not apply)."""
    declared_task = (cfg.raw.get("codebase_config") or {}).get("task")
    if task and declared_task and declared_task != task:
        raise ConfigError(f"{cfg.source}: codebase_config.task is {declared_task!r} but {source} was converted as a "
                          f"{task!r} model; pass the deploy config the file was converted with")
    names = [s.name for s in inputs]
    if not names_from_file and sorted(cfg.input_names[:len(names)]) != sorted(names):
        raise ConfigError(f"{cfg.source}: onnx_config.input_names is {cfg.input_names} but {source} has inputs "
                          f"{names}; pass the deploy config the file was converted with")
    out_names = [s.name for s in outputs or []]
    if out_names and not names_from_file and sorted(cfg.output_names) != sorted(out_names):
        raise ConfigError(f"{cfg.source}: onnx_config.output_names is {cfg.output_names} but {source} has outputs "
                          f"{out_names}; pass the deploy config the file was converted with")
    by_name = {s.name: s for s in inputs}
    for i, profile in enumerate(cfg.profiles):
        for name, rng in profile.items():
            shape = by_name[name].shape if name in by_name else None
            if shape is None:
                continue
            where = f"backend_config.model_inputs[{i}].input_shapes.{name}"
            if len(rng.min) != len(shape):
                raise ConfigError(f"{cfg.source}: {where} has rank {len(rng.min)} but input {name!r} of {source} "
                                  f"has shape {shape}; pass the deploy config the file was converted with")
            for d, fixed in enumerate(shape):
                if isinstance(fixed, int) and fixed > 0 and not rng.min[d] <= fixed <= rng.max[d]:
                    raise ConfigError(f"{cfg.source}: {where} allows {rng.min[d]}..{rng.max[d]} in dimension {d} but "
                                      f"{source} fixes it to {fixed} (shape {shape}); pass the deploy config the file "
                                      f"was converted with")


def _specs(raw) -> list[TensorSpec]:
    return [TensorSpec.from_dict(d) for d in raw or []]


def open_file(path: str | os.PathLike, deploy_cfg: str | os.PathLike | Mapping | None = None,
              device: str | None = None, stand_in: bool = True) -> list[Target]:
    """Load one .onnx/.engine file (or a work dir's converted model); an engine that cannot run here comes back
    unloaded, with its stand-in."""
    path = resolve_model(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; pass the .onnx or .engine that `trtdeploy convert` wrote")
    backend = backend_for_file(path)
    backend.require()  # not installed at all: an error that says how to install it
    sidecar = read_sidecar(path) or {}
    precision = sidecar.get("precision", "")
    cfg = load_deploy_config(deploy_cfg) if deploy_cfg is not None else None
    own_names = sidecar.get("source_format") == "onnx"
    if cfg is not None and sidecar.get("inputs"):
        check_config_matches(cfg, _specs(sidecar["inputs"]), path, _specs(sidecar.get("outputs")), sidecar.get("task"),
                             names_from_file=own_names)
    try:
        model = load(path, deploy_cfg=cfg, device=device)
    except (BackendUnavailableError, EngineCompatibilityError) as e:
        targets = [Target(backend.name, str(path), precision, reason=str(e), why=CANNOT_RUN[type(e)])]
        twin = stand_in_onnx(path, sidecar) if stand_in else None
        if twin is not None:
            model = load_stand_in(twin, sidecar, cfg)
            targets.append(Target(backend_for_file(twin).name, str(twin), precision, model, stands_in_for=path.name))
        return targets
    if cfg is not None:
        check_config_matches(cfg, model.runner.inputs, path, model.runner.outputs, names_from_file=own_names)
    return [Target(backend.name, str(path), precision, model)]


def onnx_file_target(path: str | os.PathLike, reference: Target) -> Target:
    """The user's own ONNX file (the MODEL a file-based conversion started from) on ONNX Runtime, with the
    reference target's task: the baseline where there is no PyTorch model."""
    (target,) = open_file(path)
    target.model.task = reference.model.task
    target.model.sidecar.update({k: v for k, v in reference.model.sidecar.items() if k in ("profiles", "export_shapes")})
    return target


def torch_target(model_spec, reference: Target, checkpoint: str | None = None, device: str = "cpu") -> Target:
    """The eager PyTorch model, with the reference target's task, inputs and outputs."""
    from ..export import load_model

    module = load_model(model_spec, checkpoint, device)
    ref = reference.model
    ref.task.check_model(module)
    label = model_spec if isinstance(model_spec, str) else type(module).__name__
    runner = TorchRunner(module, ref.task, ref.runner.inputs, ref.runner.outputs, source=label).activate()
    runner.profiles = ref.runner.profiles
    return Target("pytorch", label, "fp32", DeployedModel(runner, ref.task, ref.sidecar))


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (containers)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return count


def open_targets(files: list[str | os.PathLike], deploy_cfg=None, model_spec=None, checkpoint: str | None = None,
                 device: str | None = None, stand_in: bool = True) -> list[Target]:
    """PyTorch first (when ``model_spec`` is given; an ``.onnx`` MODEL runs on ONNX Runtime instead), then each
    file (and the stand-ins of engines). Files of the same name (two work dirs) are labelled with their folder."""
    targets = [t for f in files for t in open_file(f, deploy_cfg, device, stand_in)]
    labels = [t.label for t in targets]
    if len(set(labels)) < len(labels):
        for t in targets:
            t.show_folder = True
    runnable = [t for t in targets if t.runnable]
    if model_spec is not None:
        if not runnable:
            reasons = "; ".join(t.reason for t in targets)
            raise ModelError(f"none of {[str(f) for f in files]} can run here ({reasons}), so PyTorch has no "
                             f"inputs/outputs to follow; pass the end2end.onnx as well")
        if onnx_file_of(model_spec) is not None:
            targets.insert(0, onnx_file_target(model_spec, runnable[0]))
        else:
            targets.insert(0, torch_target(model_spec, runnable[0], checkpoint, "cpu" if device is None else device))
    return targets


def runnable_or_fail(targets: list[Target], what: str) -> list[Target]:
    """The runnable targets; an error naming every reason when there are none."""
    ok = [t for t in targets if t.runnable]
    if not ok:
        reasons = "; ".join(f"{t.label}: {t.reason}" for t in targets)
        raise BackendUnavailableError(f"nothing to {what}: {reasons}")
    return ok


def parse_shapes(specs: list[str] | None, input_names: list[str]) -> dict[str, tuple[int, ...]]:
    """Read ``--shape 1x3x224x224`` (the only input) or ``--shape input:1x3x224x224`` (named) strictly."""
    shapes = {}
    for spec in specs or []:
        name, _, dims = spec.rpartition(":")
        if not name:
            if len(input_names) != 1:
                raise ShapeError(f"--shape {spec}: the model has inputs {input_names}; write NAME:{spec}")
            name = input_names[0]
        if name not in input_names:
            raise ShapeError(f"--shape {spec}: the model has no input {name!r}; its inputs are {input_names}")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not shape or any(d < 1 for d in shape):
            example = dims.replace(",", "x") if "," in dims else "1x3x224x224"
            raise ShapeError(f"--shape {spec}: {dims!r} is not a shape; write positive sizes joined by 'x' "
                             f"(not commas), e.g. {example} or {name}:{example}")
        shapes[name] = shape
    return shapes


def parse_shape_sets(specs: list[str] | None, input_names: list[str]) -> list[dict[str, tuple[int, ...]]]:
    """``profile --shape``: one set of shapes per value, inputs separated by commas
    (``input:1x3x224x224,mask:1x1x224x224``); ``1,3,224,224`` is one shape mistyped, and told so."""
    sets = []
    for spec in specs or []:
        parts = spec.split(",")
        if len(parts) > 1 and not all("x" in part.rpartition(":")[2].lower() for part in parts):
            parts = [spec]
        sets.append(parse_shapes(parts, input_names))
    return sets


TENSOR_SUFFIXES = (".npy", ".npz")  # --input files read as tensors instead of images


def random_feed(runner: Runner, shapes: Mapping[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of ``shapes`` and each input's dtype (``random_array``)."""
    rng = np.random.default_rng(seed)
    return {spec.name: random_array(rng, shapes[spec.name], spec.dtype) for spec in runner.inputs}


def tensor_feed(path: Path, runner: Runner) -> dict[str, np.ndarray]:
    """An .npz of arrays named like the model's inputs, or an .npy for a model with one input."""
    if not path.is_file():
        raise InputError(f"--input {path} does not exist; pass an .npz of arrays named after the model's inputs "
                         f"{runner.input_names}")
    try:
        if path.suffix == ".npy":
            arrays = {runner.input_names[0]: np.load(path, allow_pickle=False)}
            if len(runner.input_names) > 1:
                raise InputError(f"{path}: one .npy array cannot feed the inputs {runner.input_names}; save them "
                                 f"into one .npz by name (np.savez(path, **{{name: array}}))")
        else:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as e:
        raise InputError(f"{path} cannot be read as {path.suffix} ({type(e).__name__}: {e}); write it with "
                         f"numpy.save / numpy.savez") from None
    missing, unexpected = [n for n in runner.input_names if n not in arrays], [k for k in arrays if k not in runner.input_names]
    if missing or unexpected:
        raise InputError(f"{path} holds arrays {list(arrays)} but the model's inputs are {runner.input_names} "
                         f"(missing {missing}, unexpected {unexpected}); name the arrays after the inputs")
    return arrays


def make_feed(target: Target, image_path: str | os.PathLike | None = None,
              shapes: Mapping[str, tuple[int, ...]] | None = None, seed: int = 0) -> tuple[dict[str, np.ndarray], str]:
    """Inputs for every target: tensors from an .npy/.npz file, ``target``'s task pre-processing of an image,
    or seeded random data (``random_feed``) at ``shapes``, the profile's opt shapes elsewhere.

    Returns the feed and a description of where it came from.
    """
    from ..utils.image import load_image

    model = target.model
    if image_path is not None and Path(image_path).suffix.lower() in TENSOR_SUFFIXES:
        return tensor_feed(Path(image_path), model.runner), f"tensors {image_path}"
    if image_path is not None:
        batch, _ = model.task.prepare(load_image(image_path), tuple(shapes.get(model.runner.input_names[0]))
                                         if shapes else model.input_shape())
        return {model.runner.input_names[0]: batch}, f"image {image_path}"
    given = dict(shapes or {})
    wanted = model.input_shapes([n for n in model.runner.input_names if n not in given])
    return random_feed(model.runner, {**wanted, **given}, seed), f"random normal data (seed {seed})"
