"""Tasks: pre-processing, post-processing, comparison, drawing, metric and served outputs, keyed by codebase_config.task."""
from .base import DEFAULT_TASK, TASKS, Metric, OutputTensor, Task, get_task

__all__ = ["DEFAULT_TASK", "TASKS", "Metric", "OutputTensor", "Task", "get_task"]
