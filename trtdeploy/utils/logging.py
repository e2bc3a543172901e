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
