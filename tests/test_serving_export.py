"""export-triton: configs that Triton's own schema accepts, derived from the engine's profiles; bad input refused.

No server runs here (see test_serving.py); engines are built with TensorRT-RTX in a child process.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import CONFIGS, DEMO_IMG, run_cli

from trtdeploy.backends.sidecar import read_sidecar, write_sidecar
from trtdeploy.serving import model_config as mc
from trtdeploy.serving.stages import Pipeline, run_batched
from trtdeploy.tasks import get_task


def _configs(repo):
    return {p.parent.name: mc.parse(p) for p in repo.glob("*/config.pbtxt")}


@pytest.fixture(scope="module")
def engine_work(tmp_path_factory):
    """A small classifier with a dynamic TensorRT-RTX engine (profile batch 1..16, opt 4)."""
    work = tmp_path_factory.mktemp("sq_trt")
    run_cli("convert", CONFIGS / "classification/classification_tensorrt_dynamic-224x224-320x320.py",
            "torchvision://squeezenet1_1?num_classes=10", "--work-dir", work)
    return work


def test_tensorrt_plan_config_follows_the_engine_profiles(engine_work, tmp_path):
    repo = tmp_path / "repo"
    out = run_cli("export-triton", engine_work, "--repo", repo, "--name", "sq", "--instances", "2").stdout
    assert "TensorRT-RTX" in out  # says that Triton's TensorRT backend needs its own TensorRT's engine
    configs = _configs(repo)
    assert set(configs) == {"sq", "sq_onnx", "sq_trt"}
    trt = configs["sq_trt"]
    assert trt.platform == "tensorrt_plan" and trt.max_batch_size == 16
    assert list(trt.input[0].dims) == [3, -1, -1] and list(trt.output[0].dims) == [10]
    assert list(trt.dynamic_batching.preferred_batch_size) == [4]
    assert trt.instance_group[0].count == 2 and mc.schema().ModelInstanceGroup.Kind.Name(trt.instance_group[0].kind) == "KIND_GPU"
    warm = trt.model_warmup[0].inputs["input"]
    assert list(warm.dims) == [3, 224, 224] and warm.random_data
    assert (repo / "sq_trt/1/model.plan").read_bytes() == (engine_work / "end2end.engine").read_bytes()
    python = configs["sq"]
    assert python.backend == "python" and python.parameters["trtdeploy_stage"].string_value == "pipeline"
    assert python.parameters["trtdeploy_model_file"].string_value == "end2end.engine"
    assert {p.name for p in (repo / "sq/1").iterdir()} == {"model.py", "end2end.engine", "end2end.engine.json",
                                                           "end2end.onnx", "end2end.onnx.json"}
    # No GPU here: the Python model serves the engine's ONNX on ONNX Runtime, pre-processed to the engine's shapes.
    from trtdeploy.api import load

    stage = Pipeline(repo / "sq/1/end2end.engine")
    assert stage.model.sidecar["profiles"] == read_sidecar(engine_work / "end2end.engine")["profiles"]
    (answer,) = stage([{"image": np.array([[DEMO_IMG.read_bytes()]], dtype=object)}])
    (row,) = get_task("Classification").from_tensors(answer)
    expected = load(engine_work / "end2end.onnx").predict(DEMO_IMG)[0]
    assert [i for i, _, _ in row] == [i for i, _, _ in expected]
    stage.close()

    too_big = run_cli("export-triton", engine_work, "--repo", tmp_path / "r2", "--max-batch", "32", check=False)
    assert too_big.returncode == 2 and "exceeds the engine's profile max batch 16" in too_big.stderr
    assert not (tmp_path / "r2").exists() or not any((tmp_path / "r2").iterdir())


def test_plugin_graphs_are_not_exported_to_native_backends(tmp_path):
    """A graph with an mmdeploy-domain node needs trtdeploy's Python plugins: only the Python model is written."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3, 8, 8])
    node = helper.make_node("AddK", ["input"], ["output"], domain="mmdeploy", k=1.0)
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("mmdeploy", 1)])
    work = tmp_path / "work"
    work.mkdir()
    onnx.save(model, work / "end2end.onnx")
    spec = {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 3, 8, 8]}],
            "outputs": [{"name": "output", "dtype": "float32", "shape": [-1, 3, 8, 8]}]}
    write_sidecar(work / "end2end.onnx", {"backend": "onnxruntime", "task": "Classification", **spec, "profiles": []})
    (work / "end2end.engine").write_bytes(b"engine")
    write_sidecar(work / "end2end.engine", {"backend": "tensorrt", "task": "Classification", "onnx_file": "end2end.onnx",
                                            **spec, "profiles": []})
    out = run_cli("export-triton", work, "--repo", tmp_path / "repo", "--name", "plug").stdout
    assert "skipped plug (tensorrt_plan): end2end.engine needs trtdeploy's Python TensorRT plugins" in out
    assert "(mmdeploy::AddK)" in out and "Triton's C++ TensorRT backend cannot load" in out
    assert "skipped plug (onnxruntime_onnx)" in out
    assert set(_configs(tmp_path / "repo")) == {"plug"}


@pytest.mark.parametrize("args, code, message", [
    (["--name", "my model"], 2, "is not a model name Triton serves reliably"),
    (["--name", "../up"], 2, "is not a model name Triton serves reliably"),
    (["--max-batch", "-1"], 2, "--max-batch -1 is out of range"),
    (["--instances", "0"], 2, "--instances 0 is out of range"),
])
def test_export_refuses_bad_options(resnet18_ort, tmp_path, args, code, message):
    proc = run_cli("export-triton", resnet18_ort, "--repo", tmp_path / "repo", *args, check=False)
    assert proc.returncode == code and message in proc.stderr, proc.stderr
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())


def test_export_refuses_missing_work_dir_and_non_empty_repo(resnet18_ort, tmp_path):
    missing = run_cli("export-triton", tmp_path / "nowhere", "--repo", tmp_path / "repo", check=False)
    assert missing.returncode == 3 and "does not exist; pass the --work-dir you gave `trtdeploy convert`" in missing.stderr
    empty = tmp_path / "empty_work"
    empty.mkdir()
    nothing = run_cli("export-triton", empty, "--repo", tmp_path / "repo", check=False)
    assert nothing.returncode == 3 and "holds no converted model" in nothing.stderr
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "notes.txt").write_text("mine")
    refused = run_cli("export-triton", resnet18_ort, "--repo", repo, "--name", "r18", check=False)
    assert refused.returncode == 9 and "is not empty (notes.txt); pass --force" in refused.stderr
    run_cli("export-triton", resnet18_ort, "--repo", repo, "--name", "r18", "--force")
    (repo / "r18/config.pbtxt").write_text("stale")
    run_cli("export-triton", resnet18_ort, "--repo", repo, "--name", "r18", "--force")
    assert mc.parse(repo / "r18/config.pbtxt").name == "r18" and (repo / "notes.txt").read_text() == "mine"
    assert not [p for p in repo.parent.iterdir() if "staging" in p.name]


def test_schema_refuses_what_triton_would(tmp_path):
    with pytest.raises(Exception, match="schema rejects"):
        mc.render({"name": "x", "backend": "python", "max_batch": 8})
    with pytest.raises(Exception, match="schema rejects"):
        mc.render({"name": "x", "input": [{"name": "a", "data_type": "TYPE_FLOAT32", "dims": [1]}]})
    bad = tmp_path / "config.pbtxt"
    bad.write_text('name: "x"\nmax_batch_size: 8\ninput { name: "a" data_type: TYPE_FP32 dimz: [1] }\n')
    with pytest.raises(Exception, match=r"config.pbtxt: not a valid Triton model config \(3:"):
        mc.parse(bad)


def test_serve_refuses_bad_repositories_before_starting(tmp_path):
    missing = run_cli("serve", tmp_path / "nowhere", check=False)
    assert missing.returncode == 3 and "does not exist; write one with `trtdeploy export-triton`" in missing.stderr
    repo = tmp_path / "repo"
    (repo / "m").mkdir(parents=True)
    (repo / "m/config.pbtxt").write_text("name: \"m\"\nbackend: python\n")  # enum-like bare word: not a string
    broken = run_cli("serve", repo, check=False)
    assert broken.returncode == 2 and "m/config.pbtxt: not a valid Triton model config (2:" in broken.stderr
    (repo / "m/config.pbtxt").write_text('name: "other"\nbackend: "python"\n')
    renamed = run_cli("serve", repo, check=False)
    assert renamed.returncode == 2 and "differs from its folder 'm'" in renamed.stderr


def test_serve_without_a_server_says_how_to_install_one(resnet18_ort, tmp_path):
    repo = tmp_path / "repo"
    run_cli("export-triton", resnet18_ort, "--repo", repo, "--name", "r18")
    env = {"TRTDEPLOY_SERVE_HOME": str(tmp_path / "home"), "PIP_NO_INDEX": "1",
           "PATH": os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (
               os.path.exists(os.path.join(p, "tritonserver"))))}
    proc = run_cli("serve", repo, check=False, env=env, timeout=300)
    assert proc.returncode == 5, proc.stderr
    assert "installing the bundled Triton server failed" in proc.stderr
    assert "run NVIDIA's Triton container" in proc.stderr and "nvidia-pytriton" in proc.stderr
    assert not any((tmp_path / "home").glob("venv-*"))  # a failed install leaves no half-made venv


def test_pipeline_stage_answers_like_predict_and_isolates_bad_requests(resnet18_ort):
    from trtdeploy.api import load

    stage = Pipeline(resnet18_ort / "end2end.onnx")
    good = np.array([[DEMO_IMG.read_bytes()]], dtype=object)
    answers = stage([{"image": good}, {"image": np.array([[b"junk"]], dtype=object)}, {"image": good}])
    assert isinstance(answers[1], Exception) and "must hold an encoded image" in str(answers[1])
    expected = load(resnet18_ort / "end2end.onnx").predict(DEMO_IMG)[0]
    for answer in (answers[0], answers[2]):
        (row,) = get_task("Classification").from_tensors(answer)
        assert [i for i, _, _ in row] == [i for i, _, _ in expected]
        np.testing.assert_allclose([p for _, _, p in row], [p for _, _, p in expected], rtol=1e-4)
    stage.close()


def test_run_batched_merges_equal_shapes_and_splits_back():
    calls = []

    def run(feed):
        calls.append(feed["x"].shape)
        return {"y": feed["x"] * 2}
    feeds = [{"x": np.full((2, 3), 1.0)}, {"x": np.full((1, 4), 2.0)}, {"x": np.full((3, 3), 3.0)}]
    answers = run_batched(run, feeds, limit=4)
    assert calls == [(4, 3), (1, 3), (1, 4)]  # rows of equal shape merged, then chunked by the limit
    for feed, answer in zip(feeds, answers):
        np.testing.assert_array_equal(answer["y"], feed["x"] * 2)


def test_detection_answers_round_trip_with_padding():
    outputs = get_task("ObjectDetection")
    rows = [{"boxes": np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32), "scores": np.array([0.9, 0.4], np.float32),
             "labels": np.array([17, 3]), "names": ["cat", "car"]},
            {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
             "labels": np.zeros(0, np.int64), "names": []}]
    tensors = outputs.to_tensors(rows)
    assert tensors["boxes"].shape == (2, 2, 4) and list(tensors["labels"][1]) == [-1, -1]
    back = outputs.from_tensors(tensors)
    for got, want in zip(back, rows):
        assert got["names"] == want["names"]
        np.testing.assert_array_equal(got["boxes"], want["boxes"])
        np.testing.assert_array_equal(got["labels"], want["labels"])


def test_keypoint_answers_carry_each_detections_keypoints():
    outputs = get_task("KeypointDetection")
    assert [t.name for t in outputs.served_outputs] == ["boxes", "scores", "labels", "class_names", "keypoints"]
    points = np.arange(2 * 17 * 3, dtype=np.float32).reshape(2, 17, 3)
    rows = [{"boxes": np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.float32), "scores": np.array([0.9, 0.4], np.float32),
             "labels": np.array([0, 0]), "names": ["person", "person"], "keypoints": points},
            {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
             "labels": np.zeros(0, np.int64), "names": [], "keypoints": np.zeros((0, 17, 3), np.float32)}]
    tensors = outputs.to_tensors(rows)
    assert tensors["keypoints"].shape == (2, 2, 17, 3)
    back = outputs.from_tensors(tensors)
    np.testing.assert_array_equal(back[0]["keypoints"], points)
    assert back[1]["keypoints"].shape == (0, 17, 3)


def test_kubernetes_manifest_runs_replicas_sharing_one_repository():
    import yaml

    from conftest import REPO

    docs = {d["kind"]: d for d in yaml.safe_load_all((REPO / "deploy/kubernetes/triton.yaml").read_text())}
    assert set(docs) == {"PersistentVolumeClaim", "Deployment", "Service"}
    assert docs["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadOnlyMany"]
    spec = docs["Deployment"]["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["replicas"] > 1 and "--model-repository=/models" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    claim = next(v for v in pod["volumes"] if v["name"] == "models")["persistentVolumeClaim"]
    assert claim["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"] and claim["readOnly"]
    assert {p["port"] for p in docs["Service"]["spec"]["ports"]} == {8000, 8001, 8002}
    assert docs["Service"]["spec"]["selector"] == spec["selector"]["matchLabels"]


def test_bundled_server_loads_only_what_it_can_and_a_full_server_loads_all(resnet18_ort, engine_work, tmp_path):
    from trtdeploy.serving.repository import export_triton
    from trtdeploy.serving.server import Endpoints, ServerInstall, TritonServer

    repo = tmp_path / "repo"
    export_triton(engine_work, repo, name="sq", ensemble=True, ensemble_model="tensorrt_plan")
    endpoints = Endpoints("127.0.0.1", 18000, 18001, 18002)
    bundled = TritonServer(repo, endpoints, tmp_path / "log", ServerInstall(Path("/b/tritonserver"), python_only=True))
    assert bundled.models == ["sq", "sq_postprocess", "sq_preprocess"]
    assert set(bundled.skipped) == {"sq_onnx", "sq_trt", "sq_ensemble"}
    assert "its step model(s) sq_trt cannot be loaded here" in bundled.skipped["sq_ensemble"]
    cmd = bundled.command()
    assert cmd[cmd.index("--model-control-mode") + 1] == "explicit" and "--load-model=sq" in cmd
    assert "--http-address" in cmd and cmd[cmd.index("--http-address") + 1] == "127.0.0.1"
    full = TritonServer(repo, endpoints, tmp_path / "log", ServerInstall(Path("/opt/tritonserver/bin/tritonserver")))
    assert not full.skipped and "--model-control-mode" not in full.command()


@pytest.mark.parametrize("args, message", [
    (["ftp://127.0.0.1:8000"], "must look like http://127.0.0.1:8000 or grpc://127.0.0.1:8001"),
    (["http://127.0.0.1:{port}", "--concurrency", "0,8"], "--concurrency '0,8' must be a comma-separated list"),
    (["http://127.0.0.1:{port}", "--requests", "0"], "--requests 0 is out of range"),
    (["http://127.0.0.1:{port}"], "cannot reach Triton at 127.0.0.1:{port}"),
    (["grpc://127.0.0.1:{port}"], "check the URL and that `trtdeploy serve` is running"),
])
def test_bench_serve_refuses_bad_input_without_a_traceback(args, message):
    from trtdeploy.serving.server import free_port

    port = free_port()  # nothing listens there
    proc = run_cli("bench-serve", *[a.format(port=port) for a in args], "--model", "m", check=False, timeout=120)
    assert proc.returncode != 0 and message.format(port=port) in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
