"""Template of a task: rename the class and its ``name``, then replace the data and the losses.

``hpo-bench init DIR`` copies this file to ``DIR/my_task.py`` in a folder of your own (a plug-in
folder); inside the repository, copy it to ``tasks/<your_task>.py``. Files named ``template_*`` are
skipped by discovery, so this one is never registered; your copy is, under the ``name`` you give
it. Then, in a plug-in folder::

    hpo-bench list --plugins .                       # your task appears
    hpo-bench check --plugins . -t my_task           # reference vs finite differences, exact methods
    pytest --hpo-bench-plugins .                     # the conformance kit (hpo_bench.testing)

(in the repository: ``hpo-bench check -t my_task`` and ``pytest tests/test_conformance.py -k my_task``).

The example is a complete task: least squares with one L2 penalty per feature on seeded
synthetic data, ``inner(w, theta) = 1/(2n) ||X w - y||^2 + 1/2 sum_j lam_j w_j^2`` with
``lam = exp(theta)``, validation and test losses the mean squared errors. Replace the data
and the three losses with yours; keep the rules of :class:`hpo_bench.core.task.Task`:

* keyword-only constructor parameters, each checked with ``require(...)`` (a one-line error
  naming the parameter and the rule), all stored in ``self.params`` (JSON-serialisable);
* data built deterministically from ``seed`` at construction (offline data only);
* ``w`` and ``theta`` are flat 1-D tensors of ``self.dtype`` on ``self.device``;
* ``solve(theta)`` is exact or converged to ~1e-12 (``hpo_bench.core.solvers.newton`` helps),
  because the reference hypergradient and the finite-difference checks rely on it;
* ``check_params``: a small instance for ``hpo-bench check`` and the conformance tests;
* ``tags`` declare capabilities (``"convex"``, ``"closed-form"``, ``"per-example"``, ...).

``reference_hypergradient`` defaults to dense implicit differentiation at ``solve(theta)``
(:func:`hpo_bench.core.task.implicit_reference`); override it when you have a closed form.
"""

from __future__ import annotations

import torch

from hpo_bench import Block, Space, Task, register_task
from hpo_bench.core.task import require

__all__ = ["MyTask"]


@register_task
class MyTask(Task):
    """Least squares with one L2 penalty per feature (template: rename and edit)."""

    name = "my_task"  # the registry name: unique, [A-Za-z0-9_-]
    tags = frozenset({"convex", "per-example", "reference:implicit-dense"})
    check_params = {"n": 40, "p": 4}

    def __init__(self, *, n: int = 200, p: int = 10, noise: float = 0.5, lam0: float = 0.1, seed: int = 0,
                 dtype="float64", device: str = "cpu") -> None:
        super().__init__(seed=seed, dtype=dtype, device=device)
        require(isinstance(n, int) and n >= 2, self.name, "n", "an integer >= 2", n)
        require(isinstance(p, int) and p >= 1, self.name, "p", "an integer >= 1", p)
        require(noise >= 0, self.name, "noise", ">= 0", noise)
        require(1e-6 <= lam0 <= 1e6, self.name, "lam0", "within [1e-6, 1e6]", lam0)
        gen = torch.Generator().manual_seed(seed)  # data from the seed, drawn on the CPU, then moved
        x = torch.randn(3 * n, p, generator=gen, dtype=torch.float64)
        w_true = torch.randn(p, generator=gen, dtype=torch.float64)
        y = x @ w_true + noise * torch.randn(3 * n, generator=gen, dtype=torch.float64)
        x, y = self.tensor(x), self.tensor(y)
        self.x_train, self.y_train = x[:n], y[:n]
        self.x_val, self.y_val = x[n:2 * n], y[n:2 * n]
        self.x_test, self.y_test = x[2 * n:], y[2 * n:]
        self._space = Space((Block("lam", kind="per_feature", size=p, low=1e-6, high=1e6, transform="log",
                                   init=lam0),))
        self.params = {"n": n, "p": p, "noise": noise, "lam0": lam0}

    @property
    def space(self) -> Space:
        return self._space

    @property
    def n_params(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    def init_params(self) -> torch.Tensor:
        return torch.zeros(self.n_params, dtype=self.dtype, device=self.device)

    def inner_loss(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        r = self.x_train @ w - self.y_train
        return 0.5 * (r @ r) / r.shape[0] + 0.5 * torch.sum(self.space.to_natural(theta) * w * w)

    def inner_loss_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        r = self.x_train[idx] @ w - self.y_train[idx]
        return 0.5 * (r @ r) / r.shape[0] + 0.5 * torch.sum(self.space.to_natural(theta) * w * w)

    def outer_loss(self, w: torch.Tensor) -> torch.Tensor:
        r = self.x_val @ w - self.y_val
        return (r @ r) / r.shape[0]

    def test_loss(self, w: torch.Tensor) -> torch.Tensor:
        r = self.x_test @ w - self.y_test
        return (r @ r) / r.shape[0]

    def solve(self, theta: torch.Tensor) -> torch.Tensor:
        """Exact: ``(X^T X / n + diag(lam)) w = X^T y / n``."""
        n = self.n_train
        h = self.x_train.T @ self.x_train / n + torch.diag(self.space.to_natural(theta.detach()))
        return torch.linalg.solve(h, self.x_train.T @ self.y_train / n)
