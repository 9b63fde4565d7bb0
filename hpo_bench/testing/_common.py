"""Shared pieces of the conformance kit: errors, tolerances, building the object under test."""

from __future__ import annotations

import functools
from typing import Any, Callable

from ..core.task import Task
from ..core.tuner import Tuner

__all__ = ["ConformanceError", "task_factory", "tuner_factory", "label_of", "tolerance", "DEFAULT_TOLERANCES"]

#: Default tolerances of the task checks; a task may override any of them with a class
#: attribute ``check_tolerances = {"fd": ..., "reason": "..."}`` (a reason is required).
DEFAULT_TOLERANCES = {
    "fd": 1e-6,          # reference hypergradient vs central finite differences (rel. error)
    "exact": 1e-8,       # methods declared exact vs the reference (rel. error)
    "stationary": 1e-8,  # ||grad_w inner(solve(theta))|| <= stationary * max(1, ||grad_w inner(w0)||)
    "structure": 1e-8,   # a task's own linearize() vs the generic autograd Linearization (rel. error)
}


class ConformanceError(AssertionError):
    """A conformance check failed; the message names the object, the check and the rule."""


def label_of(obj: Any) -> str:
    """A short, stable label for test ids: the registry name, or the class/function name."""
    if isinstance(obj, tuple):
        obj = obj[0]
    if isinstance(obj, functools.partial):
        obj = obj.func
    from ..core.registry import BrokenPlugin

    if isinstance(obj, BrokenPlugin):  # a plug-in that failed to import: its file or entry point
        return f"broken:{obj.name or obj.source}"
    return getattr(obj, "name", "") or getattr(obj, "__name__", "") or type(obj).__name__


def task_factory(obj: Any) -> Callable[..., Task]:
    """``factory(seed=..., dtype=..., **overrides) -> Task`` from what the kit accepts.

    * a :class:`~hpo_bench.core.task.Task` subclass: built with its ``check_params``;
    * ``(cls, params)``: built with ``{**cls.check_params, **params}``;
    * any callable taking ``seed`` and ``dtype`` keywords (e.g. a ``functools.partial``).
    """
    if isinstance(obj, tuple):
        cls, params = obj
        base = {**getattr(cls, "check_params", {}), **params}
    elif isinstance(obj, type) and issubclass(obj, Task):
        cls, base = obj, dict(getattr(obj, "check_params", {}))
    elif callable(obj):
        return obj
    else:
        raise TypeError(f"expected a Task subclass, (cls, params) or a factory callable, but got {obj!r}")

    def build(**kw: Any) -> Task:
        return cls(**{**base, **kw})

    build.__name__ = getattr(cls, "name", cls.__name__)
    return build


def tuner_factory(obj: Any) -> Callable[[], Tuner]:
    """``factory() -> Tuner`` from a Tuner subclass (its ``check_params``, if any), ``(cls, params)`` or a callable."""
    if isinstance(obj, tuple):
        cls, params = obj
        return functools.partial(cls, **{**getattr(cls, "check_params", {}), **params})
    if isinstance(obj, type) and issubclass(obj, Tuner):
        return functools.partial(obj, **getattr(obj, "check_params", {}))
    if callable(obj):
        return obj
    raise TypeError(f"expected a Tuner subclass, (cls, params) or a factory callable, but got {obj!r}")


def tolerance(task: Task, key: str) -> float:
    """The task's declared tolerance for ``key`` (``check_tolerances``) or the default."""
    declared = getattr(task, "check_tolerances", {}) or {}
    if key in declared and not declared.get("reason"):
        raise ConformanceError(f"task {task.name!r}: `check_tolerances` overrides {key!r} but gives no 'reason'")
    return float(declared.get(key, DEFAULT_TOLERANCES[key]))


def fail(what: str, check: str, message: str) -> None:
    raise ConformanceError(f"{what}: {check}: {message}")
