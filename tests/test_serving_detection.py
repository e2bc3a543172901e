"""Serving a detector: the real bundled Triton server answers boxes, scores, labels and names exactly as
`trtdeploy run` (and ``predict``) does, over HTTP and gRPC, for the pipeline model and the ensemble.

The detector is SSDlite (the smallest torchvision detector), made decisive the way the detection
tests make it (re-estimated BatchNorm, widened class logits) so its answers are not ties.
"""
from __future__ import annotations

import signal

import numpy as np
import pytest

import trtdeploy
from conftest import run_cli
from test_detection import build, ort_config  # the detection tests' decisive random detector and small config
from test_serving import Served, _processes_mentioning, _shm, ask, client_for, images  # noqa: F401  (images is a fixture)

pytestmark = pytest.mark.slow
DETECTOR = "ssdlite320_mobilenet_v3_large"
NAME = "ssd"


@pytest.fixture(scope="module")
def detector_work(tmp_path_factory):
    work = tmp_path_factory.mktemp("ssd_ort")
    trtdeploy.convert(ort_config(DETECTOR), build(DETECTOR), work_dir=work)
    return work


@pytest.fixture(scope="module")
def served_detector(detector_work, tmp_path_factory):
    repo = tmp_path_factory.mktemp("ssd_serving") / "repo"
    out = run_cli("export-triton", detector_work, "--repo", repo, "--name", NAME, "--ensemble").stdout
    assert f"{NAME}_onnx " in out  # the plugin-free detection graph also goes to the native ONNX Runtime model
    server = Served(repo)
    yield server
    if server.proc.poll() is None:
        server.stop()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_detections_equal_trtdeploy_run(served_detector, detector_work, images, protocol):
    model_file = detector_work / "end2end.onnx"
    deployed = trtdeploy.load(model_file)
    module, client = client_for(protocol, served_detector)
    for image in images:
        printed = run_cli("run", model_file, "--input", image).stdout.rstrip("\n")
        (expected,) = deployed.predict(image)
        assert len(expected["scores"]) > 0, "the decisive detector should find something"
        for model in (NAME, f"{NAME}_ensemble"):
            (row,) = ask(module, client, model, [image.read_bytes()], task="ObjectDetection")
            assert deployed.task.format_result([row]) == printed, (model, image.name)
            np.testing.assert_array_equal(row["labels"], expected["labels"])
            np.testing.assert_allclose(row["boxes"], expected["boxes"], rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(row["scores"], expected["scores"], rtol=1e-5, atol=1e-6)
    # Two images in one request: padded to the larger count on the wire, unpadded by the client.
    both = ask(module, client, NAME, [p.read_bytes() for p in images], task="ObjectDetection")
    for row, image in zip(both, images):
        (alone,) = ask(module, client, NAME, [image.read_bytes()], task="ObjectDetection")
        assert row["names"] == alone["names"]
        np.testing.assert_allclose(row["boxes"], alone["boxes"], rtol=1e-4, atol=1e-3)
    client.close()
    deployed.close()


def test_detector_server_stops_cleanly_on_sigterm(served_detector):
    code, text = served_detector.stop(signal.SIGTERM)
    assert code == 0 and "server stopped (exit code 0)" in text, text
    assert _processes_mentioning(str(served_detector.repo)) == []
    assert _shm() - served_detector.shm_before == set()
