"""CMA-ES through optuna's CmaEsSampler (backed by the ``cmaes`` package)."""

from __future__ import annotations

import warnings

import optuna
from optuna.exceptions import ExperimentalWarning

from hpo_bench.core.options import Option
from hpo_bench.core.registry import register_tuner

from .ask_tell import OptunaTuner

__all__ = ["CmaEsTuner"]


@register_tuner
class CmaEsTuner(OptunaTuner):
    """CMA-ES (Hansen 2016) over theta, via optuna's CmaEsSampler.

    The search starts at the centre of the bounds with step size a sixth of the narrowest
    bound range (optuna's defaults; its ``x0``/``sigma0`` arguments are deprecated since
    optuna 4.9 and not offered here).

    Args:
        popsize: population size; ``None``: ``4 + floor(3 ln d)``.
        separable: diagonal covariance (sep-CMA-ES, Ros & Hansen 2008), cheaper for many
            axes; optuna marks it experimental (its ``ExperimentalWarning`` is silenced here).
        n_startup_trials: random proposals before CMA-ES starts (optuna's default 1).
        inner, inner_steps, inner_lr: see :class:`~hpo_bench.baselines.ask_tell.OptunaTuner`.
    """

    name = "cmaes"
    options = {**OptunaTuner.options, "popsize": Option(int, low=2, optional=True), "separable": Option(bool),
               "n_startup_trials": Option(int, low=0)}

    def __init__(self, *, popsize: int | None = None, separable: bool = False, n_startup_trials: int = 1,
                 **common) -> None:
        super().__init__(popsize=popsize, separable=separable, n_startup_trials=n_startup_trials,
                         **common)  # checks `options`
        self.popsize = popsize
        self.separable = separable
        self.n_startup_trials = n_startup_trials

    def make_sampler(self, task, recorder, seed: int) -> optuna.samplers.BaseSampler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # use_separable_cma, a deliberate choice
            return optuna.samplers.CmaEsSampler(popsize=self.popsize, use_separable_cma=self.separable,
                                                n_startup_trials=self.n_startup_trials, seed=seed,
                                                warn_independent_sampling=False)
