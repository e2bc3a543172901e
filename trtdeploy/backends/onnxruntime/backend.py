"""ONNX Runtime backend: the ONNX file is the artefact; the runner (``runner.py``) is an InferenceSession."""
from __future__ import annotations

import collections
import importlib.util
import json
import tempfile
from pathlib import Path
from typing import Mapping

from ...config import DeployConfig
from ...errors import BackendUnavailableError, ModelError
from ...utils.findings import FAIL, OK, WARN, Finding, dist_version
from ..base import BACKENDS, Backend, BuildResult, LayerTime, Runner, layer_times_from_totals, profiles_from_json
from .cpu_graph import build_cpu_graph, graph_for_device, winograd_enabled
from .runner import OnnxRuntimeRunner

# Domains whose ops ONNX Runtime ships (its contrib ops included); anything else needs a custom op.
ORT_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc", "com.ms.internal.nhwc",
               "ai.onnx.preview.training", "ai.onnx.training")


def graph_layer_names(onnx_path, totals: Mapping[str, float], op_types: Mapping[str, str]
                      ) -> tuple[dict[str, float], dict[str, str]]:
    """Name ONNX Runtime's kernels after the graph's own nodes.

    Its optimizer fuses nodes and names the result after the fused output tensor (``/relu/Relu_output_0_nchwc``
    is a Conv with its Relu), so the profiler's name and op disagree. Such a kernel becomes the chain of graph
    nodes it computes (``/conv1/Conv + /relu/Relu``, op ``Conv+Relu``); what is no graph node at all (layout
    reorders) keeps its name, marked as added by ONNX Runtime.
    """
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    by_name = {n.name: n for n in graph.node}
    producer = {out: n for n in graph.node for out in n.output}
    names: dict[str, float] = collections.defaultdict(float)
    ops: dict[str, str] = {}
    for kernel, total in totals.items():
        op = op_types.get(kernel, "")
        if kernel in by_name:
            name, label = kernel, by_name[kernel].op_type
        else:
            chain = _chain_to(producer.get(kernel.removesuffix("_nchwc")), op, producer)
            name, label = ((" + ".join(n.name for n in chain), "+".join(n.op_type for n in chain)) if chain
                           else (kernel, f"{op} (added by ONNX Runtime)"))
        names[name] += total
        ops[name] = label
    return names, ops


def _chain_to(node, op_type: str, producer: Mapping, depth: int = 3) -> list:
    """The nodes from one of type ``op_type`` (searched up to ``depth`` steps upstream) down to ``node``."""
    if node is None:
        return []
    if node.op_type == op_type:
        return [node]
    if depth:
        for tensor in node.input:
            chain = _chain_to(producer.get(tensor), op_type, producer, depth - 1)
            if chain:
                return [*chain, node]
    return []


@BACKENDS.register("onnxruntime")
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    file_suffixes = (".onnx",)
    artefact_suffix = ".onnx"  # it runs the ONNX file itself
    install_hint = "pip install onnxruntime (or onnxruntime-gpu for CUDA)"
    # INT8 is a Q/DQ graph ONNX Runtime fuses into integer kernels (backends/onnxruntime/int8.py)
    builds_precisions = {"int8": "ONNX Runtime (a Q/DQ graph it runs with integer kernels)"}

    def is_available(self) -> bool:
        return importlib.util.find_spec("onnxruntime") is not None

    def unsupported_nodes(self, model) -> list[dict]:
        """Custom nodes that neither ONNX Runtime itself nor trtdeploy's ONNX Runtime ops (``ops/<op>/ort.py``) run."""
        from ...utils.onnx_graph import all_nodes

        custom = [n for n in all_nodes(model.graph) if n.domain not in ORT_DOMAINS]
        if not custom:
            return []
        from ...ops.ort_ops import ort_ops

        ops = ort_ops()
        return [{"name": n.name, "op_type": n.op_type, "domain": n.domain,
                 "hint": f"neither ONNX Runtime nor trtdeploy implements it (trtdeploy's ONNX Runtime ops: "
                         f"{', '.join(ops)}); export the model without it or use a backend that has it"}
                for n in custom if f"{n.domain}::{n.op_type}" not in ops]

    def serves_custom_op(self, key: str) -> bool:
        """An ONNX Runtime kernel of trtdeploy's runs the node (through onnxruntime-extensions, when installed)."""
        from ...ops.ort_ops import ort_ops

        return key in ort_ops() and importlib.util.find_spec("onnxruntime_extensions") is not None

    def builds_for(self, cfg: DeployConfig) -> bool:
        """INT8 writes a Q/DQ graph, FP32 a CPU graph (Winograd convolutions) unless backend_config.winograd
        is False; otherwise it runs the ONNX file itself."""
        return cfg.int8 or winograd_enabled(cfg)

    def build(self, onnx_path: Path, work_dir: Path, cfg: DeployConfig, sample=None, model=None) -> BuildResult:
        if cfg.int8:
            from .int8 import build_int8

            return build_int8(Path(onnx_path), Path(work_dir), cfg)
        if winograd_enabled(cfg):
            return build_cpu_graph(Path(onnx_path), Path(work_dir), cfg, model)
        return BuildResult(Path(onnx_path), {"precision": "fp32"})  # nothing to build

    def providers(self, device: str) -> list[str]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in available:
                raise BackendUnavailableError(
                    "--device cuda needs onnxruntime-gpu (CUDAExecutionProvider); pip install onnxruntime-gpu, "
                    "or use --device cpu")
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def load(self, path: Path, sidecar: Mapping | None = None, device: str = "cpu") -> Runner:
        self.require()
        if not Path(path).is_file():
            raise ModelError(f"model file {path} does not exist")
        profiles = profiles_from_json((sidecar or {}).get("profiles", []))
        return OnnxRuntimeRunner(graph_for_device(Path(path), sidecar, device), self.providers(device), profiles)

    def describe(self) -> dict:
        if not self.is_available():
            return {"available": False, "install": self.install_hint}
        import onnxruntime as ort

        return {"available": True, "version": ort.__version__, "location": str(Path(ort.__file__).parent),
                "providers": ort.get_available_providers()}

    def inspect(self, path: Path) -> dict:
        from .inspect import inspect_onnx

        return inspect_onnx(path)

    def inspection_text(self, info: dict) -> tuple[list[str], list[str]]:
        from .inspect import inspection_text

        return inspection_text(info)

    def layer_times(self, runner: Runner, feed: dict, iterations: int) -> list[LayerTime]:
        """Node times from ONNX Runtime's own profiler (its JSON trace), averaged over ``iterations`` runs."""
        import onnxruntime as ort

        with tempfile.TemporaryDirectory(prefix="trtdeploy-ort-profile-") as tmp:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.enable_profiling = True
            opts.profile_file_prefix = str(Path(tmp) / "ort")
            session = ort.InferenceSession(runner.source, opts, providers=["CPUExecutionProvider"])
            session.run(None, feed)  # warm-up: its events are dropped below
            for _ in range(iterations):
                session.run(None, feed)
            events = json.loads(Path(session.end_profiling()).read_text())
        totals: dict[str, float] = collections.defaultdict(float)
        op_types: dict[str, str] = {}
        runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
        first_timed = runs[1]["ts"] if len(runs) > 1 else 0
        for e in events:
            if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e.get("ts", 0) >= first_timed:
                name = e["name"][:-len("_kernel_time")]
                totals[name] += e.get("dur", 0) / 1000.0
                op_types[name] = e.get("args", {}).get("op_name", "")
        return layer_times_from_totals(*graph_layer_names(runner.source, totals, op_types), iterations)

    def env_findings(self, gpus: list[dict]) -> list[Finding]:
        try:
            import onnxruntime as ort
        except Exception as e:
            return [Finding("onnxruntime", "onnxruntime", FAIL, f"cannot be imported ({type(e).__name__}: {e})",
                            "pip install onnxruntime", required=True)]
        providers = ort.get_available_providers()
        rows = [Finding("onnxruntime", "onnxruntime", OK, f"{ort.__version__}, providers: {', '.join(providers)}")]
        if "CUDAExecutionProvider" not in providers and gpus:
            rows.append(Finding("onnxruntime", "onnxruntime", WARN, "a GPU is visible but ONNX Runtime runs on the CPU "
                                "only", "pip uninstall -y onnxruntime && pip install onnxruntime-gpu (for `--device cuda`)"))
        both = [d for d in ("onnxruntime", "onnxruntime-gpu") if dist_version(d)]
        if len(both) == 2:
            rows.append(Finding("onnxruntime", "onnxruntime", WARN, "both onnxruntime and onnxruntime-gpu are installed; "
                                "they share one module and the last installed wins",
                                "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu"))
        return rows
