"""One row of the check-env report, shared by ``env.py`` and each backend's own checks."""
from __future__ import annotations

from dataclasses import dataclass

OK, WARN, FAIL, ABSENT = "ok", "warn", "fail", "absent"


@dataclass
class Finding:
    """One line of the report: what was checked, what was found and, when not ok, the fix."""

    section: str
    name: str
    status: str
    detail: str
    fix: str = ""
    required: bool = False


def dist_version(*names: str) -> str | None:
    """The installed version of the first of ``names`` (distribution names) that is installed, else None."""
    import importlib.metadata  # here: 15 ms of every command's start-up otherwise

    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None
