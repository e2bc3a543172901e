"""Atomic file writes: a reader sees the previous file or the new one, never half of one."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Iterator

from ..errors import WorkDirError

TEMP_MARK = ".trtdeploy-tmp"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# New files get the permissions an ordinary open() would give them (mkstemp's are 0600).
_NEW_FILE_MODE = 0o666 & ~_current_umask()


def _write_failure(path: Path, e: OSError) -> WorkDirError:
    """One sentence for a failed write: a full disk, a read-only file system, a permission."""
    if e.errno == errno.ENOSPC or e.errno == errno.EDQUOT:
        return WorkDirError(f"no space left on the device while writing {path}; free some space there "
                            f"or pass a --work-dir on another disk (the previous {path.name}, if any, is intact)")
    return WorkDirError(f"cannot write {path} ({e.strerror or e}); pass a --work-dir you can write to "
                        f"(the previous {path.name}, if any, is intact)")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside ``path``; on success fsync and rename it over ``path``.

    On any exception (KeyboardInterrupt included) the temp file is removed and
    ``path`` keeps its previous content; an OSError (full disk, read-only file system)
    becomes a WorkDirError. The temp name carries our pid so that ``clean_stale_temps``
    can tell a dead process's leftovers from a live writer's file.
    """
    path = Path(path)
    ensure_writable_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_MARK, dir=path.parent)
    except OSError as e:
        raise _write_failure(path, e) from None
    try:
        os.fchmod(fd, path.stat().st_mode & 0o7777 if path.exists() else _NEW_FILE_MODE)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _write_failure(path, e) from None
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_hashed(path: str | os.PathLike, data: bytes | memoryview) -> str:
    """``atomic_write_bytes`` that returns the sha256 of ``data`` (for a sidecar), hashed in a thread while the
    write runs: both release the GIL, and for a 45 MB graph or engine each takes as long as the other."""
    digest = hashlib.sha256()
    hasher = threading.Thread(target=digest.update, args=(data,), name="sha256")
    hasher.start()
    try:
        atomic_write_bytes(path, data)
    finally:
        hasher.join()
    return digest.hexdigest()


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    with open(src, "rb") as fin, atomic_write(dst, "wb") as fout:
        while chunk := fin.read(1 << 20):
            fout.write(chunk)


def _writer_alive(temp: Path) -> bool:
    """Whether the process named in a temp file's name (``.<name>.<pid>.<random>.trtdeploy-tmp``) still runs."""
    parts = temp.name[: -len(TEMP_MARK)].split(".")
    pid = int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None
    if pid is None:
        return False
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    return True


def clean_stale_temps(directory: str | os.PathLike) -> list[Path]:
    """Remove temp files that killed processes left behind (not those of live writers); returns them."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = []
    for p in directory.glob(f".*{TEMP_MARK}"):
        if _writer_alive(p):
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            removed.append(p)
    return removed


def ensure_writable_dir(directory: str | os.PathLike) -> Path:
    """Create ``directory`` if needed and prove we can write there."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WorkDirError(
            f"cannot create the directory {directory} ({e.strerror}): pass a --work-dir you can write to"
        ) from None
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise WorkDirError(f"the directory {directory} is not writable: pass a --work-dir you can write to")
    return directory


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def human_size(size: int) -> str:
    """A byte count as people read it: 812 B, 4.5 KB, 44.7 MB, 1.2 GB (powers of 1024)."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
