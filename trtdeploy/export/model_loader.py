"""Turn a MODEL argument into an eval-mode ``torch.nn.Module``.

MODEL is ``torchvision://<name>[?key=value&...]`` (random init; keyword arguments go
to the builder, e.g. ``?num_classes=10``) or ``<module or file.py>:<factory>`` for a
user's own model. Weights come only from ``--checkpoint``: nothing is downloaded.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from urllib.parse import parse_qsl

from ..errors import ModelError
from ..registry import did_you_mean

TORCHVISION_SCHEME = "torchvision://"


def _parse_kwargs(query: str) -> dict:
    kwargs = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        try:
            kwargs[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            kwargs[key] = value
    return kwargs


def _torchvision_model(spec: str):
    import torchvision

    name, _, query = spec[len(TORCHVISION_SCHEME):].partition("?")
    known = torchvision.models.list_models()
    if name not in known:
        raise ModelError(f"unknown torchvision model {name!r}{did_you_mean(name, known)}; "
                         f"`python -c 'import torchvision; print(torchvision.models.list_models())'` lists all {len(known)}")
    builder = torchvision.models.get_model_builder(name)
    kwargs = {"weights": None, **_parse_kwargs(query)}
    if "weights_backbone" in inspect.signature(builder).parameters:
        kwargs.setdefault("weights_backbone", None)  # never download a backbone
    if kwargs.get("weights") is not None:
        raise ModelError(f"{spec}: trtdeploy never downloads weights; drop 'weights=' and pass --checkpoint FILE")
    try:
        return builder(**kwargs)
    except (TypeError, ValueError) as e:
        raise ModelError(f"{spec}: torchvision's {name} rejected the arguments {kwargs}: {e}") from None


def _factory_model(spec: str):
    target, _, factory_name = spec.rpartition(":")
    if not target or not factory_name:
        raise ModelError(f"cannot read MODEL {spec!r}: use torchvision://<name> or <module or file.py>:<factory>")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise ModelError(f"MODEL {spec!r}: file {path} does not exist")
            mod_name = f"trtdeploy_user_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[mod_name] = module
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ModelError:
        raise
    except ImportError as e:
        raise ModelError(f"MODEL {spec!r}: cannot import {target!r} ({e}); check PYTHONPATH or pass a file path") from None
    except Exception as e:
        raise ModelError(f"MODEL {spec!r}: importing {target!r} failed: {type(e).__name__}: {e}") from None
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise ModelError(f"MODEL {spec!r}: {target} has no callable {factory_name!r}{did_you_mean(factory_name, names)}")
    try:
        return factory()
    except Exception as e:
        raise ModelError(f"MODEL {spec!r}: {factory_name}() raised {type(e).__name__}: {e}") from None


def load_checkpoint(model, checkpoint: str | Path) -> None:
    """Load a state dict (plain, or under 'state_dict'/'model') strictly into ``model``."""
    import torch

    path = Path(checkpoint)
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]  # torch's unpickler errors span many lines
        raise ModelError(f"checkpoint {path} cannot be read as a PyTorch state dict ({type(e).__name__}: {first}); "
                         f"save it with torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ModelError(f"checkpoint {path} holds no state dict (a dict of parameter names to tensors)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if mismatched:
            k = mismatched[0]
            parts.append(f"{len(mismatched)} of another shape (e.g. {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)})")
        raise ModelError(f"checkpoint {path} does not match the model: {'; '.join(parts)}; "
                         f"pass the checkpoint trained for this MODEL (or set num_classes, e.g. torchvision://resnet18?num_classes=10)")
    model.load_state_dict(state, strict=True)


def load_model(spec, checkpoint: str | Path | None = None, device: str = "cpu"):
    """Build the model named by ``spec`` (or take a Module), load ``checkpoint``, eval mode."""
    import torch

    if isinstance(spec, torch.nn.Module):
        model = spec
    elif not isinstance(spec, str) or not spec:
        raise ModelError(f"MODEL must be torchvision://<name> or <module>:<factory>, got {spec!r}")
    elif spec.startswith(TORCHVISION_SCHEME):
        model = _torchvision_model(spec)
    else:
        model = _factory_model(spec)
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"MODEL {spec!r} produced a {type(model).__name__}, not a torch.nn.Module")
    if checkpoint:
        load_checkpoint(model, checkpoint)
    return model.eval().to(device)


def describe_model(spec) -> str:
    """How a MODEL argument is named in logs and sidecars: the spec string, or the module's class."""
    return spec if isinstance(spec, str) else type(spec).__name__
