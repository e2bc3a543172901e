"""Read an ONNX file that a backend is about to consume; every defect becomes one ModelError.

Users hand us ONNX files made elsewhere (or damaged by a full disk): truncated, another format,
an opset nobody supports, a tensor that no node, input or initializer defines. The parser of
each backend would report these in its own words, or crash; we say it once, here, first.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

from ..errors import ModelError
from .onnx_graph import SMALL_INITIALIZER, weightless

# The oldest default-domain opset trtdeploy feeds to a backend (TensorRT's ONNX parser needs >= 9,
# and ONNX Runtime's optimisers assume >= 7).
MIN_OPSET = 9


def read_onnx(path: str | os.PathLike, load_external_data: bool = True):
    """Load and check ``path``: readable, an ONNX model, a supported opset, every tensor defined."""
    return read_onnx_with_bytes(path, load_external_data)[0]


def onnx_file_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of the ONNX file ``path``; ModelError if it is missing, a directory or empty."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ONNX file {path} does not exist" + (" (it is a directory)" if path.is_dir() else ""))
    if path.stat().st_size == 0:
        raise ModelError(f"ONNX file {path} is empty (an interrupted write?); export it again")
    try:
        return path.read_bytes()
    except OSError as e:
        raise ModelError(f"ONNX file {path} cannot be read ({e.strerror}); check its permissions") from None


def read_onnx_with_bytes(path: str | os.PathLike, load_external_data: bool = True,
                         data: bytes | None = None) -> tuple[Any, bytes]:
    """``read_onnx`` and the file's bytes (a caller writing the graph back unchanged need not serialise it);
    ``data``: those bytes, when the caller has read them (``onnx_file_bytes``)."""
    import onnx

    path = Path(path)
    data = onnx_file_bytes(path) if data is None else data
    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf DecodeError, RuntimeWarning, UnicodeError...
        raise ModelError(f"{path} is not a readable ONNX model ({type(e).__name__}: {str(e)[:120]}); it is truncated "
                         f"or another format: export it again") from None
    external = _check_external_data(model, path)
    if load_external_data and external:
        onnx.load_external_data_for_model(model, str(path.parent))
    if not model.graph.node or not model.graph.output:
        raise ModelError(f"{path} has no graph (no nodes or no outputs); it is truncated or not an ONNX model: "
                         f"export it again")
    _check_opset(model, path)
    _check_defined(model, path)
    _check_weight_sizes(model, path, {} if load_external_data and external else _raw_data_sizes(data))
    try:  # the checker would serialise every weight (0.5 s for ResNet-18); their sizes were checked above
        onnx.checker.check_model(weightless(model), full_check=False)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"{path} is not a valid ONNX model: {first[:300]}; export it again") from None
    return model, data


# TensorProto fields that hold values element by element (complex numbers: two entries each).
_TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data")


def _check_weight_sizes(model, path: Path, raw_sizes: dict[str, int]) -> None:
    """Every large initializer holds as many bytes (or values) as its shape and type need: what the checker
    verifies of tensors, for the weights ``weightless`` keeps from it. ``raw_sizes``: the raw_data lengths the
    file's bytes give (``_raw_data_sizes``), where they are those of ``model``."""
    import math

    from onnx import TensorProto, helper

    for init in model.graph.initializer:
        count = math.prod(init.dims)
        if count <= SMALL_INITIALIZER or init.external_data or init.data_type in (TensorProto.STRING,
                                                                                  TensorProto.UNDEFINED):
            continue
        if init.HasField("raw_data"):
            four_bit = {getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, n)}
            try:
                bits = 4 if init.data_type in four_bit else 8 * helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
            except (KeyError, ValueError, TypeError):  # a type this onnx cannot map: the backend judges it
                continue
            have = raw_sizes[init.name] if init.name in raw_sizes else len(init.raw_data)
            need, unit = math.ceil(count * bits / 8), "bytes"
        else:
            have = max(len(getattr(init, f)) for f in _TYPED_FIELDS)
            need = count * (2 if init.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128) else 1)
            unit = "values"
        if have < need:
            raise ModelError(f"{path}: initializer {init.name!r} holds {have} {unit} but its shape {list(init.dims)} "
                             f"needs {need}; the file is truncated or damaged: export it again")


def _raw_data_sizes(data: bytes) -> dict[str, int]:
    """Initializer name -> length of its raw_data in ``data`` (a serialized ModelProto), from protobuf's wire
    format: each read of ``init.raw_data`` copies the weight (0.03-0.06 s for the 45 MB of a ResNet-18)."""
    from onnx import GraphProto, ModelProto, TensorProto

    view, sizes = memoryview(data), {}
    for number, _, payload, stop in _wire_fields(view, 0, len(view)):
        if number != ModelProto.GRAPH_FIELD_NUMBER:
            continue
        for field, _, start, end in _wire_fields(view, payload, stop):
            if field == GraphProto.INITIALIZER_FIELD_NUMBER:
                tensor = {n: (s, e) for n, _, s, e in _wire_fields(view, start, end)}
                name = tensor.get(TensorProto.NAME_FIELD_NUMBER, (0, 0))
                raw = tensor.get(TensorProto.RAW_DATA_FIELD_NUMBER, (0, 0))
                sizes[bytes(view[name[0]:name[1]]).decode()] = raw[1] - raw[0]
    return sizes


def _check_external_data(model, path: Path) -> set[str]:
    """Weights kept in files beside the model must be there (copying only the .onnx is a common slip); returns
    the files it names."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    wanted = {ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)}
    missing = sorted(loc for loc in wanted if not (path.parent / loc).is_file())
    if missing:
        raise ModelError(f"{path} keeps its weights in external data files {missing} that are missing beside it; "
                         f"copy them into {path.parent} with the model")
    return wanted


def _check_opset(model, path: Path) -> None:
    import onnx

    newest = onnx.defs.onnx_opset_version()
    opsets = {imp.domain: imp.version for imp in model.opset_import}
    opset = opsets.get("", opsets.get("ai.onnx"))
    if opset is None:
        raise ModelError(f"{path} declares no default-domain opset (opset_import); export it again with "
                         f"onnx_config.opset_version")
    if not MIN_OPSET <= opset <= newest:
        raise ModelError(f"{path} uses opset {opset}, outside what trtdeploy supports ({MIN_OPSET}..{newest}); "
                         f"export it again with onnx_config.opset_version=17 (or convert it with "
                         f"onnx.version_converter)")


def _check_defined(model, path: Path) -> None:
    """Every node input must be a graph input, an initializer or an earlier node's output."""
    graph = model.graph
    defined = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    defined |= {i.name for i in graph.sparse_initializer}
    for node in graph.node:
        for name in node.input:
            if name not in defined:
                raise ModelError(f"{path}: node {node.name or node.op_type!r} ({node.op_type}) reads {name!r}, which "
                                 f"no input, initializer or earlier node defines (a missing initializer?); export the "
                                 f"model again")
        defined.update(node.output)
    for out in graph.output:
        if out.name not in defined:
            raise ModelError(f"{path}: graph output {out.name!r} is produced by no node; export the model again")


def with_nodes_of(model, data: bytes | memoryview) -> bytes:
    """``data`` (a serialized ModelProto) with its graph's nodes replaced by ``model``'s, every other field kept
    as the bytes it is: the file of a graph whose passes changed only nodes (torch.onnx's weight aliases bypassed),
    without serialising its weights again (0.1 s for 45 MB). Whether the result is ``model`` is the caller's to check."""
    graph_field, node_field = type(model).GRAPH_FIELD_NUMBER, type(model.graph).NODE_FIELD_NUMBER
    view = memoryview(data)
    parts: list[bytes | memoryview] = []
    for number, start, payload, stop in _wire_fields(view, 0, len(view)):
        if number != graph_field:
            parts.append(view[start:stop])
            continue
        body = [_tagged(node_field, node.SerializeToString()) for node in model.graph.node]
        body += [view[s:e] for n, s, _, e in _wire_fields(view, payload, stop) if n != node_field]
        parts += [_tagged(graph_field, b"", sum(len(p) for p in body)), *body]
    return b"".join(parts)


def _wire_fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, start, payload start, end) of each field of the serialized message ``buf[start:end]``
    (protobuf's wire format; ONNX uses no groups)."""
    pos = start
    while pos < end:
        tag, payload = _varint(buf, pos)
        kind = tag & 7
        if kind == 0:
            stop = _varint(buf, payload)[1]
        elif kind == 2:
            size, payload = _varint(buf, payload)
            stop = payload + size
        elif kind in (1, 5):
            stop = payload + (8 if kind == 1 else 4)
        else:
            raise ValueError(f"protobuf wire type {kind} (a group) at byte {pos}")
        yield tag >> 3, pos, payload, stop
        pos = stop


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """The varint at ``buf[pos]`` and the position after it."""
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _tagged(number: int, payload: bytes, size: int | None = None) -> bytes:
    """A length-delimited field's tag and length (of ``payload``, or ``size`` when the payload follows apart)."""
    out = bytearray()
    for value in ((number << 3) | 2, len(payload) if size is None else size):
        while value >= 0x80:
            out.append(value & 0x7F | 0x80)
            value >>= 7
        out.append(value)
    return bytes(out) + payload
