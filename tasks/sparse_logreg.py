"""l1-penalised logistic regression: ``mean log(1 + exp(-y x.w)) + lam ||w||_1``, labels in ``{-1, +1}``.

Data: the seeded sparse truth of :mod:`.lasso` with labels ``sign(X w_true + noise)``; outer loss the
held-out mean logistic loss, test loss the same on a third split. ``lam`` is bounded and started as
fractions of ``lambda_max = ||X^T y||_inf / (2n)``. Reference solve: proximal CD, then Newton on the
support with fixed signs (duality gap ``<= 1e-12``); hypergradient on the support with
``H_SS = X_S^T diag(sigma'(y x.w)) X_S / n``.

Data (``dataset``: ``text-like`` or a registered binary set, sparse ones as CSR designs; ``max_train``,
``density``) and the outer criterion (``criterion``, ``folds``) as :mod:`.lasso`.
"""

from __future__ import annotations

import torch

from hpo_bench.core.registry import register_task
from hpo_bench.core.space import Space

from ._sparse_linear import CrossValMixin, LogisticComposite, SyntheticSparseMixin, l1_block

__all__ = ["SparseLogreg"]


@register_task
class SparseLogreg(CrossValMixin, SyntheticSparseMixin, LogisticComposite):
    """Sparse logistic regression with one penalty ``lam`` (log-transformed)."""

    name = "sparse_logreg"
    check_params = {"n": 60, "p": 8, "n_informative": 3, "lam0": 0.1}

    def __init__(self, *, n: int = 100, p: int = 30, n_informative: int = 5, snr: float = 3.0, rho: float = 0.5,
                 n_val: int | None = None, n_test: int | None = None, dataset: str = "synthetic",
                 max_train: int | None = None, density: float | None = None,
                 criterion: str = "holdout", folds: int | None = None, lam0: float = 0.05, lam_low: float = 1e-3,
                 lam_high: float = 1.0, seed: int = 0, dtype="float64", device: str = "cpu") -> None:
        super().__init__(seed=seed, dtype=dtype, device=device)
        data = self._data(n=n, p=p, n_informative=n_informative, snr=snr, rho=rho, n_val=n_val, n_test=n_test,
                          seed=seed, classification=True, dataset=dataset, max_train=max_train, density=density)
        x, y = data[0], data[1]
        lam_max = self._lam_max_ls(x, y) / 2
        space = Space((l1_block(self, name="lam", size=1, lam_max=lam_max, lam0=lam0, lam_low=lam_low,
                                lam_high=lam_high),))
        self._setup_problem(data, space, criterion, folds)
        self.params.update({"lam0": lam0, "lam_low": lam_low, "lam_high": lam_high})

    def penalties(self, theta: torch.Tensor):
        lam = self.space.to_natural(theta)
        return lam.expand(self.n_params), torch.zeros((), dtype=lam.dtype, device=lam.device)
