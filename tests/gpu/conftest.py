"""GPU tests run only where asked (TRTDEPLOY_GPU_TESTS=1, on a machine with a CUDA GPU); CI has none."""
import os
import sys
from pathlib import Path

collect_ignore_glob = [] if os.environ.get("TRTDEPLOY_GPU_TESTS") == "1" else ["test_*.py"]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
