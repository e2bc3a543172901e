"""The Python API the CLI is a shell over: ``convert`` a model, ``load`` what was converted."""
from __future__ import annotations

import os
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .artefacts import resolve_model, stand_in_onnx, task_for
from .backends.base import CheckedGraph, Runner, TensorSpec, backend_for_file, get_backend, profiles_from_json
from .backends.sidecar import read_sidecar, sidecar_path, write_sidecar
from .config import DeployConfig, load_deploy_config
from .errors import BuildError, InputError, ModelError, ShapeError, UnsupportedOpError
from .tasks import Task, get_task
from .utils.fileio import atomic_write_hashed, clean_stale_temps, ensure_writable_dir
from .utils.image import channels_last, in_layout_of
from .utils.logging import ensure_visible, logger, stage
from .utils.onnx_file import onnx_file_bytes, read_onnx, read_onnx_with_bytes, with_nodes_of
from .utils.onnx_graph import all_nodes


@dataclass
class ConvertResult:
    """Where conversion put its files, what was built, and the test-image report if one was asked for."""

    work_dir: Path
    onnx_path: Path
    backend_path: Path
    sidecar_path: Path
    test_report: dict | None = None
    files: list[Path] = field(default_factory=list)
    model: str = ""
    weights: str = ""
    deploy_cfg: str = ""
    backend: str = ""
    precision: str = ""
    profiles: list[dict] = field(default_factory=list)
    input_shapes: dict[str, list] = field(default_factory=dict)  # the graph's, dynamic dims by name
    takes_image: bool = True  # one float [N, C, H, W] input, fed by `--input IMAGE` (else tensors from an .npz)
    source_format: str = ""   # "onnx": converted from an ONNX file (the reference is that file, not PyTorch)
    build_seconds: float | None = None   # the backend build alone (TensorRT); None for ONNX Runtime
    total_seconds: float = 0.0

    def summary(self) -> str:
        """What trtexec and `yolo export` end with: files and sizes, precision, profiles, times, the check
        against PyTorch, and the commands to run next."""
        from .utils.fileio import human_size

        lines = [f"converted {self.model} (weights: {self.weights}) with {self.deploy_cfg}",
                 f"  backend      {self.backend} {self.precision}",
                 "  inputs       " + "; ".join(f"{name} [{', '.join(map(str, shape))}]"
                                             for name, shape in self.input_shapes.items())]
        for i, profile in enumerate(self.profiles):
            lines.append(f"  profile {i:<4} " + "; ".join(
                f"{name} min {_dims(r['min_shape'])} opt {_dims(r['opt_shape'])} max {_dims(r['max_shape'])}"
                for name, r in profile.items()))
        build = f"build {self.build_seconds:.1f} s, " if self.build_seconds is not None else ""
        lines.append(f"  time         {build}total {self.total_seconds:.1f} s")
        report = self.test_report
        reference = "PyTorch" if self.source_format != "onnx" else Path(self.model).name
        check = ("pass --test-img IMAGE (or run the compare command below)" if self.takes_image else
                 "run the compare command below with an .npz of its inputs")
        lines.append(f"  vs {report['reference']}: {report['difference']} on "
                     f"{report['image']} ({report['backend']})" if report else f"  vs {reference}   not checked: {check}")
        lines.append("files:")
        width = max(len(str(p)) for p in self.files)
        lines += [f"  {str(p):<{width}}  {human_size(p.stat().st_size)}" for p in self.files if p.is_file()]
        model = self.model if " " not in self.model else f"'{self.model}'"
        feed = "IMAGE" if self.takes_image else "INPUTS.npz"
        lines += ["next:",
                  f"  trtdeploy run {self.backend_path} --input {feed}",
                  f"  trtdeploy compare {self.onnx_path}{'' if self.backend_path == self.onnx_path else ' ' + str(self.backend_path)} "
                  f"--model {model} --input {feed}",
                  *([f"  trtdeploy test {self.deploy_cfg} {model} {self.backend_path} --dataset VAL_FOLDER"]
                    if self.takes_image else []),
                  f"  trtdeploy profile {self.backend_path}"]
        return "\n".join(lines)


def _dims(shape) -> str:
    return "x".join(map(str, shape))


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
        return self.input_shapes(self.runner.input_names[:1])[self.runner.input_names[0]]

    def input_shapes(self, names: list[str] | None = None) -> dict[str, tuple[int, ...]]:
        """A runnable shape per input (all, or ``names``): fixed dims from the model, the others from the first
        profile holding the input, else the export shape, else (first input only) the task's default size."""
        shapes = {}
        for i, spec in enumerate(self.runner.inputs):
            if names is not None and spec.name not in names:
                continue
            hint = (self.sidecar.get("export_shapes") or {}).get(spec.name)
            hint = next((list(p[spec.name].opt) for p in self.runner.profiles if spec.name in p), hint)
            if hint is None and i == 0 and len(self.task.default_input_shape) == len(spec.shape):
                hint = in_layout_of(spec.shape, self.task.default_input_shape)
            dims = [d if isinstance(d, int) and d > 0 else (hint[k] if hint else None) for k, d in enumerate(spec.shape)]
            if None in dims:
                raise ShapeError(f"{self.runner.source}: input {spec.name!r} has dynamic shape {spec.shape} and no "
                                 f"profile or export shape to take it from; give it with --shape "
                                 f"{spec.name}:{'x'.join(str(d or 1) for d in dims)}")
            shapes[spec.name] = tuple(dims)
        return shapes

    def predict(self, image) -> Any:
        """The task's answer for one image (a path or an (H, W, 3) array), or a list of answers for a list."""
        if isinstance(image, (list, tuple)):
            return [self.predict(one) for one in image]
        batch, meta = self.task.prepare(image, self.input_shape())
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
    """Export ``model`` to ONNX (or read an ONNX file), optimise the graph, build the backend artefact, write sidecars.

    ``model`` is ``torchvision://<name>``, ``<module>:<factory>``, a ``torch.nn.Module`` or a ``.onnx`` file
    (no export and no torch: its input names and dynamic dimensions are the profiles' keys and ranges);
    ``calib_dataset_cfg`` is the INT8 calibration dataset config (MMDeploy's --calib-dataset-cfg).
    Files land in ``work_dir`` atomically; a failure leaves earlier files as they were.
    """
    from . import passes

    ensure_visible()  # from Python too, progress goes through logging
    started = time.perf_counter()
    cfg = load_deploy_config(deploy_cfg)
    onnx_file = onnx_file_of(model)
    if onnx_file is None:
        cfg.check_export_axes()
    task_cls = get_task(cfg.task)
    backend = get_backend(cfg.backend)
    backend.require()  # fail before the slow steps
    backend.check_config(cfg)
    if not cfg.int8 and calib_dataset_cfg is not None:
        logger.warning("--calib-dataset-cfg is ignored: %s is not an INT8 config (common_config.int8_mode)", cfg.source)
    if test_img is not None and not Path(test_img).is_file():
        raise InputError(f"--test-img {test_img} does not exist; pass an image file (JPEG or PNG)")
    work = ensure_writable_dir(work_dir)
    for stale in clean_stale_temps(work):
        logger.info("removed %s left by an interrupted run", stale.name)
    task = task_cls.from_config(cfg)
    steps = 4 + (test_img is not None) - (not backend.builds_for(cfg)) + cfg.int8 - (onnx_file is not None)
    n = iter(range(1, steps + 1))
    made: set[Path] = set()  # intermediate files worth listing (calibration data, the graph the engine came from)
    torch_model = proto = as_read = prebuilt = writing = None
    try:
        if onnx_file is not None:  # first: calibration needs its input names
            with stage(f"[{next(n)}/{steps}] read {onnx_file}"):
                data = onnx_file_bytes(onnx_file)
                # a file the passes will leave as it is starts building now, beside the checks
                prebuilt = backend.prebuild(data, onnx_file, cfg) if _builds_as_read(data, task, backend, cfg) else None
                proto, as_read = read_onnx_with_bytes(onnx_file, data=data)  # its bytes: what _serialized keeps
                original_nodes = [node.SerializeToString() for node in proto.graph.node]
                proto = task.adapt_graph(proto)
                cfg.check_profiles({spec.name: spec.shape for spec in _onnx_io(proto)[0]}, origin=str(onnx_file))
                export_shapes = onnx_file_shapes(cfg, proto, task.default_input_shape)
            weights, model_name = f"from {onnx_file.name}", str(onnx_file)
        if onnx_file is None:
            from .export import load_model
            from .export.model_loader import describe_model, describe_weights, pretrained_weights_hint

            model_name = describe_model(model)
            with stage(f"[{next(n)}/{steps}] load model {model_name}"):
                torch_model = load_model(model, checkpoint, device)
                task.check_model(torch_model)
                if cfg.int8 and "exclude_nodes" not in cfg.calib and (kept := task.int8_exclude_nodes(torch_model)):
                    cfg.calib["exclude_nodes"] = kept
                    logger.info("keeping %s out of INT8 (%s's default; calib_config.exclude_nodes replaces it)",
                                ", ".join(kept), type(torch_model).__name__)
            weights = describe_weights(model, checkpoint)
            if weights.startswith("random"):
                logger.warning("%s has random weights, seeded from the MODEL string (every trtdeploy command given this MODEL "
                               "rebuilds the same ones); for trained weights pass --checkpoint FILE%s", model,
                               pretrained_weights_hint(model))
        if cfg.int8:  # after the model (a detector family's pre-processing is the calibration pipeline's), before export
            with stage(f"[{next(n)}/{steps}] collect INT8 calibration data"):
                name, shape = (next(iter(export_shapes.items())) if proto is not None
                               else (cfg.input_names[0], cfg.export_shape(cfg.input_names[0], task.default_input_shape)))
                made.add(_collect_calibration_data(cfg, task, work, calib_dataset_cfg, name, tuple(shape)))
        if onnx_file is None:
            from .export import export_onnx

            with stage(f"[{next(n)}/{steps}] export ONNX (opset {cfg.opset})"):
                inputs = task.example_inputs(cfg, device)
                proto = export_onnx(task.torch_wrapper(torch_model), inputs, cfg)
                export_shapes = {name: list(t.shape) for name, t in zip(cfg.input_names, inputs)}
        with stage(f"[{next(n)}/{steps}] simplify and check the graph"):
            if onnx_file is not None and any(n.domain not in ("", "ai.onnx") for n in all_nodes(proto.graph)):
                from .ops import load_ops

                load_ops()  # an exported graph's ops were registered by the export; a file's custom nodes need them here
            proto = passes.lower_custom_ops(proto, cfg.backend_cfg.get("custom_ops", "auto"), backend.serves_custom_op)
            if cfg.onnx.get("optimize", True) and cfg.onnx.get("simplify", True):
                proto = passes.simplify(proto)
            proto = passes.check(passes.name_nodes(passes.fix_for_parser(proto)))
            cfg.check_profiles({spec.name: spec.shape for spec in _onnx_io(proto)[0]},
                               origin=str(onnx_file) if onnx_file is not None else None)
            passes.check_profile_shapes(proto, cfg.profiles, cfg.source)
            bad = backend.unsupported_nodes(proto)
            if bad:
                listing = "; ".join(f"{b['name'] or '<unnamed>'} ({b['domain']}::{b['op_type']}): {b['hint']}" for b in bad)
                raise UnsupportedOpError(f"{len(bad)} node(s) cannot be built by {cfg.backend}: {listing}")
            onnx_path = work / cfg.save_file
            onnx_bytes, spliced = _serialized(proto, as_read)
            if prebuilt is not None and not (spliced and passes.builds_the_same(proto, original_nodes)):
                prebuilt.discard()  # the passes changed what the file builds: that build is not this graph's
                prebuilt = None
        in_specs, out_specs = _onnx_io(proto)
        facts = {
            "model": model_name,
            **({"source_format": "onnx"} if onnx_file is not None else {}),
            "checkpoint": str(checkpoint) if checkpoint else None,
            "weights": weights,
            **(task.graph_facts(out_specs) if onnx_file is not None else task.sidecar_facts(torch_model, model)),
            "export_shapes": {name: list(shape) for name, shape in export_shapes.items()},
            "onnx_file": onnx_path.name, "onnx_sha256": None,  # known once the file is written (_write_graph)
            "deploy_config": cfg.to_dict(),
        }
        # the graph's I/O: what a built artefact's sidecar says too, unless its backend reports its own
        graph_io = {"inputs": [s.to_dict() for s in in_specs], "outputs": [s.to_dict() for s in out_specs], "profiles": []}
        builds = backend.builds_for(cfg)
        writing = _write_graph(onnx_path, onnx_bytes, {"backend": backend_for_file(onnx_path).name, "precision": "fp32",
                                                       **graph_io, **facts})
        if not (builds and backend.builds_from_memory(cfg)):
            facts["onnx_sha256"] = writing.result()  # the backend reads the file: it is written first
        backend_path, sidecar = onnx_path, sidecar_path(onnx_path)
        build_seconds, profiles = None, []
        if builds:
            with stage(f"[{next(n)}/{steps}] build {cfg.backend} ({cfg.precision})"):
                build_start = time.perf_counter()
                graph = CheckedGraph(proto, onnx_bytes, facts["export_shapes"], writing.result, prebuilt)
                built = backend.build(onnx_path, work, cfg, model=graph,
                                      sample=_numerics_sample(cfg, task, test_img, export_shapes))
                build_seconds = time.perf_counter() - build_start
                profiles = list(built.facts.get("profiles") or [])
                backend_path = built.path
                facts["onnx_sha256"] = writing.result()
                sidecar = write_sidecar(built.path, {"backend": cfg.backend, **graph_io, **facts, **built.facts})
                made.update(work / built.facts[k] for k in ("built_from", "check_with") if built.facts.get(k))
    finally:  # whatever happened, the graph's file and sidecar are complete (or as they were) on return,
        # and no build started before the checks is left running
        if prebuilt is not None:
            prebuilt.discard()
        if writing is not None:
            futures.wait([writing])
    result = ConvertResult(work, onnx_path, backend_path, sidecar,
                           files=sorted({onnx_path, sidecar_path(onnx_path), backend_path, sidecar, *made}),
                           model=model_name, weights=weights, deploy_cfg=str(cfg.source),
                           backend=cfg.backend, precision=cfg.precision, profiles=profiles,
                           input_shapes={spec.name: list(spec.shape) for spec in in_specs}, build_seconds=build_seconds,
                           takes_image=len(in_specs) == 1 and np.dtype(in_specs[0].dtype).kind == "f"
                           and len(in_specs[0].shape) == 4, source_format="onnx" if onnx_file is not None else "")
    if test_img is not None:
        reference = OnnxFileReference(onnx_file, task) if onnx_file is not None else TorchReference(torch_model, task)
        with stage(f"[{next(n)}/{steps}] compare with {reference.label} on {Path(test_img).name}"):
            result.test_report = {**compare_on_image(reference, task, backend_path, test_img, device),
                                  "image": str(test_img)}
        if result.test_report["nonfinite"]:
            raise BuildError(f"--test-img {test_img}: {result.test_report['backend']} gives non-finite outputs "
                             f"{', '.join(result.test_report['nonfinite'])}; find the node with `trtdeploy compare "
                             f"{onnx_path} {backend_path} --bisect --input {test_img}` (the files are written)")
    result.total_seconds = time.perf_counter() - started
    logger.info("converted in %.1f s: %s", result.total_seconds, ", ".join(p.name for p in result.files))
    return result


def _write_graph(path: Path, data: bytes, facts: dict) -> futures.Future:
    """Start writing the graph's file, then its sidecar with the file's hash, in a thread (which ``result()``
    waits for, returning the hash): a backend that builds from the bytes in memory (TensorRT, FP32) overlaps
    the 0.05-0.25 s of writing and syncing a 45 MB file with its build."""
    def write() -> str:
        sha256 = atomic_write_hashed(path, data)
        write_sidecar(path, {**facts, "onnx_sha256": sha256})
        return sha256

    pool = futures.ThreadPoolExecutor(1, thread_name_prefix="write-graph")
    try:
        return pool.submit(write)
    finally:
        pool.shutdown(wait=False)


def _builds_as_read(data: bytes, task: Task, backend, cfg: DeployConfig) -> bool:
    """Whether convert's passes and the task will leave the ONNX file ``data`` building as it is (a cheap look
    at a throwaway parse): only then is a build started before them worth its cost, since one that is
    discarded (or an error or Ctrl-C meanwhile) waits for it to finish."""
    import onnx

    from . import passes

    if not (backend.builds_for(cfg) and backend.builds_from_memory(cfg)):  # no build beside the checks: no look
        return False
    try:
        model = onnx.load_model_from_string(data)
    except Exception:  # noqa: BLE001  (reading it properly says what is wrong)
        return False
    return task.adapt_graph(model) is model and passes.builds_as_read(model)


def _serialized(proto, read: bytes | None) -> tuple[bytes, bool]:
    """``proto``'s bytes, and whether only its nodes differ from the file it was ``read`` from. For such a graph
    they are that file's bytes with ``proto``'s nodes in place of its own (``with_nodes_of``: the file itself when
    no pass changed the graph, or when only nodes changed, as when torch.onnx's weight aliases are bypassed, no
    45 MB serialisation of the weights), parsed back to prove they are ``proto``; a full serialisation otherwise."""
    if read is not None:
        spliced = with_nodes_of(proto, read)
        if type(proto).FromString(spliced) == proto:
            return spliced, True
    return proto.SerializeToString(), False


def onnx_file_of(model: Any) -> Path | None:
    """``model`` as an ONNX file path when it names one (``*.onnx``), else None (a PyTorch model)."""
    if isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".onnx") and "://" not in str(model):
        return Path(model)
    return None


def onnx_file_shapes(cfg: DeployConfig, proto, default: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Each input of an ONNX file at the shape a static build and calibration use: the first profile's opt
    shape, else the file's fixed dimensions with the task's default (batch 1) for the dynamic ones."""
    shapes = {}
    for spec in _onnx_io(proto)[0]:
        fill = in_layout_of(spec.shape, default) if len(default) == len(spec.shape) else (1,) * len(spec.shape)
        own = tuple(d if isinstance(d, int) and d > 0 else fill[i] for i, d in enumerate(spec.shape))
        shapes[spec.name] = tuple(cfg.export_shape(spec.name, own))
    return shapes


def _numerics_sample(cfg: DeployConfig, task: Task, test_img, export_shapes: Mapping[str, list]):
    """The pre-processed test image that FP16/BF16 numerics are checked on before the build (None: random input)."""
    if test_img is None or cfg.precision not in ("fp16", "bf16") or len(export_shapes) != 1:
        return None
    name, shape = next(iter(export_shapes.items()))
    return {name: task.prepare(test_img, tuple(shape))[0]}, f"--test-img {Path(test_img).name}"


def _preprocessed(task: Task, shape: tuple, path) -> np.ndarray:
    return task.prepare(path, shape)[0]


def _collect_calibration_data(cfg: DeployConfig, task: Task, work: Path, calib_dataset_cfg, name: str,
                              shape: tuple[int, ...]) -> Path:
    """The calibration file in ``work`` (MMDeploy's calib_data.h5) for input ``name`` at ``shape``, collected or reused."""
    import functools

    from .calibration.qdq import check_calibration_shapes
    from .calibration import CalibrationFile, prepare_calibration_file
    from .config import ShapeRange

    path = prepare_calibration_file(cfg, work, name, calib_dataset_cfg,
                                    fallback=functools.partial(_preprocessed, task, shape),
                                    fallback_key=f"{task.name} pre-processing to {list(shape)}",
                                    channels_last=channels_last(shape))
    # The build checks again against the exported graph; this catches misfit images before the slow steps.
    profile = cfg.profiles[0] if cfg.profiles else {name: ShapeRange(shape, shape, shape)}
    with CalibrationFile(path) as calib:
        check_calibration_shapes(calib, {name: shape}, profile)
    return path


class TorchReference:
    """The eager PyTorch model, run the way the exported graph runs."""

    label = "PyTorch"

    def __init__(self, torch_model, task: Task):
        self.torch_model, self.task = torch_model, task

    def __call__(self, batch: np.ndarray, input_name: str, output_names: list[str]) -> dict[str, np.ndarray]:
        return self.task.torch_outputs(self.torch_model, batch, output_names)


class OnnxFileReference:
    """The user's own ONNX file on ONNX Runtime (there is no PyTorch model), with what the task appended to it
    (e.g. NMS after a raw head, as the custom node itself: ONNX Runtime runs it with trtdeploy's reference op)."""

    def __init__(self, path: Path, task: Task):
        self.path, self.task = Path(path), task
        self.label = f"{self.path.name} on ONNX Runtime"

    def __call__(self, batch: np.ndarray, input_name: str, output_names: list[str]) -> dict[str, np.ndarray]:
        import tempfile

        original = read_onnx(self.path)
        graph = self.task.adapt_graph(read_onnx(self.path))
        with tempfile.TemporaryDirectory(prefix="trtdeploy-reference-") as scratch:
            path = self.path
            if graph != original:
                path = Path(scratch) / self.path.name
                path.write_bytes(graph.SerializeToString())
            model = load(path, device="cpu")
            try:
                outputs = model({input_name: batch})
            finally:
                model.close()
        return {name: outputs[name] for name in output_names if name in outputs}


def compare_on_image(reference, task: Task, artefact: Path, image, device: str = "cpu") -> dict:
    """Run the artefact (or, where TensorRT cannot execute, its ONNX on ONNX Runtime) and ``reference``
    (a ``TorchReference`` or an ``OnnxFileReference``) on one image."""
    from .passes.numerics import nonfinite_outputs  # here: `passes` imports onnx, which `import trtdeploy` avoids

    deployed, label = _load_runnable(artefact, device)
    task = deployed.task  # carries what the sidecar recorded (class names, pre-processing)
    try:
        batch, meta = task.prepare(image, deployed.input_shape())
        ours = deployed(batch)
        theirs = reference(batch, deployed.runner.input_names[0], deployed.runner.output_names)
    finally:
        deployed.close()
    try:
        result, reference_result = task.postprocess(ours, meta), task.postprocess(theirs, meta)
        formatted = task.format_result(result), task.format_result(reference_result)
    except ModelError:  # outputs the task does not read (a raw detection head kept raw): the arrays are compared
        result = reference_result = None
        formatted = tuple("\n".join(f"  {k} {list(v.shape)}" for k, v in out.items()) for out in (ours, theirs))
    return {"backend": label, "result": result, "reference": reference.label, "reference_result": reference_result,
            "max_abs_diff": task.output_difference(ours, theirs), "difference": task.describe_difference(ours, theirs),
            "nonfinite": nonfinite_outputs(ours), "formatted": formatted[0], "reference_formatted": formatted[1]}


def _load_runnable(artefact: Path, device: str) -> tuple[DeployedModel, str]:
    from .errors import BackendUnavailableError

    try:
        return load(artefact, device=device), backend_for_file(artefact).name
    except BackendUnavailableError as e:
        sidecar = read_sidecar(artefact) or {}
        stand_in = stand_in_onnx(artefact, sidecar)
        if stand_in is None:
            raise
        logger.warning("%s; checking the same graph (%s) on ONNX Runtime instead", e, stand_in.name)
        return (load_stand_in(stand_in, sidecar),
                f"{backend_for_file(stand_in).name} ({stand_in.name}, standing in for {artefact.name})")


def load_stand_in(stand_in: Path, sidecar: Mapping, cfg: DeployConfig | None = None) -> DeployedModel:
    """The ONNX graph that stands in for an engine (``artefacts.stand_in_onnx``), on the CPU, with the engine's
    task, profiles and export shapes (the graph has no sidecar of its own: the engine's tells them)."""
    model = load(stand_in, deploy_cfg=cfg, device="cpu")
    model.task = task_for(sidecar, cfg)
    model.sidecar.update({k: sidecar[k] for k in ("profiles", "export_shapes") if k in sidecar})
    model.runner.profiles = model.runner.profiles or profiles_from_json(sidecar.get("profiles"))
    return model


def load(path: str | os.PathLike, deploy_cfg: str | os.PathLike | Mapping | None = None,
         device: str | None = None) -> DeployedModel:
    """Load an ``.onnx`` (ONNX Runtime) or ``.engine`` (TensorRT) file, or a work dir's converted model
    (``artefacts.resolve_model``); its sidecar supplies the task."""
    path = resolve_model(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    backend = backend_for_file(path)
    sidecar = read_sidecar(path)
    cfg = load_deploy_config(deploy_cfg) if deploy_cfg is not None else None
    task = task_for(sidecar, cfg)
    runner = backend.load(path, sidecar, device or backend.default_device)
    if cfg is not None and cfg.profiles and not runner.profiles:
        runner.profiles = cfg.profiles
    return DeployedModel(runner, task, sidecar)
