"""The elastic net: ``1/(2n) ||X w - y||^2 + lam1 ||w||_1 + lam2 / 2 ||w||^2`` (sparse-ho's parametrisation).

Two log-transformed hyperparameters: ``lam1`` (bounded and started as fractions of
``lambda_max = ||X^T y||_inf / n``, as :mod:`.lasso`) and ``lam2`` (absolute: ``l2_0`` in
``[l2_low, l2_high]``). The reference solves the equivalent lasso on the augmented data
``[X; sqrt(n lam2) I]`` to a duality gap ``<= 1e-12``; the hypergradient on the support uses
``H_SS = G_SS + lam2 I``.

Data (``dataset``, ``max_train``, ``density``) and the outer criterion (``criterion``, ``folds``) as :mod:`.lasso`.
"""

from __future__ import annotations

import torch

from hpo_bench.core.registry import register_task
from hpo_bench.core.space import Block, Space
from hpo_bench.core.task import require

from ._sparse_linear import CrossValMixin, LeastSquaresComposite, SyntheticSparseMixin, l1_block

__all__ = ["ElasticNet"]


@register_task
class ElasticNet(CrossValMixin, SyntheticSparseMixin, LeastSquaresComposite):
    """Elastic net with ``lam1`` (l1) and ``lam2`` (l2), both log-transformed."""

    name = "elastic_net"

    def __init__(self, *, n: int = 100, p: int = 50, n_informative: int = 5, snr: float = 3.0, rho: float = 0.5,
                 n_val: int | None = None, n_test: int | None = None, dataset: str = "synthetic",
                 max_train: int | None = None, density: float | None = None,
                 criterion: str = "holdout", folds: int | None = None, lam0: float = 0.01, lam_low: float = 1e-4,
                 lam_high: float = 1.0, l2_0: float = 0.01, l2_low: float = 1e-6, l2_high: float = 10.0,
                 seed: int = 0, dtype="float64", device: str = "cpu") -> None:
        super().__init__(seed=seed, dtype=dtype, device=device)
        data = self._data(n=n, p=p, n_informative=n_informative, snr=snr, rho=rho, n_val=n_val, n_test=n_test,
                          seed=seed, dataset=dataset, max_train=max_train, density=density)
        require(0 < l2_low < l2_high, self.name, "l2_low", f"in (0, l2_high={l2_high})", l2_low)
        require(l2_low <= l2_0 <= l2_high, self.name, "l2_0", f"within [l2_low={l2_low}, l2_high={l2_high}]", l2_0)
        x, y = data[0], data[1]
        lam_max = self._lam_max_ls(x, y)
        space = Space((l1_block(self, name="lam1", size=1, lam_max=lam_max, lam0=lam0, lam_low=lam_low,
                                lam_high=lam_high),
                       Block("lam2", kind="scalar", size=1, low=l2_low, high=l2_high, transform="log", init=l2_0)))
        self._setup_problem(data, space, criterion, folds)
        self.params.update({"lam0": lam0, "lam_low": lam_low, "lam_high": lam_high, "l2_0": l2_0,
                            "l2_low": l2_low, "l2_high": l2_high})

    def penalties(self, theta: torch.Tensor):
        lam = self.space.to_natural(theta)
        return lam[0].expand(self.n_params), lam[1]
