"""The weighted lasso: ``1/(2n) ||X w - y||^2 + sum_j lam_j |w_j|``, one log-transformed ``lam_j`` per feature.

sparse-ho's flagship: ``p`` hyperparameters, so grid and TPE search scale badly with ``p`` while a
hypergradient costs one solve on the support. Data and bounds as :mod:`.lasso` (fractions of
``lambda_max``, every weight started at ``lam0 lambda_max``).

Data (``dataset``, ``max_train``, ``density``) and the outer criterion (``criterion``, ``folds``) as :mod:`.lasso`.
"""

from __future__ import annotations

import torch

from hpo_bench.core.registry import register_task

from ._sparse_linear import CrossValMixin, LeastSquaresComposite, SyntheticSparseMixin

__all__ = ["WeightedLasso"]


@register_task
class WeightedLasso(CrossValMixin, SyntheticSparseMixin, LeastSquaresComposite):
    """Lasso with one penalty per feature (``p`` log-transformed hyperparameters)."""

    name = "weighted_lasso"
    check_params = {"n": 40, "p": 6, "n_informative": 3, "lam0": 0.1}

    def __init__(self, *, n: int = 100, p: int = 20, n_informative: int = 5, snr: float = 3.0, rho: float = 0.5,
                 n_val: int | None = None, n_test: int | None = None, dataset: str = "synthetic",
                 max_train: int | None = None, density: float | None = None,
                 criterion: str = "holdout", folds: int | None = None, lam0: float = 0.01, lam_low: float = 1e-4,
                 lam_high: float = 1.0, seed: int = 0, dtype="float64", device: str = "cpu") -> None:
        super().__init__(seed=seed, dtype=dtype, device=device)
        self._setup_l1_least_squares(size=None, lam0=lam0, lam_low=lam_low, lam_high=lam_high, n=n, p=p,
                                     n_informative=n_informative, snr=snr, rho=rho, n_val=n_val, n_test=n_test,
                                     seed=seed, dataset=dataset, max_train=max_train, density=density,
                                     criterion=criterion, folds=folds)

    def penalties(self, theta: torch.Tensor):
        lam = self.space.to_natural(theta)  # one weight per feature, the same in every fold with criterion = "cv"
        return lam.repeat(self.n_params // lam.shape[0]), torch.zeros((), dtype=lam.dtype, device=lam.device)
