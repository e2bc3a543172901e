"""One detector: two ONNX Runtime graphs (before / after a change) and torch eager, paired in one process.

On a shared machine separate runs differ by more than a few-percent change, so this alternates the three
(before, after, torch; reversed every other round) in one process and reports the medians of wall and CPU
milliseconds and of the per-round ratios. Both sessions run without spinning threads, so that one session's
idle workers do not compete with the other's (and CPU time is work, not waiting). Export each graph with the
code you compare, as bench_detection.py converts (its config, the model's input size), e.g. with a ``git
archive`` of the old commit on PYTHONPATH, then:

    python benchmarks/bench_detection_pair.py fasterrcnn_resnet50_fpn old/end2end.onnx new/end2end.onnx --rounds 6
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_detection import MODELS, REPO, build  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=sorted(MODELS))
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()

    import onnxruntime as ort

    import trtdeploy
    from trtdeploy.export.rewriters.torchvision_families import preprocessed_input

    _, (h, w) = MODELS[args.model]
    deployed = trtdeploy.load(args.after)
    batch, _ = deployed.task.preprocess(REPO / "demo/demo.jpg", (1, 3, h, w))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = {k: ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
                for k, p in (("before", args.before), ("after", args.after))}
    model = build(args.model)
    deployed.task.configure(model)
    x = torch.from_numpy(batch)

    def eager() -> None:
        with torch.no_grad(), preprocessed_input(model):
            model(x)

    calls = {k: (lambda s=s: s.run(None, {s.get_inputs()[0].name: batch})) for k, s in sessions.items()}
    calls["torch"] = eager
    for call in calls.values():
        call()  # warm-up
    load = Path("/proc/loadavg").read_text().split()[0]
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in calls}
    for i in range(args.rounds):
        for k in (list(calls) if i % 2 == 0 else list(calls)[::-1]):
            start, cpu = time.perf_counter(), time.process_time()
            calls[k]()
            samples[k].append((time.perf_counter() - start, time.process_time() - cpu))

    def ratio(a: str, b: str, i: int) -> float:
        return statistics.median(x[i] / y[i] for x, y in zip(samples[a], samples[b]))

    row = {"model": args.model, "load_start": float(load),
           "load_end": float(Path("/proc/loadavg").read_text().split()[0])}
    for k, v in samples.items():
        row[f"{k}_ms"] = round(1e3 * statistics.median(s[0] for s in v))
        row[f"{k}_cpu_ms"] = round(1e3 * statistics.median(s[1] for s in v))
    for k in ("before", "after"):
        row[f"{k}/torch"], row[f"{k}/torch_cpu"] = round(ratio(k, "torch", 0), 3), round(ratio(k, "torch", 1), 3)
    row["after/before"] = round(ratio("after", "before", 0), 3)
    row["after/before_cpu"] = round(ratio("after", "before", 1), 3)
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
