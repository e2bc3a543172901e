"""trtdeploy's own exception types.

Every error a user can cause is one of these: a single sentence that says what is
wrong, where (file, field, node, dimension) and what to do. The CLI maps each type
to an exit code and prints no traceback unless ``--log-level debug``.
"""
from __future__ import annotations


class TrtDeployError(Exception):
    """Base class; ``exit_code`` is what the CLI returns for it."""

    exit_code = 1


class ConfigError(TrtDeployError):
    """A deploy or dataset config is missing, unreadable or has a bad field."""

    exit_code = 2


class ModelError(TrtDeployError):
    """A model name, factory, checkpoint or model file cannot be used."""

    exit_code = 3


class ShapeError(TrtDeployError):
    """An input shape does not fit the model's inputs or the engine's profiles."""

    exit_code = 4


class BackendUnavailableError(TrtDeployError):
    """The requested backend (or one of its parts) is not installed here."""

    exit_code = 5


class BuildError(TrtDeployError):
    """Export, graph passes or the engine build failed."""

    exit_code = 6


class UnsupportedOpError(BuildError):
    """The graph holds nodes the chosen backend cannot build."""


class DatasetError(TrtDeployError):
    """A dataset (test or calibration) is missing, empty or malformed."""

    exit_code = 7


class EngineCompatibilityError(TrtDeployError):
    """An engine was built by another TensorRT version, flavour or GPU family."""

    exit_code = 8


class WorkDirError(TrtDeployError):
    """The work dir or an output path cannot be written."""

    exit_code = 9


class InputError(TrtDeployError):
    """An input file (image, tensor file) is missing or cannot be decoded."""

    exit_code = 10
