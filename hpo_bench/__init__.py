"""hpo-bench: hyperparameter-optimization benchmarks with ground-truth hypergradients.

The package is layered (docs/architecture.md): :mod:`hpo_bench.core` (contracts: spaces, tasks, tuners,
records, the registry), the methods (:mod:`hpo_bench.hypergrad`, :mod:`hpo_bench.stochastic`,
:mod:`hpo_bench.tuners`, ``hpo_bench.tasks``, ``hpo_bench.baselines``), :mod:`hpo_bench.running` (suites, the
harness, executors), :mod:`hpo_bench.analysis` (oracle, check, sweeps, the tune step) and
:mod:`hpo_bench.report`. The names below are the public ones a plug-in or a script needs; each is loaded on
first use (a module ``__getattr__``, PEP 562), so ``import hpo_bench`` and the commands that only read
records (``hpo-bench plot``, ``--help``) do not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Public name -> the submodule that defines it (imported on first access).
_LAZY = {
    "Budget": "core.records", "Recorder": "core.records",
    "METHODS": "core.registry", "TASKS": "core.registry", "TUNERS": "core.registry", "discover": "core.registry",
    "register_task": "core.registry", "register_tuner": "core.registry",
    "Block": "core.space", "Space": "core.space", "SpaceError": "core.space",
    "Task": "core.task", "TaskParamError": "core.task",
    "Tuner": "core.tuner", "TunerParamError": "core.tuner", "Option": "core.options",
    "OptunaTuner": "baselines.ask_tell",
    "run": "api", "load_records": "api", "plot": "report.plot", "plot_records": "report.plot",
}
#: The layer sub-packages, importable as attributes after a bare ``import hpo_bench``.
_SUBMODULES = ("core", "running", "analysis", "report", "hypergrad", "data", "testing")

__all__ = [
    "__version__", "Block", "Space", "SpaceError", "Task", "TaskParamError", "Tuner", "TunerParamError",
    "Budget", "Recorder", "Option", "OptunaTuner", "TASKS", "TUNERS", "METHODS", "discover", "register_task", "register_tuner",
    "get_task", "run", "load_records", "plot", "plot_records",
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
    from .core.registry import TASKS

    return TASKS.get(name)(**params)
