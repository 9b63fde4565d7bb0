"""``seed_toy``: the seed notebook's problem, data reproduced exactly.

Data: ``torch.manual_seed(1); x = randn(10, 2); y = x @ [[3], [1]] + randn(10, 1)`` in
float32 (drawn from a private generator, which yields the same stream), rows 0-7 train,
rows 8-9 validation. A test split of ``n_test`` rows is drawn *afterwards* from a separate
generator (seed ``data_seed + 10_000``), so the notebook's sequence is untouched.

Objective: the notebook's own training loss, the mean of per-example losses
``(x_i w - y_i)^2 + lam ||w||^2``, i.e. ``mean squared error + sum_j lam_j w_j^2``
(one ``lam``, or one per weight with ``per_weight=true``). Validation loss: mean squared
error on rows 8-9. Closed-form reference (:mod:`hpo_bench.tasks._quadratic`, ``a = b = 1``).

Note the λ convention: the notebook's closed form ``(X^T X + lam I)^{-1} X^T y`` is the
minimiser of ``||Xw - y||^2 + lam ||w||^2``, i.e. of *this* objective at ``lam / n_train``:
the same number means an 8x weaker penalty there than in its SGD loop.

``transform="none"`` (the default) optimises raw λ as the notebook does (bounds
``[lam_low, lam_high]`` may be negative); ``transform="log"`` keeps λ positive.
"""

from __future__ import annotations

import torch

from hpo_bench.core.registry import register_task
from hpo_bench.core.space import Block, Space
from hpo_bench.core.task import require

from ._quadratic import QuadraticTask

__all__ = ["SeedToy", "notebook_data"]

TRUE_W = (3.0, 1.0)


def notebook_data(data_seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The notebook's ``x`` (10 x 2) and ``y`` (10 x 1), float32, bit-identical to its cells."""
    gen = torch.Generator().manual_seed(data_seed)
    x = torch.randn((10, 2), generator=gen)
    true_w = torch.tensor([[TRUE_W[0]], [TRUE_W[1]]])
    y = torch.matmul(x, true_w) + torch.randn((10, 1), generator=gen)
    return x, y


@register_task
class SeedToy(QuadraticTask):
    """The seed notebook's ridge toy (2 weights, 8 training rows, 2 validation rows)."""

    name = "seed_toy"
    a = 1.0
    b = 1.0
    check_params = {}

    def __init__(self, *, per_weight: bool = False, transform: str = "none", lam0: float = 3.0,
                 lam_low: float | None = None, lam_high: float = 100.0, w0: tuple[float, float] = (2.5, 1.3),
                 n_test: int = 100, data_seed: int = 1, seed: int = 0, dtype="float64",
                 device: str = "cpu") -> None:
        super().__init__(seed=seed, dtype=dtype, device=device)
        require(transform in ("none", "log"), self.name, "transform", "one of ['none', 'log']", transform)
        require(isinstance(n_test, int) and n_test >= 1, self.name, "n_test", "an integer >= 1", n_test)
        require(len(w0) == 2, self.name, "w0", "a pair of numbers", w0)
        if lam_low is None:
            lam_low = 1e-8 if transform == "log" else -100.0
        x, y = notebook_data(data_seed)
        gen = torch.Generator().manual_seed(data_seed + 10_000)
        x_test = torch.randn((n_test, 2), generator=gen)
        y_test = x_test @ torch.tensor([[TRUE_W[0]], [TRUE_W[1]]]) + torch.randn((n_test, 1), generator=gen)
        space = Space((Block("lam", kind="per_weight" if per_weight else "scalar", size=2 if per_weight else 1,
                             low=lam_low, high=lam_high, transform=transform, init=lam0),))
        self._setup(x[:8], y[:8], x[8:], y[8:], x_test, y_test, space=space, w0=list(w0))
        self.params = {"per_weight": per_weight, "transform": transform, "lam0": lam0, "lam_low": lam_low,
                       "lam_high": lam_high, "w0": list(w0), "n_test": n_test, "data_seed": data_seed}
