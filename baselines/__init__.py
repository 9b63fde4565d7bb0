"""Black-box tuners (installed as ``hpo_bench.baselines``): one module per tuner family.

Every public module here is imported by :func:`hpo_bench.core.registry.discover`; modules
named ``_*`` and ``template_*`` are skipped.

* ``tpe``: optuna TPE, univariate or multivariate (:class:`TPETuner`).
* ``random``: random search (:class:`RandomSearchTuner`).
* ``grid``: grid search, budget-capped per block / shared / full (:class:`GridSearchTuner`).
* ``grid_eig``: scalar ridge grid from one eigendecomposition (:class:`EigGridTuner`).
* ``cmaes``: CMA-ES (:class:`CmaEsTuner`).

All but ``grid_eig`` propose through optuna's ask/tell interface; each evaluation is a full
reference inner solve (or, with ``inner = "gd"``, ``inner_steps`` gradient steps).
"""

from __future__ import annotations

from .cma_es import CmaEsTuner
from .grid import EigGridTuner, GridSearchTuner
from .random_search import RandomSearchTuner
from .tpe import TPETuner

__all__ = ["TPETuner", "RandomSearchTuner", "GridSearchTuner", "EigGridTuner", "CmaEsTuner"]
