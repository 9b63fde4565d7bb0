"""Shared maths of the quadratic (ridge-type) tasks.

Inner objective, with penalty vector ``d = d(theta)`` (one entry per weight)::

    inner(w, theta) = a/n ||X w - y||^2 + b * sum_j d_j w_j^2

so that, with ``G = X^T X / n`` and ``c = X^T y / n`` (cached once),

    H  = 2a G + 2b diag(d)                      (constant in w)
    w* = H^{-1} (2a c)
    dF/dd_j = -2b w*_j q_j,   q = H^{-1} grad outer(w*)      (implicit function theorem)

and ``dF/dtheta`` follows from ``d(theta)`` by the chain rule (sum over a scalar block,
times ``lam`` for a log transform). The outer and test losses are mean squared errors.
"""

from __future__ import annotations

import math
from functools import cached_property

import torch

from hpo_bench.space import Space
from hpo_bench.task import Linearization, Reference, Task

__all__ = ["QuadraticTask", "QuadraticLinearization"]

_EPS = 2.0 ** -52  # float64 unit roundoff x 2: margins of the certified eigenvalue bounds


class QuadraticLinearization(Linearization):
    """HVPs from the cached Gram matrix: ``H v = 2a G v + 2b d * v`` (a p x p mat-vec, not n x p).

    For ``p <= DENSE_MAX`` the first HVP materialises ``H`` (one pass over ``G``, the cost of
    about one HVP), so every further HVP is a single BLAS gemv: iterative solvers at small
    p are bound by per-operation overhead, not flops. Larger ``p`` uses the fused
    ``addmv`` on ``G`` and keeps memory at one p x p matrix.
    """

    DENSE_MAX = 2048

    def __init__(self, task: QuadraticTask, w: torch.Tensor, theta: torch.Tensor) -> None:
        self.task = task
        self._w = w.detach()
        self._theta = theta.detach()
        self._d = task.penalty_vector(self._theta)
        self._d2 = 2 * task.b * self._d
        self._h: torch.Tensor | None = None
        self._grad: torch.Tensor | None = None
        self.n_hvp = 0
        self.n_cross = 0

    @property
    def grad(self) -> torch.Tensor:
        """``grad_w inner`` at the point (computed on first use: most methods never need it)."""
        if self._grad is None:
            t = self.task
            self._grad = 2 * t.a * (t.gram @ self._w - t.xty) + self._d2 * self._w
        return self._grad

    def dense(self) -> torch.Tensor | None:
        """``H = 2a G + diag(2b d)``, built once from the cached Gram matrix for ``p <= DENSE_MAX``."""
        if self._h is None and self._w.shape[0] <= self.DENSE_MAX:
            t = self.task
            self._h = t.gram.mul(2 * t.a)
            self._h.diagonal().add_(self._d2)
        return self._h

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        self.n_hvp += 1
        h = self.dense()
        if h is not None:
            return torch.mv(h, v)
        t = self.task  # one fused BLAS gemv: (2b d) * v + 2a G v
        return torch.addmv(self._d2 * v, t.gram, v, alpha=2 * t.a)

    def diagonal(self) -> torch.Tensor:
        return 2 * self.task.a * self.task.gram_diag + self._d2

    def strong_convexity_bound(self) -> float:
        """``lambda_min(H)``, certified: ``2a lambda_min(G) + 2b min(d)`` (Weyl), exact in closed form for p = 2.

        ``lambda_min(G)`` comes from :attr:`QuadraticTask.gram_eig_low` (an eigensolve once per
        task, minus its rounding margin, floored at 0: ``G`` is positive semi-definite). For two
        weights (``seed_toy``) the smaller root of the 2 x 2 characteristic polynomial is used,
        less a rounding margin of ``8 eps (|h11| + |h22| + 2|h12|)``. NaN when the bound is not positive (e.g. raw
        negative ``lam``: the problem may not be convex there, and nothing is certified).
        """
        t = self.task
        if self._w.shape[0] == 2:
            h = (t.gram.mul(2 * t.a) + torch.diag(self._d2)).tolist()
            (h11, h12), (_, h22) = h
            mu = 0.5 * (h11 + h22) - 0.5 * math.hypot(h11 - h22, 2 * h12)
            mu -= 8 * torch.finfo(self._w.dtype).eps * (abs(h11) + abs(h22) + 2 * abs(h12))
        else:
            mu = 2 * t.a * t.gram_eig_low + float(self._d2.min())
        return mu if mu > 0 else math.nan

    def cross_norm_bound(self) -> float:
        """``||J||_2`` exactly: ``J = 2b diag(w) dd/dtheta`` is one column (scalar) or diagonal."""
        t = self.task
        col = 2 * t.b * self._w * (torch.exp(self._theta) if t.space.blocks[0].transform == "log" else 1.0)
        return float(torch.linalg.vector_norm(col)) if t.space.dim == 1 else float(col.abs().max())

    def cross_vjp(self, v: torch.Tensor) -> torch.Tensor:
        self.n_cross += 1
        return self.task.chain_to_theta(self._theta, 2 * self.task.b * self._w * v)

    def hvp_batch(self, v: torch.Tensor) -> torch.Tensor:
        self.n_hvp += v.shape[1]
        t = self.task
        return torch.addmm(self._d2.unsqueeze(1) * v, t.gram, v, alpha=2 * t.a)

    def cross_jacobian(self) -> torch.Tensor:
        """``2b diag(w) dd/dtheta``: a column per hyperparameter."""
        t = self.task
        self.n_cross += self._w.shape[0]
        scale = torch.exp(self._theta) if t.space.blocks[0].transform == "log" else torch.ones_like(self._theta)
        if t.space.dim == 1:
            return (2 * t.b * self._w * scale).unsqueeze(1)
        return torch.diag(2 * t.b * self._w * scale)

    def hessian(self) -> torch.Tensor:
        self.n_hvp += self._w.shape[0]
        return self.task.hessian(self._theta)


class QuadraticTask(Task):
    """Base of ridge-type tasks. Subclasses set the data and call :meth:`_setup`.

    Tags: ``"gram-matrix"`` (it keeps ``gram``, ``xty``, ``a``, ``b``, ``x_val``, ``y_val``: what
    ``grid_eig`` needs), ``"hessian-diagonal"`` (its linearization has ``diagonal()``: CG's Jacobi
    preconditioner) and, per instance, ``"scalar-hyperparameter"`` when the space has one entry.
    """

    tags = frozenset({"closed-form", "quadratic", "convex", "per-example", "gram-matrix", "hessian-diagonal"})
    a: float = 0.5
    b: float = 0.5

    def _setup(self, x_train, y_train, x_val, y_val, x_test, y_test, space: Space, w0=None) -> None:
        t = self.tensor
        self.x_train, self.y_train = t(x_train), t(y_train).reshape(-1)
        self.x_val, self.y_val = t(x_val), t(y_val).reshape(-1)
        self.x_test, self.y_test = t(x_test), t(y_test).reshape(-1)
        n = self.x_train.shape[0]
        self.gram = self.x_train.T @ self.x_train / n
        self.xty = self.x_train.T @ self.y_train / n
        self.gram_diag = torch.diagonal(self.gram).clone()
        self._space = space
        if space.dim == 1:  # instance tags: they depend on the parameters (ridge vs seed_toy per_weight)
            self.tags = type(self).tags | {"scalar-hyperparameter"}
        p = self.x_train.shape[1]
        self._w0 = torch.zeros(p, dtype=self.dtype, device=self.device) if w0 is None else t(w0).reshape(-1)

    @cached_property
    def gram_eig_low(self) -> float:
        """A lower bound on ``lambda_min(G)``: the computed one less ``4 p eps ||G||_F`` (backward-stable
        eigensolver, Weyl), floored at 0 (``G = X^T X / n`` is positive semi-definite)."""
        g = self.gram.double().cpu()
        low = float(torch.linalg.eigvalsh(g)[0]) - 4 * g.shape[0] * _EPS * float(torch.linalg.matrix_norm(g))
        return max(low, 0.0)

    @cached_property
    def val_xtx(self) -> torch.Tensor:
        """``X_v^T X_v`` of the validation rows (built on first use, then kept like :attr:`gram`)."""
        return self.x_val.T @ self.x_val

    @cached_property
    def val_xty(self) -> torch.Tensor:
        """``X_v^T y_v`` (built on first use, then kept)."""
        return self.y_val @ self.x_val

    # -------------------------------------------------------------- contract
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
        return self._w0.clone()

    def penalty_vector(self, theta: torch.Tensor) -> torch.Tensor:
        """One penalty per weight, differentiable in ``theta``."""
        lam = self.space.to_natural(theta)
        return lam.expand(self.n_params) if lam.shape[0] == 1 else lam

    def chain_to_theta(self, theta: torch.Tensor, g_d: torch.Tensor) -> torch.Tensor:
        """Map a gradient with respect to the penalty vector onto ``theta``."""
        g = g_d.sum().reshape(1) if self.space.dim == 1 else g_d
        block = self.space.blocks[0]
        return g * torch.exp(theta) if block.transform == "log" else g

    def inner_loss(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        r = self.x_train @ w - self.y_train
        return self.a * (r @ r) / r.shape[0] + self.b * torch.sum(self.penalty_vector(theta) * w * w)

    def inner_loss_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        r = self.x_train[idx] @ w - self.y_train[idx]
        return self.a * (r @ r) / r.shape[0] + self.b * torch.sum(self.penalty_vector(theta) * w * w)

    def outer_loss(self, w: torch.Tensor) -> torch.Tensor:
        r = self.x_val @ w - self.y_val
        return (r @ r) / r.shape[0]

    def test_loss(self, w: torch.Tensor) -> torch.Tensor:
        r = self.x_test @ w - self.y_test
        return (r @ r) / r.shape[0]

    # ------------------------------------------------------- closed forms
    def hessian(self, theta: torch.Tensor) -> torch.Tensor:
        return 2 * self.a * self.gram + torch.diag(2 * self.b * self.penalty_vector(theta.detach()))

    def _factor(self, theta: torch.Tensor) -> torch.Tensor:
        chol, info = torch.linalg.cholesky_ex(self.hessian(theta))
        if int(info) != 0:
            raise FloatingPointError(
                f"{self.name}: the inner problem is not strictly convex at lam="
                f"{self.space.to_natural(theta.detach()).tolist()} (Hessian not positive definite)"
            )
        return chol

    def solve(self, theta: torch.Tensor) -> torch.Tensor:
        chol = self._factor(theta)
        return torch.cholesky_solve((2 * self.a * self.xty).unsqueeze(1), chol).squeeze(1)

    def reference_hypergradient(self, theta: torch.Tensor) -> torch.Tensor:
        """Closed form: ``-2b w* . H^{-1} grad outer(w*)`` chained onto ``theta`` (:meth:`reference`'s gradient)."""
        return self.reference(theta).grad

    def reference(self, theta: torch.Tensor, warm=None) -> Reference:
        """``F``, ``dF/dtheta`` and ``w*`` from ONE Cholesky factorisation of ``H`` (route ``"dense"``)."""
        theta = theta.detach()
        chol = self._factor(theta)
        w = torch.cholesky_solve((2 * self.a * self.xty).unsqueeze(1), chol).squeeze(1)
        r = self.x_val @ w - self.y_val
        gout = self.x_val.T @ (r * (2.0 / r.shape[0]))  # scale r, not a copy of X_v^T
        q = torch.cholesky_solve(gout.unsqueeze(1), chol).squeeze(1)
        grad = self.chain_to_theta(theta, -2 * self.b * w * q)
        return Reference(value=float(r @ r) / r.shape[0], grad=grad, w=w, bound=math.nan, route="dense")

    def example_quadratic(self, theta: torch.Tensor) -> dict:
        """Per-example structure: ``loss_i = a (x_i . w - y_i)^2 + sum_j d_j w_j^2`` with ``d = b * penalty``.

        Lets :mod:`hpo_bench.inner` run per-example solvers on scalars for tiny models.
        """
        return {"x": self.x_train, "y": self.y_train, "a": self.a,
                "d": self.b * self.penalty_vector(theta.detach())}

    def example_grad_fn(self, theta: torch.Tensor):
        """Closed form: ``loss_i = a r_i^2 + b d.w^2``, ``grad = 2a x_i r_i + 2b d * w``, ``r_i = x_i.w - y_i``."""
        d2 = 2 * self.b * self.penalty_vector(theta.detach())
        d = self.b * self.penalty_vector(theta.detach())
        rows = list(self.x_train.unbind(0))
        ys = list(self.y_train.unbind(0))
        a, a2 = self.a, 2 * self.a

        def f(w: torch.Tensor, i: int):
            r = torch.dot(rows[i], w) - ys[i]
            return a * r * r + torch.dot(d, w * w), (a2 * r) * rows[i] + d2 * w

        return f

    def linearize(self, w: torch.Tensor, theta: torch.Tensor) -> Linearization:
        return QuadraticLinearization(self, w, theta)

    def inner_grad(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return 2 * self.a * (self.gram @ w - self.xty) + 2 * self.b * self.penalty_vector(theta) * w

    def outer_grad(self, w: torch.Tensor) -> torch.Tensor:
        r = self.x_val @ w - self.y_val
        return self.x_val.T @ (r * (2.0 / r.shape[0]))  # scale r, not a copy of X_v^T
