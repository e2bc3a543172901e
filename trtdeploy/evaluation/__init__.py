"""Know what you deployed: accuracy (test), latency (profile), output agreement (compare) and inspection.

The CLI commands test/profile/compare/inspect are thin shells over these functions.
"""
# name -> the module that defines it; imported on first use, so `import trtdeploy.cli` (and every command)
# does not pay for test/profile/compare machinery it does not run.
_WHERE = {
    'EvalDataset': '..datasets.evaluation',
    'EvalSample': '..datasets.evaluation',
    'open_dataset': '..datasets.evaluation',
    'Metric': '..tasks',
    'TargetAccuracy': '.accuracy',
    'evaluate': '.accuracy',
    'format_accuracy': '.accuracy',
    'metric_for': '.accuracy',
    'LatencyStats': '.benchmark',
    'TargetProfile': '.benchmark',
    'format_profile': '.benchmark',
    'plot_latency': '.benchmark',
    'profile_targets': '.benchmark',
    'Divergence': '.compare',
    'OutputComparison': '.compare',
    'bisect_onnx': '.compare',
    'compare_arrays': '.compare',
    'compare_outputs': '.compare',
    'worst_case': '.compare',
    'format_inspection': '.inspection',
    'inspect_file': '.inspection',
    'format_table': '..utils.table',
    'write_json': '.report',
    'Target': '.targets',
    'TorchRunner': '.targets',
    'check_config_matches': '.targets',
    'open_file': '.targets',
    'open_targets': '.targets',
    'Tolerances': '.tolerance',
    'parse_tolerance': '.tolerance',
}


__all__ = ["TargetAccuracy", "evaluate", "format_accuracy", "LatencyStats", "TargetProfile", "format_profile",
           "plot_latency", "profile_targets", "format_inspection", "inspect_file", "Divergence", "OutputComparison", "bisect_onnx",
           "compare_arrays", "compare_outputs", "worst_case", "EvalDataset", "EvalSample", "open_dataset", "Metric",
           "metric_for", "format_table", "write_json", "Target", "TorchRunner", "check_config_matches", "open_file",
           "open_targets", "Tolerances", "parse_tolerance"]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_WHERE[name], __name__), name)
    globals()[name] = value
    return value
