"""The JSON sidecar written beside every artefact: what it is, how it was built, how to feed it."""
from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Mapping

from ..errors import ModelError
from ..utils.fileio import atomic_write_json
from ..version import __version__

SIDECAR_SUFFIX = ".json"
SCHEMA_VERSION = 1


def sidecar_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SIDECAR_SUFFIX)


def write_sidecar(artifact: str | Path, facts: Mapping) -> Path:
    data = {"schema": SCHEMA_VERSION, "trtdeploy_version": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "artifact": Path(artifact).name, **facts}
    path = sidecar_path(artifact)
    atomic_write_json(path, data)
    return path


def read_sidecar(artifact: str | Path, required: bool = False) -> dict | None:
    """The sidecar of ``artifact``, or None when it has none (unless ``required``)."""
    path = sidecar_path(artifact)
    if not path.exists():
        if required:
            raise ModelError(f"{artifact} has no sidecar {path.name}; convert it with `trtdeploy convert` "
                             f"or pass --deploy-cfg")
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"sidecar {path} is unreadable ({e}); delete it and convert again") from None
    if not isinstance(data, dict) or "inputs" not in data:
        raise ModelError(f"sidecar {path} is not a trtdeploy sidecar; delete it and convert again")
    return data


def sidecars_in(work_dir: str | Path, asked_for: str = "you gave `trtdeploy convert`") -> list[tuple[Path, dict]]:
    """Every file of ``work_dir`` that has a sidecar, with the sidecar, by file name: what conversions left there.

    ``asked_for`` completes the message for a missing work dir ("pass the --work-dir <asked_for>").
    """
    work = Path(work_dir)
    if not work.is_dir():
        raise ModelError(f"work dir {work} does not exist; pass the --work-dir {asked_for}")
    files = sorted(p for p in work.iterdir() if not p.name.endswith(SIDECAR_SUFFIX) and sidecar_path(p).is_file())
    return [(p, read_sidecar(p, required=True)) for p in files]
