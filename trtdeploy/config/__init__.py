"""Deploy configs: OpenMMLab-style Python files with ``_base_`` inheritance."""
from .deploy_config import DeployConfig, ShapeRange, load_deploy_config

__all__ = ["DeployConfig", "ShapeRange", "load_deploy_config"]
