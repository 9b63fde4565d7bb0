"""The tuner contract.

A tuner searches the hyperparameters of a task within a budget::

    tuner = TUNERS.get("gradient")(method="cg", outer_lr=0.1)   # keyword-only; only stores
    tuner.run(task, recorder)                                  # the harness times and records

Lifecycle: the constructor validates and stores its keyword-only parameters (in
``self.params``, JSON-serialisable, recorded with every row); :meth:`run` loops until
``recorder.should_stop()``, reporting costs with ``recorder.add_cost`` and one row per outer
step or evaluation with ``recorder.record``. Randomness comes only from ``recorder.seed``-
derived generators, so a tuner is reproducible by seed. Capabilities are declared in
``tags`` (``"gradient-based"``, ``"black-box"``), never guessed from names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

__all__ = ["Tuner", "TunerParamError"]


class TunerParamError(ValueError):
    """A tuner parameter breaks its rule."""


class Tuner(ABC):
    name: ClassVar[str] = ""
    tags: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)

    def _fail(self, key: str, rule: str, value: Any) -> None:
        raise TunerParamError(f"tuner {self.name!r}: parameter `{key}` must be {rule}, but got {value!r}")

    @abstractmethod
    def run(self, task, recorder, *, seed: int = 0) -> None:
        """Tune ``task`` until ``recorder.should_stop()``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"
