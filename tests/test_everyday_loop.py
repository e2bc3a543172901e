"""The loop after converting (issue 16): the convert summary and its logging from Python, predict on lists,
`test` class order and labels, `profile` time budgets, shape order, stand-in marking and per-layer names."""
from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from PIL import Image

import trtdeploy
from conftest import CONFIGS, DEMO_IMG, REPO
from trtdeploy.cli.main import main

ORT_DYNAMIC = CONFIGS / "classification" / "classification_onnxruntime_dynamic.py"


def test_convert_logs_its_stages_from_python_and_predict_takes_a_list(tiny_classifier, tmp_path, caplog):
    """Within an application that configured logging the records propagate; a bare script gets them on stderr."""
    with caplog.at_level(logging.INFO, logger="trtdeploy"):
        result = trtdeploy.convert(ORT_DYNAMIC, tiny_classifier["model"], work_dir=tmp_path / "app")
    assert any("load model" in r.getMessage() and "done in" in r.getMessage() for r in caplog.records)
    assert f"{result.onnx_path}" in result.summary() and "next:" in result.summary()
    model = trtdeploy.load(result.backend_path)
    one, both = model.predict(DEMO_IMG), model.predict([DEMO_IMG, np.asarray(Image.open(DEMO_IMG))])
    model.close()
    assert len(both) == 2 and both[0] == one and both[1][0][0] == one[0][0]
    script = (f"import trtdeploy; trtdeploy.convert({str(ORT_DYNAMIC)!r}, {tiny_classifier['model']!r}, "
              f"work_dir={str(tmp_path / 'script')!r})")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"\[trtdeploy\] \[1/4\] load model .* done in", proc.stderr), proc.stderr


@pytest.fixture(scope="module")
def folder(tiny_classifier, tmp_path_factory):
    """Images filed under the class the tiny model predicts for them, in folders named c0, c1, c2."""
    root = tmp_path_factory.mktemp("classes")
    model = trtdeploy.load(tiny_classifier["work"] / "end2end.onnx")
    rng = np.random.default_rng(1)
    for i in range(9):
        image = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
        label = model.predict(image)[0][0][0]
        (root / f"c{label}").mkdir(exist_ok=True)
        Image.fromarray(image).save(root / f"c{label}" / f"{i}.png")
    model.close()
    for label in range(3):
        (root / f"c{label}").mkdir(exist_ok=True)
    return root


def test_class_order_is_guessed_loudly_or_given_with_classes(tiny_classifier, folder, tmp_path, capsys):
    work = tiny_classifier["work"]
    other = tmp_path / "other_run"
    other.mkdir()
    for name in ("end2end.onnx", "end2end.onnx.json"):
        shutil.copy(work / name, other / name)
    out = tmp_path / "r.json"
    assert main(["test", str(ORT_DYNAMIC), "none", str(work / "end2end.onnx"), str(other / "end2end.onnx"),
                 "--dataset", str(folder), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("class order is GUESSED") == 1, err
    rows = {r["target"]: r["scores"]["top-1"] for r in json.loads(out.read_text())["results"]}
    assert rows == {f"onnxruntime fp32 ({work.name}/end2end.onnx)": 100.0, "onnxruntime fp32 (other_run/end2end.onnx)": 100.0}
    # The model's own order reversed: the same images now score only where the reversal maps a class onto itself.
    assert main(["test", str(ORT_DYNAMIC), "none", str(work / "end2end.onnx"), "--dataset", str(folder),
                 "--classes", "c2,c1,c0", "--out", str(out)]) == 0
    assert "GUESSED" not in capsys.readouterr().err
    (row,) = json.loads(out.read_text())["results"]
    expected = 100.0 * len(list((folder / "c1").iterdir())) / 9
    assert row["scores"]["top-1"] == pytest.approx(expected)


def test_profile_budget_sorted_shapes_stand_in_and_layer_names(tiny_classifier, tmp_path, capsys):
    work = tiny_classifier["work"]
    out = tmp_path / "p.json"
    assert main(["profile", str(work / "end2end.onnx"), str(work / "end2end.engine"), "--shape", "4x3x224x224",
                 "--shape", "1x3x224x224", "--shape", "2x3x256x256", "--seconds", "0.05", "--per-layer",
                 "--json", str(out)]) == 0
    stdout, err = capsys.readouterr()
    assert re.search(r"profiling 2 target\(s\) at 6 shape\(s\) in all, 0\.05 s .*: about \d+ s", err), err
    results = {r["target"]: r for r in json.loads(out.read_text())["results"]}
    ort = results["onnxruntime fp32 (end2end.onnx)"]
    assert [s["shapes"]["input"][0] for s in ort["latency"]] == [1, 2, 4]  # by size: 150528, 393216, 602112 elements
    assert all(s["iterations"] >= 5 for s in ort["latency"])
    stand_in = results["onnxruntime fp16 (end2end_fp16.onnx, stand-in for end2end.engine)"]
    assert stand_in["measures"] == "ONNX Runtime CPU time of the engine's graph, not the engine's speed"
    summary = stdout.split("\nsummary:\n", 1)[1].splitlines()[:3]  # one line per target
    assert "cannot run here (no GPU)" in summary[1] and "ONNX Runtime CPU time of the engine's graph" in summary[2]
    assert summary[0].startswith("  onnxruntime fp32 (end2end.onnx): p50 ")
    # Per-layer rows are the graph's nodes: each name's op type(s) are those nodes' own.
    graph = {n.name: n.op_type for n in onnx.load(str(work / "end2end.onnx")).graph.node}
    for layer in ort["layers"]:
        if "added by ONNX Runtime" not in layer["op_type"]:
            assert "+".join(graph[n] for n in layer["name"].split(" + ")) == layer["op_type"], layer


def test_pytorch_is_timed_with_its_faster_thread_count_and_the_callers_is_restored(tiny_classifier, caplog):
    import torch

    from trtdeploy.evaluation import open_targets

    torch.set_num_threads(2)
    targets = open_targets([tiny_classifier["work"] / "end2end.onnx"], None, tiny_classifier["model"])
    with caplog.at_level(logging.INFO, logger="trtdeploy"):
        targets[0].model(np.zeros((1, 3, 224, 224), np.float32))
    runner = targets[0].model.runner
    assert runner.threads in (1, 2) and torch.get_num_threads() == runner.threads
    assert any("PyTorch runs with" in r.getMessage() for r in caplog.records)
    for t in targets:
        t.close()
    assert torch.get_num_threads() == 2


def test_the_latency_plot_has_shapes_small_to_large(tmp_path, monkeypatch):
    """Given out of order (4x, 1x, 16x), the x axis and each line still run from the smallest shape."""
    import matplotlib.axes

    from trtdeploy.evaluation.benchmark import LatencyStats, TargetProfile, plot_latency

    ticks, lines = [], []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xticks", lambda self, pos, labels=None, **kw: ticks.append(list(labels)))
    real_plot = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda self, xs, *a, **kw: lines.append(list(xs)) or real_plot(self, xs, *a, **kw))
    stats = [LatencyStats("t", {"input": [b, 3, 224, 224]}, b, 5, b, b, b, b, 1.0) for b in (4, 1, 16)]
    plot_latency([TargetProfile("t", stats)], tmp_path / "p.png")
    assert ticks[0] == ["1x3x224x224", "4x3x224x224", "16x3x224x224"] and lines == [[0, 1, 2]]
