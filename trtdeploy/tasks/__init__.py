"""Tasks: pre-processing, post-processing, comparison and drawing, keyed by codebase_config.task."""
from .base import TASKS, Task, get_task

__all__ = ["TASKS", "Task", "get_task"]
