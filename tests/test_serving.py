"""Serving end to end: export a converted classifier, start the real Triton server (bundled binary),
ask it over HTTP and gRPC, compare with `trtdeploy run`, load-test it, stop it and find nothing left.

Everything talks to 127.0.0.1 only, with bounded request counts.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DEMO_IMG, REPO, interruptible, run_cli

from trtdeploy.serving.server import SHM_PREFIX, free_port
from trtdeploy.tasks import get_task

pytestmark = pytest.mark.slow
MODEL = "resnet18"
READY_TIMEOUT = 300


def _shm() -> set[str]:
    return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(SHM_PREFIX)}


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(f"{proc.name}: {cmdline[:200]}")
    return found


class Served:
    """A `trtdeploy serve` child process for one repository."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        self.shm_before = _shm()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trtdeploy", "serve", str(repo), "--http-port", str(self.http),
             "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics), "--log-file", str(repo.parent / "server.log")],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines = []
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if "server ready" in line:
                return
        self.proc.kill()
        raise AssertionError("trtdeploy serve did not get ready:\n" + "".join(self.lines) + self.proc.stdout.read())

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        """Ctrl-C (or ``sig``) the serve command; returns its exit code and everything it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=120)
        return self.proc.returncode, "".join(self.lines) + out


@pytest.fixture(scope="module")
def repo(resnet18_ort, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("serving") / "model_repository"
    out = run_cli("export-triton", resnet18_ort, "--repo", repo, "--name", MODEL, "--ensemble").stdout
    assert f"{MODEL}_ensemble" in out and "skipped" in out  # no engine in an ONNX Runtime work dir
    return repo


@pytest.fixture(scope="module")
def served(repo):
    server = Served(repo)
    yield server
    if server.proc.poll() is None:
        server.stop()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """The demo photo and a synthetic PNG of another size, so pre-processing sees two geometries."""
    png = tmp_path_factory.mktemp("imgs") / "gradient.png"
    y, x = np.mgrid[0:300, 0:420]
    Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)).save(png)
    return [DEMO_IMG, png]


def client_for(protocol: str, served: Served):
    import tritonclient.grpc as grpc
    import tritonclient.http as http

    module = {"http": http, "grpc": grpc}[protocol]
    port = {"http": served.http, "grpc": served.grpc}[protocol]
    return module, module.InferenceServerClient(f"127.0.0.1:{port}")


def ask(module, client, model: str, encoded: list[bytes], task: str = "Classification") -> list:
    """Send encoded images in one request; returns one result per image, as ``Task.postprocess`` rows."""
    inp = module.InferInput("image", [len(encoded), 1], "BYTES")
    inp.set_data_from_numpy(np.array([[b] for b in encoded], dtype=object))
    result = client.infer(model, [inp])
    outputs = get_task(task)
    return outputs.from_tensors({t.name: result.as_numpy(t.name) for t in outputs.served_outputs})


def test_serve_prints_endpoints_and_what_it_left_out(served):
    text = "".join(served.lines)
    assert f"http://127.0.0.1:{served.http}" in text and f"127.0.0.1:{served.grpc}" in text
    assert f"http://127.0.0.1:{served.metrics}/metrics" in text
    assert f"not loaded: {MODEL}_onnx: onnxruntime_onnx needs Triton's onnxruntime backend" in text


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_answers_equal_trtdeploy_run(served, resnet18_ort, images, protocol):
    from trtdeploy.api import load

    task = load(resnet18_ort / "end2end.onnx").task
    module, client = client_for(protocol, served)
    for image in images:
        expected = run_cli("run", resnet18_ort / "end2end.onnx", "--input", image).stdout.rstrip("\n")
        for model in (MODEL, f"{MODEL}_ensemble"):
            (row,) = ask(module, client, model, [image.read_bytes()])
            assert task.format_result([row]) == expected, (model, image.name)
    # Two images in one request run as one batch inside the model: same classes, same probabilities.
    both = ask(module, client, MODEL, [p.read_bytes() for p in images])
    for row, image in zip(both, images):
        (alone,) = ask(module, client, MODEL, [image.read_bytes()])
        assert [i for i, _, _ in row] == [i for i, _, _ in alone]
        np.testing.assert_allclose([p for _, _, p in row], [p for _, _, p in alone], rtol=1e-4)
    client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_requests_get_clear_errors_and_server_keeps_serving(served, protocol):
    from tritonclient.utils import InferenceServerException

    module, client = client_for(protocol, served)
    wrong_dtype = module.InferInput("image", [1, 1], "FP32")
    wrong_dtype.set_data_from_numpy(np.zeros((1, 1), np.float32))
    wrong_shape = module.InferInput("image", [1, 2], "BYTES")
    wrong_shape.set_data_from_numpy(np.array([[b"a", b"b"]], dtype=object))
    not_an_image = module.InferInput("image", [1, 1], "BYTES")
    not_an_image.set_data_from_numpy(np.array([[b"definitely not a jpeg"]], dtype=object))
    bad_tensor = module.InferInput("input", [1, 3, 224], "FP32")
    bad_tensor.set_data_from_numpy(np.zeros((1, 3, 224), np.float32))
    cases = [(MODEL, wrong_dtype, "FP32"), (MODEL, wrong_shape, "shape"),
             (MODEL, not_an_image, "must hold an encoded image"),
             (f"{MODEL}_ensemble", not_an_image, "must hold an encoded image"),
             (f"{MODEL}_infer", bad_tensor, "shape")]
    for model, inp, needle in cases:
        with pytest.raises(InferenceServerException) as err:
            client.infer(model, [inp])
        assert needle in err.value.message(), (model, err.value.message())
        # the client's mistake: 400 / INVALID_ARGUMENT (a 500 would say the server broke)
        assert err.value.status() in ("400", "StatusCode.INVALID_ARGUMENT"), (model, needle, err.value.status())
    assert client.is_server_ready()
    assert ask(module, client, MODEL, [DEMO_IMG.read_bytes()])[0]  # still answering
    client.close()


def test_bench_serve_reports_throughput_and_percentiles(served, tmp_path):
    out_json = tmp_path / "bench.json"
    proc = run_cli("bench-serve", f"http://127.0.0.1:{served.http}", "--model", MODEL, "--input", DEMO_IMG,
                   "--concurrency", "1,4", "--requests", "12", "--warmup", "2", "--json", out_json)
    rows = [line.split() for line in proc.stdout.splitlines() if line.split() and line.split()[0] in ("1", "4")]
    assert [(r[0], r[1], r[2]) for r in rows] == [("1", "12", "0"), ("4", "12", "0")], proc.stdout
    figures = json.loads(out_json.read_text())
    assert [f["concurrency"] for f in figures] == [1, 4]
    assert all(f["throughput"] > 0 and 0 < f["p50_ms"] <= f["p90_ms"] <= f["p99_ms"] for f in figures)
    grpc = run_cli("bench-serve", f"grpc://127.0.0.1:{served.grpc}", "--model", f"{MODEL}_infer",
                   "--shape", "input:1x3x224x224", "--concurrency", "2", "--requests", "6", "--warmup", "0")
    assert "      2        6      0" in grpc.stdout


def test_serve_refuses_a_port_in_use(repo):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli("serve", repo, "--http-port", port, "--grpc-port", free_port(), "--metrics-port", free_port(),
                       check=False, timeout=120)
    assert proc.returncode == 11, proc.stderr
    assert f"port {port} (--http-port) on 127.0.0.1 is already in use by process {os.getpid()}" in proc.stderr
    assert "pick another port with --http-port N" in proc.stderr


def test_stop_leaves_no_process_or_shared_memory(served, repo):
    code, text = served.stop()
    assert code == 0, text
    assert "server stopped (exit code 0)" in text
    assert _processes_mentioning(str(repo)) == []
    assert _shm() - served.shm_before == set()


def test_ctrl_c_while_starting_leaves_no_server(resnet18_ort, tmp_path):
    repo = tmp_path / "repo"
    run_cli("export-triton", resnet18_ort, "--repo", repo, "--name", MODEL)
    proc = subprocess.Popen([sys.executable, "-m", "trtdeploy", "serve", str(repo), "--http-port", str(free_port()),
                             "--grpc-port", str(free_port()), "--metrics-port", str(free_port())],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=interruptible)
    first = proc.stdout.readline()
    assert first.startswith("starting "), first
    time.sleep(0.5)  # the server process is up, its models are loading
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in out, out
    assert _processes_mentioning(str(repo)) == []
