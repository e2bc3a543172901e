"""``trtdeploy profile``: latency percentiles and throughput per target, shape and batch size,
a per-layer breakdown where the backend offers one, and a plot of latency against shape.

Shapes stay inside each target's optimization profiles: by default the profiles' min/opt/max
shapes (or the export shape), each at the requested batch sizes where the batch is dynamic.
Each target and shape gets a time budget (``seconds``), not a count of calls, so a large shape on
a slow backend costs what a small one does; a fixed ``iterations`` count is there when wanted.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..backends.base import LayerTime, discover_backends, get_backend
from ..errors import ShapeError
from ..utils.fileio import atomic_write
from ..utils.logging import logger, progress
from ..utils.table import format_table
from .report import reason_notes
from .targets import Target, random_feed

Shapes = dict[str, tuple[int, ...]]

DEFAULT_SECONDS = 2.0   # timed calls per target and shape last this long ...
MIN_ITERATIONS = 5      # ... but never fewer calls than this, nor more than MAX_ITERATIONS
MAX_ITERATIONS = 10000
STAND_IN_NOTE = "ONNX Runtime CPU time of the engine's graph, not the engine's speed"


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

    @property
    def size_key(self) -> tuple:
        """Order of shapes on an axis: by elements in all inputs, then by the dimensions."""
        return (sum(int(np.prod(s)) for s in self.shapes.values()), tuple(tuple(s) for s in self.shapes.values()))


@dataclass
class TargetProfile:
    target: str
    latency: list[LatencyStats] = field(default_factory=list)
    layers: list[LayerTime] = field(default_factory=list)
    layer_note: str = ""
    status: str = "ok"
    reason: str = ""
    measures: str = ""   # what the figures are when they are not the target's own speed (a stand-in's)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line: the p50 range over the shapes and the best throughput."""
        if not self.latency:
            return f"{self.target}: {self.status}"
        fastest, best = min(self.latency, key=lambda s: s.p50_ms), max(self.latency, key=lambda s: s.throughput)
        slowest = max(self.latency, key=lambda s: s.p50_ms)
        span = (f"p50 {fastest.p50_ms:.3g} ms at {fastest.shape_label}" if len(self.latency) == 1 else
                f"p50 {fastest.p50_ms:.3g} ms ({fastest.shape_label}) to {slowest.p50_ms:.3g} ms ({slowest.shape_label})")
        note = f" [{self.measures}]" if self.measures else ""
        return f"{self.target}: {span}; best {best.throughput:.4g} samples/s at {best.shape_label}{note}"


def shapes_to_time(target: Target, shapes: list[Shapes] | None = None, batch_sizes: list[int] | None = None) -> list[Shapes]:
    """The given shapes, else each profile's min/opt/max (else the default input shape), at each batch size."""
    runner = target.model.runner
    if shapes:
        base = [dict(s) for s in shapes]
    elif runner.profiles:
        base = [{name: getattr(rng, key) for name, rng in profile.items()}
                for profile in runner.profiles for key in ("min", "opt", "max")]
    else:
        base = [{}]
    base = [{**target.model.input_shapes([n for n in runner.input_names if n not in s]), **s} for s in base]  # all inputs
    if batch_sizes:
        fixed = [s.name for s in runner.inputs if isinstance(s.shape[0], int) and s.shape[0] > 0]
        if fixed:
            raise ShapeError(f"{target.source}: input {fixed[0]!r} has a fixed batch size; drop --batch-sizes or "
                             f"convert with a config that declares axis 0 dynamic")
        base = [{name: (b, *shape[1:]) for name, shape in s.items()} for s in base for b in batch_sizes]
    unique = list({tuple(sorted(s.items())): s for s in base}.values())
    for s in unique:
        runner.check_inputs(random_feed(runner, s))
    return unique


def measure_latency(target: Target, shapes: Shapes, warmup: int = 2, iterations: int | None = None,
                    seconds: float = DEFAULT_SECONDS) -> LatencyStats:
    """Warm up, then time calls one by one (wall clock around the whole call): ``iterations`` of them, or as many
    as fit in ``seconds`` (at least MIN_ITERATIONS, at most MAX_ITERATIONS)."""
    feed = random_feed(target.model.runner, shapes)
    runner = target.model.runner
    for _ in range(warmup):
        runner(feed)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < (iterations or MAX_ITERATIONS) and (
            iterations or len(times) < MIN_ITERATIONS or time.perf_counter() < deadline):
        start = time.perf_counter()
        runner(feed)
        times.append(time.perf_counter() - start)
    times = np.array(times)
    iterations = len(times)
    ms = times * 1000.0
    batch = int(next(iter(shapes.values()))[0])
    return LatencyStats(target.label, {k: list(v) for k, v in shapes.items()}, batch, iterations, float(ms.mean()),
                        *(float(np.percentile(ms, q)) for q in (50, 90, 99)), batch / float(times.mean()))


def profile_targets(targets: list[Target], shapes: list[Shapes] | None = None, batch_sizes: list[int] | None = None,
                    warmup: int = 2, iterations: int | None = None, per_layer: bool = False,
                    seconds: float = DEFAULT_SECONDS) -> list[TargetProfile]:
    """Latency of every runnable target at every shape (``seconds`` each, or ``iterations`` calls); per-layer times
    at the first (or opt) shape."""
    if warmup < 0 or (iterations is not None and iterations < 1) or seconds <= 0:
        raise ShapeError(f"warm-up must be >= 0, iterations >= 1 and seconds > 0, got {warmup}, {iterations} and "
                         f"{seconds}")
    plans = [(t, shapes_to_time(t, shapes, batch_sizes) if t.runnable else []) for t in targets]
    runs = sum(len(p) for _, p in plans)
    each = f"{iterations} calls" if iterations else f"{seconds:g} s (at least {MIN_ITERATIONS} calls)"
    logger.info("profiling %d target(s) at %d shape(s) in all, %s each after %d warm-up call(s)%s", sum(
        1 for _, p in plans if p), runs, each, warmup,
        f": about {runs * seconds * (2 if per_layer else 1):.0f} s" if not iterations else "")
    results = []
    with progress(total=sum(len(p) for _, p in plans), desc="profile", unit="shape") as bar:
        for target, plan in plans:
            result = TargetProfile(target.label, measures=STAND_IN_NOTE if target.stands_in_for else "")
            if not target.runnable:
                result.status, result.reason = f"cannot run here ({target.why})", target.reason
            for s in plan:
                result.latency.append(measure_latency(target, s, warmup, iterations, seconds))
                bar.update(1)
            result.latency.sort(key=lambda stats: stats.size_key)
            if per_layer and target.runnable:
                layer_shape = plan[len(plan) // 2] if not shapes and not batch_sizes else plan[0]
                backend = get_backend(target.backend) if target.backend in discover_backends() else None
                timed = min(100, next(st.iterations for st in result.latency  # a trace per call: keep it small
                                      if st.shapes == {k: list(v) for k, v in layer_shape.items()}))
                layers = backend.layer_times(target.model.runner, random_feed(target.model.runner, layer_shape), timed) \
                    if backend is not None else None
                if layers is not None:
                    result.layers = layers
                    result.layer_note = f"at {','.join('x'.join(map(str, v)) for v in layer_shape.values())}"
                else:
                    result.layer_note = f"{target.backend} offers no per-layer breakdown"
            results.append(result)
    return results


def format_profile(results: list[TargetProfile], top: int = 10) -> str:
    rows = [[r.target, s.shape_label, s.mean_ms, s.p50_ms, s.p90_ms, s.p99_ms, s.throughput]
            for r in results for s in r.latency]
    lines = [format_table(["target", "shape", "calls", "mean ms", "p50 ms", "p90 ms", "p99 ms", "samples/s"],
                          [[*row[:2], s.iterations, *row[2:]] for row, s in
                           zip(rows, [s for r in results for s in r.latency])], digits=3)]
    lines += reason_notes([(r.target, r.status, r.reason) for r in results])
    for r in results:
        if r.layers:
            measured = f"; {r.measures}" if r.measures else ""
            lines.append(f"\nslowest layers of {r.target} ({r.layer_note}, {len(r.layers)} layers in all{measured}):")
            lines.append(format_table(["layer", "op", "ms/run", "%"],
                                      [[lt.name, lt.op_type, lt.mean_ms, lt.share] for lt in r.layers[:top]], digits=3))
        elif r.layer_note:
            lines.append(f"{r.target}: {r.layer_note}")
    lines.append("\nsummary:")
    lines += [f"  {r.summary()}" for r in results]
    return "\n".join(lines)


def plot_latency(results: list[TargetProfile], path: str | os.PathLike) -> None:
    """A PNG: p50 latency per shape for every target (bars reach p90 and p99), and throughput beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in results if r.latency]
    by_size = sorted((s for r in timed for s in r.latency), key=lambda s: s.size_key)
    labels = list(dict.fromkeys(s.shape_label for s in by_size))  # small to large, so lines do not zigzag
    fig, (ax_lat, ax_thr) = plt.subplots(1, 2, figsize=(max(10, 1.6 * len(labels) + 6), 4.8))
    for r in timed:
        stats = sorted(r.latency, key=lambda s: s.size_key)  # each line left to right
        xs = [labels.index(s.shape_label) for s in stats]
        p50 = np.array([s.p50_ms for s in stats])
        ax_lat.errorbar(xs, p50, yerr=[np.zeros_like(p50), np.array([s.p99_ms for s in stats]) - p50],
                        marker="o", capsize=4, label=r.target)
        ax_lat.scatter(xs, [s.p90_ms for s in stats], marker="_", s=120, color="grey")
        ax_thr.plot(xs, [s.throughput for s in stats], marker="o", label=r.target)
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
