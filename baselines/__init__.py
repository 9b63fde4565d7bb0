"""Black-box tuners (installed as ``hpo_bench.baselines``): one module per tuner family.

Every public module here is imported by :func:`hpo_bench.core.registry.discover`; modules
named ``_*`` and ``template_*`` are skipped.

* ``tpe``: optuna TPE, univariate or multivariate (:class:`TPETuner`).
* ``random``: random search (:class:`RandomSearchTuner`).
* ``grid``: grid search, budget-capped per block / shared / full (:class:`GridSearchTuner`).
* ``grid_eig``: scalar ridge grid from one eigendecomposition (:class:`EigGridTuner`).
* ``cmaes``: CMA-ES (:class:`CmaEsTuner`).
* ``gp``: Gaussian-process Bayesian optimisation, optuna's GPSampler (:class:`GPTuner`).
* ``qmc``: quasi-Monte Carlo (Sobol or Halton), optuna's QMCSampler (:class:`QMCTuner`).
* ``optuna``: any optuna sampler class by import path (:class:`OptunaSamplerTuner`).

All but ``grid_eig`` propose through optuna's ask/tell interface (:class:`OptunaTuner`, the public base in
:mod:`.ask_tell`: subclass it and return a sampler from ``make_sampler``); each evaluation is a full
reference inner solve (or, with ``inner = "gd"``, ``inner_steps`` gradient steps).
"""

from __future__ import annotations

from .ask_tell import OptunaTuner
from .cma_es import CmaEsTuner
from .grid import EigGridTuner, GridSearchTuner
from .optuna_sampler import GPTuner, OptunaSamplerTuner, QMCTuner
from .random_search import RandomSearchTuner
from .tpe import TPETuner

__all__ = ["OptunaTuner", "TPETuner", "RandomSearchTuner", "GridSearchTuner", "EigGridTuner", "CmaEsTuner",
           "GPTuner", "QMCTuner", "OptunaSamplerTuner"]
