"""trtdeploy's plugin specs (``ops/<op>/plugin.py``) as TensorRT plugins (IPluginV3), and their registration.

This module turns a ``PluginSpec`` into IPluginV3 / IPluginCreatorV3One classes for one
TensorRT module (``tensorrt`` and ``tensorrt_rtx`` share the API, not the base classes),
registers the creators and bridges TensorRT-RTX's library-name gap for its ONNX parser.

When: only where a plugin is needed, so that building a graph without custom nodes imports
no op (and no torch): before parsing a graph that holds plugin nodes (``prepare_plugin_build``)
and before deserializing an engine whose sidecar lists plugins (``check_engine_plugins``).
An engine stores only the plugin's name, version, namespace and serialized fields.
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import BackendUnavailableError, BuildError, ModelError
from ...ops.fields import ONNX_TYPE_OF, Field, complete_fields
from ...ops.plugins import PluginSpec, check_plugin_nodes, plugin_specs
from ...utils.logging import logger

# field kind -> Python value from a PluginField's data (a numpy array)
_FROM_PLUGIN_FIELD = {"int": lambda data: int(data.reshape(-1)[0]), "float": lambda data: float(data.reshape(-1)[0]),
                      "floats": lambda data: [float(v) for v in data.reshape(-1)],
                      "string": lambda data: bytes(data.astype(np.uint8)).split(b"\0")[0].decode()}


# field kind -> the PluginFieldType names that may carry it (ONNX INT arrives as INT32, FLOAT as FLOAT32)
_PLUGIN_TYPES = {"int": ("INT32", "INT64", "INT16", "INT8"), "float": ("FLOAT32", "FLOAT64", "FLOAT16", "INT32"),
                 "floats": ("FLOAT32", "FLOAT64", "INT32"), "string": ("CHAR",)}


def read_plugin_fields(collection, fields: Sequence[Field], where: str) -> dict:
    """Field values from a PluginFieldCollection (what the parser or the engine hands the creator)."""
    known = {f.name: f for f in fields}
    values = {}
    for plugin_field in collection:
        field = known.get(plugin_field.name)
        if field is None:
            continue
        if plugin_field.type.name not in _PLUGIN_TYPES[field.kind]:
            raise BuildError(f"{where}: attribute {field.name!r} must be of ONNX type {ONNX_TYPE_OF[field.kind]}, "
                             f"got {plugin_field.type.name}; export it with the right type")
        values[field.name] = _FROM_PLUGIN_FIELD[field.kind](np.asarray(plugin_field.data))
    return complete_fields(values, fields, where)


_NUMPY_OF = {"int": np.int32, "float": np.float32, "floats": np.float32}


def to_plugin_fields(module, values: Mapping, fields: Sequence[Field]):
    """A PluginFieldCollection that serializes ``values`` (what the engine stores for this plugin).

    Returns it with the arrays it points into: a PluginField does not own its data, so the
    caller must keep the arrays alive as long as TensorRT may read the collection.
    """
    types = {"int": module.PluginFieldType.INT32, "float": module.PluginFieldType.FLOAT32,
             "floats": module.PluginFieldType.FLOAT32, "string": module.PluginFieldType.CHAR}
    out, arrays = [], []
    for field in fields:
        value = values[field.name]
        if field.kind == "string":
            data = np.frombuffer(value.encode() + b"\0", dtype=np.int8)
        else:
            data = np.atleast_1d(np.asarray(value, dtype=_NUMPY_OF[field.kind]))
        arrays.append(data)
        out.append(module.PluginField(field.name, data, types[field.kind]))
    return module.PluginFieldCollection(out), arrays


# -- the bridge from a PluginSpec to TensorRT's Python plugin interface ---------------------------------
# TensorRT data type name -> numpy type string of its buffers (the types our plugins take)
_TYPESTRS = {"FLOAT": "<f4", "HALF": "<f2", "INT32": "<i4", "INT64": "<i8", "INT8": "|i1", "BOOL": "|b1",
             "UINT8": "|u1"}


class _DeviceBuffer:
    """A CUDA pointer with a shape and type, readable by torch without a copy."""

    def __init__(self, ptr: int, shape: tuple, typestr: str):
        self.__cuda_array_interface__ = {"shape": tuple(shape), "typestr": typestr, "data": (int(ptr), False),
                                         "version": 2, "strides": None}


def device_tensor(ptr: int, desc) -> "torch.Tensor":
    """A torch tensor over one of TensorRT's buffers, without a copy."""
    import torch

    return torch.as_tensor(_DeviceBuffer(ptr, tuple(desc.dims), _TYPESTRS[desc.type.name]), device="cuda")


def _make_classes(module):
    """IPluginV3 and creator classes bound to one TensorRT module."""

    class PythonPlugin(module.IPluginV3, module.IPluginV3OneCore, module.IPluginV3OneBuild,
                       module.IPluginV3OneRuntime):
        def __init__(self, spec: PluginSpec, values: dict, layer: str):
            module.IPluginV3.__init__(self)
            module.IPluginV3OneCore.__init__(self)
            module.IPluginV3OneBuild.__init__(self)
            module.IPluginV3OneRuntime.__init__(self)
            self.spec, self.values, self.layer = spec, values, layer
            self.num_outputs = spec.num_outputs(values)
            self.plugin_name = spec.name
            self.plugin_version = spec.version
            self.plugin_namespace = spec.namespace
            self.timing_cache_id = ""

        def get_capability_interface(self, capability_type):
            return self

        def clone(self):
            return PythonPlugin(self.spec, dict(self.values), self.layer)

        def get_output_data_types(self, input_types):
            return self.spec.output_dtypes(module, self.values, list(input_types))

        def get_output_shapes(self, inputs, shape_inputs, expr_builder):
            return self.spec.output_shapes(module, self.values, list(inputs), expr_builder)

        def supports_format_combination(self, pos, in_out, num_inputs):
            desc = in_out[pos].desc
            wanted = self.spec.io_types(module, self.values, num_inputs)
            return desc.format == module.TensorFormat.LINEAR and desc.type == wanted[pos]

        def configure_plugin(self, inputs, outputs):
            shapes = [tuple(d.desc.dims) for d in inputs]
            self.spec.check_inputs(self.values, shapes, f"layer {self.layer} ({self.spec.namespace}::{self.spec.name})")

        def on_shape_change(self, inputs, outputs):
            pass

        def get_workspace_size(self, inputs, outputs):
            # the largest shapes of the profile: one workspace serves every shape it allows
            return int(self.spec.workspace_size(self.values, [tuple(d.max) for d in inputs],
                                                [tuple(d.max) for d in outputs]))

        def get_valid_tactics(self):
            return []

        def set_tactic(self, tactic):
            pass

        def attach_to_context(self, context):
            return self.clone()

        def get_fields_to_serialize(self):
            collection, self._field_data = to_plugin_fields(module, self.values, self.spec.fields)
            return collection

        def enqueue(self, input_desc, output_desc, inputs, outputs, workspace, stream):
            import torch

            ins = [device_tensor(p, d) for p, d in zip(inputs, input_desc)]
            outs = [device_tensor(p, d) for p, d in zip(outputs, output_desc)]
            size = self.spec.workspace_size(self.values, [tuple(t.shape) for t in ins], [tuple(t.shape) for t in outs])
            scratch = torch.as_tensor(_DeviceBuffer(workspace, (size,), "|u1"), device="cuda") if size else None
            with torch.cuda.stream(torch.cuda.ExternalStream(int(stream))):
                self.spec.enqueue(self.values, ins, outs, scratch)

    class PythonPluginCreator(module.IPluginCreatorV3One):
        def __init__(self, spec: PluginSpec):
            module.IPluginCreatorV3One.__init__(self)
            self.spec = spec
            self.name = spec.name
            self.plugin_version = spec.version
            self.plugin_namespace = spec.namespace
            self.field_names = module.PluginFieldCollection(
                [module.PluginField(f.name) for f in spec.fields])

        def create_plugin(self, name, field_collection, phase):
            where = f"layer {name} ({self.spec.namespace}::{self.spec.name})"
            try:
                values = read_plugin_fields(field_collection, self.spec.fields, where)
            except BuildError as e:
                _creation_errors.append(str(e))
                raise
            return PythonPlugin(self.spec, values, name)

    return PythonPlugin, PythonPluginCreator


# Errors raised inside create_plugin reach TensorRT only as "could not create the plugin"; check-env shows the last.
_creation_errors: list[str] = []


def last_creation_error() -> str | None:
    return _creation_errors[-1] if _creation_errors else None


# -- the library-name gap of TensorRT-RTX's parser ----------------------------------------------------
# flavour -> (the Python package holding its shared libraries, the unversioned name its parser dlopens)
LOADER_NAMES = {"tensorrt_rtx": ("tensorrt_rtx_libs", "libtensorrt_rtx.so"),
                "tensorrt": ("tensorrt_libs", "libnvinfer.so")}
LINK_DIR_ENV = "TRTDEPLOY_PLUGIN_LINK_DIR"


def _versioned(folder: Path, unversioned: str) -> Path | None:
    found = sorted(folder.glob(unversioned + ".*"))
    return found[0] if found else None


def ensure_loader_link(flavour: str) -> Path | None:
    """Make the unversioned core library name resolvable for the ONNX parser, before it meets a plugin node.

    TensorRT-RTX's parser dlopens ``libtensorrt_rtx.so`` (unversioned) when it meets a plugin
    node and the wheel ships only ``libtensorrt_rtx.so.1``; the process aborts if the name does not
    resolve. The parser searches its own folder (``$ORIGIN``), so we put a symlink there, created
    atomically (temp name + rename) and only when missing: idempotent and safe between processes.
    Where that folder is read-only, the link goes to ``$TRTDEPLOY_PLUGIN_LINK_DIR`` (default
    ``~/.cache/trtdeploy/lib``), which must then be on LD_LIBRARY_PATH before Python starts; we
    check that and say so rather than let the parser abort the process.
    """
    import importlib

    if flavour not in LOADER_NAMES:
        return None
    package, unversioned = LOADER_NAMES[flavour]
    try:
        libs = Path(importlib.import_module(package).__file__).parent
    except ImportError:
        return None  # not a pip install: a tar install ships the unversioned names
    if (libs / unversioned).exists():
        return libs / unversioned
    target = _versioned(libs, unversioned)
    if target is None:
        return None
    link = _make_link(libs, unversioned, target)
    if link is not None:
        return link
    fallback = Path(os.environ.get(LINK_DIR_ENV) or Path.home() / ".cache" / "trtdeploy" / "lib")
    link = _make_link(fallback, unversioned, target)
    on_path = str(fallback) in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)
    if link is None or not on_path:
        raise BackendUnavailableError(
            f"{libs} is read-only, so trtdeploy cannot add the {unversioned} link that {flavour}'s ONNX parser "
            f"needs for plugins; run `export LD_LIBRARY_PATH={fallback}:$LD_LIBRARY_PATH` (trtdeploy has put the link "
            f"there{'' if link else ' — create it with ln -s ' + str(target) + ' ' + str(fallback / unversioned)}) "
            f"and start again")
    return link


def _make_link(folder: Path, name: str, target: Path) -> Path | None:
    link = folder / name
    if link.exists():
        return link
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(target.name if target.parent == folder else target)
        os.replace(tmp, link)  # atomic; a concurrent process making the same link is harmless
    except OSError as e:
        logger.debug("cannot create %s: %s", link, e)
        with contextlib.suppress(OSError):
            tmp.unlink()
        return None
    logger.info("linked %s -> %s (TensorRT's ONNX parser loads it by this name for plugins)", link, target.name)
    return link


# -- registration ----------------------------------------------------------------------------------
_registered: dict[str, dict[str, Any]] = {}   # flavour -> plugin key -> creator (kept alive here)
_lock = threading.Lock()


def register_plugins(trt=None) -> dict[str, Any]:
    """Register every op's plugin creator with ``trt`` (a compat.TensorRT, default: the one trtdeploy uses).

    Idempotent and thread-safe; returns the creators by plugin key.
    """
    if trt is None:
        from .compat import import_tensorrt

        trt = import_tensorrt()
    with _lock:
        done = _registered.setdefault(trt.flavour, {})
        specs = plugin_specs()
        missing = [key for key in specs if key not in done]
        if not missing:
            return done
        if not hasattr(trt.module, "IPluginV3OneRuntime"):
            logger.warning("%s has no IPluginV3 (TensorRT >= 10 has); trtdeploy's plugins are not registered and "
                           "graphs with custom ops need the plugin-free route", trt.label)
            return done
        try:
            ensure_loader_link(trt.flavour)
        except BackendUnavailableError as e:
            logger.warning("%s", e)  # building a graph with plugins raises it again, before parsing
        _, creator_cls = _make_classes(trt.module)
        registry = trt.module.get_plugin_registry()
        for key in missing:
            spec = specs[key]
            if registry.get_creator(spec.name, spec.version, spec.namespace) is None:
                creator = creator_cls(spec)
                if not registry.register_creator(creator, spec.namespace):
                    logger.warning("%s refused to register the plugin %s", trt.label, key)
                    continue
                done[key] = creator
            else:
                done[key] = registry.get_creator(spec.name, spec.version, spec.namespace)
        logger.debug("registered TensorRT plugins with %s: %s", trt.label, ", ".join(done))
        return done


def plugin_status() -> list[dict]:
    """For check-env: each plugin, its version, and whether it is registered with each installed flavour."""
    from .compat import FLAVOURS, import_tensorrt

    specs = plugin_specs()
    flavours = {}
    for flavour in FLAVOURS:
        try:
            trt = import_tensorrt(flavour)
        except BackendUnavailableError as e:
            flavours[flavour] = str(e)
            continue
        creators = register_plugins(trt)
        registry = trt.module.get_plugin_registry()
        flavours[flavour] = {key: registry.get_creator(spec.name, spec.version, spec.namespace) is not None
                             and key in creators for key, spec in specs.items()}
    rows = []
    for key, spec in specs.items():
        registered = {f: (v.get(key, False) if isinstance(v, dict) else "not installed") for f, v in flavours.items()}
        rows.append({"plugin": key, "name": spec.name, "version": spec.version, "namespace": spec.namespace,
                     "registered": registered})
    return rows


def prepare_plugin_build(trt, model) -> list[str]:
    """Before parsing a graph with custom nodes: check them, bridge the library name, register the plugins."""
    used = check_plugin_nodes(model)
    if used:
        ensure_loader_link(trt.flavour)  # raises a clear error rather than letting the parser abort the process
        register_plugins(trt)
    return used


REGISTER_HINT = ("trtdeploy.load registers the plugins an engine's sidecar lists; in your own code call "
                 "`from trtdeploy.backends.tensorrt.plugins import register_plugins; register_plugins()` before "
                 "deserializing the engine")


def check_engine_plugins(trt, sidecar: Mapping, path: Path) -> None:
    """Refuse to load an engine whose plugins (listed in its sidecar) are not registered with ``trt``."""
    needed = list(sidecar.get("plugins") or [])
    if not needed:
        return
    register_plugins(trt)
    registry = trt.module.get_plugin_registry()
    missing = []
    for key in needed:
        namespace, name = key.split("::", 1)
        spec = plugin_specs().get(key)
        if spec is None or registry.get_creator(name, spec.version, namespace) is None:
            missing.append(key)
    if missing:
        raise ModelError(f"{path.name} needs the TensorRT plugin(s) {', '.join(missing)}, which are not registered "
                         f"with {trt.label}; {REGISTER_HINT}")
