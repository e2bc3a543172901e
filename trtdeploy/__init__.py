"""trtdeploy: PyTorch -> ONNX -> TensorRT / ONNX Runtime, with checked accuracy and speed.

    import trtdeploy
    result = trtdeploy.convert("configs/classification/classification_onnxruntime_dynamic.py",
                               "torchvision://resnet18", work_dir="work_dirs/r18")
    model = trtdeploy.load(result.backend_path)
    print(model.predict("demo/demo.jpg"))
"""
from .version import __version__  # noqa: E402
from .api import ConvertResult, DeployedModel, convert, load  # noqa: E402
from .errors import TrtDeployError  # noqa: E402

__all__ = ["ConvertResult", "DeployedModel", "TrtDeployError", "__version__", "convert", "load"]
