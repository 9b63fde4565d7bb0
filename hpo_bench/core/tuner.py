"""The tuner contract.

A tuner searches the hyperparameters of a task within a budget::

    tuner = TUNERS.get("gradient")(method="cg", outer_lr=0.1)   # keyword-only; only stores
    tuner.run(task, recorder)                                  # the harness times and records

Lifecycle: the constructor validates and stores its keyword-only parameters (in
``self.params``, JSON-serialisable, recorded with every row; the rule of each parameter is
declared in the class's ``options`` schema, :class:`~hpo_bench.core.options.Option`, and checked by
:meth:`Tuner.__init__`, rules across parameters in the constructor); :meth:`run` loops until
``recorder.should_stop()``, reporting costs with ``recorder.add_cost`` and one row per outer
step or evaluation with ``recorder.record``. Randomness comes only from ``recorder.seed``-
derived generators, so a tuner is reproducible by seed. Capabilities are declared in
``tags`` (``"gradient-based"``, ``"black-box"``), never guessed from names.

Requirements. What a tuner needs from a task is declared as task tags by the classmethod
:meth:`Tuner.required_tags` (it may depend on the parameters: the gradient tuner with
``inner = "adam_per_example"`` needs ``"per-example"``). Suite validation refuses a cell whose
task lacks one (``hpo-bench run`` before anything runs), and the conformance kit checks
that a tuner run on a task offering only the declared tags does not fail for a missing one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Mapping

from .options import Option, check_options

__all__ = ["Tuner", "TunerParamError", "missing_tags"]


class TunerParamError(ValueError):
    """A tuner parameter breaks its rule."""


class Tuner(ABC):
    name: ClassVar[str] = ""
    tags: ClassVar[frozenset[str]] = frozenset()
    #: The declared rule of each parameter (type, bounds, choices); checked on construction, which
    #: suite validation runs for every tuner table. Rules across parameters stay in the constructor.
    options: ClassVar[Mapping[str, Option]] = {}

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)
        check_options(f"tuner {self.name!r}", type(self).options, self.params, allow_unknown=True,
                      word="parameter", error=TunerParamError)

    @classmethod
    def required_tags(cls, params: Mapping[str, Any]) -> frozenset[str]:
        """Task tags that a tuner built with ``params`` needs (default: none).

        Must not build the tuner (suite validation calls it per cell) and must hold for every
        task: a task with these tags can be run; one without them is refused up front.
        """
        return frozenset()

    @classmethod
    def dense_needs(cls, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The dense matrices a tuner built with ``params`` forms, as ``(what, shape)`` pairs, e.g.
        ``("method = 'exact'", "p x p: the Hessian")``; the shape starts with ``"p x p"`` (``n_params``
        squared) or ``"p x m"`` (``n_params x n_hyper``). Suite validation refuses a task where one
        exceeds :data:`hpo_bench.running.suite.DENSE_MAX_PARAMS`. Like :meth:`required_tags`, must not build
        the tuner. Default: none (matrix-free)."""
        return []

    def _fail(self, key: str, rule: str, value: Any) -> None:
        raise TunerParamError(f"tuner {self.name!r}: parameter `{key}` must be {rule}, but got {value!r}")

    @abstractmethod
    def run(self, task, recorder, *, seed: int = 0) -> None:
        """Tune ``task`` until ``recorder.should_stop()``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"


def missing_tags(tuner_cls: type[Tuner], params: Mapping[str, Any], task: Any) -> list[str]:
    """The tags ``tuner_cls(**params)`` requires that ``task`` (an instance: tags may depend on its
    parameters) does not declare, sorted."""
    return sorted(set(tuner_cls.required_tags(params)) - set(getattr(task, "tags", ())))
