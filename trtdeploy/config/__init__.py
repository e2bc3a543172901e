"""Deploy configs: OpenMMLab-style Python files with ``_base_`` inheritance."""
from .deploy_config import CONFIG_CHECKS, DeployConfig, ShapeRange, load_deploy_config

__all__ = ["CONFIG_CHECKS", "DeployConfig", "ShapeRange", "load_deploy_config"]
