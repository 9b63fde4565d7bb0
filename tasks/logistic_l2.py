"""L2-regularised logistic regression with one penalty per feature (``logistic_l2``).

Parameters ``w = [beta (p), b]`` (the intercept ``b`` is not penalised); labels ``y in {-1, +1}``::

    inner(w, theta) = 1/n sum_i log(1 + exp(-y_i (x_i . beta + b))) + 1/2 sum_j lam_j beta_j^2

with ``lam = exp(theta)`` (one per feature, or one shared with ``per_feature = false``).
Validation and test losses are the mean logistic losses (no penalty).

Reference inner solve: damped Newton with the analytic Hessian
``H = X1^T diag(p_i (1 - p_i)) X1 / n + diag(lam, 0)`` (``X1 = [X, 1]``) to ``||grad|| <= 1e-12``
plus two polishing steps (:func:`hpo_bench.solvers.newton`). Reference hypergradient
(tag ``"reference:implicit-dense"``): the implicit function theorem with that dense
Hessian, ``dF/dtheta_j = -lam_j beta*_j q_j`` with ``H q = grad outer(w*)``.

Data: ``"breast_cancer"`` (scikit-learn's bundled set, 569 x 30, offline), shuffled by the
seed, split 50/25/25 and standardised with training statistics; or ``"synthetic"``: ``n``
training rows of ``p`` standard normal features, ``n_informative`` of them with weights
drawn from ``N(0, signal^2)``, labels drawn from the logistic model; or any other registered
binary set of :mod:`hpo_bench.data` (``"ijcnn1"``, ``"covtype.binary"``, the stand-in
``"ijcnn1-like"``, ...): its canonical split drawn by the seed, the first ``max_train`` rows of
the training split if given, standardised like breast_cancer; the larger class label is ``+1``.
Sparse sets too large to hold densified are refused up front.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from hpo_bench.registry import register_task
from hpo_bench.solvers import SolveCache, newton_or_raise
from hpo_bench.space import Block, Space
from hpo_bench.task import Linearization, Reference, Task, require

from ._datasets import DescribesDataset, dataset_rule, task_split

__all__ = ["LogisticL2", "LogisticLinearization"]

DATASETS = ("synthetic", "breast_cancer")


class LogisticLinearization(Linearization):
    """Analytic gradient, HVPs and cross-derivatives (no autograd graph)."""

    def __init__(self, task: LogisticL2, w: torch.Tensor, theta: torch.Tensor) -> None:
        self.task = task
        self._w = w.detach()
        self._theta = theta.detach()
        self._pen = task.penalty_vector(self._theta)
        self._curv = task.curvature(self._w)
        self.grad = task.inner_grad(self._w, self._theta)
        self.n_hvp = 0
        self.n_cross = 0

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        self.n_hvp += 1
        x1 = self.task.x1_train
        return x1.T @ (self._curv * (x1 @ v)) / x1.shape[0] + self._pen * v

    def diagonal(self) -> torch.Tensor:
        """``diag(X^T S X) / n + pen``: one pass over the data (the Jacobi preconditioner of ``cg``)."""
        x1 = self.task.x1_train
        return self._curv @ (x1 * x1) / x1.shape[0] + self._pen

    def strong_convexity_bound(self) -> float:
        """``lambda_min(H)`` from one ``(p + 1) x (p + 1)`` eigensolve, less its rounding margin; NaN if not positive.

        The L2 penalty alone certifies nothing (the intercept is not penalised), and the
        curvature ``S = diag(p_i (1 - p_i))`` saturates on separable data, so the bound is the
        eigenvalue of ``H = X1^T S X1 / n + diag(pen)`` itself, formed in float64 at the point:
        margin ``(4 (p + 1) + n) eps ||A||_F`` with ``A = |X1|^T S |X1| / n + diag(pen)`` (the
        rounding of forming ``H`` elementwise, plus a backward-stable eigensolver, Weyl).
        Above 512 weights the cheaper ``s_min lambda_min(X1^T X1 / n)`` (one cached eigensolve)
        replaces it.
        """
        t = self.task
        x1 = t.x1_train.double().cpu()
        curv = self._curv.double().cpu()
        pen = torch.diag(self._pen.double().cpu())
        eps = 2.0 ** -52
        if x1.shape[1] <= 512:
            h = (x1.T * curv) @ x1 / x1.shape[0] + pen
            a = (x1.abs().T * curv) @ x1.abs() / x1.shape[0] + pen
            margin = (4 * x1.shape[1] + x1.shape[0]) * eps * float(torch.linalg.matrix_norm(a))
            mu = float(torch.linalg.eigvalsh(h)[0]) - margin
        else:
            mu = float(curv.min()) * t.gram1_eig_low
        return mu if mu > 0 else math.nan

    def cross_norm_bound(self) -> float:
        """``||J||_2`` exactly: ``J`` is one column ``lam beta`` (shared penalty) or diagonal."""
        vals = self._pen[:-1] * self._w[:-1]
        return float(torch.linalg.vector_norm(vals)) if self._theta.shape[0] == 1 else float(vals.abs().max())

    def cross_vjp(self, v: torch.Tensor) -> torch.Tensor:
        self.n_cross += 1
        return self.task.chain_to_theta(self._theta, (self._w * v)[:-1])

    def hvp_batch(self, v: torch.Tensor) -> torch.Tensor:
        self.n_hvp += v.shape[1]
        x1 = self.task.x1_train
        return x1.T @ (self._curv.unsqueeze(1) * (x1 @ v)) / x1.shape[0] + self._pen.unsqueeze(1) * v

    def cross_jacobian(self) -> torch.Tensor:
        """``d grad_w / dtheta``: ``lam_j beta_j`` at ``(j, j)`` (one column, summed, for a shared penalty)."""
        p = self._w.shape[0]
        self.n_cross += p
        vals = self._pen[:-1] * self._w[:-1]  # d/dlog lam_j of lam_j beta_j
        jac = torch.zeros(p, self._theta.shape[0], dtype=self._w.dtype, device=self._w.device)
        if self._theta.shape[0] == 1:
            jac[:-1, 0] = vals
        else:
            jac[:-1] = torch.diag(vals)
        return jac

    def hessian(self) -> torch.Tensor:
        self.n_hvp += self._w.shape[0]
        return self.task.hessian_at(self._w, self._pen)


@register_task
class LogisticL2(DescribesDataset, Task):
    """L2 logistic regression, one penalty per feature (log-transformed); Newton reference."""

    name = "logistic_l2"
    tags = frozenset({"convex", "per-example", "reference:implicit-dense", "minibatch", "fused-oracle"})
    check_params = {"dataset": "synthetic", "n": 60, "p": 5}

    def __init__(self, *, dataset: str = "breast_cancer", n: int = 200, p: int = 10, n_informative: int | None = None,
                 signal: float = 2.0, n_val: int | None = None, n_test: int | None = None, per_feature: bool = True,
                 max_train: int | None = None, lam0: float = 0.01, lam_low: float = 1e-6, lam_high: float = 1e4,
                 seed: int = 0, dtype="float64", device: str = "cpu") -> None:
        super().__init__(seed=seed, dtype=dtype, device=device)
        nm = self.name
        fits, rule = dataset_rule(DATASETS, "binary")
        require(dataset in fits, nm, "dataset", rule, dataset)
        require(isinstance(per_feature, bool), nm, "per_feature", "true or false", per_feature)
        require(lam_low <= lam0 <= lam_high, nm, "lam0", f"within [lam_low, lam_high] = [{lam_low}, {lam_high}]",
                lam0)
        rng = np.random.default_rng(seed)
        if dataset != "synthetic":  # the canonical split (breast_cancer: all rows permuted by the seed, 50/25/25)
            parts = task_split(task=nm, dataset=dataset, fits=fits, seed=seed, max_train=max_train, rule=rule)
            x = np.vstack([parts.x_train, parts.x_val, parts.x_test])
            y = np.concatenate([parts.y_train, parts.y_val, parts.y_test])
            a, b = len(parts.y_train), len(parts.y_train) + len(parts.y_val)
            classes = np.unique(y)
            require(len(classes) == 2, nm, "dataset", "a set with exactly two labels", f"{dataset} with labels "
                    f"{classes[:5].tolist()}")
            y = (y == classes[1]).astype(np.int64)
        else:
            require(max_train is None, nm, "max_train", "omitted with dataset = 'synthetic' (use `n`)", max_train)
            for key, val in (("n", n), ("p", p)):
                require(isinstance(val, int) and val >= 1, nm, key, "an integer >= 1", val)
            k = max(p // 2, 1) if n_informative is None else n_informative
            require(isinstance(k, int) and 0 <= k <= p, nm, "n_informative", f"an integer in [0, p={p}]", k)
            require(signal >= 0, nm, "signal", ">= 0", signal)
            n_val = max(n // 2, 10) if n_val is None else n_val
            n_test = max(n // 2, 10) if n_test is None else n_test
            require(isinstance(n_val, int) and n_val >= 1, nm, "n_val", "an integer >= 1", n_val)
            require(isinstance(n_test, int) and n_test >= 1, nm, "n_test", "an integer >= 1", n_test)
            beta = np.zeros(p)
            beta[rng.choice(p, size=k, replace=False)] = signal * rng.standard_normal(k)
            total = n + n_val + n_test
            x = rng.standard_normal((total, p))
            y = (rng.random(total) < 1.0 / (1.0 + np.exp(-(x @ beta)))).astype(np.int64)
            a, b = n, n + n_val
        mu, sd = x[:a].mean(0), x[:a].std(0)
        x = (x - mu) / np.where(sd > 0, sd, 1.0)
        y = 2.0 * y - 1.0
        t = self.tensor
        ones = np.ones((len(y), 1))
        x1 = np.hstack([x, ones])
        self.x1_train, self.y_train = t(x1[:a]), t(y[:a])
        self.x1_val, self.y_val = t(x1[a:b]), t(y[a:b])
        self.x1_test, self.y_test = t(x1[b:]), t(y[b:])
        p_eff = x.shape[1]
        self._space = Space((Block("lam", kind="per_feature" if per_feature else "scalar",
                                   size=p_eff if per_feature else 1, low=lam_low, high=lam_high, transform="log",
                                   init=lam0),))
        if not per_feature:  # an instance tag: it depends on the parameters
            self.tags = type(self).tags | {"scalar-hyperparameter"}
        self._cache = SolveCache()
        self.params = {"dataset": dataset, "per_feature": per_feature, "lam0": lam0, "lam_low": lam_low,
                       "lam_high": lam_high}
        if dataset == "synthetic":
            self.params.update({"n": n, "p": p, "n_informative": n_informative, "signal": signal, "n_val": n_val,
                                "n_test": n_test})
        elif max_train is not None:
            self.params["max_train"] = max_train

    # -------------------------------------------------------------- structure
    def penalty_vector(self, theta: torch.Tensor) -> torch.Tensor:
        """One penalty per entry of ``w`` (0 for the intercept), differentiable in ``theta``."""
        lam = self.space.to_natural(theta)
        p = self.n_params - 1
        lam = lam.expand(p) if lam.shape[0] == 1 else lam
        return torch.cat([lam, lam.new_zeros(1)])

    def chain_to_theta(self, theta: torch.Tensor, g_lam: torch.Tensor) -> torch.Tensor:
        """``d/dtheta`` from ``d/dlam`` per feature (log transform: times ``lam``)."""
        lam = self.space.to_natural(theta)
        lam = lam.expand(g_lam.shape[0]) if lam.shape[0] == 1 else lam
        g = g_lam * lam
        return g.sum().reshape(1) if self.space.dim == 1 else g

    @functools.cached_property
    def gram1_eig_low(self) -> float:
        """A lower bound on ``lambda_min(X1^T X1 / n)`` (float64 eigensolve less ``4 p eps ||.||_F``, floored at 0)."""
        x1 = self.x1_train.double().cpu()
        g = x1.T @ x1 / x1.shape[0]
        low = float(torch.linalg.eigvalsh(g)[0]) - (4 * g.shape[0] + x1.shape[0]) * 2.0 ** -52 * float(
            torch.linalg.matrix_norm(g))
        return max(low, 0.0)

    def curvature(self, w: torch.Tensor) -> torch.Tensor:
        """``p_i (1 - p_i)`` per training example."""
        pr = torch.sigmoid(self.x1_train @ w)
        return pr * (1.0 - pr)

    def hessian_at(self, w: torch.Tensor, pen: torch.Tensor) -> torch.Tensor:
        x1 = self.x1_train
        return (x1.T * self.curvature(w)) @ x1 / x1.shape[0] + torch.diag(pen)

    # -------------------------------------------------------------- contract
    @property
    def space(self) -> Space:
        return self._space

    @property
    def n_params(self) -> int:
        return self.x1_train.shape[1]

    @property
    def n_train(self) -> int:
        return self.x1_train.shape[0]

    def init_params(self) -> torch.Tensor:
        return torch.zeros(self.n_params, dtype=self.dtype, device=self.device)

    def _data_loss(self, w, x1, y) -> torch.Tensor:
        return F.softplus(-y * (x1 @ w)).mean()

    def inner_loss(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self._data_loss(w, self.x1_train, self.y_train) + 0.5 * torch.sum(self.penalty_vector(theta) * w * w)

    def inner_loss_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return (self._data_loss(w, self.x1_train[idx], self.y_train[idx])
                + 0.5 * torch.sum(self.penalty_vector(theta) * w * w))

    def outer_loss(self, w: torch.Tensor) -> torch.Tensor:
        return self._data_loss(w, self.x1_val, self.y_val)

    # ------------------------------------------------ minibatch oracles (closed forms; tag "fused-oracle")
    @property
    def n_val(self) -> int:
        return self.x1_val.shape[0]

    def outer_loss_batch(self, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self._data_loss(w, self.x1_val[idx], self.y_val[idx])

    def inner_grad_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        x1, y = self.x1_train[idx], self.y_train[idx]
        return torch.addcmul(-x1.T @ (y * torch.sigmoid(-y * (x1 @ w))) / x1.shape[0],
                             self.penalty_vector(theta.detach()), w)

    def outer_grad_batch(self, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        x1, y = self.x1_val[idx], self.y_val[idx]
        return -x1.T @ (y * torch.sigmoid(-y * (x1 @ w))) / x1.shape[0]

    def inner_theta_grad_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The penalty's ``d/dtheta`` (the data term does not depend on theta): the same at every batch."""
        return self.chain_to_theta(theta.detach(), 0.5 * w[:-1] * w[:-1])

    def inner_hvp_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor,
                        v: torch.Tensor) -> torch.Tensor:
        x1 = self.x1_train[idx]
        pr = torch.sigmoid(x1 @ w)
        return torch.addcmul(x1.T @ (pr * (1 - pr) * (x1 @ v)) / x1.shape[0], self.penalty_vector(theta.detach()), v)

    def inner_cross_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor,
                          v: torch.Tensor) -> torch.Tensor:
        return self.chain_to_theta(theta.detach(), (w * v)[:-1])

    def inner_oracle_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor,
                           v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(grad, H_B v, J v)`` from one pass over the batch rows: ``X_B [w, v]`` in one product."""
        theta = theta.detach()
        x1, y = self.x1_train[idx], self.y_train[idx]
        b = x1.shape[0]
        xwv = x1 @ torch.stack((w, v), 1)
        pr = torch.sigmoid(xwv[:, 0])
        coef = torch.stack((-y * torch.sigmoid(-y * xwv[:, 0]), pr * (1 - pr) * xwv[:, 1]), 1)
        gh = x1.T @ coef / b
        pen = self.penalty_vector(theta)
        return torch.addcmul(gh[:, 0], pen, w), torch.addcmul(gh[:, 1], pen, v), \
            self.chain_to_theta(theta, (w * v)[:-1])

    def test_loss(self, w: torch.Tensor) -> torch.Tensor:
        return self._data_loss(w, self.x1_test, self.y_test)

    def extra_metrics(self, w: torch.Tensor, theta: torch.Tensor) -> dict[str, float]:
        """``test_accuracy``: the fraction of test examples with ``sign(x1 . w) = y`` (labels in {-1, +1})."""
        return {"test_accuracy": float(((self.x1_test @ w) * self.y_test > 0).double().mean())}

    def inner_grad(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        x1, y = self.x1_train, self.y_train
        s = torch.sigmoid(-y * (x1 @ w))
        return -x1.T @ (y * s) / x1.shape[0] + self.penalty_vector(theta.detach()) * w

    def outer_grad(self, w: torch.Tensor) -> torch.Tensor:
        x1, y = self.x1_val, self.y_val
        return -x1.T @ (y * torch.sigmoid(-y * (x1 @ w))) / x1.shape[0]

    def linearize(self, w: torch.Tensor, theta: torch.Tensor) -> Linearization:
        return LogisticLinearization(self, w, theta)

    def _solve(self, theta: torch.Tensor) -> torch.Tensor:
        pen = self.penalty_vector(theta)
        return newton_or_raise(self.name, lambda v: self.inner_loss(v, theta), lambda v: self.inner_grad(v, theta),
                               lambda v: self.hessian_at(v, pen), self.init_params())

    def solve(self, theta: torch.Tensor) -> torch.Tensor:
        """Newton to ``||grad|| <= 1e-12`` (+ 2 polishing steps), memoised on ``theta``."""
        return self._cache.get(theta, self._solve)

    def reference_hypergradient(self, theta: torch.Tensor) -> torch.Tensor:
        """Dense implicit differentiation at the Newton solution: ``-lam . beta* . H^{-1} grad outer``."""
        return self.reference(theta).grad

    def reference(self, theta: torch.Tensor, warm=None) -> Reference:
        """``F``, ``dF/dtheta`` and ``w*`` from one Newton solve and one factorisation at it (route ``"dense"``)."""
        theta = theta.detach()
        w = self.solve(theta)
        h = self.hessian_at(w, self.penalty_vector(theta))
        q = torch.linalg.solve(h, self.outer_grad(w))
        grad = -self.chain_to_theta(theta, (w * q)[:-1])
        return Reference(value=float(self.outer_loss(w)), grad=grad, w=w, bound=math.nan, route="dense")
