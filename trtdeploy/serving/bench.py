"""A bounded load test of a Triton model with tritonclient: throughput and latency percentiles per concurrency.

Each concurrent client is a thread with its own connection sending one request at a time,
as perf_analyzer's closed-loop mode does, so the numbers are comparable with it.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

from ..errors import ConfigError, InputError, ModelError
from ..utils.random_data import random_array
from .model_config import SERVE_INSTALL_HINT
from .server import ServerError

PROTOCOLS = {"http": "tritonclient.http", "grpc": "tritonclient.grpc"}
MAX_REQUESTS = 1_000_000
MAX_CONCURRENCY = 256


@dataclass
class LevelResult:
    """What one concurrency level measured; latencies in milliseconds."""

    concurrency: int
    requests: int
    errors: int
    seconds: float
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    first_error: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def parse_url(url: str) -> tuple[str, str]:
    """'http://host:port', 'grpc://host:port' or 'host:port' (HTTP) -> (protocol, host:port)."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in PROTOCOLS or not parsed.hostname or not parsed.port:
        raise ConfigError(f"URL {url!r} must look like http://127.0.0.1:8000 or grpc://127.0.0.1:8001")
    return parsed.scheme, f"{parsed.hostname}:{parsed.port}"


def parse_concurrency(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        levels = []
    if not levels or any(not 1 <= c <= MAX_CONCURRENCY for c in levels):
        raise ConfigError(f"--concurrency {text!r} must be a comma-separated list of integers from 1 to "
                          f"{MAX_CONCURRENCY}, e.g. 1,8")
    return levels


def _client_module(protocol: str):
    import importlib

    try:
        return importlib.import_module(PROTOCOLS[protocol])
    except ImportError:
        raise ModelError(f"tritonclient for {protocol} is not installed: {SERVE_INSTALL_HINT}") from None


def _model_config(module, address: str, protocol: str, model: str) -> dict:
    from tritonclient.utils import InferenceServerException

    client = module.InferenceServerClient(address)
    try:
        if not client.is_server_live():
            raise ServerError(f"Triton at {address} is not live; start it with `trtdeploy serve REPO`")
        if not client.is_model_ready(model):
            index = client.get_model_repository_index()
            names = sorted({m["name"] if isinstance(m, dict) else m.name
                            for m in (index if isinstance(index, list) else index.models)})
            raise ModelError(f"model {model!r} is not ready on {address}; ready or known models: {', '.join(names)}")
        config = client.get_model_config(model, as_json=True) if protocol == "grpc" else client.get_model_config(model)
    except InferenceServerException as e:
        raise ServerError(f"cannot talk to Triton at {address} ({e.message()}); check the URL and that "
                          f"`trtdeploy serve` is running") from None
    except (OSError, ConnectionError) as e:
        raise ServerError(f"cannot reach Triton at {address} ({e}); start it with `trtdeploy serve REPO` "
                          f"or check the port") from None
    finally:
        client.close()
    return config.get("config", config)


def request_arrays(config: dict, image: Path | None, shapes: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """One request's inputs: the image file's bytes for BYTES inputs, random data of a full shape otherwise."""
    from tritonclient.utils import triton_to_np_dtype

    batch = [1] if int(config.get("max_batch_size", 0)) > 0 else []
    warm = {k: [int(d) for d in v.get("dims", [])]
            for w in config.get("model_warmup", [])[:1] for k, v in w.get("inputs", {}).items()}
    rng = np.random.default_rng(0)
    arrays = {}
    for spec in config["input"]:
        name, dtype = spec["name"], spec["data_type"].removeprefix("TYPE_")
        dims = [int(d) for d in spec.get("dims", [])]
        if dtype == "STRING":
            if image is None:
                raise InputError(f"model input {name!r} takes encoded images; pass --input IMAGE")
            if not image.is_file():
                raise InputError(f"--input {image} does not exist")
            shape = batch + [d if d > 0 else 1 for d in dims]
            arrays[name] = np.full(shape, image.read_bytes(), dtype=object)
            continue
        shape = shapes.get(name) or batch + (warm.get(name) or dims)
        if any(d <= 0 for d in shape):
            example = "x".join(str(d if d > 0 else 224) for d in batch + dims)
            raise ConfigError(f"model input {name!r} has dynamic dims {dims}; pass --shape {name}:{example}")
        arrays[name] = random_array(rng, shape, triton_to_np_dtype(dtype))
    return arrays


def run_level(module, address: str, model: str, arrays: dict[str, np.ndarray], concurrency: int, requests: int,
              progress=None) -> LevelResult:
    from tritonclient.utils import InferenceServerException, np_to_triton_dtype

    counter = itertools.count()
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []

    def worker():
        client = module.InferenceServerClient(address)
        inputs = []
        for name, arr in arrays.items():
            inp = module.InferInput(name, list(arr.shape), np_to_triton_dtype(arr.dtype))
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        try:
            while next(counter) < requests:
                start = time.perf_counter()
                try:
                    client.infer(model, inputs)
                    ms = (time.perf_counter() - start) * 1e3
                    with lock:
                        latencies.append(ms)
                except (InferenceServerException, OSError) as e:
                    with lock:
                        errors.append(str(e))
                if progress is not None:
                    progress.update(1)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    lat = np.array(latencies) if latencies else np.array([np.nan])
    p50, p90, p99 = np.percentile(lat, [50, 90, 99])
    return LevelResult(concurrency, requests, len(errors), seconds, len(latencies) / seconds,
                       float(p50), float(p90), float(p99), errors[0] if errors else "")


def bench_serve(url: str, model: str, concurrency: list[int], requests: int, image: str | None = None,
                shapes: dict[str, list[int]] | None = None, warmup: int = 5) -> list[LevelResult]:
    """Measure ``model`` at each concurrency level with ``requests`` requests (after ``warmup`` unmeasured ones)."""
    from ..utils.logging import progress

    if not 1 <= requests <= MAX_REQUESTS:
        raise ConfigError(f"--requests {requests} is out of range; pass 1 to {MAX_REQUESTS}")
    protocol, address = parse_url(url)
    module = _client_module(protocol)
    config = _model_config(module, address, protocol, model)
    arrays = request_arrays(config, Path(image) if image else None, shapes or {})
    results = []
    for level in concurrency:
        if warmup:
            run_level(module, address, model, arrays, min(level, warmup), warmup)
        with progress(total=requests, desc=f"concurrency {level}", unit="req") as bar:
            results.append(run_level(module, address, model, arrays, level, requests, bar))
    return results
