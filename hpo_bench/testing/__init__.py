"""The conformance kit: checks every task and tuner must pass, and a gradcheck for hypergradients.

Modelled on scikit-learn's ``check_estimator`` / ``parametrize_with_checks`` and optuna's
shared sampler tests:

* ``check_task_*`` and ``check_tuner_*`` functions (:data:`TASK_CHECKS`, :data:`TUNER_CHECKS`)
  each test one rule of the contract on a small instance (a task's ``check_params``; tuners
  on a small ridge task with budgets of a few steps) and raise :class:`ConformanceError`.
* :func:`checks_for` lists the checks that apply to an object from its *declared* tags
  (e.g. ``check_task_per_example`` only for tasks tagged ``"per-example"``); a class may
  declare known failures as ``xfail_checks = {"check_name": "reason"}``, and a task may
  loosen a tolerance with ``check_tolerances = {"fd": 1e-5, "reason": "..."}``.
* :func:`parametrize_with_checks` turns objects into pytest cases, one per (object, check),
  with known failures marked ``xfail`` with their reason::

      from hpo_bench.testing import parametrize_with_checks, registered_tasks, registered_tuners

      @parametrize_with_checks(registered_tasks() + registered_tuners())
      def test_conformance(obj, check):
          check(obj)

  Every task and tuner in the registries (tasks/, baselines/, entry-point plug-ins) is
  checked without editing a list. A plug-in that failed to import is listed too, as a
  :class:`~hpo_bench.core.registry.BrokenPlugin` with one check, :func:`check_plugin_imports`,
  which fails naming the file and the exception: one failing test, not a collection error.
* :func:`check_tuner_requirements` runs a tuner on a task offering only the capabilities
  it declares (``Tuner.required_tags``): it must not fail for a missing one.
* :func:`check_hypergradient` checks a user's hypergradient function (gradcheck-style) and
  :class:`ModelTask` builds a task from a torch model and two loss functions.
"""

from __future__ import annotations

from typing import Any, Callable

from ..core.registry import TASKS, TUNERS, BrokenPlugin, broken_plugins
from ..core.task import Task
from ..core.tuner import Tuner
from ._common import DEFAULT_TOLERANCES, ConformanceError, label_of, task_factory, tuner_factory
from ._gradcheck import HypergradientCheckError, HypergradientReport, PointResult, check_hypergradient
from ._model_task import BoundModel, ModelTask
from ._task_checks import (
    TASK_CHECKS, check_task_capabilities, check_task_declaration, check_task_deterministic,
    check_task_exact_methods, check_task_float32,
    check_task_finite_losses, check_task_inner_stationary, check_task_linearization, check_task_per_example,
    check_task_reference_fd, check_task_space, task_points,
)
from ._tuner_checks import (
    CAPABILITY_TAGS, TUNER_CHECKS, check_tuner_bounds, check_tuner_budget, check_tuner_declaration,
    check_tuner_diverging, check_tuner_records, check_tuner_reproducible, check_tuner_requirements,
    check_tuner_stop_request, conformance_task, diverging_task, restricted_task, run_tuner,
)

__all__ = [
    "ConformanceError", "DEFAULT_TOLERANCES", "TASK_CHECKS", "TUNER_CHECKS", "checks_for", "check_object",
    "xfail_reason", "parametrize_with_checks", "registered_tasks", "registered_tuners", "task_factory",
    "tuner_factory", "label_of", "task_points", "run_tuner", "conformance_task", "diverging_task",
    "check_task_declaration", "check_task_deterministic", "check_task_finite_losses", "check_task_space",
    "check_task_reference_fd", "check_task_inner_stationary", "check_task_linearization",
    "check_task_exact_methods", "check_task_per_example", "check_task_float32", "check_task_capabilities",
    "check_tuner_declaration", "check_tuner_budget", "check_tuner_bounds", "check_tuner_reproducible",
    "check_tuner_records", "check_tuner_stop_request", "check_tuner_diverging", "check_tuner_requirements",
    "restricted_task", "CAPABILITY_TAGS", "check_plugin_imports",
    "check_hypergradient", "HypergradientReport", "PointResult", "HypergradientCheckError",
    "ModelTask", "BoundModel",
]


def _class_of(obj: Any) -> type | None:
    if isinstance(obj, tuple):
        obj = obj[0]
    return obj if isinstance(obj, type) else None


def check_plugin_imports(obj: BrokenPlugin) -> None:
    """Fails for a plug-in that failed to import during discovery, naming its file (or entry point) and the error."""
    raise ConformanceError(f"{obj.line()}; every task and tuner it defines is missing from the registry")


def _kind(obj: Any) -> str:
    if isinstance(obj, BrokenPlugin):
        return "broken"
    cls = _class_of(obj)
    if cls is not None and issubclass(cls, Task):
        return "task"
    if cls is not None and issubclass(cls, Tuner):
        return "tuner"
    raise TypeError(f"the kit checks Task and Tuner subclasses (or (cls, params)); got {obj!r}. "
                    "For a task factory, call the check_task_* functions directly.")


def checks_for(obj: Any) -> list[Callable[[Any], None]]:
    """The checks that apply to a Task or Tuner subclass (or ``(cls, params)``), from its declared tags."""
    kind = _kind(obj)
    if kind == "broken":
        return [check_plugin_imports]
    tags = set(getattr(_class_of(obj), "tags", ()))
    table = TASK_CHECKS if kind == "task" else TUNER_CHECKS
    return [check for check, needs in table if needs is None or needs in tags]


def xfail_reason(obj: Any, check: Callable | str) -> str | None:
    """The reason a class declares for an expected failure of ``check`` (``xfail_checks``), if any."""
    name = check if isinstance(check, str) else check.__name__
    declared = getattr(_class_of(obj), "xfail_checks", {}) or {}
    reason = declared.get(name)
    if reason is not None and not (isinstance(reason, str) and reason.strip()):
        raise ConformanceError(f"{label_of(obj)!r}: xfail_checks[{name!r}] must be a non-empty reason string")
    return reason


def check_object(obj: Any) -> list[tuple[str, str]]:
    """Run every applicable check; return ``(check, "pass" | "xfail: reason")``; raise on the first failure."""
    out = []
    for check in checks_for(obj):
        reason = xfail_reason(obj, check)
        try:
            check(obj)
        except ConformanceError:
            if reason is None:
                raise
            out.append((check.__name__, f"xfail: {reason}"))
            continue
        out.append((check.__name__, "pass"))
    return out


def registered_tasks() -> list[Any]:
    """Every registered task class (built-ins, tasks/ files and entry-point plug-ins), then a
    :class:`~hpo_bench.core.registry.BrokenPlugin` for each task plug-in that failed to import."""
    return [cls for _, cls in TASKS.items()] + broken_plugins("task")


def registered_tuners() -> list[Any]:
    """Every registered tuner class (built-ins, baselines/ files and entry-point plug-ins), then a
    :class:`~hpo_bench.core.registry.BrokenPlugin` for each tuner or hypergradient-method plug-in that failed
    to import (methods are exercised through the gradient tuner)."""
    return ([cls for _, cls in TUNERS.items()] + broken_plugins("tuner")
            + broken_plugins("hypergradient method"))


def parametrize_with_checks(objects: list[Any]):
    """A ``pytest.mark.parametrize("obj, check", ...)`` over every (object, applicable check).

    Test ids read ``<name>-<check>``; checks a class declares in ``xfail_checks`` are marked
    ``xfail`` with the declared reason (not strict: a fixed failure shows as XPASS).
    """
    import pytest

    cases = []
    for obj in objects:
        for check in checks_for(obj):
            reason = xfail_reason(obj, check)
            marks = [pytest.mark.xfail(reason=reason, raises=ConformanceError, strict=False)] if reason else []
            cases.append(pytest.param(obj, check, id=f"{label_of(obj)}-{check.__name__}", marks=marks))
    return pytest.mark.parametrize("obj, check", cases)
