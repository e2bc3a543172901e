"""Issue 15.2: NaN/inf is a failure everywhere (compare, test, the comparison functions), and detector comparisons
count unmatched detections instead of printing inf."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image

from trtdeploy.cli.main import main
from trtdeploy.evaluation.compare import compare_arrays
from trtdeploy.evaluation.tolerance import Tolerances
from trtdeploy.tasks.detection import match_detections


def test_nonfinite_fails_even_where_both_sides_agree():
    ref = np.ones(4, np.float32)
    got = np.array([1, np.nan, np.inf, 1], np.float32)
    result = compare_arrays("scores", ref, got, Tolerances())
    assert not result.passed and result.note == "output holds 1 NaN, 1 inf" and result.max_abs == 0.0
    both = compare_arrays("scores", got, got, Tolerances())
    assert not both.passed and both.note == "output holds 1 NaN, 1 inf; reference holds 1 NaN, 1 inf"


def test_detections_matched_and_counted_not_inf():
    """One box shifted by 2 px, one label changed, one extra detection: 1 matched, 3 unmatched, finite figures."""
    theirs = {"dets": np.array([[[0, 0, 10, 10, .9], [20, 20, 40, 40, .8], [0, 0, 0, 0, 0]]], np.float32),
              "labels": np.array([[1, 2, -1]])}
    ours = {"dets": np.array([[[0, 2, 10, 12, .85], [20, 20, 40, 40, .8], [50, 50, 60, 60, .3]]], np.float32),
            "labels": np.array([[1, 3, 4]])}
    assert match_detections(ours, theirs) == {"reference": 2, "matched": 1, "unmatched": 3, "box": 2.0,
                                              "score": np.float32(.9) - np.float32(.85), "mask": 0.0}
    from trtdeploy.tasks.detection import ObjectDetection

    text = ObjectDetection({}).describe_difference(ours, theirs)
    assert text == ("1 of 2 detections matched (same label, IoU >= 0.5), 3 unmatched; matched boxes differ by at "
                    "most 2 px, scores by 0.05")


def _poisoned(source, target) -> None:
    """``source`` with its last layer's bias set to NaN: every logit is NaN."""
    model = onnx.load(str(source))
    bias = next(i for i in reversed(model.graph.initializer) if len(i.dims) == 1)
    bias.CopyFrom(numpy_helper.from_array(np.full(bias.dims, np.nan, np.float32), bias.name))
    onnx.save(model, str(target))


def test_compare_and_test_exit_1_naming_the_nonfinite_output(tiny_classifier, tmp_path, capsys):
    good = tiny_classifier["work"] / "end2end.onnx"
    bad = tmp_path / "nan.onnx"
    _poisoned(good, bad)
    assert main(["compare", str(good), str(bad), "--shape", "1x3x224x224"]) == 1
    out = capsys.readouterr().out
    assert "FAIL (output holds 3 NaN)" in out and "FAILED: 1 of 1 output comparisons" in out
    (tmp_path / "val" / "class_0").mkdir(parents=True)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "val" / "class_0" / "a.png")
    assert main(["test", str(tiny_classifier["cfg"]), "none", str(good), str(bad), "--dataset",
                 str(tmp_path / "val")]) == 1
    out = capsys.readouterr().out
    assert "FAIL (NaN/inf)" in out and "non-finite outputs output (3 NaN) on a.png" in out
    assert "FAILED: onnxruntime (nan.onnx) gave NaN/inf outputs" in out


def test_calibration_sample_holding_nan_is_refused(tmp_path):
    from pathlib import Path

    from trtdeploy.calibration.dataset import CalibrationDataset
    from trtdeploy.errors import DatasetError

    data = CalibrationDataset([Path("img/a.png")], None, "calib.py: data.val",
                              fallback=lambda path: np.full((1, 3, 4, 4), np.nan, np.float32))
    with pytest.raises(DatasetError) as e:
        data[0]
    assert str(e.value) == ("img/a.png: its calibration sample holds 48 NaN after the pipeline of calib.py: data.val; "
                            "fix the image or the pipeline (a Normalize std of 0 divides by zero)")
