"""hpo-bench: hyperparameter-optimization benchmarks with ground-truth hypergradients.

Public entry points: :mod:`hpo_bench.space` (hyperparameter spaces),
:class:`hpo_bench.task.Task` (bilevel problems with a reference hypergradient),
:mod:`hpo_bench.hypergrad` (hypergradient methods), :class:`hpo_bench.tuner.Tuner`,
:mod:`hpo_bench.harness` (cells, suites, records) and :mod:`hpo_bench.check`.

The names below are loaded on first use (a module ``__getattr__``, PEP 562), so ``import hpo_bench``
and the commands that only read records (``hpo-bench plot``, ``--help``) do not import torch.
``from hpo_bench import Task`` works as before.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the submodule that defines it (imported on first access).
_LAZY = {
    "Budget": "records", "Recorder": "records",
    "METHODS": "registry", "TASKS": "registry", "TUNERS": "registry", "discover": "registry",
    "register_task": "registry", "register_tuner": "registry",
    "Block": "space", "Space": "space", "SpaceError": "space",
    "Task": "task", "TaskParamError": "task",
    "Tuner": "tuner", "TunerParamError": "tuner",
}
#: Submodules that ``import hpo_bench`` used to import eagerly (``hpo_bench.task.Task`` after a bare import).
_SUBMODULES = ("records", "registry", "space", "task", "tuner")

__all__ = [
    "__version__", "Block", "Space", "SpaceError", "Task", "TaskParamError", "Tuner", "TunerParamError",
    "Budget", "Recorder", "TASKS", "TUNERS", "METHODS", "discover", "register_task", "register_tuner",
    "get_task",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))


def get_task(name: str, **params):
    """Build the registered task ``name`` with keyword parameters (``seed``, ``dtype``, ``device`` too)."""
    from .registry import TASKS

    return TASKS.get(name)(**params)
