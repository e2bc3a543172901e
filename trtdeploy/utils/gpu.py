"""Facts about the local GPU, asked through torch (present everywhere trtdeploy runs)."""
from __future__ import annotations


def current_compute_capability() -> tuple[int, int] | None:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_capability()
    except Exception:
        pass
    return None
