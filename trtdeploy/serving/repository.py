"""Write a Triton model repository for a converted work dir.

Layout (NAME from --name):
  NAME/              Python backend: encoded image -> the task's answer (trtdeploy's runner inside: the engine
                     where TensorRT and a GPU can run it, else the ONNX on ONNX Runtime)
  NAME_onnx/         platform onnxruntime_onnx: the ONNX model, tensors in and out
  NAME_trt/          platform tensorrt_plan: the engine, when the work dir has a plugin-free one
  NAME_preprocess/, NAME_infer/, NAME_postprocess/, NAME_ensemble/   with --ensemble

Each model is staged in a temporary folder beside the repository and moved in whole, so a
failure or Ctrl-C leaves no half-written model that Triton would try to load.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..artefacts import deployed_artefact
from ..backends.base import backend_for_file
from ..backends.sidecar import read_sidecar, sidecar_path
from ..errors import ConfigError, ModelError, WorkDirError
from ..registry import Registry
from ..tasks import TASKS, Task, get_task
from ..utils.fileio import atomic_copy, atomic_write, ensure_writable_dir
from . import model_config as mc
from .stages import STAGES, StageTensor

STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")
DEFAULT_PYTHON_MAX_BATCH = 8
QUEUE_DELAY_US = 500
MODEL_SCRIPT = Path(__file__).with_name("python_backend_model.py")


@dataclass
class Converted:
    """What `trtdeploy convert` left in a work dir: the ONNX model and, maybe, an engine."""

    work_dir: Path
    onnx: Path
    onnx_sidecar: dict
    engine: Path | None = None
    engine_sidecar: dict | None = None

    @property
    def served(self) -> tuple[Path, dict]:
        """What the Python-backend models run: the engine where there is one (ONNX as its fallback), else the ONNX."""
        return (self.engine, self.engine_sidecar) if self.engine else (self.onnx, self.onnx_sidecar)

    @property
    def task(self) -> type[Task]:
        return get_task(self.onnx_sidecar.get("task"))

    @property
    def class_names(self) -> list[str] | None:
        return self.onnx_sidecar.get("class_names")


@dataclass
class ExportOptions:
    name: str
    max_batch: int | None = None  # None: from the engine's profiles, else DEFAULT_PYTHON_MAX_BATCH
    instances: int = 1
    ensemble_model: str = "python"


@dataclass
class ModelFiles:
    """One Triton model to write: its config and the files of version 1."""

    name: str
    kind: str
    config: dict
    copies: dict[str, Path] = field(default_factory=dict)  # path inside the model folder -> source
    texts: dict[str, str] = field(default_factory=dict)


@dataclass
class ExportResult:
    repo: Path
    written: list[ModelFiles]
    skipped: dict[str, str]  # model name -> why it was not written
    notes: list[str]


def find_converted(work_dir: str | os.PathLike) -> Converted:
    """What the work dir stands for (``artefacts.deployed_artefact``): a built artefact (an engine) over the ONNX its
    sidecar names, or a graph itself (ONNX Runtime INT8's end2end_int8.onnx over end2end.onnx)."""
    work = Path(work_dir)
    top = deployed_artefact(work)
    sidecar = read_sidecar(top, required=True)
    if top.suffix == ".onnx":
        return Converted(work, top, sidecar)
    onnx = work / sidecar.get("onnx_file", "end2end.onnx")
    if not onnx.is_file():
        raise ModelError(f"{work}: the engine's sidecar names {onnx.name}, which is missing; convert again")
    return Converted(work, onnx, read_sidecar(onnx, required=True), top, sidecar)


def custom_nodes(onnx_path: Path) -> list[str]:
    """Nodes outside the standard ONNX domains (trtdeploy's plugins, e.g. mmdeploy::...), as 'name (domain::op)'."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:
        raise ModelError(f"{onnx_path} is not a readable ONNX file ({e}); convert the model again") from None
    return [f"{n.name or '<unnamed>'} ({n.domain}::{n.op_type})" for n in model.graph.node
            if n.domain not in STANDARD_DOMAINS]


# -- config pieces ------------------------------------------------------------------------------
def _tensor(name: str, dtype: str, dims, where: str) -> dict:
    return {"name": name, "data_type": mc.triton_dtype(dtype, where), "dims": [int(d) for d in dims]}


def _tensors(items: list[StageTensor], where: str) -> list[dict]:
    return [_tensor(t.name, t.dtype, t.dims, where) for t in items]


def _batching(max_batch: int, preferred: int | None = None) -> dict:
    if max_batch <= 1:
        return {}
    prefs = [preferred] if preferred and 1 < preferred <= max_batch else []
    return {"dynamic_batching": {"preferred_batch_size": prefs, "max_queue_delay_microseconds": QUEUE_DELAY_US}}


def _warmup(inputs: list[dict], shapes: dict[str, list[int]], batched: bool) -> dict:
    """One random-data request at the optimisation shape, so the first client does not pay for set-up."""
    return {"model_warmup": [{"name": "random_input", "batch_size": 1, "count": 1, "inputs": {
        i["name"]: {"data_type": i["data_type"], "dims": shapes[i["name"]][1:] if batched else shapes[i["name"]],
                    "random_data": True} for i in inputs}}]}


def _opt_shapes(sidecar: dict) -> dict[str, list[int]]:
    shapes = {k: list(v) for k, v in (sidecar.get("export_shapes") or {}).items()}
    for profile in sidecar.get("profiles") or []:
        shapes.update({name: list(rng["opt_shape"]) for name, rng in profile.items()})
        break
    return shapes


def _batch_is_dynamic(sidecar: dict) -> bool:
    return all(not (isinstance(s["shape"][0], int) and s["shape"][0] > 0) for s in sidecar["inputs"] if s["shape"])


def _python_max_batch(opts: ExportOptions) -> int:
    return max(1, opts.max_batch if opts.max_batch is not None else DEFAULT_PYTHON_MAX_BATCH)


def _native_io(sidecar: dict, batched: bool, where: str, label_output: bool) -> tuple[list[dict], list[dict]]:
    def dims(spec):
        return mc.triton_dims(spec["shape"][1:] if batched else spec["shape"])
    inputs = [_tensor(s["name"], s["dtype"], dims(s), where) for s in sidecar["inputs"]]
    outputs = [_tensor(s["name"], s["dtype"], dims(s), where) for s in sidecar["outputs"]]
    if label_output and len(outputs) == 1:
        outputs[0]["label_filename"] = "labels.txt"  # enables Triton's classification extension
    return inputs, outputs


def _labels(converted: Converted) -> dict[str, str]:
    names = converted.class_names
    return {"labels.txt": "\n".join(names) + "\n"} if names and converted.task.serves_labels else {}


# -- model kinds --------------------------------------------------------------------------------
ModelKind = Callable[[Converted, ExportOptions], ModelFiles]
MODEL_KINDS: Registry[ModelKind] = Registry("Triton model kind")


class Skip(Exception):
    """A model kind that cannot be exported for this work dir; the message says why and what to do."""


def _stage_model(stage: str, name: str, converted: Converted, opts: ExportOptions) -> ModelFiles:
    stage_cls = STAGES.get(stage)
    model_file, sidecar = converted.served
    inputs, outputs = stage_cls.io(sidecar)
    where = f"{model_file.name} (stage {stage})"
    config = {"name": name, "backend": "python", "max_batch_size": _python_max_batch(opts),
              "input": _tensors(inputs, where), "output": _tensors(outputs, where),
              "instance_group": [{"kind": "KIND_CPU", "count": opts.instances}],
              "parameters": {"trtdeploy_stage": {"string_value": stage},
                             "trtdeploy_model_file": {"string_value": model_file.name}},
              **_batching(_python_max_batch(opts))}
    files = [model_file, converted.onnx] if stage_cls.needs_model_file else [model_file]
    copies = {"1/model.py": MODEL_SCRIPT}
    for path in dict.fromkeys(files):
        copies[f"1/{sidecar_path(path).name}"] = sidecar_path(path)
        if stage_cls.needs_model_file:
            copies[f"1/{path.name}"] = path
    return ModelFiles(name, f"python ({stage})", config, copies)


@MODEL_KINDS.register("python")
def python_pipeline(converted: Converted, opts: ExportOptions) -> ModelFiles:
    return _stage_model("pipeline", opts.name, converted, opts)


@MODEL_KINDS.register("onnxruntime_onnx")
def onnxruntime_model(converted: Converted, opts: ExportOptions) -> ModelFiles:
    custom = custom_nodes(converted.onnx)
    if custom:
        raise Skip(f"{converted.onnx.name} holds trtdeploy custom ops ({', '.join(custom[:3])}) that Triton's "
                   f"ONNX Runtime backend does not have; serve the Python-backend model instead")
    sidecar = converted.onnx_sidecar
    batched = _batch_is_dynamic(sidecar) and opts.max_batch != 0
    max_batch = _python_max_batch(opts) if batched else 0
    inputs, outputs = _native_io(sidecar, batched, converted.onnx.name, bool(_labels(converted)))
    config = {"name": f"{opts.name}_onnx", "platform": "onnxruntime_onnx", "max_batch_size": max_batch,
              "default_model_filename": "model.onnx", "input": inputs, "output": outputs,
              "instance_group": [{"kind": "KIND_AUTO", "count": opts.instances}],
              **_batching(max_batch), **_warmup(inputs, _opt_shapes(sidecar), batched)}
    return ModelFiles(config["name"], "onnxruntime_onnx", config, {"1/model.onnx": converted.onnx},
                      _labels(converted))


def engine_max_batch(sidecar: dict, requested: int | None, where: str) -> tuple[int, int | None]:
    """(max_batch_size, preferred batch) an engine's profiles allow; 0 when its batch is fixed."""
    profiles = sidecar.get("profiles") or []
    ranges = [rng for p in profiles for rng in p.values()]
    if not _batch_is_dynamic(sidecar) or not ranges or any(r["min_shape"][0] > 1 for r in ranges):
        if requested:
            raise ConfigError(f"{where}: the engine's batch dimension is fixed, so --max-batch {requested} cannot "
                              f"apply; pass --max-batch 0, or convert with a dynamic-batch config")
        return 0, None
    allowed = min(r["max_shape"][0] for r in ranges)
    if requested is not None and requested > allowed:
        raise ConfigError(f"{where}: --max-batch {requested} exceeds the engine's profile max batch {allowed}; "
                          f"pass --max-batch {allowed} or less, or convert with a larger max_shape[0]")
    return (allowed if requested is None else requested), ranges[0]["opt_shape"][0]


@MODEL_KINDS.register("tensorrt_plan")
def tensorrt_model(converted: Converted, opts: ExportOptions) -> ModelFiles:
    if converted.engine is None or backend_for_file(converted.engine).triton_platform != "tensorrt_plan":
        raise Skip(f"{converted.work_dir} has no engine; convert with a TensorRT deploy config to get one")
    sidecar = converted.engine_sidecar
    source = converted.work_dir / (sidecar.get("built_from") or converted.onnx.name)
    custom = custom_nodes(source if source.is_file() else converted.onnx)
    if custom:
        raise Skip(f"{converted.engine.name} needs trtdeploy's Python TensorRT plugins for {', '.join(custom[:3])}, "
                   f"which Triton's C++ TensorRT backend cannot load; serve the Python-backend model "
                   f"'{opts.name}', or convert with the plugin-free lowering of those ops")
    max_batch, preferred = engine_max_batch(sidecar, opts.max_batch, converted.engine.name)
    inputs, outputs = _native_io(sidecar, max_batch > 0, converted.engine.name, bool(_labels(converted)))
    config = {"name": f"{opts.name}_trt", "platform": "tensorrt_plan", "max_batch_size": max_batch,
              "default_model_filename": "model.plan", "input": inputs, "output": outputs,
              "instance_group": [{"kind": "KIND_GPU", "count": opts.instances}],
              **_batching(max_batch, preferred), **_warmup(inputs, _opt_shapes(sidecar), max_batch > 0)}
    return ModelFiles(config["name"], "tensorrt_plan", config, {"1/model.plan": converted.engine},
                      _labels(converted))


ENSEMBLE_STEP_MODELS = {"python": "_infer", "onnxruntime_onnx": "_onnx", "tensorrt_plan": "_trt"}


def ensemble_models(converted: Converted, opts: ExportOptions, written: dict[str, ModelFiles]) -> list[ModelFiles]:
    """Pre-processing, model and post-processing as separate models joined by an ensemble."""
    name, (_, sidecar) = opts.name, converted.served
    step_model = f"{name}{ENSEMBLE_STEP_MODELS[opts.ensemble_model]}"
    parts = [_stage_model("preprocess", f"{name}_preprocess", converted, opts),
             _stage_model("postprocess", f"{name}_postprocess", converted, opts)]
    if opts.ensemble_model == "python":
        parts.insert(1, _stage_model("infer", step_model, converted, opts))
    elif step_model not in written:
        raise ConfigError(f"--ensemble-model {opts.ensemble_model}: the model {step_model} was not exported "
                          f"({'it was skipped' if written else 'no such model'}); use --ensemble-model python")
    max_batch = _python_max_batch(opts)
    step_batch = written[step_model].config["max_batch_size"] if step_model in written else max_batch
    if step_batch == 0:
        raise ConfigError(f"--ensemble-model {opts.ensemble_model}: {step_model} has a fixed batch dimension, so it "
                          f"cannot be a step of a batching ensemble; use --ensemble-model python, or convert with a "
                          f"dynamic-batch config")
    if step_batch < max_batch:
        raise ConfigError(f"--ensemble-model {opts.ensemble_model}: {step_model} batches at most {step_batch}, less "
                          f"than --max-batch {max_batch}; pass --max-batch {step_batch}")
    in_names = [s["name"] for s in sidecar["inputs"]]
    out_names = [s["name"] for s in sidecar["outputs"]]
    task_names = [t.name for t in converted.task.served_outputs]
    steps = [
        {"model_name": f"{name}_preprocess", "model_version": -1, "input_map": {"image": "image"},
         "output_map": {in_names[0]: "preprocessed", "meta": "meta"}},
        {"model_name": step_model, "model_version": -1, "input_map": {in_names[0]: "preprocessed"},
         "output_map": {o: f"raw_{o}" for o in out_names}},
        {"model_name": f"{name}_postprocess", "model_version": -1,
         "input_map": {**{o: f"raw_{o}" for o in out_names}, "meta": "meta"},
         "output_map": {t: t for t in task_names}},
    ]
    pipeline = python_pipeline(converted, opts).config
    config = {"name": f"{name}_ensemble", "platform": "ensemble", "max_batch_size": max_batch,
              "input": pipeline["input"], "output": pipeline["output"], "ensemble_scheduling": {"step": steps}}
    return parts + [ModelFiles(config["name"], "ensemble", config)]


# -- writing ------------------------------------------------------------------------------------
def _check_repo(repo: Path, force: bool) -> None:
    if repo.exists() and not repo.is_dir():
        raise WorkDirError(f"--repo {repo} is a file; pass a folder for the model repository")
    entries = [p.name for p in repo.iterdir()] if repo.is_dir() else []
    if entries and not force:
        shown = ", ".join(sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
        raise WorkDirError(f"--repo {repo} is not empty ({shown}); pass --force to replace the models of the same "
                           f"name, or pick an empty folder")


def _write_model(model: ModelFiles, staging: Path) -> Path:
    folder = staging / model.name
    (folder / "1").mkdir(parents=True)
    with atomic_write(folder / mc.CONFIG_FILE, "w") as f:
        f.write(mc.render(model.config))
    for rel, src in model.copies.items():
        atomic_copy(src, folder / rel)
    for rel, text in model.texts.items():
        with atomic_write(folder / rel, "w") as f:
            f.write(text)
    return folder


def export_triton(work_dir: str | os.PathLike, repo: str | os.PathLike, name: str | None = None,
                  max_batch: int | None = None, instances: int = 1, ensemble: bool = False,
                  ensemble_model: str = "python", force: bool = False) -> ExportResult:
    """Write Triton models for the converted model in ``work_dir`` into ``repo``.

    Every config is checked against Triton's ModelConfig schema before anything is written.
    """
    converted = find_converted(work_dir)
    repo = Path(repo)
    opts = ExportOptions(mc.check_model_name(name or converted.work_dir.resolve().name,
                                             "--name" if name else "the work dir's name (pass --name)"),
                         max_batch, instances, ensemble_model)
    if max_batch is not None and not 0 <= max_batch <= 4096:
        raise ConfigError(f"--max-batch {max_batch} is out of range; pass 0 (no batching) to 4096")
    if not 1 <= instances <= 64:
        raise ConfigError(f"--instances {instances} is out of range; pass 1 to 64 instances per model")
    if ensemble_model not in ENSEMBLE_STEP_MODELS:
        raise ConfigError(f"--ensemble-model {ensemble_model!r} is unknown; pass one of {sorted(ENSEMBLE_STEP_MODELS)}")
    if not converted.task.served_outputs:  # refuse a task the server cannot answer for, before writing
        servable = sorted(name for name, task in TASKS.items() if task.served_outputs)
        raise ConfigError(f"{converted.work_dir} holds a {converted.task.name} model, which cannot be served: the task "
                          f"defines no served outputs (Task.served_outputs); serve a model of one of {servable}")
    _check_repo(repo, force)
    written: dict[str, ModelFiles] = {}
    skipped: dict[str, str] = {}
    for kind, make in MODEL_KINDS.items():
        try:
            model = make(converted, opts)
        except Skip as why:
            skipped[f"{opts.name} ({kind})"] = str(why)
            continue
        written[model.name] = model
    if ensemble:
        written.update({m.name: m for m in ensemble_models(converted, opts, written)})
    for model in written.values():
        mc.render(model.config)  # all configs pass the schema before the first file is written
    notes = _engine_notes(converted, written)
    ensure_writable_dir(repo)
    staging = Path(tempfile.mkdtemp(prefix=f".{repo.name}.", suffix=".trtdeploy-staging", dir=repo.parent))
    try:
        for model in written.values():
            folder = _write_model(model, staging)
            target = repo / model.name
            if target.exists():  # --force: the old model goes into staging and is removed with it
                os.replace(target, staging / f".{model.name}.old")
            os.replace(folder, target)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)
    return ExportResult(repo, list(written.values()), skipped, notes)


def _engine_notes(converted: Converted, written: dict[str, ModelFiles]) -> list[str]:
    if converted.engine is None:
        return []
    backend = backend_for_file(converted.engine)
    if not any(m.kind == backend.triton_platform for m in written.values()):
        return []
    return backend.serving_notes(converted.engine, converted.engine_sidecar or {})
