"""One logger for the package and a timed ``stage`` that shows progress."""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Iterator

logger = logging.getLogger("trtdeploy")

LOG_LEVELS = ("debug", "info", "warning", "error")


def setup_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[trtdeploy] %(levelname)s %(message)s"
                                           if level == "debug" else "[trtdeploy] %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


@contextlib.contextmanager
def stage(title: str) -> Iterator[None]:
    """Log the start and the duration of one pipeline stage."""
    logger.info("%s ...", title)
    start = time.perf_counter()
    yield
    logger.info("%s done in %.2f s", title, time.perf_counter() - start)


class _UnlessConfigured(logging.StreamHandler):
    """stderr output for Python callers who configured no logging; silent once the root logger has handlers."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


def ensure_visible() -> None:
    """Let ``trtdeploy.convert()`` from Python show its stages as the CLI does, without overriding logging that
    the application (or the CLI's ``setup_logging``) configured."""
    if logger.handlers:
        return
    handler = _UnlessConfigured(sys.stderr)
    handler.setFormatter(logging.Formatter("[trtdeploy] %(message)s"))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


class _LineProgress:
    """A progress bar for a stderr that is no terminal (a log file, CI): one line when the stage ends."""

    def __init__(self, iterable=None, desc: str = "", total: int | None = None, unit: str = "it"):
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.n = 0
        self.start = time.perf_counter()
        self.closed = False

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.n += 1
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            of = f" of {self.total}" if self.total is not None and self.total != self.n else ""
            seconds = time.perf_counter() - self.start
            logger.info("%s: %d%s %s in %.2f s (%.1f %s/s)", self.desc, self.n, of, self.unit, seconds,
                        self.n / max(seconds, 1e-9), self.unit)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable=None, *, desc: str, total: int | None = None, unit: str = "it", leave: bool = False):
    """A tqdm bar on a terminal; elsewhere one log line per stage (no carriage returns in log files);
    nothing below ``--log-level info``."""
    if not logger.isEnabledFor(logging.INFO) or not sys.stderr.isatty():  # below info its one line is not logged
        return _LineProgress(iterable, desc, total if total is not None else _len(iterable), unit)
    from tqdm import tqdm  # 15 ms of import, paid only for a bar on a terminal

    return tqdm(iterable, desc=f"[trtdeploy] {desc}", total=total, unit=unit, leave=leave, file=sys.stderr)


def _len(iterable) -> int | None:
    try:
        return len(iterable)
    except TypeError:
        return None
