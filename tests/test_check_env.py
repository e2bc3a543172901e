"""check-env and TensorRT discovery: what is reported, each problem's fix, the exit code, fake tar installs."""
from __future__ import annotations

import json
import sys

import pytest

from trtdeploy import env
from trtdeploy.backends.tensorrt.compat import check_tensorrt_dir, import_tensorrt, inspect_tensorrt_dir
from trtdeploy.cli.main import main
from trtdeploy.errors import BackendUnavailableError

from conftest import run_cli

PY_TAG = f"cp{sys.version_info.major}{sys.version_info.minor}"


def findings() -> dict[str, list]:
    rows = {}
    for f in env.check_environment():
        rows.setdefault(f.name, []).append(f)
    return rows


def fake_tar(root, flavour_lib="libnvinfer.so.10.13.0", header=True, wheels=(f"tensorrt-10.13.0-{PY_TAG}-none-linux_x86_64.whl",)):
    (root / "lib").mkdir(parents=True)
    (root / "python").mkdir()
    if flavour_lib:
        (root / "lib" / flavour_lib).write_bytes(b"")
    if header:
        (root / "include").mkdir()
        (root / "include" / "NvInfer.h").write_text("")
    for wheel in wheels:
        (root / "python" / wheel).write_bytes(b"")
    return root


def test_json_reports_every_section_and_exits_0_here(capsys):
    assert main(["check-env", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["default_job_ok"] is True
    by_name = {f["name"]: f for f in report["findings"]}
    assert {f["section"] for f in report["findings"]} >= {"python", "platform", "packages", "onnxruntime", "tensorrt",
                                                          "cuda", "gpus", "plugins"}
    assert by_name["onnxruntime"]["status"] == "ok" and "CPUExecutionProvider" in by_name["onnxruntime"]["detail"]
    rtx = by_name["tensorrt_rtx"]
    assert rtx["status"] == "ok" and "tensorrt_rtx_libs/libtensorrt_rtx.so" in rtx["detail"] and "(pip)" in rtx["detail"]
    assert by_name["CUDA driver"]["status"] == "absent" and by_name["CUDA driver"]["fix"]
    assert by_name["GPU"]["status"] == "absent"
    assert all(f["fix"] for f in report["findings"] if f["status"] in ("warn", "fail"))


def test_text_report_prints_fixes_and_a_verdict(capsys):
    assert main(["check-env"]) == 0
    out = capsys.readouterr().out
    assert "fix: " in out
    assert out.strip().splitlines()[-1].endswith("can run")


def test_a_broken_required_package_fails_the_default_job(monkeypatch, capsys):
    real = env._dist_version
    monkeypatch.setattr(env, "_dist_version", lambda *names: "0.10.0" if names == ("torchvision",) else real(*names))
    assert main(["check-env", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    bad = [f for f in report["findings"] if f["status"] == "fail"]
    assert bad and bad[0]["required"] and "pip install 'torchvision==0." in bad[0]["fix"]


def test_a_bug_of_ours_is_one_line_with_exit_70(monkeypatch, capsys):
    def broken():
        raise RuntimeError("boom")
    monkeypatch.setattr(env, "check_environment", broken)
    assert main(["check-env"]) == 70
    err = capsys.readouterr().err
    assert "internal error (RuntimeError: boom)" in err and "--log-level debug" in err and "Traceback" not in err


def test_jetson_is_recognised(tmp_path, monkeypatch):
    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64\n")
    monkeypatch.setattr(env, "TEGRA_RELEASE", release)
    platform_row = findings()["platform"][0]
    assert "NVIDIA Jetson (L4T R36.3.0)" in platform_row.detail
    assert "JetPack" in platform_row.fix


@pytest.mark.parametrize("cc, status, fragment", [
    ((9, 0), "warn", "does not support SM90"),
    ((8, 6), "ok", "supported by TensorRT-RTX"),
])
def test_gpus_are_judged_against_the_flavour_in_use(monkeypatch, cc, status, fragment):
    monkeypatch.setattr(env, "visible_gpus", lambda: [{"index": 0, "name": "Some GPU", "cc": cc}])
    row = findings()["GPU 0"][0]
    assert row.status == status and fragment in row.detail
    if status == "warn":
        assert "pip install tensorrt" in row.fix


def test_gpu_without_the_cuda_provider_suggests_onnxruntime_gpu(monkeypatch):
    monkeypatch.setattr(env, "visible_gpus", lambda: [{"index": 0, "name": "Some GPU", "cc": (8, 6)}])
    rows = findings()["onnxruntime"]
    assert any(r.status == "warn" and "pip install onnxruntime-gpu" in r.fix for r in rows)


def test_driver_older_than_the_tensorrt_cuda_is_a_problem_with_the_driver_version(monkeypatch):
    monkeypatch.setattr(env, "cuda_driver_version", lambda: (12, 4))
    rows = findings()["CUDA runtime"]
    assert any(r.status == "warn" and "tensorrt-rtx-cu13 needs CUDA 13" in r.detail and ">= 580" in r.fix for r in rows)


def test_a_failing_check_is_reported_not_raised(monkeypatch):
    def broken():
        raise RuntimeError("boom")
    monkeypatch.setitem(env.ENV_CHECKS._items, "broken", broken)
    rows = findings()["broken"]
    assert rows[0].status == "warn" and "boom" in rows[0].detail


# -- TensorRT discovery: tar installs named by TENSORRT_DIR ----------------------------------------------------

def test_missing_tensorrt_dir_says_so(tmp_path):
    with pytest.raises(BackendUnavailableError, match="does not exist"):
        check_tensorrt_dir(tmp_path / "nope")


def test_wrong_tensorrt_dir_names_the_missing_files(tmp_path):
    with pytest.raises(BackendUnavailableError, match=r"lib/libnvinfer\.so\.\* .*and include/NvInfer\.h not found"):
        check_tensorrt_dir(fake_tar(tmp_path / "trt", flavour_lib=None, header=False, wheels=()))


def test_tar_install_facts(tmp_path):
    tar = inspect_tensorrt_dir(fake_tar(tmp_path / "trt"))
    assert tar.flavour == "tensorrt" and tar.library_version == "10.13.0" and tar.missing() == []
    assert tar.wheel_for_this_python("tensorrt").name.startswith("tensorrt-10.13.0")
    rtx = inspect_tensorrt_dir(fake_tar(tmp_path / "rtx", flavour_lib="libtensorrt_rtx.so.1.7.1", header=False,
                                        wheels=()))
    assert rtx.flavour == "tensorrt_rtx" and rtx.missing() == ["include/NvInfer.h"]


@pytest.fixture
def tensorrt_dir(monkeypatch):
    """Point TENSORRT_DIR somewhere for one test; import_tensorrt's cache is cleared around it."""
    def point(root):
        monkeypatch.setenv("TENSORRT_DIR", str(root))
        import_tensorrt.cache_clear()
    yield point
    import_tensorrt.cache_clear()


def test_tar_without_an_installed_wheel_names_the_pip_command(tmp_path, tensorrt_dir):
    root = fake_tar(tmp_path / "trt")
    tensorrt_dir(root)
    with pytest.raises(BackendUnavailableError,
                       match=f"holds tensorrt but its Python wheel is not installed: pip install {root}/python/"):
        import_tensorrt("tensorrt")
    rows = findings()
    assert any(f"pip install {root}/python/tensorrt-10.13.0-{PY_TAG}" in r.fix for r in rows["TENSORRT_DIR"])
    assert f"export LD_LIBRARY_PATH={root}/lib:$LD_LIBRARY_PATH" in rows["LD_LIBRARY_PATH"][0].fix


def test_tar_with_no_wheel_for_this_python(tmp_path, tensorrt_dir):
    tensorrt_dir(fake_tar(tmp_path / "trt", wheels=("tensorrt-10.13.0-cp38-none-linux_x86_64.whl",)))
    with pytest.raises(BackendUnavailableError, match=r"no tensorrt wheel for Python .*found: cp38"):
        import_tensorrt("tensorrt")


def test_wrong_tensorrt_dir_fails_convert_before_export(tmp_path):
    proc = run_cli("convert", "configs/classification/classification_tensorrt_static-224x224.py",
                   "torchvision://resnet18", "--work-dir", tmp_path / "w", check=False,
                   env={"TENSORRT_DIR": str(tmp_path)})
    assert proc.returncode == BackendUnavailableError.exit_code
    assert f"TENSORRT_DIR={tmp_path} is not a TensorRT install" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "w").exists()


def test_where_tensorrt_came_from(tmp_path, monkeypatch):
    from trtdeploy.backends.tensorrt.compat import library_source, module_source

    monkeypatch.setenv("TENSORRT_DIR", str(tmp_path))
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/trt/lib")
    assert module_source("/usr/lib/python3/dist-packages/tensorrt") == "system"  # JetPack's apt package
    assert module_source("/venv/lib/python3.11/site-packages/tensorrt") == "pip"
    assert module_source(str(tmp_path / "python" / "tensorrt")) == "TENSORRT_DIR"
    assert library_source("/usr/lib/aarch64-linux-gnu/libnvinfer.so.10") == "system"
    assert library_source("/opt/trt/lib/libnvinfer.so.10") == "LD_LIBRARY_PATH"
    assert library_source(str(tmp_path / "lib" / "libnvinfer.so.10")) == "TENSORRT_DIR"
    assert library_source("/venv/lib/python3.11/site-packages/tensorrt_libs/libnvinfer.so.10") == "pip"
