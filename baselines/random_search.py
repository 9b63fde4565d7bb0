"""Random search: optuna's RandomSampler, uniform in theta (log-uniform for log-penalties)."""

from __future__ import annotations

import optuna

from hpo_bench.core.registry import register_tuner

from .ask_tell import OptunaTuner

__all__ = ["RandomSearchTuner"]


@register_tuner
class RandomSearchTuner(OptunaTuner):
    """Random search (Bergstra & Bengio 2012): independent uniform proposals in theta.

    Args:
        inner, inner_steps, inner_lr: see :class:`~hpo_bench.baselines.ask_tell.OptunaTuner`.
    """

    name = "random"

    def make_sampler(self, task, recorder, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed)
