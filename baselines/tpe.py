"""Optuna's Tree-structured Parzen Estimator (TPE), univariate or multivariate."""

from __future__ import annotations

import optuna

from hpo_bench.core.options import Option
from hpo_bench.core.registry import register_tuner

from .ask_tell import OptunaTuner

__all__ = ["TPETuner"]


@register_tuner
class TPETuner(OptunaTuner):
    """Optuna TPE over theta (Bergstra et al. 2011); ``multivariate = true`` models the axes jointly.

    Args:
        n_startup_trials: random proposals before the Parzen estimators take over.
        n_ei_candidates: candidates scored by expected improvement per proposal.
        multivariate: one joint density over all axes (Falkner et al. 2018) instead of
            one density per axis.
        inner, inner_steps, inner_lr: see :class:`~hpo_bench.baselines.ask_tell.OptunaTuner`.
    """

    name = "tpe"
    options = {**OptunaTuner.options, "n_startup_trials": Option(int, low=0), "n_ei_candidates": Option(int, low=1),
               "multivariate": Option(bool)}

    def __init__(self, *, n_startup_trials: int = 10, n_ei_candidates: int = 24, multivariate: bool = False,
                 **common) -> None:
        super().__init__(n_startup_trials=n_startup_trials, n_ei_candidates=n_ei_candidates,
                         multivariate=multivariate, **common)  # checks `options`
        self.n_startup_trials = n_startup_trials
        self.n_ei_candidates = n_ei_candidates
        self.multivariate = multivariate

    def make_sampler(self, task, recorder, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(n_startup_trials=self.n_startup_trials,
                                          n_ei_candidates=self.n_ei_candidates,
                                          multivariate=self.multivariate, seed=seed)
