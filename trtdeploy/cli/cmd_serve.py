"""trtdeploy serve: run a real Triton Inference Server for a model repository until Ctrl-C."""
from __future__ import annotations

import signal
import tempfile
import threading
from pathlib import Path


def register(sub, common) -> None:
    p = sub.add_parser(
        "serve", parents=[common], help="start Triton Inference Server for a model repository",
        description="Start tritonserver for REPO on 127.0.0.1, wait until it is ready, print the endpoints, and stop "
                    "it cleanly on Ctrl-C or SIGTERM. Uses tritonserver from PATH (NVIDIA's container) if present, "
                    "else the server bundled in the nvidia-pytriton wheel, installed into its own venv on first use "
                    "(Python backend only: onnxruntime_onnx and tensorrt_plan models are left out, with the reason).")
    p.add_argument("repo", help="model repository (from `trtdeploy export-triton`)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP/REST port (default: %(default)s)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default: %(default)s)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics port (default: %(default)s)")
    p.add_argument("--ready-timeout", type=float, default=180.0,
                   help="seconds to wait for the server and its models (default: %(default)s)")
    p.add_argument("--log-file", help="server log (default: a file in the temp folder, printed at start)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..serving.server import Endpoints, ServerError, TritonServer

    endpoints = Endpoints("127.0.0.1", args.http_port, args.grpc_port, args.metrics_port)
    log_file = Path(args.log_file or Path(tempfile.gettempdir()) / f"trtdeploy-serve-{args.http_port}.log")
    server = TritonServer(args.repo, endpoints, log_file)
    print(f"starting {server.install.label}; log: {log_file}", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM while starting stops like Ctrl-C
    server.start(args.ready_timeout)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        for name, why in server.skipped.items():
            print(f"  not loaded: {name}: {why}")
        print(f"models: {', '.join(server.models)}")
        print(f"HTTP     http://{endpoints.http}   (e.g. curl http://{endpoints.http}/v2/models/{server.models[0]})")
        print(f"gRPC     {endpoints.grpc}")
        print(f"metrics  {endpoints.metrics}")
        print("server ready; press Ctrl-C to stop", flush=True)
        while not stop.wait(0.5):
            if server.process.poll() is not None:
                raise ServerError(f"tritonserver stopped by itself with code {server.process.returncode}: "
                                  f"{server.log_errors()}; full log: {log_file}")
        print("stopping ...", flush=True)
    finally:
        code = server.stop()
    print(f"server stopped (exit code {code})", flush=True)
    return 0
