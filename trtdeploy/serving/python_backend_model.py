"""Triton Python-backend shell around a trtdeploy serving stage (copied as ``<model>/1/model.py``).

It only moves tensors between Triton and ``trtdeploy.serving.stages``; the stage and the model
file it loads are named by the ``trtdeploy_stage`` and ``trtdeploy_model_file`` parameters of
config.pbtxt. The serving environment needs trtdeploy installed, with numpy < 2 (see README).
"""
import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from trtdeploy.errors import InputError, ShapeError
from trtdeploy.serving.stages import STAGES

CLIENT_ERRORS = (InputError, ShapeError)  # the request's fault: HTTP 400 / gRPC INVALID_ARGUMENT, not 500


def triton_error(answer: Exception):
    """A TritonError whose code says whose fault it is (older Python backends have no codes: INTERNAL)."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None) if isinstance(answer, CLIENT_ERRORS) else None
    return pb_utils.TritonError(str(answer)) if code is None else pb_utils.TritonError(str(answer), code)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.input_names = [i["name"] for i in config["input"]]
        self.stage = STAGES.get(params["trtdeploy_stage"])(version_dir / params["trtdeploy_model_file"])

    def execute(self, requests):
        feeds = [{name: pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.input_names}
                 for r in requests]
        return [pb_utils.InferenceResponse(error=triton_error(answer))
                if isinstance(answer, Exception)
                else pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in answer.items()])
                for answer in self.stage(feeds)]

    def finalize(self):
        self.stage.close()
