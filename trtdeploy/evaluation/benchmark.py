"""``trtdeploy profile``: latency percentiles and throughput per target, shape and batch size,
a per-layer breakdown where the backend offers one, and a plot of latency against shape.

Shapes stay inside each target's optimization profiles: by default the profiles' min/opt/max
shapes (or the export shape), each at the requested batch sizes where the batch is dynamic.
"""
from __future__ import annotations

import collections
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ..errors import ShapeError
from ..registry import Registry
from ..utils.fileio import atomic_write
from ..utils.logging import progress
from .report import format_table
from .targets import Target

Shapes = dict[str, tuple[int, ...]]


@dataclass
class LatencyStats:
    """Timing of one target at one set of input shapes (milliseconds; throughput in samples/s)."""

    target: str
    shapes: dict[str, list[int]]
    batch: int
    iterations: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput: float

    @property
    def shape_label(self) -> str:
        return ",".join("x".join(map(str, s)) for s in self.shapes.values())


@dataclass
class LayerTime:
    """Mean time of one layer (node) per inference, and its share of all layers."""

    name: str
    op_type: str
    mean_ms: float
    share: float


@dataclass
class TargetProfile:
    target: str
    latency: list[LatencyStats] = field(default_factory=list)
    layers: list[LayerTime] = field(default_factory=list)
    layer_note: str = ""
    status: str = "ok"
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def shapes_to_time(target: Target, shapes: list[Shapes] | None = None, batch_sizes: list[int] | None = None) -> list[Shapes]:
    """The given shapes, else each profile's min/opt/max (else the default input shape), at each batch size."""
    runner = target.model.runner
    if shapes:
        base = [dict(s) for s in shapes]
    elif runner.profiles:
        base = [{name: getattr(rng, key) for name, rng in profile.items()}
                for profile in runner.profiles for key in ("min", "opt", "max")]
    else:
        base = [{runner.input_names[0]: target.model.input_shape()}]
    if batch_sizes:
        fixed = [s.name for s in runner.inputs if isinstance(s.shape[0], int) and s.shape[0] > 0]
        if fixed:
            raise ShapeError(f"{target.source}: input {fixed[0]!r} has a fixed batch size; drop --batch-sizes or "
                             f"convert with a config that declares axis 0 dynamic")
        base = [{name: (b, *shape[1:]) for name, shape in s.items()} for s in base for b in batch_sizes]
    unique = list({tuple(sorted(s.items())): s for s in base}.values())
    for s in unique:
        runner.check_inputs({name: np.zeros(shape, np.float32) for name, shape in s.items()})
    return unique


def _random_feed(target: Target, shapes: Shapes, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {spec.name: rng.standard_normal(shapes[spec.name]).astype(np.dtype(spec.dtype))
            for spec in target.model.runner.inputs}


def measure_latency(target: Target, shapes: Shapes, warmup: int = 10, iterations: int = 100) -> LatencyStats:
    """Warm up, then time ``iterations`` calls one by one (wall clock around the whole call)."""
    feed = _random_feed(target, shapes)
    runner = target.model.runner
    for _ in range(warmup):
        runner(feed)
    times = np.empty(iterations)
    for i in range(iterations):
        start = time.perf_counter()
        runner(feed)
        times[i] = time.perf_counter() - start
    ms = times * 1000.0
    batch = int(next(iter(shapes.values()))[0])
    return LatencyStats(target.label, {k: list(v) for k, v in shapes.items()}, batch, iterations, float(ms.mean()),
                        *(float(np.percentile(ms, q)) for q in (50, 90, 99)), batch / float(times.mean()))


# -- per-layer breakdowns, one per backend that offers one -----------------------------------------------------

LAYER_PROFILERS: Registry[Callable[[Target, dict, int], list[LayerTime]]] = Registry("per-layer profiler")


def _layer_times(totals: Mapping[str, float], op_types: Mapping[str, str], runs: int) -> list[LayerTime]:
    whole = sum(totals.values()) or 1.0
    return sorted((LayerTime(name, op_types.get(name, ""), t / runs, 100.0 * t / whole) for name, t in totals.items()),
                  key=lambda lt: -lt.mean_ms)


@LAYER_PROFILERS.register("onnxruntime")
def onnxruntime_layer_times(target: Target, feed: dict, iterations: int) -> list[LayerTime]:
    """Node times from ONNX Runtime's own profiler (its JSON trace), averaged over ``iterations`` runs."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="trtdeploy-ort-profile-") as tmp:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(target.source, opts, providers=["CPUExecutionProvider"])
        session.run(None, feed)  # warm-up: its events are dropped below
        for _ in range(iterations):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = collections.defaultdict(float)
    op_types: dict[str, str] = {}
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first_timed = runs[1]["ts"] if len(runs) > 1 else 0
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e.get("ts", 0) >= first_timed:
            name = e["name"][:-len("_kernel_time")]
            totals[name] += e.get("dur", 0) / 1000.0
            op_types[name] = e.get("args", {}).get("op_name", "")
    return _layer_times(totals, op_types, iterations)


@LAYER_PROFILERS.register("tensorrt")
def tensorrt_layer_times(target: Target, feed: dict, iterations: int) -> list[LayerTime]:
    """Layer times from TensorRT's IProfiler, attached to the runner's execution context."""
    runner = target.model.runner
    mod = runner.trt.module
    totals: dict[str, float] = collections.defaultdict(float)

    class LayerTimer(mod.IProfiler):
        def __init__(self):
            mod.IProfiler.__init__(self)

        def report_layer_time(self, layer_name, ms):
            totals[layer_name] += ms

    runner.context.profiler = LayerTimer()
    try:
        for _ in range(iterations):
            runner(feed)
    finally:
        runner.context.profiler = None
    return _layer_times(totals, {}, iterations)


def profile_targets(targets: list[Target], shapes: list[Shapes] | None = None, batch_sizes: list[int] | None = None,
                    warmup: int = 10, iterations: int = 100, per_layer: bool = False) -> list[TargetProfile]:
    """Latency of every runnable target at every shape; per-layer times at the first (or opt) shape."""
    if warmup < 0 or iterations < 1:
        raise ShapeError(f"warm-up must be >= 0 and iterations >= 1, got {warmup} and {iterations}")
    plans = [(t, shapes_to_time(t, shapes, batch_sizes) if t.runnable else []) for t in targets]
    results = []
    with progress(total=sum(len(p) for _, p in plans), desc="profile", unit="shape") as bar:
        for target, plan in plans:
            result = TargetProfile(target.label)
            if not target.runnable:
                result.status, result.reason = f"cannot run here ({target.why})", target.reason
            for s in plan:
                result.latency.append(measure_latency(target, s, warmup, iterations))
                bar.update(1)
            if per_layer and target.runnable:
                if target.backend in LAYER_PROFILERS:
                    layer_shape = plan[len(plan) // 2] if not shapes and not batch_sizes else plan[0]
                    result.layers = LAYER_PROFILERS.get(target.backend)(target, _random_feed(target, layer_shape),
                                                                        iterations)
                    result.layer_note = f"at {','.join('x'.join(map(str, v)) for v in layer_shape.values())}"
                else:
                    result.layer_note = f"{target.backend} offers no per-layer breakdown"
            results.append(result)
    return results


def format_profile(results: list[TargetProfile], top: int = 10) -> str:
    rows = [[r.target, s.shape_label, s.mean_ms, s.p50_ms, s.p90_ms, s.p99_ms, s.throughput]
            for r in results for s in r.latency]
    lines = [format_table(["target", "shape", "mean ms", "p50 ms", "p90 ms", "p99 ms", "samples/s"], rows, digits=3)]
    for r in results:
        if r.reason:
            lines.append(f"{r.target}: {r.status}: {r.reason}")
        if r.layers:
            lines.append(f"\nslowest layers of {r.target} ({r.layer_note}, {len(r.layers)} layers in all):")
            lines.append(format_table(["layer", "op", "ms/run", "%"],
                                      [[lt.name, lt.op_type, lt.mean_ms, lt.share] for lt in r.layers[:top]], digits=3))
        elif r.layer_note:
            lines.append(f"{r.target}: {r.layer_note}")
    return "\n".join(lines)


def plot_latency(results: list[TargetProfile], path: str | os.PathLike) -> None:
    """A PNG: p50 latency per shape for every target (bars reach p90 and p99), and throughput beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in results if r.latency]
    labels = list(dict.fromkeys(s.shape_label for r in timed for s in r.latency))
    fig, (ax_lat, ax_thr) = plt.subplots(1, 2, figsize=(max(10, 1.6 * len(labels) + 6), 4.8))
    for r in timed:
        xs = [labels.index(s.shape_label) for s in r.latency]
        p50 = np.array([s.p50_ms for s in r.latency])
        ax_lat.errorbar(xs, p50, yerr=[np.zeros_like(p50), np.array([s.p99_ms for s in r.latency]) - p50],
                        marker="o", capsize=4, label=r.target)
        ax_lat.scatter(xs, [s.p90_ms for s in r.latency], marker="_", s=120, color="grey")
        ax_thr.plot(xs, [s.throughput for s in r.latency], marker="o", label=r.target)
    for ax, title, unit in ((ax_lat, "latency p50 (bar to p99, tick at p90)", "ms"),
                            (ax_thr, "throughput", "samples / s")):
        ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.set_xlabel("input shape")
        ax.grid(alpha=0.3)
    p50s = [s.p50_ms for r in timed for s in r.latency]
    if p50s and max(p50s) > 20 * max(min(p50s), 1e-6):
        ax_lat.set_yscale("log")  # backends an order of magnitude apart stay readable
    else:
        ax_lat.set_ylim(bottom=0)
    ax_thr.set_ylim(bottom=0)
    ax_lat.legend(fontsize=7)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
