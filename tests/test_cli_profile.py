"""Issue 7: `trtdeploy profile` end to end on ONNX Runtime: shapes from the engine's profile, percentiles, layers, plot."""
from __future__ import annotations

import json

from PIL import Image

from conftest import run_cli
from trtdeploy.cli.main import main


def test_profile_shapes_percentiles_layers_and_plot(tiny_classifier, tmp_path):
    work = tiny_classifier["work"]
    plot, out = tmp_path / "latency.png", tmp_path / "profile.json"
    proc = run_cli("profile", work / "end2end.onnx", work / "end2end.engine", "--warmup", "1", "--iterations", "5",
                   "--per-layer", "--top", "3", "--plot", plot, "--json", out)
    assert "tensorrt fp16 (end2end.engine): cannot run here (no GPU)" in proc.stdout
    assert "slowest layers of onnxruntime fp32 (end2end.onnx)" in proc.stdout
    results = {r["target"]: r for r in json.loads(out.read_text())["results"]}
    stand_in = results["onnxruntime fp16 (end2end_fp16.onnx, stand-in for end2end.engine)"]
    # The engine's profile (min 1x3x224x224, opt 4x3x224x224, max 16x3x320x320) sets the shapes of its graph.
    assert [s["shapes"]["input"] for s in stand_in["latency"]] == [[1, 3, 224, 224], [4, 3, 224, 224], [16, 3, 320, 320]]
    for s in stand_in["latency"]:
        assert s["iterations"] == 5 and 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"]
        assert s["throughput"] > 0 and s["batch"] == s["shapes"]["input"][0]
    layers = results["onnxruntime fp32 (end2end.onnx)"]["layers"]
    assert layers and {op for lt in layers for op in lt["op_type"].split("+")} >= {"Conv", "Gemm"}  # fused: Conv+Relu
    assert abs(sum(lt["share"] for lt in layers) - 100.0) < 1e-6
    assert results["tensorrt fp16 (end2end.engine)"]["latency"] == []
    with Image.open(plot) as im:
        assert im.format == "PNG" and im.size[0] > 600


def test_batch_sizes_stay_inside_the_profile(tiny_classifier, tmp_path, capsys):
    work = tiny_classifier["work"]
    out = tmp_path / "p.json"
    code = main(["profile", str(work / "end2end.engine"), "--batch-sizes", "2,8", "--shape", "1x3x256x256",
                 "--iterations", "2", "--warmup", "0", "--json", str(out)])
    assert code == 0
    (_, stand_in) = json.loads(out.read_text())["results"]
    assert [s["shapes"]["input"] for s in stand_in["latency"]] == [[2, 3, 256, 256], [8, 3, 256, 256]]
    capsys.readouterr()
    code = main(["profile", str(work / "end2end.engine"), "--batch-sizes", "1,32", "--iterations", "2"])
    err = capsys.readouterr().err
    assert code == 4 and "dimension 0 is 32, outside the engine's profile 0 (max 16)" in err


def test_bad_input(tiny_classifier, tmp_path, capsys):
    onnx_file = tiny_classifier["work"] / "end2end.onnx"
    for args in (["--batch-sizes", "1,0"], ["--iterations", "0"], ["--warmup", "x"]):
        try:
            main(["profile", str(onnx_file), *args])
        except SystemExit as e:  # argparse: exit 2 with the reason
            assert e.code == 2
        assert "is not an integer >=" in capsys.readouterr().err
    assert main(["profile", str(onnx_file), "--plot", str(tmp_path / "p.jpg")]) == 9
    assert "give a path ending in .png" in capsys.readouterr().err
    assert main(["profile", str(tmp_path / "none.onnx")]) == 3
    assert list(tmp_path.iterdir()) == []
