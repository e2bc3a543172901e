"""The Python API the CLI is a shell over: ``convert`` a model, ``load`` what was converted."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .backends.base import Runner, TensorSpec, get_backend, backend_for_file
from .backends.sidecar import read_sidecar, write_sidecar
from .config import DeployConfig, load_deploy_config
from .errors import ModelError, UnsupportedOpError
from .tasks import Task, get_task
from .utils.fileio import atomic_write_bytes, clean_stale_temps, ensure_writable_dir, sha256_file
from .utils.logging import logger, stage


@dataclass
class ConvertResult:
    """Where conversion put its files, and the test-image report if one was asked for."""

    work_dir: Path
    onnx_path: Path
    backend_path: Path
    sidecar_path: Path
    test_report: dict | None = None
    files: list[Path] = field(default_factory=list)


class DeployedModel:
    """A loaded artefact: call it with arrays (``model(x)``) or ``predict`` an image."""

    def __init__(self, runner: Runner, task: Task, sidecar: Mapping | None):
        self.runner = runner
        self.task = task
        self.sidecar = dict(sidecar or {})

    def __call__(self, feed) -> dict[str, np.ndarray]:
        return self.runner(feed)

    def input_shape(self) -> tuple[int, ...]:
        """The shape to pre-process to: fixed dims from the model, the rest from the profile or export shape."""
        spec = self.runner.inputs[0]
        hint = (self.sidecar.get("export_shapes") or {}).get(spec.name)
        for profile in self.runner.profiles:
            if spec.name in profile:
                hint = profile[spec.name].opt
                break
        hint = list(hint or self.task.default_input_shape)
        return tuple(d if isinstance(d, int) and d > 0 else hint[i] for i, d in enumerate(spec.shape))

    def predict(self, image) -> Any:
        batch, meta = self.task.preprocess(image, self.input_shape())
        return self.task.postprocess(self.runner(batch), meta)

    def close(self) -> None:
        self.runner.deactivate()


def _onnx_io(model) -> tuple[list[TensorSpec], list[TensorSpec]]:
    from onnx import helper

    def spec(v):
        t = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or -1) for d in t.shape.dim]
        return TensorSpec(v.name, str(helper.tensor_dtype_to_np_dtype(t.elem_type)), dims)
    return [spec(v) for v in model.graph.input], [spec(v) for v in model.graph.output]


def convert(deploy_cfg: str | os.PathLike | Mapping | DeployConfig, model: Any, checkpoint: str | None = None,
            work_dir: str | os.PathLike = "work_dirs/trtdeploy", device: str = "cpu",
            test_img: str | os.PathLike | None = None,
            calib_dataset_cfg: str | os.PathLike | None = None) -> ConvertResult:
    """Export ``model`` to ONNX, optimise the graph, build the backend artefact, write sidecars.

    ``model`` is ``torchvision://<name>``, ``<module>:<factory>`` or a ``torch.nn.Module``;
    ``calib_dataset_cfg`` is the INT8 calibration dataset config (MMDeploy's --calib-dataset-cfg).
    Files land in ``work_dir`` atomically; a failure leaves earlier files as they were.
    """
    from . import passes
    from .export import export_onnx, load_model
    from .export.model_loader import describe_model

    cfg = load_deploy_config(deploy_cfg)
    task_cls = get_task(cfg.task)
    backend = get_backend(cfg.backend)
    backend.require()  # fail before the slow steps
    if cfg.int8:
        _check_int8_route(cfg)
    elif calib_dataset_cfg is not None:
        logger.warning("--calib-dataset-cfg is ignored: %s is not an INT8 config (common_config.int8_mode)", cfg.source)
    if test_img is not None and not Path(test_img).is_file():
        raise ModelError(f"--test-img {test_img} does not exist")
    work = ensure_writable_dir(work_dir)
    for stale in clean_stale_temps(work):
        logger.info("removed %s left by an interrupted run", stale.name)
    task = task_cls.from_config(cfg)
    steps = 4 + (test_img is not None) - (cfg.backend == "onnxruntime") + cfg.int8
    n = iter(range(1, steps + 1))
    made: set[Path] = set()  # intermediate files worth listing (calibration data, the graph the engine came from)
    if cfg.int8:  # before the model: a wrong dataset config fails in a second
        with stage(f"[{next(n)}/{steps}] collect INT8 calibration data"):
            made.add(_collect_calibration_data(cfg, task, work, calib_dataset_cfg))

    with stage(f"[{next(n)}/{steps}] load model {describe_model(model)}"):
        torch_model = load_model(model, checkpoint, device)
        task.check_model(torch_model)
    with stage(f"[{next(n)}/{steps}] export ONNX (opset {cfg.opset})"):
        inputs = task.example_inputs(cfg, device)
        proto = export_onnx(task.torch_wrapper(torch_model), inputs, cfg)
        proto = passes.lower_custom_ops(proto, cfg.backend_cfg.get("custom_ops", "auto"))
    with stage(f"[{next(n)}/{steps}] simplify and check the graph"):
        if cfg.onnx.get("optimize", True) and cfg.onnx.get("simplify", True):
            proto = passes.simplify(proto)
        proto = passes.check(proto)
        cfg.check_profiles({spec.name: spec.shape for spec in _onnx_io(proto)[0]})
        bad = backend.unsupported_nodes(proto)
        if bad:
            listing = "; ".join(f"{b['name'] or '<unnamed>'} ({b['domain']}::{b['op_type']}): {b['hint']}" for b in bad)
            raise UnsupportedOpError(f"{len(bad)} node(s) cannot be built by {cfg.backend}: {listing}")
        onnx_path = work / cfg.save_file
        atomic_write_bytes(onnx_path, proto.SerializeToString())
    in_specs, out_specs = _onnx_io(proto)
    facts = {
        "model": describe_model(model),
        "checkpoint": str(checkpoint) if checkpoint else None,
        **task.sidecar_facts(torch_model, model),
        "export_shapes": {name: list(t.shape) for name, t in zip(cfg.input_names, inputs)},
        "onnx_file": onnx_path.name, "onnx_sha256": sha256_file(onnx_path),
        "deploy_config": cfg.to_dict(),
    }
    onnx_sidecar = write_sidecar(onnx_path, {"backend": "onnxruntime", "precision": "fp32",
                                             "inputs": [s.to_dict() for s in in_specs],
                                             "outputs": [s.to_dict() for s in out_specs], "profiles": [], **facts})
    backend_path, sidecar = onnx_path, onnx_sidecar
    if cfg.backend != "onnxruntime":
        with stage(f"[{next(n)}/{steps}] build {cfg.backend} ({cfg.precision})"):
            built = backend.build(onnx_path, work, cfg)
            backend_path = built.path
            sidecar = write_sidecar(built.path, {"backend": cfg.backend, **facts, **built.facts})
            made.update(work / built.facts[k] for k in ("built_from", "check_with") if built.facts.get(k))
    result = ConvertResult(work, onnx_path, backend_path, sidecar,
                           files=sorted({onnx_path, onnx_sidecar, backend_path, sidecar, *made}))
    if test_img is not None:
        with stage(f"[{next(n)}/{steps}] compare with PyTorch on {Path(test_img).name}"):
            result.test_report = compare_on_image(torch_model, task, backend_path, test_img, device)
    return result


def _check_int8_route(cfg: DeployConfig) -> None:
    """INT8 is a TensorRT precision; fail before export when the installed TensorRT has no route to it."""
    from .backends.tensorrt import import_tensorrt
    from .backends.tensorrt.int8 import choose_route
    from .errors import ConfigError

    if cfg.backend != "tensorrt":
        raise ConfigError(f"{cfg.source}: int8_mode/precision='int8' is a TensorRT setting but backend_config.type is "
                          f"{cfg.backend!r}; use a *_tensorrt-int8_* config")
    choose_route(import_tensorrt(), cfg)


def _preprocessed(task: Task, shape: tuple, path) -> np.ndarray:
    return task.preprocess(path, shape)[0]


def _collect_calibration_data(cfg: DeployConfig, task: Task, work: Path, calib_dataset_cfg) -> Path:
    """The calibration file in ``work`` (MMDeploy's calib_data.h5), collected or reused."""
    import functools

    from .backends.tensorrt.int8 import check_calibration_shapes
    from .calibration import CalibrationFile, prepare_calibration_file
    from .config import ShapeRange

    name = cfg.input_names[0]
    shape = tuple(cfg.export_shape(name, task.default_input_shape))
    path = prepare_calibration_file(cfg, work, name, calib_dataset_cfg,
                                    fallback=functools.partial(_preprocessed, task, shape),
                                    fallback_key=f"{task.name} pre-processing to {list(shape)}")
    # The build checks again against the exported graph; this catches misfit images before the slow steps.
    profile = cfg.profiles[0] if cfg.profiles else {name: ShapeRange(shape, shape, shape)}
    with CalibrationFile(path) as calib:
        check_calibration_shapes(calib, {name: shape}, profile)
    return path


def compare_on_image(torch_model, task: Task, artefact: Path, image, device: str = "cpu") -> dict:
    """Run the artefact (or, where TensorRT cannot execute, its ONNX on ONNX Runtime) and PyTorch on one image."""
    deployed, label = _load_runnable(artefact, device)
    task = deployed.task  # carries what the sidecar recorded (class names, pre-processing)
    try:
        batch, meta = task.preprocess(image, deployed.input_shape())
        ours = deployed(batch)
        theirs = task.torch_outputs(torch_model, batch, deployed.runner.output_names)
    finally:
        deployed.close()
    result, torch_result = task.postprocess(ours, meta), task.postprocess(theirs, meta)
    return {"backend": label, "result": result, "torch_result": torch_result,
            "max_abs_diff": task.output_difference(ours, theirs), "formatted": task.format_result(result),
            "torch_formatted": task.format_result(torch_result)}


def _load_runnable(artefact: Path, device: str) -> tuple[DeployedModel, str]:
    from .errors import BackendUnavailableError

    try:
        return load(artefact, device=device), backend_for_file(artefact).name
    except BackendUnavailableError as e:
        sidecar = read_sidecar(artefact) or {}
        fallback = artefact.with_name(sidecar.get("check_with") or sidecar.get("built_from") or sidecar.get("onnx_file")
                                      or artefact.stem + ".onnx")
        logger.warning("%s; checking the same graph (%s) on ONNX Runtime instead", e, fallback.name)
        model = load(fallback, device="cpu")
        model.task = task_for(sidecar)  # an FP16/INT8 twin has no sidecar of its own: the engine's says the task
        model.sidecar.update({k: v for k, v in sidecar.items() if k in ("profiles", "export_shapes")})
        return model, f"onnxruntime ({fallback.name}, standing in for {artefact.name})"


def task_for(sidecar: Mapping | None, cfg: DeployConfig | None = None) -> Task:
    """The task of a converted model: what its sidecar recorded, overridden by an explicit deploy config."""
    layers = [(sidecar or {}).get("deploy_config", {}).get("codebase_config") or {},
              {k: (sidecar or {}).get(k) for k in ("class_names", "preprocess")},
              cfg.codebase if cfg is not None else {}]
    settings = {k: v for layer in layers for k, v in layer.items() if v is not None}
    task_name = (cfg.task if cfg else None) or (sidecar or {}).get("task") or "Classification"
    return get_task(task_name)(settings)


def load(path: str | os.PathLike, deploy_cfg: str | os.PathLike | Mapping | None = None,
         device: str | None = None) -> DeployedModel:
    """Load an ``.onnx`` (ONNX Runtime) or ``.engine`` (TensorRT) file; its sidecar supplies the task."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    backend = backend_for_file(path)
    sidecar = read_sidecar(path)
    cfg = load_deploy_config(deploy_cfg) if deploy_cfg is not None else None
    task = task_for(sidecar, cfg)
    if device is None:
        device = "cuda" if backend.name == "tensorrt" else "cpu"
    runner = backend.load(path, sidecar, device)
    if cfg is not None and cfg.profiles and not runner.profiles:
        runner.profiles = cfg.profiles
    return DeployedModel(runner, task, sidecar)
