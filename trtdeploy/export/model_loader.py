"""Turn a MODEL argument into an eval-mode ``torch.nn.Module``.

MODEL is ``torchvision://<name>[?key=value&...]`` (keyword arguments go to the builder,
e.g. ``?num_classes=10``; ``?weights=DEFAULT`` or any of the model's weight enums loads
torchvision's pretrained weights through the torch hub cache, ``$TORCH_HOME``),
``ultralytics://<name>.yaml`` or ``ultralytics://<path>.pt`` (ultralytics_models.py) or
``<module or file.py>:<factory>`` for a user's own model. Without weights the random
initialisation is seeded from the MODEL string, so convert, compare, test and profile all
rebuild the same model. Nothing is downloaded unless weights were asked for.
"""
from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

from ..errors import ModelError
from ..registry import did_you_mean
from .ultralytics_models import ULTRALYTICS_SCHEME, ultralytics_model

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
        kwargs.setdefault("weights_backbone", None)  # a backbone's weights only when asked for
    for key in ("weights", "weights_backbone"):
        if kwargs.get(key) is not None:
            kwargs[key] = _cached_weights(spec, builder, key, kwargs[key])
    try:
        return builder(**kwargs)
    except (TypeError, ValueError) as e:
        raise ModelError(f"{spec}: torchvision's {name} rejected the arguments {kwargs}: {e}") from None


def _cached_weights(spec: str, builder, key: str, value):
    """The weight enum named by ``value`` ('DEFAULT', 'IMAGENET1K_V1', 'ResNet50_Weights.IMAGENET1K_V1') for the
    builder's ``key`` parameter (``weights`` or ``weights_backbone``), with its file in the torch hub cache:
    downloaded there once when missing, else an error naming file and folder."""
    import torch
    from torchvision.models import get_weight

    text = str(value)
    enum = _weight_enum(builder, key)
    if "." not in text and enum is not None:
        members = list(enum.__members__)
        if text not in members:
            raise ModelError(f"{spec}: {enum.__name__} has no {text!r}{did_you_mean(text, members)}; "
                             f"pass {key}= one of {', '.join(members)}")
        weights = enum[text]
    else:
        try:
            weights = get_weight(text)
        except (ValueError, KeyError, AttributeError):
            raise ModelError(f"{spec}: {key}={text!r} is not a torchvision weight enum; write it like "
                             f"ResNet50_Weights.IMAGENET1K_V1 (see torchvision.models.get_model_weights)") from None
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    path = folder / Path(urlparse(weights.url).path).name
    if not path.is_file():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(weights.url, str(path), hash_prefix=None, progress=False)
        except Exception as e:  # offline, proxy, read-only cache: all end in the same advice
            raise ModelError(f"{spec}: the weights {weights} are not in the torch hub cache and cannot be downloaded "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); put {path.name} "
                             f"(from {weights.url}) into {folder} (set TORCH_HOME to use another cache)") from None
    return weights


def _weight_enum(builder, key: str):
    """The weight enum class a torchvision builder's parameter takes, read from its annotation
    (``Optional[ResNet50_Weights]``)."""
    import re

    import torchvision

    annotation = str(inspect.signature(builder).parameters[key].annotation)
    found = re.search(r"(\w+_Weights)\b", annotation)
    return getattr(torchvision.models, found.group(1), None) if found else None


def model_seed(spec: str) -> int:
    """The seed of a MODEL string's random initialisation: the same string gives the same weights everywhere."""
    return int.from_bytes(hashlib.sha256(spec.encode()).digest()[:4], "little")


def describe_weights(spec, checkpoint: str | Path | None = None) -> str:
    """Where a model's weights come from, for logs, summaries and sidecars."""
    if checkpoint:
        return f"checkpoint {checkpoint}"
    if isinstance(spec, str) and spec.startswith(ULTRALYTICS_SCHEME):
        target = spec[len(ULTRALYTICS_SCHEME):]
        return f"ultralytics checkpoint {target}" if target.endswith(".pt") else "random, seeded from the MODEL string"
    if not isinstance(spec, str) or not spec.startswith(TORCHVISION_SCHEME):
        return "weights set by the model's code"
    query = _parse_kwargs(spec.partition("?")[2])
    asked = [f"{key}={query[key]}" for key in ("weights", "weights_backbone") if query.get(key) is not None]
    if "weights" in query and query["weights"] is not None:
        return f"torchvision {', '.join(asked)}"
    return f"random, seeded from the MODEL string{' (' + ', '.join(asked) + ')' if asked else ''}"


def pretrained_weights_hint(spec: str) -> str:
    """How ``spec`` could name pretrained weights, for the random-weights warning ('' where it cannot: weight enums
    are torchvision's)."""
    if not spec.startswith(TORCHVISION_SCHEME):
        return ""
    return f" or {spec}{'&' if '?' in spec else '?'}weights=DEFAULT"


@contextlib.contextmanager
def _seeded(spec: str):
    """Seed torch's CPU generator from ``spec`` for the model's construction, leaving the caller's state as it was."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_seed(spec))
        yield


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


# MODEL prefixes and their loaders; anything else is <module or file.py>:<factory>.
SCHEMES = {TORCHVISION_SCHEME: _torchvision_model, ULTRALYTICS_SCHEME: ultralytics_model}


def load_model(spec, checkpoint: str | Path | None = None, device: str = "cpu"):
    """Build the model named by ``spec`` (or take a Module), load ``checkpoint``, eval mode."""
    import torch

    if isinstance(spec, torch.nn.Module):
        model = spec
    elif not isinstance(spec, str) or not spec:
        raise ModelError(f"MODEL must be torchvision://<name>, ultralytics://<name>.yaml|<file>.pt or "
                         f"<module>:<factory>, got {spec!r}")
    else:
        with _seeded(spec):
            loader = next((load for prefix, load in SCHEMES.items() if spec.startswith(prefix)), _factory_model)
            model = loader(spec)
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"MODEL {spec!r} produced a {type(model).__name__}, not a torch.nn.Module")
    if checkpoint:
        load_checkpoint(model, checkpoint)
    return model.eval().to(device)


def describe_model(spec) -> str:
    """How a MODEL argument is named in logs and sidecars: the spec string, or the module's class."""
    return spec if isinstance(spec, str) else type(spec).__name__
