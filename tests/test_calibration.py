"""Calibration data: dataset configs, transforms, COCO/image-folder readers, the HDF5 file and its reuse."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from trtdeploy.calibration import CalibrationFile, prepare_calibration_file, read_dataset_config
from trtdeploy.calibration.dataset import CalibrationDataset, iterate_samples, list_images
from trtdeploy.calibration.transforms import Compose
from trtdeploy.config import load_deploy_config
from trtdeploy.datasets import list_image_folder, load_coco
from trtdeploy.errors import ConfigError, DatasetError

REPO = Path(__file__).resolve().parents[1]
SEED_CFG = REPO / "configs/calibration/calibration_dataset.py"
INT8_CFG = REPO / "configs/classification/classification_tensorrt-int8_dynamic-224x224-320x320.py"


def make_coco(root: Path, sizes=((40, 30), (50, 30), (36, 44)), bad: int = 0) -> Path:
    """Images (w, h) plus ``bad`` unreadable files, listed in root/val_annotations.json."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = []
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / f"img{i}.png")
        images.append({"id": i, "file_name": f"img{i}.png", "width": w, "height": h})
    for j in range(bad):
        (root / f"broken{j}.jpg").write_bytes(b"not an image")
        images.append({"id": 100 + j, "file_name": f"broken{j}.jpg"})
    (root / "val_annotations.json").write_text(json.dumps({"images": images, "annotations": [], "categories": []}))
    return root / "val_annotations.json"


def seed_config(tmp_path: Path, data_root: Path) -> Path:
    """The shipped seed file with only data_root changed, as a user would."""
    text = SEED_CFG.read_text().replace("data_root = 'calibration/dataset/root'", f"data_root = '{data_root}/'")
    path = tmp_path / "calibration_dataset.py"
    path.write_text(text)
    return path


def int8_cfg(**calib):
    cfg = load_deploy_config(INT8_CFG)
    cfg.calib.update(calib)
    return cfg


def test_seed_config_reads_val_split_and_loader_settings(tmp_path):
    spec = read_dataset_config(seed_config(tmp_path, tmp_path / "imgs"))
    assert spec.where.endswith("data.val")
    assert (spec.batch_size, spec.workers) == (2, 2)
    assert spec.cfg["ann_file"] == f"{tmp_path / 'imgs'}/val_annotations.json"


def test_seed_pipeline_resizes_keeping_ratio_pads_and_normalises_rgb(tmp_path):
    make_coco(tmp_path / "imgs", sizes=((40, 30),))
    spec = read_dataset_config(seed_config(tmp_path, tmp_path / "imgs"))
    dataset = CalibrationDataset(list_images(spec), spec.pipeline, spec.where)
    (sample,) = dataset[0]
    # 40x30 scaled by min(1333/40, 800/30) = 26.67 -> 1067x800, padded to multiples of 32
    assert sample.shape == (3, 800, 1088)
    rgb = np.asarray(Image.open(tmp_path / "imgs/img0.png").convert("RGB").resize((1067, 800), Image.BILINEAR), np.float32)
    expected_red = (rgb[..., 0] - 123.675) / 58.395
    np.testing.assert_allclose(sample[0, :800, :1067], expected_red, atol=1e-4)
    assert np.all(sample[:, :, 1067:] == 0)  # padding


def test_mmdet3_pipeline_matches_mmdet2(tmp_path):
    make_coco(tmp_path / "imgs", sizes=((40, 30),))
    v2 = [dict(type="LoadImageFromFile"), dict(type="Resize", img_scale=(64, 48), keep_ratio=True),
          dict(type="Normalize", mean=[1, 2, 3], std=[2, 2, 2], to_rgb=True), dict(type="ImageToTensor", keys=["img"]),
          dict(type="Collect", keys=["img"])]
    v3 = [dict(type="LoadImageFromFile"), dict(type="Resize", scale=(64, 48), keep_ratio=True),
          dict(type="LoadAnnotations", with_bbox=True), dict(type="PackDetInputs")]
    images = [tmp_path / "imgs/img0.png"]
    a = CalibrationDataset(images, v2, "v2")[0][0]
    b = CalibrationDataset(images, v3, "v3", preprocessor=dict(mean=[1, 2, 3], std=[2, 2, 2], bgr_to_rgb=True))[0][0]
    assert a.shape == b.shape == (3, 48, 64)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_flip_aug_yields_one_sample_per_flip(tmp_path):
    make_coco(tmp_path / "imgs", sizes=((40, 30),))
    pipeline = [dict(type="LoadImageFromFile"),
                dict(type="MultiScaleFlipAug", img_scale=(40, 30), flip=True,
                     transforms=[dict(type="Resize", keep_ratio=True), dict(type="RandomFlip"),
                                 dict(type="DefaultFormatBundle"), dict(type="Collect", keys=["img"])])]
    plain, flipped = CalibrationDataset([tmp_path / "imgs/img0.png"], pipeline, "p")[0]
    np.testing.assert_array_equal(plain[..., ::-1], flipped)


def test_unknown_transform_lists_known_ones():
    with pytest.raises(ConfigError) as e:
        Compose([dict(type="LoadImageFromFile"), dict(type="Resise", img_scale=(1, 1))], "data.val.pipeline")
    msg = str(e.value)
    assert "data.val.pipeline[1].type" in msg and "'Resise'" in msg and "did you mean 'Resize'" in msg
    assert "MultiScaleFlipAug" in msg and "PackDetInputs" in msg


def test_bad_transform_argument_is_named():
    with pytest.raises(ConfigError, match=r"pipeline\[0\]: Normalize does not take"):
        Compose([dict(type="Normalize", mean=[0], std=[1], to_bgr=True)], "pipeline")


def test_image_paths_resolve_beside_annotations_then_cwd(tmp_path, monkeypatch):
    ann = make_coco(tmp_path / "beside", sizes=((8, 8),))
    data = json.loads(ann.read_text())
    data["images"].append({"id": 7, "file_name": "cwd_only.png"})
    ann.write_text(json.dumps(data))
    work = tmp_path / "cwd"
    work.mkdir()
    Image.new("RGB", (8, 8)).save(work / "cwd_only.png")
    monkeypatch.chdir(work)
    paths = [img.path for img in load_coco(ann).images]
    assert paths[0] == tmp_path / "beside/img0.png"
    assert paths[1] == Path("cwd_only.png") and paths[1].exists()
    assert load_coco(ann, img_prefix="pre").images[0].path == Path("pre/img0.png")


def test_coco_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_coco(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="bad.json is not JSON"):
        load_coco(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="no 'images' list"):
        load_coco(tmp_path / "list.json")
    (tmp_path / "noname.json").write_text(json.dumps({"images": [{"id": 1}]}))
    with pytest.raises(DatasetError, match=r"images\[0\] has no 'file_name'"):
        load_coco(tmp_path / "noname.json")


def test_image_folder_lists_class_subfolders(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / cls / "a.png")
    (tmp_path / "notes.txt").write_text("x")
    found = list_image_folder(tmp_path)
    assert [(f.path.parent.name, f.label) for f in found] == [("cat", 0), ("dog", 1)]
    with pytest.raises(DatasetError, match="does not exist"):
        list_image_folder(tmp_path / "nope")


def test_loader_with_workers_keeps_order_and_reports_failures(tmp_path):
    ann = make_coco(tmp_path / "imgs", sizes=((8, 8), (9, 8), (10, 8)), bad=1)
    pipeline = [dict(type="LoadImageFromFile"), dict(type="ImageToTensor", keys=["img"])]
    dataset = CalibrationDataset([i.path for i in load_coco(ann).images], pipeline, "p")
    items = list(iterate_samples(dataset, batch_size=2, workers=2))
    assert [i for i, _, _ in items] == [0, 1, 2, 3]
    assert [a[0].shape[2] for _, a, _ in items[:3]] == [8, 9, 10]
    assert items[3][1] is None and "broken0.jpg" in items[3][2]


def test_calibration_file_has_mmdeploy_layout_and_is_reused(tmp_path, caplog):
    make_coco(tmp_path / "imgs", sizes=((40, 30), (40, 30)))
    cfg_file = tmp_path / "ds.py"
    cfg_file.write_text(f"data = dict(val=dict(type='CalibrationDataset', ann_file='{tmp_path}/imgs/val_annotations.json', "
                        f"pipeline=[dict(type='LoadImageFromFile'), dict(type='Resize', img_scale=(32, 24), keep_ratio=False), "
                        f"dict(type='Normalize', mean=[0, 0, 0], std=[1, 1, 1]), dict(type='ImageToTensor', keys=['img'])]))")
    path = prepare_calibration_file(int8_cfg(), tmp_path / "work", "input", cfg_file)
    with h5py.File(path) as f:
        assert sorted(f["calib_data/end2end/input"]) == ["0", "1"]
        assert f["calib_data/end2end/input/0"].shape == (1, 3, 24, 32)
    before = path.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="trtdeploy"):
        prepare_calibration_file(int8_cfg(), tmp_path / "work", "input", cfg_file)
    assert "reusing" in caplog.text and path.stat().st_mtime_ns == before
    # another pipeline -> collected again
    cfg_file.write_text(cfg_file.read_text().replace("(32, 24)", "(16, 12)"))
    prepare_calibration_file(int8_cfg(), tmp_path / "work", "input", cfg_file)
    with CalibrationFile(path) as f:
        assert f.shapes("input") == [(1, 3, 12, 16)] * 2


def test_samples_compressed_in_workers_read_back_exactly_with_plain_h5py(tmp_path):
    """Chunks compressed by encode_sample (in the loader's workers) are HDF5 gzip data any reader opens."""
    from trtdeploy.calibration.h5file import encode_sample, write_calibration_file

    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((3, 20, 30)).astype(np.float32), np.zeros((1, 3, 8, 5), np.float32)]
    write_calibration_file(tmp_path / "c.h5", "input", [encode_sample(arrays[0], "gzip"), arrays[1]], "key")
    with h5py.File(tmp_path / "c.h5") as f:
        first, second = f["calib_data/end2end/input/0"], f["calib_data/end2end/input/1"]
        assert first.compression == "gzip" and first.shape == (1, 3, 20, 30) and second.compression is None
        assert np.array_equal(first[...], arrays[0][None]) and np.array_equal(second[...], arrays[1])


def test_unknown_compression_is_refused_before_any_image_is_read(tmp_path):
    make_coco(tmp_path / "imgs", sizes=((40, 30),), bad=1)
    with pytest.raises(ConfigError, match="calib_config.compression must be one of 'none', 'gzip'.*got 'lz4'"):
        prepare_calibration_file(int8_cfg(compression="lz4"), tmp_path / "work", "input", seed_config(tmp_path, tmp_path / "imgs"))


def test_corrupt_calibration_file_is_rebuilt_with_a_warning(tmp_path, caplog):
    make_coco(tmp_path / "imgs", sizes=((16, 16),))
    cfg_file = tmp_path / "ds.py"
    cfg_file.write_text(f"data = dict(val=dict(ann_file='{tmp_path}/imgs/val_annotations.json', "
                        f"pipeline=[dict(type='LoadImageFromFile'), dict(type='ImageToTensor', keys=['img'])]))")
    work = tmp_path / "work"
    work.mkdir()
    (work / "calib_data.h5").write_bytes(b"\x89HDF\r\n\x1a\n garbage")
    with caplog.at_level(logging.WARNING, logger="trtdeploy"):
        path = prepare_calibration_file(int8_cfg(), work, "input", cfg_file)
    assert "damaged" in caplog.text
    with CalibrationFile(path) as f:
        assert len(f) == 1


def test_users_mmdeploy_calibration_file_is_used_without_a_dataset(tmp_path, caplog):
    work = tmp_path / "work"
    work.mkdir()
    with h5py.File(work / "mine.h5", "w") as f:  # as MMDeploy writes it: no trtdeploy attributes
        g = f.create_group("calib_data").create_group("end2end").create_group("input")
        for i in range(3):
            g.create_dataset(str(i), data=np.zeros((1, 3, 224, 224), np.float32))
    cfg = int8_cfg(create_calib=False, calib_file="mine.h5")
    with caplog.at_level(logging.INFO, logger="trtdeploy"):
        assert prepare_calibration_file(cfg, work, "input") == work / "mine.h5"
    assert "reusing" in caplog.text and "did not write" in caplog.text


def test_missing_dataset_says_exactly_what_to_pass(tmp_path):
    with pytest.raises(ConfigError) as e:
        prepare_calibration_file(int8_cfg(), tmp_path, "input")
    assert "--calib-dataset-cfg" in str(e.value) and "calib_config.dataset_cfg" in str(e.value)
    with pytest.raises(DatasetError, match="create_calib is False"):
        prepare_calibration_file(int8_cfg(create_calib=False), tmp_path, "input")


def test_dataset_named_in_the_deploy_config_is_used(tmp_path):
    make_coco(tmp_path / "imgs", sizes=((16, 16),))
    cfg = int8_cfg(dataset=dict(type="ImageFolder", data_prefix=str(tmp_path / "imgs")))
    path = prepare_calibration_file(cfg, tmp_path / "work", "input",
                                    fallback=lambda p: np.ones((1, 3, 8, 8), np.float32))
    with CalibrationFile(path) as f:
        assert f.shapes("input") == [(1, 3, 8, 8)]


def test_empty_and_unreadable_sets_are_errors(tmp_path):
    ann = make_coco(tmp_path / "empty", sizes=())
    cfg_file = tmp_path / "ds.py"
    cfg_file.write_text(f"data = dict(val=dict(ann_file='{ann}', pipeline=[dict(type='LoadImageFromFile')]))")
    with pytest.raises(DatasetError, match="calibration set is empty"):
        prepare_calibration_file(int8_cfg(), tmp_path / "w1", "input", cfg_file)
    ann = make_coco(tmp_path / "bad", sizes=(), bad=4)
    cfg_file.write_text(f"data = dict(val=dict(ann_file='{ann}', pipeline=[dict(type='LoadImageFromFile')]))")
    with pytest.raises(DatasetError) as e:
        prepare_calibration_file(int8_cfg(), tmp_path / "w2", "input", cfg_file)
    assert "none of the 4 calibration images could be read" in str(e.value) and "broken0.jpg" in str(e.value)
    assert not (tmp_path / "w2/calib_data.h5").exists()
    assert not list((tmp_path / "w2").glob(".*"))  # no half-written temp file


def test_dataset_config_without_a_dataset_is_explained(tmp_path):
    cfg_file = tmp_path / "ds.py"
    cfg_file.write_text("evaluation = dict(metric='bbox')\n")
    with pytest.raises(ConfigError, match="defines no dataset"):
        read_dataset_config(cfg_file)
    cfg_file.write_text("data = dict(samples_per_gpu=0, val=dict(ann_file='x.json'))\n")
    with pytest.raises(ConfigError, match="samples_per_gpu must be an integer >= 1"):
        read_dataset_config(cfg_file)
    with pytest.raises(ConfigError, match="does not exist"):
        read_dataset_config(tmp_path / "missing.py")
