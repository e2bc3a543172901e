"""config/reader.py reads what mmengine's Config.fromfile reads, to the same dict (issue 13: no mmengine import
on the common path); anything else is mmengine's to read."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from mmengine import Config

from trtdeploy.config.reader import read_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.py"))


def _typed(value):
    """The value with each container's type spelled out (``==`` takes a tuple for no list and a dict subclass
    for a dict)."""
    if isinstance(value, dict):
        return (type(value).__name__, [(k, _typed(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_typed(v) for v in value])
    return value


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_shipped_configs_read_as_mmengine_reads_them(path):
    assert _typed(read_config(path)) == _typed(Config.fromfile(str(path)).to_dict())


def _write(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path / next(iter(files))


MERGES = {
    "delete, nested bases, tuples, dropped names": {
        "child.py": """
            _base_ = ['./sub/a.py', 'b.py']
            backend_config = dict(common_config=dict(_delete_=True, fp16_mode=True), extra=(dict(x=1), [2]))
            codebase_config = dict(task='Classification', new=dict(_delete_=True, k=1))
            def helper():
                return 1
            __hidden = 3
            size = helper() + 1
        """,
        "sub/a.py": """
            _base_ = '../c.py'
            backend_config = dict(type='tensorrt', common_config=dict(max_workspace_size=1 << 30, fp16_mode=False))
        """,
        "b.py": "codebase_config = dict(type='mmpretrain', task='X')\nlam = lambda: 0\n",
        "c.py": "onnx_config = dict(opset_version=17, input_names=['input'])\n",
    },
    "placeholder and base reference: mmengine's": {
        "child.py": """
            _base_ = ['./a.py']
            opset = {{ _base_.onnx_config.opset_version }}
            names = _base_.onnx_config.input_names
        """,
        "a.py": "onnx_config = dict(opset_version=13, input_names=['x'])\n",
    },
}


@pytest.mark.parametrize("case", MERGES)
def test_inheritance_as_mmengine(tmp_path, case):
    path = _write(tmp_path, MERGES[case])
    assert _typed(read_config(path)) == _typed(Config.fromfile(str(path)).to_dict())


@pytest.mark.parametrize("files", [
    {"child.py": "_base_ = ['a.py', 'b.py']\n", "a.py": "x = 1\n", "b.py": "x = 2\n"},  # clashing bases
    {"child.py": "_base_ = ['a.py']\nx = dict(k=1)\n", "a.py": "x = 1\n"},  # dict over a value
    {"child.py": "_base_ = ['missing.py']\nx = 1\n"},
    {"child.py": "x = dict(\n"},
    {"child.py": "filename = 'reserved'\n"},
], ids=["clash", "dict-over-value", "missing-base", "syntax", "reserved"])
def test_errors_as_mmengine(tmp_path, files):
    path = _write(tmp_path, files)
    with pytest.raises(Exception) as ours:
        read_config(path)
    with pytest.raises(Exception) as theirs:
        Config.fromfile(str(path))
    assert type(ours.value) is type(theirs.value)


def test_plain_config_imports_no_mmengine():
    path = next(p for p in CONFIGS if p.name == "classification_tensorrt_dynamic-224x224-320x320.py")
    code = (f"import sys; from trtdeploy.config.reader import read_config; read_config({str(path)!r}); "
            f"assert 'mmengine' not in sys.modules, 'mmengine imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
