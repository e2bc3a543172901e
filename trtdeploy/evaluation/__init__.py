"""Know what you deployed: accuracy (test), latency (profile), output agreement (compare) and inspection.

The CLI commands test/profile/compare/inspect are thin shells over these functions.
"""
from ..datasets.evaluation import EvalDataset, EvalSample, open_dataset
from ..tasks import Metric
from .accuracy import TargetAccuracy, evaluate, format_accuracy, metric_for
from .benchmark import LatencyStats, TargetProfile, format_profile, plot_latency, profile_targets
from .compare import Divergence, OutputComparison, bisect_onnx, compare_arrays, compare_outputs, worst_case
from .inspection import format_inspection, inspect_file
from .report import format_table, write_json
from .targets import Target, TorchRunner, check_config_matches, open_file, open_targets
from .tolerance import Tolerances, parse_tolerance

__all__ = ["TargetAccuracy", "evaluate", "format_accuracy", "LatencyStats", "TargetProfile", "format_profile",
           "plot_latency", "profile_targets", "format_inspection", "inspect_file", "Divergence", "OutputComparison", "bisect_onnx",
           "compare_arrays", "compare_outputs", "worst_case", "EvalDataset", "EvalSample", "open_dataset", "Metric",
           "metric_for", "format_table", "write_json", "Target", "TorchRunner", "check_config_matches", "open_file",
           "open_targets", "Tolerances", "parse_tolerance"]
