"""Triton ``config.pbtxt`` files: built as dicts, checked against Triton's own protobuf schema, rendered.

The schema is ``tritonclient.grpc.model_config_pb2`` (the ModelConfig message Triton parses),
so a field name, enum value or type that Triton would refuse is refused here, before any
file is written.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from ..errors import BackendUnavailableError, ConfigError

CONFIG_FILE = "config.pbtxt"

# numpy dtype name -> Triton data type; Triton calls variable-length bytes TYPE_STRING.
TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
                 "int32": "TYPE_INT32", "int16": "TYPE_INT16", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8",
                 "bool": "TYPE_BOOL", "bytes": "TYPE_STRING"}

# Model names become directory names and URL path segments (/v2/models/<name>): keep them plain.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

SERVE_INSTALL_HINT = "pip install 'trtdeploy[serve]' (it brings tritonclient[http,grpc])"


def schema():
    """Triton's ModelConfig protobuf module."""
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise BackendUnavailableError(f"Triton's model-config schema (tritonclient.grpc) is not installed: "
                                      f"{SERVE_INSTALL_HINT}") from None
    return model_config_pb2


def check_model_name(name: str, where: str = "--name") -> str:
    if not MODEL_NAME.match(name or "") or name.endswith("."):
        raise ConfigError(f"{where} {name!r} is not a model name Triton serves reliably: use 1-128 letters, digits, "
                          f"'_', '-' or '.', starting with a letter or digit (it becomes a folder and a URL segment)")
    return name


def triton_dtype(numpy_dtype: str, where: str) -> str:
    try:
        return TRITON_DTYPES[str(numpy_dtype)]
    except KeyError:
        raise ConfigError(f"{where}: dtype {numpy_dtype!r} has no Triton data type; "
                          f"known: {', '.join(sorted(TRITON_DTYPES))}") from None


def triton_dims(shape: list) -> list[int]:
    """Dims as Triton writes them: -1 for every dynamic (named or negative) dimension."""
    return [d if isinstance(d, int) and d > 0 else -1 for d in shape]


def render(config: Mapping[str, Any]) -> str:
    """Check ``config`` (protobuf JSON field names) against Triton's ModelConfig and return its pbtxt text."""
    from google.protobuf import json_format, text_format

    pb = schema()
    try:
        message = json_format.ParseDict(dict(config), pb.ModelConfig())
    except json_format.ParseError as e:
        raise ConfigError(f"model {config.get('name')!r}: Triton's ModelConfig schema rejects the generated "
                          f"config ({e}); this is a trtdeploy bug, please report it") from None
    return text_format.MessageToString(message)


def parse(path: str | Path):
    """Read one ``config.pbtxt`` with Triton's schema; errors name the file, line and column."""
    from google.protobuf import text_format

    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {path} ({e}); export the repository again with "
                          f"`trtdeploy export-triton --force`") from None
    try:
        return text_format.Parse(text, schema().ModelConfig())
    except text_format.ParseError as e:
        raise ConfigError(f"{path}: not a valid Triton model config ({e}); fix that line or export the repository "
                          f"again with `trtdeploy export-triton --force`") from None
