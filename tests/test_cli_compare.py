"""Issue 7: `trtdeploy compare` end to end on ONNX Runtime, and `--bisect` naming an injected divergence."""
from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import numpy_helper
from PIL import Image

from conftest import DEMO_IMG, run_cli
from trtdeploy.cli.main import main


def _cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_pytorch_onnxruntime_and_engine_stand_in_agree(tiny_classifier, tmp_path):
    work = tiny_classifier["work"]
    out = tmp_path / "compare.json"
    second = tmp_path / "noise.png"
    Image.fromarray((np.random.default_rng(0).random((90, 120, 3)) * 255).astype(np.uint8)).save(second)
    proc = run_cli("compare", work / "end2end.onnx", work / "end2end.engine", "--model", tiny_classifier["model"],
                   "--input", DEMO_IMG, second, "--atol", "1e-3", "--json", out)
    assert f"inputs: input [1, 3, 224, 224] from image {DEMO_IMG}" in proc.stdout
    assert "tensorrt fp16 (end2end.engine): cannot run here (no GPU)" in proc.stdout
    assert proc.stdout.rstrip().endswith("PASSED: 2 output comparisons within tolerance")
    data = json.loads(out.read_text())
    assert data["reference"].startswith("pytorch") and data["inputs"] == [f"image {DEMO_IMG}", f"image {second}"]
    fp32, fp16 = data["results"]
    assert fp32["candidate"] == "onnxruntime fp32 (end2end.onnx)" and fp32["max_abs"] <= 1e-4
    assert fp16["candidate"].startswith("onnxruntime fp16 (end2end_fp16.onnx") and fp16["passed"]
    assert fp16["max_abs"] > fp32["max_abs"] and fp16["cosine"] > 0.999


def test_outside_tolerance_exits_1(tiny_classifier, capsys):
    work = tiny_classifier["work"]
    code, out, _ = _cli(capsys, "compare", work / "end2end.onnx", work / "end2end_fp16.onnx", "--atol", "0",
                        "--rtol", "0", "--shape", "2x3x256x256")
    assert code == 1
    assert "inputs: input [2, 3, 256, 256] from random normal data (seed 0)" in out
    assert "FAIL" in out and out.rstrip().endswith("FAILED: 1 of 1 output comparisons outside tolerance")


def test_bisect_names_the_node_changed_in_the_graph(tiny_classifier, tmp_path, capsys):
    """A copy of end2end.onnx whose second convolution's weights are scaled: bisect must name that Conv."""
    work = tiny_classifier["work"]
    model = onnx.load(str(work / "end2end.onnx"))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    target = convs[1]
    weights = {i.name: i for i in model.graph.initializer}
    w = weights[target.input[1]]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * 1.01, w.name))
    changed = tmp_path / "changed.onnx"
    onnx.save(model, str(changed))
    report = tmp_path / "bisect.json"
    code, out, _ = _cli(capsys, "compare", work / "end2end.onnx", changed, "--bisect", "--json", report)
    assert code == 1
    assert f"first divergence: node {target.name!r} (Conv)" in out
    divergence = json.loads(report.read_text())["bisect"]["divergence"]
    assert divergence["node"] == target.name and divergence["input_max_abs"] == 0.0


def test_bisect_fp32_against_the_engine_graph(tiny_classifier, capsys):
    """With an engine that cannot run here, bisect walks the FP16 graph it was built from."""
    work = tiny_classifier["work"]
    code, out, _ = _cli(capsys, "compare", work / "end2end.onnx", work / "end2end.engine", "--bisect",
                        "--atol", "1e-2", "--rtol", "1e-2")
    assert code == 0, out
    assert "bisect onnxruntime fp32 (end2end.onnx) vs onnxruntime fp16 (end2end_fp16.onnx" in out
    assert "no divergence" in out


def test_bad_input(tiny_classifier, tmp_path, capsys):
    work = tiny_classifier["work"]
    onnx_file = work / "end2end.onnx"
    for value in ("1e-3x", "-1", "nan", "out:"):
        code, _, err = _cli(capsys, "compare", onnx_file, onnx_file, "--atol", value)
        assert code == 2 and f"--atol: {value!r} is not a valid atol tolerance" in err
    code, _, err = _cli(capsys, "compare", onnx_file, onnx_file, "--cosine", "2")
    assert code == 2 and "[-1.0, 1.0]" in err
    cfg = tmp_path / "tol.py"
    cfg.write_text(f"_base_ = ['{tiny_classifier['cfg']}']\ncompare_config = dict(atol='small')\n")
    code, _, err = _cli(capsys, "compare", onnx_file, onnx_file, "--deploy-cfg", cfg)
    assert code == 2 and "compare_config.atol" in err
    code, _, err = _cli(capsys, "compare", onnx_file, onnx_file, "--shape", "1x3x224x")
    assert code == 4 and "is not a shape" in err
    code, _, err = _cli(capsys, "compare", onnx_file, onnx_file, "--shape", "32x3x224x224",
                        "--deploy-cfg", tiny_classifier["cfg"])
    assert code == 4 and "outside the engine's profile" in err
    code, _, err = _cli(capsys, "compare", onnx_file)
    assert code == 3 and "nothing to compare: only onnxruntime fp32 (end2end.onnx) runs here" in err
    code, _, err = _cli(capsys, "compare", onnx_file, "--model", tiny_classifier["model"], "--bisect")
    assert code == 3 and "--bisect needs two ONNX graphs" in err
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    code, _, err = _cli(capsys, "compare", onnx_file, tmp_path / "junk.onnx")
    assert code == 3 and "junk.onnx" in err


def test_outputs_saved_on_one_machine_compare_on_another(tiny_classifier, tmp_path, capsys):
    """The GPU-machine workflow: --save-outputs there, --load-outputs here, with the very same inputs."""
    work = tiny_classifier["work"]
    saved, direct, loaded = tmp_path / "run.npz", tmp_path / "direct.json", tmp_path / "loaded.json"
    assert main(["compare", str(work / "end2end.onnx"), str(work / "end2end_fp16.onnx"), "--input", str(DEMO_IMG),
                 "--save-outputs", str(saved), "--json", str(direct)]) == 0
    capsys.readouterr()
    assert main(["compare", str(work / "end2end.onnx"), "--load-outputs", str(saved), "--json", str(loaded)]) == 0
    assert f"from {saved} (run 0)" in capsys.readouterr().out
    fp16 = json.loads(direct.read_text())["results"][0]
    by_candidate = {r["candidate"]: r for r in json.loads(loaded.read_text())["results"]}
    assert by_candidate["saved: onnxruntime fp32 (end2end.onnx)"]["max_abs"] == 0.0
    assert by_candidate[f"saved: {fp16['candidate']}"]["max_abs"] == fp16["max_abs"]

    one = tmp_path / "one.npz"  # one model is enough to save outputs (a GPU host with only the engine)
    assert main(["compare", str(work / "end2end.onnx"), "--input", str(DEMO_IMG), "--save-outputs", str(one)]) == 0
    assert "nothing compared (one model): its inputs and outputs are saved" in capsys.readouterr().out and one.is_file()
    code, _, err = _cli(capsys, "compare", work / "end2end.onnx", "--load-outputs", saved, "--input", DEMO_IMG)
    assert code == 2 and "brings its own inputs" in err
    (tmp_path / "junk.npz").write_bytes(b"junk")
    code, _, err = _cli(capsys, "compare", work / "end2end.onnx", "--load-outputs", tmp_path / "junk.npz")
    assert code == 10 and "is not a file written by `trtdeploy compare --save-outputs`" in err
