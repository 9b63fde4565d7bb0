"""Any optuna sampler as a tuner, named by import path (``optuna``), and the named entries ``gp`` and ``qmc``.

A suite runs any :class:`optuna.samplers.BaseSampler` subclass, optuna's own, one from OptunaHub or a user's,
without writing a tuner::

    [[tuner]]
    name = "optuna"
    label = "sobol"
    params = { sampler = "optuna.samplers.QMCSampler", sampler_kwargs = { qmc_type = "sobol", scramble = true } }

``sampler`` is ``"package.module.Class"`` or ``"package.module:Class"``; ``sampler_kwargs`` are keyword
arguments of its constructor (TOML values: numbers, strings, booleans, lists, tables). Validation (on
construction, which suite validation runs for every ``[[tuner]]`` table, before any cell) imports the class,
checks that it is a ``BaseSampler`` subclass, binds ``sampler_kwargs`` to its signature and builds it once,
so a typo fails up front in one line that names the parameter, the rule and the value.

Seeding: when the constructor takes ``seed`` and ``sampler_kwargs`` does not set it, each cell's sampler gets
the cell's seed (:func:`~hpo_bench.baselines.ask_tell.sampler_seed`), so repetitions differ and a rerun is
identical. A ``seed`` in ``sampler_kwargs`` is used as given (every repetition then proposes the same
points); a sampler without a ``seed`` argument is as reproducible as it makes itself. Every row's ``extra``
says which: ``sampler_seed = "cell" | "user" | "none"``.

Limits: samplers whose constructor needs Python objects (``independent_sampler``, ``constraints_func``) or
the search space itself (``GridSampler``: use the ``grid`` tuner) cannot be configured from a suite file; a
subclass of :class:`~hpo_bench.baselines.ask_tell.OptunaTuner` can (docs/extending.md).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import optuna

from hpo_bench.core.options import Option
from hpo_bench.core.registry import register_tuner
from hpo_bench.core.tuner import TunerParamError

from .ask_tell import OptunaTuner, quiet_optuna

__all__ = ["OptunaSamplerTuner", "GPTuner", "QMCTuner", "import_sampler"]

_EXAMPLE = "'optuna.samplers.QMCSampler'"


def import_sampler(path: str) -> type[optuna.samplers.BaseSampler]:
    """The sampler class at ``path`` (``"pkg.mod.Class"`` or ``"pkg.mod:Class"``).

    Raises:
        ValueError: the path is malformed, does not import, or names something that is not a
            ``BaseSampler`` subclass (the message says which).
    """
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError("not of the form 'package.module.Class'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import-time failure of a user's module
        raise ValueError(f"module {module_name!r} cannot be imported ({type(exc).__name__}: {exc})") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not (inspect.isclass(obj) and issubclass(obj, optuna.samplers.BaseSampler)):
        raise ValueError(f"{path!r} is {type(obj).__name__} {obj!r}, not a subclass of "
                         "optuna.samplers.BaseSampler")
    return obj


@register_tuner
class OptunaSamplerTuner(OptunaTuner):
    """Any optuna sampler, by import path (module docstring).

    Args:
        sampler: import path of a ``BaseSampler`` subclass (default optuna's default, ``TPESampler``).
        sampler_kwargs: keyword arguments of its constructor.
        inner, inner_steps, inner_lr: see :class:`~hpo_bench.baselines.ask_tell.OptunaTuner`.
    """

    name = "optuna"
    options = {**OptunaTuner.options, "sampler": Option(str, doc="import path of a BaseSampler subclass"),
               "sampler_kwargs": Option(dict, doc="keyword arguments of the sampler's constructor")}

    def __init__(self, *, sampler: str = "optuna.samplers.TPESampler", sampler_kwargs: dict | None = None,
                 **common: Any) -> None:
        super().__init__(sampler=sampler, sampler_kwargs={} if sampler_kwargs is None else sampler_kwargs,
                         **common)  # checks `options`
        kwargs = dict(sampler_kwargs or {})
        try:
            cls = import_sampler(sampler)
        except ValueError as exc:
            self._refuse("sampler", f"the import path of an optuna sampler class, like {_EXAMPLE}", sampler, str(exc))
        try:
            sig: inspect.Signature | None = inspect.signature(cls)
        except (TypeError, ValueError):  # a C-implemented constructor: nothing to bind against
            sig = None
        if sig is not None:
            try:
                sig.bind(**kwargs)
            except TypeError as exc:
                self._refuse("sampler_kwargs", f"keyword arguments of {sampler} ({', '.join(sig.parameters)})", kwargs,
                             str(exc))
        params = sig.parameters.values() if sig is not None else ()
        self._takes_seed = any(p.name == "seed" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        self.sampler = sampler
        self.sampler_kwargs = kwargs
        self._cls = cls
        #: how each cell's sampler is seeded (recorded in every row)
        self.seeding = "user" if "seed" in kwargs else ("cell" if self._takes_seed else "none")
        try:  # build it once, so that the sampler's own value checks fail at validation, not in a cell
            with quiet_optuna():
                self._build(0)
        except Exception as exc:  # any error of a (user's) sampler constructor
            self._refuse("sampler_kwargs", f"arguments that {sampler} accepts", kwargs, f"{type(exc).__name__}: {exc}")

    def _refuse(self, key: str, rule: str, value: Any, why: str) -> None:
        raise TunerParamError(f"tuner {self.name!r}: parameter `{key}` must be {rule}, but got {value!r} ({why})")

    def _build(self, seed: int) -> optuna.samplers.BaseSampler:
        kwargs = dict(self.sampler_kwargs)
        if self._takes_seed and "seed" not in kwargs:
            kwargs["seed"] = seed
        return self._cls(**kwargs)

    def make_sampler(self, task, recorder, seed: int) -> optuna.samplers.BaseSampler:
        return self._build(seed)

    def row_info(self, task, recorder) -> dict[str, Any]:
        return {"sampler": self.sampler, "sampler_seed": self.seeding}


@register_tuner
class GPTuner(OptunaTuner):
    """Gaussian-process Bayesian optimisation: optuna's ``GPSampler`` (a Matérn-5/2 GP with log expected
    improvement, its acquisition optimised by L-BFGS-B). Each proposal costs O(n³) in the trials so far, so it
    suits budgets of tens to a few hundred evaluations.

    Args:
        n_startup_trials: random proposals before the GP takes over.
        deterministic_objective: model the objective as noise-free (the reference inner solve is).
        inner, inner_steps, inner_lr: see :class:`~hpo_bench.baselines.ask_tell.OptunaTuner`.
    """

    name = "gp"
    options = {**OptunaTuner.options, "n_startup_trials": Option(int, low=1),
               "deterministic_objective": Option(bool)}

    def __init__(self, *, n_startup_trials: int = 10, deterministic_objective: bool = True, **common: Any) -> None:
        super().__init__(n_startup_trials=n_startup_trials, deterministic_objective=deterministic_objective,
                         **common)  # checks `options`
        self.n_startup_trials = n_startup_trials
        self.deterministic_objective = deterministic_objective

    def make_sampler(self, task, recorder, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=self.n_startup_trials,
                                         deterministic_objective=self.deterministic_objective)


@register_tuner
class QMCTuner(OptunaTuner):
    """Quasi-Monte Carlo search: optuna's ``QMCSampler`` (a Sobol or Halton sequence over theta).

    Args:
        qmc_type: ``"sobol"`` or ``"halton"``.
        scramble: randomise the sequence from the cell's seed (default ``true``, so repetitions differ;
            ``false`` gives every seed the same points).
        inner, inner_steps, inner_lr: see :class:`~hpo_bench.baselines.ask_tell.OptunaTuner`.
    """

    name = "qmc"
    options = {**OptunaTuner.options, "qmc_type": Option(str, choices=("sobol", "halton")),
               "scramble": Option(bool)}

    def __init__(self, *, qmc_type: str = "sobol", scramble: bool = True, **common: Any) -> None:
        super().__init__(qmc_type=qmc_type, scramble=scramble, **common)  # checks `options`
        self.qmc_type = qmc_type
        self.scramble = scramble

    def make_sampler(self, task, recorder, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.QMCSampler(qmc_type=self.qmc_type, scramble=self.scramble, seed=seed,
                                          warn_asynchronous_seeding=False)
