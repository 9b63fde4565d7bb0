"""Stochastic bilevel solvers: minibatches on both levels, measured against ground truth.

Every solver is a registered tuner (one module each; discovery imports them). They share
:class:`~hpo_bench.stochastic._base.StochasticTuner` (the loop, the seeded sampler, evaluation every
``eval_every`` iterations, the sample counters) and the minibatch contract of
:mod:`hpo_bench.core.task` (``inner_oracle_batch`` and friends; tasks tagged ``"minibatch"``).
``docs/stochastic.md`` explains how to write one.
"""

from __future__ import annotations
