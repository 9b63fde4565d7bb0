"""The lasso: ``1/(2n) ||X w - y||^2 + lam ||w||_1``, one log-transformed ``lam``.

Data: seeded synthetic regression with a known sparse truth (:func:`~hpo_bench.tasks._sparse_linear.make_sparse_data`:
``n`` training rows, ``p`` features with Toeplitz correlation ``rho``, ``n_informative`` true non-zeros,
noise at signal-to-noise ratio ``snr``, ``inf`` for noiseless); outer loss the held-out MSE, test loss the
MSE on a third split. Other data (``dataset``: ``text-like``, registered regression sets, binary sets with
labels as ``+-1`` targets; sparse ones as CSR designs) and the outer criterion (``criterion = "cv"``,
``folds``): :func:`~hpo_bench.tasks._sparse_linear.make_task_data`, :class:`~._sparse_linear.CrossValMixin`.
``lam`` is bounded and started as fractions of ``lambda_max = ||X^T y||_inf / n`` (``lam_high = 1``: the
grid of sparse-ho's protocol starts where ``w* = 0``). Reference solution to a
duality gap ``<= 1e-12``; closed-form hypergradient on the support (:mod:`._sparse_linear`).
"""

from __future__ import annotations


import torch

from hpo_bench.core.registry import register_task

from ._sparse_linear import CrossValMixin, LeastSquaresComposite, SyntheticSparseMixin

__all__ = ["Lasso"]


@register_task
class Lasso(CrossValMixin, SyntheticSparseMixin, LeastSquaresComposite):
    """Lasso with one penalty ``lam`` (log-transformed), fractions of ``lambda_max`` for its bounds."""

    name = "lasso"

    def __init__(self, *, n: int = 100, p: int = 50, n_informative: int = 5, snr: float = 3.0, rho: float = 0.5,
                 n_val: int | None = None, n_test: int | None = None, dataset: str = "synthetic",
                 max_train: int | None = None, density: float | None = None,
                 criterion: str = "holdout", folds: int | None = None, lam0: float = 0.01, lam_low: float = 1e-4,
                 lam_high: float = 1.0, seed: int = 0, dtype="float64", device: str = "cpu") -> None:
        super().__init__(seed=seed, dtype=dtype, device=device)
        self._setup_l1_least_squares(size=1, lam0=lam0, lam_low=lam_low, lam_high=lam_high, n=n, p=p,
                                     n_informative=n_informative, snr=snr, rho=rho, n_val=n_val, n_test=n_test,
                                     seed=seed, dataset=dataset, max_train=max_train, density=density,
                                     criterion=criterion, folds=folds)

    def penalties(self, theta: torch.Tensor):
        lam = self.space.to_natural(theta)
        return lam.expand(self.n_params), torch.zeros((), dtype=lam.dtype, device=lam.device)


