"""Find, start, watch and stop a real Triton Inference Server on this machine.

Two kinds of server:
- ``tritonserver`` on PATH (NVIDIA's container or a full install): every backend, every model.
- the one bundled in the ``nvidia-pytriton`` wheel (Python backend only), installed on first use
  into its own virtual environment under ``$TRTDEPLOY_SERVE_HOME`` (default ~/.cache/trtdeploy/triton).
  That venv sees this environment's packages (trtdeploy, onnxruntime, pillow) but holds numpy < 2:
  the Python backend's stub passes tensors through numpy's 1.x C API, and under numpy 2 its
  ``as_numpy()``/``Tensor()`` silently return zeros or empty arrays (see benchmarks/RESULTS.md).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import site
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BackendUnavailableError, ConfigError, ModelError, TrtDeployError
from ..utils.logging import logger
from . import model_config as mc

PYTRITON = "nvidia-pytriton==0.7.0"
SERVER_NUMPY = "numpy<2"
SHM_PREFIX = "triton_python_backend_shm_region_"
READY_MARK = ".trtdeploy-ready"  # written last by the install: holds the venv's site-packages
INSTALL_HINT = ("run NVIDIA's Triton container (nvcr.io/nvidia/tritonserver:<yy.mm>-py3) with tritonserver on PATH, "
                f"or let trtdeploy install the bundled server: it needs `pip install {PYTRITON}` to reach PyPI")
NATIVE_ONLY = {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt"}


class ServerError(TrtDeployError):
    """The server could not start, stopped by itself or its ports are taken."""

    exit_code = 11


@dataclass
class ServerInstall:
    """A tritonserver binary and how to run it."""

    binary: Path
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)  # --backend-directory etc.
    python_only: bool = False
    label: str = ""


def serve_home() -> Path:
    return Path(os.environ.get("TRTDEPLOY_SERVE_HOME") or Path.home() / ".cache" / "trtdeploy" / "triton")


def find_server(install: bool = True) -> ServerInstall:
    """``tritonserver`` on PATH if there is one, else the bundled server (installed on first use)."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return ServerInstall(Path(on_path), label=f"tritonserver on PATH ({on_path})")
    return bundled_server(install)


def bundled_server(install: bool = True) -> ServerInstall:
    # One venv per Python environment: it borrows that environment's packages (see _install_bundled).
    host = hashlib.sha1(sys.prefix.encode()).hexdigest()[:8]
    venv = serve_home() / f"venv-py{sys.version_info.major}{sys.version_info.minor}-{host}"
    site_dir = _installed_site(venv)
    if site_dir is None:
        if not install:
            raise BackendUnavailableError(f"no Triton server here: {INSTALL_HINT}")
        site_dir = _install_bundled(venv)
    root = site_dir / "pytriton" / "tritonserver"
    env = {"LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(site_dir / "nvidia_pytriton.libs"),
                                                            os.environ.get("LD_LIBRARY_PATH")])),
           # The Python backend's stub embeds the interpreter found first on PATH: make it the venv's.
           "PATH": os.pathsep.join([str(venv / "bin"), os.environ.get("PATH", "")]),
           "VIRTUAL_ENV": str(venv)}
    return ServerInstall(root / "bin" / "tritonserver", env,
                         ["--backend-directory", str(venv / "triton-backends"), "--cache-directory",
                          str(root / "caches"), "--allow-gpu-metrics", "false"], python_only=True,
                         label=f"bundled tritonserver from {PYTRITON} (Python backend only; venv {venv})")


def _installed_site(venv: Path) -> Path | None:
    """The venv's site-packages when its install finished and the server binary is still there."""
    ready = venv / READY_MARK
    site_dir = Path(ready.read_text().strip()) if ready.is_file() else None
    return site_dir if site_dir and (site_dir / "pytriton/tritonserver/bin/tritonserver").is_file() else None


def _install_bundled(venv: Path) -> Path:
    """Create the server's venv once (a lock keeps concurrent first uses from racing); returns its site-packages."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = _installed_site(venv)
        if done:
            return done
        shutil.rmtree(venv, ignore_errors=True)
        logger.info("installing the bundled Triton server into %s (first use, about 75 MB from PyPI) ...", venv)
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  "--no-deps", PYTRITON, SERVER_NUMPY],
                 [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]]
        out = ""
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
                raise BackendUnavailableError(f"installing the bundled Triton server failed at `{' '.join(cmd[-3:])}` "
                                              f"({last[0]}); {INSTALL_HINT}")
            out = proc.stdout
        site_dir = Path(out.strip())
        # The server's Python sees this environment's packages (trtdeploy, editable or not, onnxruntime, pillow)
        # after its own, so its numpy < 2 wins; this works whether or not this environment is itself a venv.
        host_sites = [p for p in site.getsitepackages() if Path(p).is_dir()]
        (site_dir / "trtdeploy-host.pth").write_text(
            "".join(f"import site; site.addsitedir({p!r})\n" for p in host_sites))
        # Triton wants the stub for this Python beside the Python backend's library.
        root = site_dir / "pytriton" / "tritonserver"
        python_backend = venv / "triton-backends" / "python"
        python_backend.mkdir(parents=True)
        stub = root / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / \
            "triton_python_backend_stub"
        for src in [*(root / "backends" / "python").glob("*.so"), *(root / "backends" / "python").glob("*.py"), stub]:
            (python_backend / src.name).symlink_to(src)
        tmp = venv / f"{READY_MARK}.tmp"
        tmp.write_text(f"{site_dir}\n")
        os.replace(tmp, venv / READY_MARK)
        return site_dir


# -- ports --------------------------------------------------------------------------------------
def port_owner(port: int) -> str | None:
    """'pid N (name)' of the process listening on ``port``, where /proc lets us see it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) > 9 and int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":
                    inodes.add(cols[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in {f"socket:[{i}]" for i in inodes}:
                    name = (proc / "comm").read_text().strip()
                    return f"process {proc.name} ({name})"
    return None


def check_port_free(address: str, port: int, flag: str) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"{flag} {port} is out of range; pass a port from 1 to 65535")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the server sets it too: TIME_WAIT is no conflict
        try:
            s.bind((address, port))
        except OSError:
            owner = port_owner(port)
            raise ServerError(f"port {port} ({flag}) on {address} is already in use"
                              f"{f' by {owner}' if owner else ''}; stop that process or pick another port with "
                              f"{flag} N") from None


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


# -- the repository, as the server will see it ---------------------------------------------------
def repository_models(repo: Path) -> dict[str, object]:
    """Model name -> parsed ModelConfig for every model folder; bad configs are errors that name the file."""
    if not repo.is_dir():
        raise ModelError(f"model repository {repo} does not exist; write one with `trtdeploy export-triton`")
    models = {}
    for folder in sorted(p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        config_file = folder / mc.CONFIG_FILE
        if not config_file.is_file():
            raise ConfigError(f"{folder} has no {mc.CONFIG_FILE}; remove the folder or export it again")
        config = mc.parse(config_file)
        if config.name and config.name != folder.name:
            raise ConfigError(f"{config_file}: name {config.name!r} differs from its folder {folder.name!r}; "
                              f"Triton refuses that, so rename one of them")
        models[folder.name] = config
    if not models:
        raise ModelError(f"model repository {repo} holds no models; write some with `trtdeploy export-triton`")
    return models


def loadable(models: dict[str, object], python_only: bool) -> tuple[list[str], dict[str, str]]:
    """Which models this server can load, and why the others are left out."""
    skipped = {}
    if python_only:
        for name, config in models.items():
            if config.platform in NATIVE_ONLY:
                skipped[name] = (f"{config.platform} needs Triton's {NATIVE_ONLY[config.platform]} backend, which the "
                                 f"bundled server lacks; serve it from NVIDIA's Triton container")
    changed = True
    while changed:  # an ensemble loads only when all its steps do
        changed = False
        for name, config in models.items():
            if name in skipped or config.platform != "ensemble":
                continue
            missing = [s.model_name for s in config.ensemble_scheduling.step
                       if s.model_name in skipped or s.model_name not in models]
            if missing:
                skipped[name] = f"its step model(s) {', '.join(missing)} cannot be loaded here"
                changed = True
    return [n for n in models if n not in skipped], skipped


# -- the process ---------------------------------------------------------------------------------
@dataclass
class Endpoints:
    address: str
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def http(self) -> str:
        return f"{self.address}:{self.http_port}"

    @property
    def grpc(self) -> str:
        return f"{self.address}:{self.grpc_port}"

    @property
    def metrics(self) -> str:
        return f"http://{self.address}:{self.metrics_port}/metrics"


class TritonServer:
    """One tritonserver process for one repository; a context manager that always stops it."""

    def __init__(self, repo: str | os.PathLike, endpoints: Endpoints, log_file: str | os.PathLike,
                 install: ServerInstall | None = None):
        self.repo = Path(repo).resolve()
        self.endpoints = endpoints
        self.log_file = Path(log_file)
        models = repository_models(self.repo)  # a bad repository is reported before any server is installed
        self.install = install or find_server()
        self.models, self.skipped = loadable(models, self.install.python_only)
        if not self.models:
            raise ModelError(f"{self.repo}: no model can be loaded by this server: "
                             + "; ".join(f"{k}: {v}" for k, v in self.skipped.items()))
        self.process: subprocess.Popen | None = None
        self._shm_before: set[str] = set()

    def command(self) -> list[str]:
        e = self.endpoints
        cmd = [str(self.install.binary), "--model-repository", str(self.repo), *self.install.args,
               "--http-address", e.address, "--grpc-address", e.address, "--metrics-address", e.address,
               "--http-port", str(e.http_port), "--grpc-port", str(e.grpc_port), "--metrics-port", str(e.metrics_port),
               "--exit-timeout-secs", "10"]
        if self.skipped:  # load what this server can, by name
            cmd += ["--model-control-mode", "explicit", *(f"--load-model={m}" for m in self.models)]
        return cmd

    def start(self, ready_timeout: float = 180.0) -> None:
        e = self.endpoints
        for port, flag in ((e.http_port, "--http-port"), (e.grpc_port, "--grpc-port"),
                           (e.metrics_port, "--metrics-port")):
            check_port_free(e.address, port, flag)
        self._shm_before = _shm_regions()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "wb") as log:
            try:
                # Own session: Ctrl-C reaches us, and we stop the server (and its stubs) in order.
                self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, env={**os.environ, **self.install.env},
                                                start_new_session=True)
            except OSError as e:
                raise ServerError(f"cannot start {self.install.binary} ({e.strerror}); {INSTALL_HINT}") from None
        try:
            self._wait_ready(ready_timeout)
        except BaseException:  # Ctrl-C while waiting included: never leave a server behind
            self.stop()
            raise

    def _wait_ready(self, ready_timeout: float) -> None:
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self.process.returncode} before it was ready: "
                                  f"{self.log_errors()}; full log: {self.log_file}")
            if self.is_ready():
                return
            time.sleep(0.25)
        raise ServerError(f"tritonserver was not ready after {ready_timeout:.0f} s: {self.log_errors()}; "
                          f"full log: {self.log_file}; raise --ready-timeout if the models are large")

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.endpoints.http}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_errors(self, n: int = 3) -> str:
        """The server's last error lines (Triton starts them with 'E' and a date)."""
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        errors = [ln for ln in lines if ln[:1] == "E" and ln[1:5].isdigit() or "error:" in ln.lower()]
        return " | ".join((errors or lines)[-n:]) or "no output"

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait, then SIGKILL the whole process group; remove shared memory a killed server left."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        stopped_by_itself = proc.poll() is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # stray Python-backend stubs die with their server
        proc.wait()
        if not stopped_by_itself or proc.returncode != 0:
            for leftover in _shm_regions() - self._shm_before:
                with contextlib.suppress(OSError):
                    (Path("/dev/shm") / leftover).unlink()
        return proc.returncode

    def __enter__(self) -> "TritonServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _shm_regions() -> set[str]:
    with contextlib.suppress(OSError):
        return {p.name for p in Path("/dev/shm").iterdir() if p.name.startswith(SHM_PREFIX)}
    return set()
