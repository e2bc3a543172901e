"""Small ONNX files "from elsewhere" for the issue-13 tests, each made the way its exporter makes it.

- ``hand_classifier``: a CNN exported by hand with torch.onnx (input ``images``, output ``scores``);
- ``mmdeploy_detector``: an MMDeploy-style graph written with onnx.helper, holding the custom nodes
  ``mmdeploy::TRTBatchedNMS`` and ``mmdeploy::MMCVRoIAlign`` (MMDeploy's attribute names);
- ``yolo_file``: ``YOLO('yolov8n.yaml').export(format='onnx')`` (random init, offline): raw head [N, 84, A];
- ``half_classifier``: a CNN exported in FP16 (float16 input, weights and output), as vendors ship some;
- ``pose_head_file``: a raw head laid out as ultralytics' pose export's [N, 4 + 1 + 17 * 3, A], with its metadata;
- ``einsum_graph``: MaxViT's spelling of an attention Einsum (upper case, spaces);
- ``fixed_position_vit``: a ViT whose position embedding fixes the token count (one image size only);
- ``channels_last_classifier``: a tf2onnx-style file whose input is [N, H, W, 3] (TensorFlow's layout).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(model: onnx.ModelProto, path: Path, external: bool = False) -> Path:
    onnx.checker.check_model(model)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".data",
                        size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path


def hand_classifier(path: Path, dynamic: bool = True, external: bool = False) -> Path:
    """A 3-class CNN on 64x64 images: input ``images`` [N, 3, 64, 64] (N dynamic if asked), output ``scores``."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 3)).eval()
    tmp = path.with_suffix(".tmp.onnx")
    torch.onnx.export(net, torch.rand(1, 3, 64, 64), str(tmp), input_names=["images"], output_names=["scores"],
                      dynamic_axes={"images": {0: "n"}, "scores": {0: "n"}} if dynamic else None, opset_version=17,
                      dynamo=False)
    model = onnx.load(str(tmp))
    tmp.unlink()
    return _save(model, path, external)


def mmdeploy_detector(path: Path, num_classes: int = 3, size: int = 64, batch: int | str = "batch",
                      opset: int = 17) -> Path:
    """input [batch, 3, size, size] (``batch``: a dimension name, or a number for a static file; ``opset`` 11 is
    MMDeploy's default) -> stride-8 features -> per-cell boxes and scores -> TRTBatchedNMS -> dets, labels;
    the first image's detections pool the features with MMCVRoIAlign -> roi_feats [K, 8]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 8, 8)).astype(np.float32), "w_feat"),
             numpy_helper.from_array(rng.normal(0, 0.3, (4 + num_classes, 8, 1, 1)).astype(np.float32), "w_head"),
             numpy_helper.from_array(np.array([0, 4 + num_classes, -1], np.int64), "head_shape"),
             numpy_helper.from_array(np.array([0], np.int64), "i0"), numpy_helper.from_array(np.array([2], np.int64), "i2"),
             numpy_helper.from_array(np.array([4], np.int64), "i4"), numpy_helper.from_array(np.array([1], np.int64), "i1"),
             numpy_helper.from_array(np.array([4 + num_classes], np.int64), "iend"),
             numpy_helper.from_array(np.array([2], np.int64), "axis2"),
             numpy_helper.from_array(np.array(size / 4, np.float32), "box_scale"),
             numpy_helper.from_array(np.array([-1, 4], np.int64), "rows4"),
             numpy_helper.from_array(np.array([0], np.int64), "axis0")]
    n = helper.make_node
    nodes = [
        n("Conv", ["input", "w_feat"], ["feat"], strides=[8, 8], name="feat_conv"),
        n("Relu", ["feat"], ["feat_relu"], name="feat_relu"),
        n("Conv", ["feat_relu", "w_head"], ["head"], name="head_conv"),
        n("Reshape", ["head", "head_shape"], ["head_flat"], name="head_flat"),
        n("Transpose", ["head_flat"], ["per_cell"], perm=[0, 2, 1], name="per_cell"),
        n("Slice", ["per_cell", "i0", "i2", "axis2"], ["xy_raw"], name="xy"),
        n("Slice", ["per_cell", "i2", "i4", "axis2"], ["wh_raw"], name="wh"),
        n("Slice", ["per_cell", "i4", "iend", "axis2"], ["logits"], name="cls"),
        n("Sigmoid", ["xy_raw"], ["xy_unit"], name="xy_sig"),
        n("Sigmoid", ["wh_raw"], ["wh_unit"], name="wh_sig"),
        n("Mul", ["xy_unit", "box_scale"], ["xy1"], name="xy_scale"),
        n("Mul", ["wh_unit", "box_scale"], ["wh"], name="wh_scale"),
        n("Add", ["xy1", "wh"], ["xy2"], name="xy2"),
        n("Concat", ["xy1", "xy2"], ["boxes3"], axis=2, name="boxes"),
        n("Unsqueeze", ["boxes3", "axis2"], ["boxes4"], name="boxes4") if opset >= 13 else
        n("Unsqueeze", ["boxes3"], ["boxes4"], name="boxes4", axes=[2]),
        n("Sigmoid", ["logits"], ["scores"], name="scores"),
        n("TRTBatchedNMS", ["boxes4", "scores"], ["dets", "labels"], domain="mmdeploy", name="nms",
          num_classes=num_classes, background_label_id=-1, iou_threshold=0.5, score_threshold=0.05, topk=50,
          keep_topk=10, is_normalized=0, clip_boxes=0, return_index=0),
        n("Gather", ["dets", "i0"], ["dets0"], axis=0, name="first_image"),
        n("Slice", ["dets0", "i0", "i4", "axis2"], ["boxes0"], name="boxes0"),
        n("Reshape", ["boxes0", "rows4"], ["rois_xyxy"], name="rois_xyxy"),
        n("Shape", ["rois_xyxy"], ["rois_shape"], name="rois_shape"),
        n("Slice", ["rois_shape", "i0", "i1", "axis0"], ["num_rois"], name="num_rois"),
        n("Concat", ["num_rois", "i1"], ["idx_shape"], axis=0, name="idx_shape"),
        n("ConstantOfShape", ["idx_shape"], ["batch_idx"], name="batch_idx",
          value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
        n("Concat", ["batch_idx", "rois_xyxy"], ["rois"], axis=1, name="rois"),
        n("MMCVRoIAlign", ["feat_relu", "rois"], ["pooled"], domain="mmdeploy", name="roi_align", output_height=2,
          output_width=2, spatial_scale=0.125, sampling_ratio=2, mode="avg", aligned=1),
        n("ReduceMean", ["pooled"], ["roi_feats"], axes=[2, 3], keepdims=0, name="roi_mean"),
    ]
    graph = helper.make_graph(
        nodes, "mmdeploy_style_detector",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("dets", TensorProto.FLOAT, [batch, 10, 5]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [batch, 10]),
         helper.make_tensor_value_info("roi_feats", TensorProto.FLOAT, [10, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("mmdeploy", 1)])
    return _save(model, path)


def yolo_file(folder: Path, imgsz: int = 160, dynamic: bool = False) -> Path:
    """``yolo export format=onnx`` of a randomly initialised yolov8n (no download: YOLO_OFFLINE=1)."""
    code = textwrap.dedent(f"""
        from ultralytics import YOLO
        print(YOLO("yolov8n.yaml").export(format="onnx", imgsz={imgsz}, dynamic={dynamic}, simplify=False, opset=17))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "YOLO_OFFLINE": "1"})
    if proc.returncode != 0:
        raise AssertionError(f"yolo export failed:\n{proc.stdout}\n{proc.stderr}")
    return folder / proc.stdout.strip().splitlines()[-1]


def half_classifier(path: Path) -> Path:
    """images [N, 3, 64, 64] float16 -> Conv -> Relu -> GlobalAveragePool -> Gemm -> scores [N, 3] float16."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float16), "w"),
               numpy_helper.from_array(rng.normal(0, 0.3, (3, 8)).astype(np.float16), "g")]
    nodes = [helper.make_node("Conv", ["images", "w"], ["c"], strides=[4, 4]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "g"], ["scores"], transB=1)]
    graph = helper.make_graph(nodes, "half", [helper.make_tensor_value_info("images", TensorProto.FLOAT16, ["n", 3, 64, 64])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT16, ["n", 3])], weights)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def pose_head_file(path: Path) -> Path:
    """A 32x32 image -> [1, 56, 16]: per anchor cx, cy, w, h, one class score, then 17 keypoints (x, y, visibility),
    with the metadata ultralytics writes (``names`` with one class, ``kpt_shape``)."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(0, 1, (56, 3, 8, 8)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([1, 56, 16], np.int64), "shape")
    scale = numpy_helper.from_array(np.array(32, np.float32), "scale")
    nodes = [helper.make_node("Conv", ["images", "w"], ["conv"], strides=[8, 8]),
             helper.make_node("Reshape", ["conv", "shape"], ["flat"]), helper.make_node("Sigmoid", ["flat"], ["unit"]),
             helper.make_node("Mul", ["unit", "scale"], ["output0"])]
    graph = helper.make_graph(nodes, "pose_head",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 56, 16])],
                              [weight, shape, scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in {"task": "pose", "names": "{0: 'person'}", "kpt_shape": "[17, 3]"}.items():
        model.metadata_props.add(key=key, value=value)
    return _save(model, path)


def einsum_graph(path: Path) -> Path:
    """Attention scores as torchvision's MaxViT writes them: 'B G H I D, B G H J D -> B G H I J'."""
    rng = np.random.default_rng(0)
    key = numpy_helper.from_array(rng.normal(size=(1, 2, 3, 6, 5)).astype(np.float32), "key")
    node = helper.make_node("Einsum", ["query", "key"], ["scores"], name="attention",
                            equation="B G H I D, B G H J D -> B G H I J")
    graph = helper.make_graph([node], "maxvit_attention",
                              [helper.make_tensor_value_info("query", TensorProto.FLOAT, [1, 2, 3, 4, 5])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2, 3, 4, 6])], [key])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def fixed_position_vit(path: Path) -> Path:
    """Patches of 8 pixels plus a class token, plus a position embedding for exactly 1 + 16 tokens: it runs at
    32x32 and at no other size (exported with dynamic H, W, as timm's ViT is)."""
    import torch

    class TinyViT(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = torch.nn.Conv2d(3, 8, 8, stride=8)
            self.cls = torch.nn.Parameter(torch.zeros(1, 1, 8))
            self.pos = torch.nn.Parameter(torch.randn(1, 17, 8))
            self.head = torch.nn.Linear(8, 3)

        def forward(self, x):
            t = self.patch(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1) + self.pos
            return self.head(t.mean(1))

    torch.manual_seed(0)
    torch.onnx.export(TinyViT().eval(), torch.rand(1, 3, 32, 32), str(path), input_names=["pixels"],
                      output_names=["logits"], dynamic_axes={"pixels": {0: "n", 2: "h", 3: "w"}}, opset_version=17,
                      dynamo=False)
    return path


def channels_last_classifier(path: Path) -> Path:
    """A 4-class CNN as tf2onnx writes a Keras model: input ``input_1`` [N, 64, 64, 3] (N dynamic), a Transpose to
    NCHW inside, output ``dense`` [N, 4]."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Transpose", ["input_1"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "w", "b"], ["conv"], strides=[2, 2]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Gemm", ["flat", "fc"], ["dense"])]
    inits = [numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((6, 4)).astype(np.float32), "fc")]
    graph = helper.make_graph(nodes, "keras", [helper.make_tensor_value_info("input_1", TensorProto.FLOAT,
                                                                             ["unk__0", 64, 64, 3])],
                              [helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["unk__0", 4])], inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)

