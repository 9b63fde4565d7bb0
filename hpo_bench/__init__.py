"""hpo-bench: hyperparameter-optimization benchmarks with ground-truth hypergradients.

Public entry points: :mod:`hpo_bench.space` (hyperparameter spaces),
:class:`hpo_bench.task.Task` (bilevel problems with a reference hypergradient),
:mod:`hpo_bench.hypergrad` (hypergradient methods), :class:`hpo_bench.tuner.Tuner`,
:mod:`hpo_bench.harness` (cells, suites, records) and :mod:`hpo_bench.check`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .records import Budget, Recorder
from .registry import METHODS, TASKS, TUNERS, discover, register_task, register_tuner
from .space import Block, Space, SpaceError
from .task import Task, TaskParamError
from .tuner import Tuner, TunerParamError

__all__ = [
    "__version__", "Block", "Space", "SpaceError", "Task", "TaskParamError", "Tuner", "TunerParamError",
    "Budget", "Recorder", "TASKS", "TUNERS", "METHODS", "discover", "register_task", "register_tuner",
    "get_task",
]


def get_task(name: str, **params):
    """Build the registered task ``name`` with keyword parameters (``seed``, ``dtype``, ``device`` too)."""
    return TASKS.get(name)(**params)
