"""artefacts.py: what a work dir stands for, which ONNX stands in for an engine; a work dir wherever a file goes."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import DEMO_IMG, run_cli
from trtdeploy.artefacts import deployed_artefact, resolve_model, stand_in_onnx
from trtdeploy.cli.main import main
from trtdeploy.errors import ModelError


def converted(work, name: str, **facts) -> None:
    """A file with a sidecar, as `convert` leaves it (only the facts these lookups read)."""
    (work / name).write_bytes(b"")
    (work / f"{name}.json").write_text(json.dumps({"inputs": [], "onnx_file": "end2end.onnx", **facts}))


def test_a_work_dir_stands_for_the_artefact_nothing_else_was_built_from(tmp_path):
    converted(tmp_path, "end2end.onnx")
    assert deployed_artefact(tmp_path) == tmp_path / "end2end.onnx"  # an ONNX Runtime conversion
    converted(tmp_path, "end2end.engine", built_from="end2end_fp16.onnx")
    (tmp_path / "end2end_fp16.onnx").write_bytes(b"")  # no sidecar: an intermediate, never the answer
    assert resolve_model(tmp_path) == tmp_path / "end2end.engine"
    assert resolve_model(tmp_path / "end2end.onnx") == tmp_path / "end2end.onnx"  # a file is itself
    converted(tmp_path, "other.onnx", onnx_file="other.onnx")
    with pytest.raises(ModelError, match="holds 2 converted models .*end2end.engine, other.onnx.*pass the one"):
        resolve_model(tmp_path)


def test_a_work_dir_without_a_conversion_says_what_to_run(tmp_path):
    with pytest.raises(ModelError, match="holds no converted model.*trtdeploy convert"):
        resolve_model(tmp_path)
    with pytest.raises(ModelError, match="does not exist; pass the --work-dir you gave `trtdeploy convert`"):
        deployed_artefact(tmp_path / "missing")
    assert resolve_model(tmp_path / "missing.onnx") == tmp_path / "missing.onnx"  # load says the file is missing


def test_stand_in_is_the_int8_twin_then_the_graph_it_was_built_from(tmp_path):
    engine = tmp_path / "end2end.engine"
    sidecar = {"check_with": "end2end_qdq.onnx", "built_from": "end2end_fp16.onnx", "onnx_file": "end2end.onnx"}
    assert stand_in_onnx(engine, sidecar) is None  # none of them exists
    for name in ("end2end.onnx", "end2end_fp16.onnx", "end2end_qdq.onnx"):
        (tmp_path / name).write_bytes(b"")
        assert stand_in_onnx(engine, sidecar) == tmp_path / name  # each one found beats the ones before


def test_cli_takes_a_work_dir_wherever_it_takes_a_model_file(tiny_classifier, tmp_path, capsys):
    """run and test (an ONNX Runtime conversion); inspect, compare and profile (an engine that cannot run here:
    its stand-in)."""
    ort_work = tmp_path / "ort"
    ort_work.mkdir()
    for name in ("end2end.onnx", "end2end.onnx.json"):
        shutil.copy(tiny_classifier["work"] / name, ort_work / name)
    assert main(["run", str(ort_work), "--input", str(DEMO_IMG)]) == 0
    by_file = capsys.readouterr().out
    assert main(["run", str(ort_work / "end2end.onnx"), "--input", str(DEMO_IMG)]) == 0
    assert capsys.readouterr().out == by_file and by_file.strip()
    for name in ("a", "b", "c"):  # the tiny model's three classes, one image each
        (tmp_path / "data" / name).mkdir(parents=True)
        shutil.copy(DEMO_IMG, tmp_path / "data" / name / "demo.jpg")
    assert main(["test", str(tiny_classifier["cfg"]), "none", str(ort_work), "--dataset", str(tmp_path / "data"),
                 "--classes", "a,b,c", "--out", str(tmp_path / "t.json")]) == 0
    assert str(ort_work / "end2end.onnx") in (tmp_path / "t.json").read_text()

    work = tiny_classifier["work"]
    info = json.loads(run_cli("inspect", work, "--json").stdout)
    assert info["kind"] == "engine" and info["file"] == str(work / "end2end.engine")
    assert main(["compare", str(work), "--model", tiny_classifier["model"], "--json", str(tmp_path / "c.json")]) == 0
    report = json.loads((tmp_path / "c.json").read_text())
    assert "end2end_fp16.onnx" in json.dumps(report)  # the engine's stand-in was compared
    assert main(["profile", str(work), "--iterations", "2", "--warmup", "0", "--json", str(tmp_path / "p.json")]) == 0
    timed = [r["target"] for r in json.loads((tmp_path / "p.json").read_text())["results"] if r["latency"]]
    assert len(timed) == 1 and "stand-in for end2end.engine" in timed[0]
