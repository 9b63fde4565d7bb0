"""Shared maths of the quadratic (ridge-type) tasks.

Inner objective, with penalty vector ``d = d(theta)`` (one entry per weight)::

    inner(w, theta) = a/n ||X w - y||^2 + b * sum_j d_j w_j^2

so that, with ``G = X^T X / n`` and ``c = X^T y / n`` (cached once),

    H  = 2a G + 2b diag(d)                      (constant in w)
    w* = H^{-1} (2a c)
    dF/dd_j = -2b w*_j q_j,   q = H^{-1} grad outer(w*)      (implicit function theorem)

and ``dF/dtheta`` follows from ``d(theta)`` by the chain rule (sum over a scalar block,
times ``lam`` for a log transform). The outer and test losses are mean squared errors.

Data may be dense or ``scipy.sparse`` (held as torch sparse CSR, :class:`~hpo_bench.tasks._sparse_ops.Design`).
The Gram matrix ``G`` is built only for dense data with ``n >= p``; otherwise ``X`` itself is the
operator, ``H v = 2a/n X^T (X v) + 2b d * v``, and nothing ``p x p`` (or a dense ``n x p`` copy of
a sparse ``X``) is ever formed.

Certified references (:meth:`QuadraticTask.reference`). Route ``"dense"`` (one Cholesky factorisation
for ``w*`` and ``q``) where ``p <= REFERENCE_DENSE_MAX`` and the data are dense; route ``"cg"``
(Jacobi-preconditioned conjugate gradients on ``H w = 2a c`` and ``H q = grad outer(w)`` to the
relative residual ``REFERENCE_RTOL``, or as far as it goes) otherwise, or where the task parameter
``reference = "matrix_free"`` asks for it. Both routes report the same a-posteriori bound on the
hypergradient error, computed from the true residuals of the ``w`` and ``q`` they return.

Derivation of the bound. ``H >= mu I`` with ``mu = 2b min(d) + 2a lambda_min(G)`` (Weyl; the
second term where the Gram eigenvalue is known, else 0, since ``G`` is positive semi-definite).
For any ``w``, ``w - w* = H^{-1} r_w`` with ``r_w = H w - 2a c``, so ``e_w = ||w - w*|| <= ||r_w|| / mu``.
The outer gradient ``v(w) = 2/n_v X_v^T (X_v w - y_v)`` is Lipschitz with constant
``L_v = 2 ||X_v||_2^2 / n_v <= 2 ||X_v||_F^2 / n_v``, so ``||v(w) - v(w*)|| <= L_v e_w``; with
``q* = H^{-1} v(w*)`` and ``r_q = H q - v(w)``, ``H (q - q*) = r_q + v(w) - v(w*)``, hence
``e_q = ||q - q*|| <= (||r_q|| + L_v e_w) / mu``. The hypergradient is ``g = -2b c_theta . w . q``
(``c_theta = dd/dtheta``: ``lam`` for a log transform, 1 for none; summed for a scalar penalty), and
``w q - w* q* = w (q - q*) + (w - w*) q - (w - w*)(q - q*)``, so

* per-feature: ``||g - g*|| <= 2b (||c w||_inf e_q + ||c q||_inf e_w + ||c||_inf e_w e_q)``;
* scalar: ``|g - g*| <= 2b |c| (||w|| e_q + ||q|| e_w + e_w e_q)`` (Cauchy-Schwarz).

Rounding. The residuals ``r_w``, ``r_q`` (with ``c``, ``v(w)`` and ``d(theta)``) are evaluated in extended
precision (numpy's longdouble, :meth:`~hpo_bench.tasks._sparse_ops.Design.ext`), so they are the
residuals of the exact problem up to ``gamma (|X|^T (|X| |x|) 2a/n + 2b d |x| + |rhs|)`` entrywise,
``gamma = 1.01 (k_r + k_c + 8) eps_ext`` with ``k_r``, ``k_c`` the most non-zeros in a row and a column of
``X`` (the lengths of the dot products; ``p`` and ``n`` for dense data; Higham, *Accuracy and
Stability*, 2nd ed., eq. 3.5); these norms are added to ``||r_w||`` and ``||r_q||``, and ``(p + 8) eps``
times the sum of ``|g_j|`` terms covers the float64 products forming ``g``. The bound is on
``||g - g*||_2`` (absolute) for the exact problem at the given ``theta``.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import ClassVar

import numpy as np
import torch

from hpo_bench.hypergrad import conjugate_gradient
from hpo_bench.core.solvers import SolveCache
from hpo_bench.core.space import Space
from hpo_bench.core.task import Linearization, Reference, Task

from ._sparse_ops import Design, cg_as_far_as_it_goes

__all__ = ["QuadraticTask", "QuadraticLinearization", "REFERENCE_MODES"]

#: Values of the ``reference`` task parameter: the automatic choice, or one route forced.
REFERENCE_MODES = ("auto", "dense", "matrix_free")

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
            if t.gram is None:
                self._grad = t.inner_grad(self._w, self._theta)
            else:
                self._grad = 2 * t.a * (t.gram @ self._w - t.xty) + self._d2 * self._w
        return self._grad

    def dense(self) -> torch.Tensor | None:
        """``H = 2a G + diag(2b d)``, built once from the cached Gram matrix for ``p <= DENSE_MAX`` (``None``
        where the task keeps no Gram matrix: sparse data, or ``n < p``)."""
        if self._h is None and self.task.gram is not None and self._w.shape[0] <= self.DENSE_MAX:
            t = self.task
            self._h = t.gram.mul(2 * t.a)
            self._h.diagonal().add_(self._d2)
        return self._h

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        self.n_hvp += 1
        h = self.dense()
        if h is not None:
            return torch.mv(h, v)
        t = self.task
        if t.gram is None:
            return t.hvp_operator(self._d2, v)
        # one fused BLAS gemv: (2b d) * v + 2a G v
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
        if t.gram is None:
            xt = t.design_train
            return xt.rmm(xt.mm(v)) * (2 * t.a / xt.n) + self._d2.unsqueeze(1) * v
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
    #: ``reference = "auto"`` takes the dense route (one Cholesky factorisation) up to this many weights
    #: with dense data, and certified CG above it or for sparse data (see the module docstring).
    REFERENCE_DENSE_MAX: ClassVar[int] = 2000
    #: :meth:`reference_bound` switches to extended-precision Gram matrices (dense data, ``n >= p``) after
    #: ``max(BOUND_GRAM_AFTER, p // 2)`` calls on one instance (:meth:`Design.ext_gram`).
    BOUND_GRAM_AFTER: ClassVar[int] = 200
    #: The relative residual the matrix-free references' CG solves aim for.
    REFERENCE_RTOL: ClassVar[float] = 1e-12
    #: The most CG iterations per matrix-free solve (then the bound says how far it got).
    REFERENCE_MAX_ITER: ClassVar[int] = 20000
    reference_mode: str = "auto"

    def _setup(self, x_train, y_train, x_val, y_val, x_test, y_test, space: Space, w0=None,
               reference: str = "auto") -> None:
        t = self.tensor
        self.reference_mode = reference
        self.design_train = Design(x_train, dtype=self.dtype, device=self.device)
        self.design_val = Design(x_val, dtype=self.dtype, device=self.device)
        self.design_test = Design(x_test, dtype=self.dtype, device=self.device)
        self.sparse = self.design_train.sparse
        self.x_train, self.y_train = self.design_train.mat, t(y_train).reshape(-1)
        self.x_val, self.y_val = self.design_val.mat, t(y_val).reshape(-1)
        self.x_test, self.y_test = self.design_test.mat, t(y_test).reshape(-1)
        n, p = self.design_train.shape
        tags = set(type(self).tags)
        if not self.sparse and n >= p:
            self.gram = self.x_train.T @ self.x_train / n
            self.xty = self.x_train.T @ self.y_train / n
            self.gram_diag = torch.diagonal(self.gram).clone()
        else:  # X is the cheaper operator: no p x p matrix (and for sparse data no dense X)
            self.gram = None
            self.xty = self.design_train.rmv(self.y_train) / n
            self.gram_diag = self.design_train.col_sq_norms() / n
            tags.discard("gram-matrix")
        if self.sparse:  # per-example rows of a CSR matrix: not offered (see inner_loss_batch)
            tags.discard("per-example")
        self._space = space
        if space.dim == 1:  # instance tags: they depend on the parameters (ridge vs seed_toy per_weight)
            tags.add("scalar-hyperparameter")
        if tags != set(type(self).tags):
            self.tags = frozenset(tags)
        self._w0 = torch.zeros(p, dtype=self.dtype, device=self.device) if w0 is None else t(w0).reshape(-1)
        self._mf_cache = SolveCache()
        self._bound_calls = 0  # reference_bound calls on this instance (its Gram route starts after enough)

    @cached_property
    def gram_eig_low(self) -> float:
        """A lower bound on ``lambda_min(G)``: the computed one less ``4 p eps ||G||_F`` (backward-stable
        eigensolver, Weyl), floored at 0 (``G = X^T X / n`` is positive semi-definite); 0 where no Gram
        matrix is kept (``G`` is still positive semi-definite)."""
        if self.gram is None:
            return 0.0
        g = self.gram.double().cpu()
        low = float(torch.linalg.eigvalsh(g)[0]) - 4 * g.shape[0] * _EPS * float(torch.linalg.matrix_norm(g))
        return max(low, 0.0)

    @cached_property
    def outer_lipschitz(self) -> float:
        """Certified ``L_v >= 2 ||X_v||_2^2 / n_v`` (the outer gradient's Lipschitz constant): the least of
        ``||X_v||_F^2``, ``||X_v||_1 ||X_v||_inf`` (Schur) and, for dense data with ``p <= REFERENCE_DENSE_MAX``,
        ``lambda_max(X_v^T X_v)`` from an eigensolve plus ``4 p eps ||.||_F`` (Weyl), each with a rounding margin."""
        xv = self.design_val
        eps = torch.finfo(torch.float64).eps
        a = xv.abs()
        ones_p = torch.ones(xv.p, dtype=self.dtype, device=self.device)
        ones_n = torch.ones(xv.n, dtype=self.dtype, device=self.device)
        schur = float(a.rmv(ones_n).max()) * float(a.mv(ones_p).max()) if xv.n and xv.p else 0.0
        best = min(xv.fro2(), schur) * (1 + (xv.max_row_nnz + xv.max_col_nnz + 4) * eps)
        if not xv.sparse and xv.p <= self.REFERENCE_DENSE_MAX:
            g = self.val_xtx.double().cpu()
            top = float(torch.linalg.eigvalsh(g)[-1]) + 4 * g.shape[0] * eps * float(torch.linalg.matrix_norm(g))
            best = min(best, top * (1 + (xv.n + 4) * eps))
        return 2.0 * best / xv.n

    def hvp_operator(self, d2: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``H v = 2a/n X^T (X v) + d2 * v`` with ``X`` as the operator (``d2 = 2b d``)."""
        xt = self.design_train
        return torch.add(d2 * v, xt.rmv(xt.mv(v)), alpha=2 * self.a / xt.n)

    def _h_apply(self, d2: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``H v`` on the task's cheapest path (the Gram matrix where it is kept)."""
        if self.gram is None:
            return self.hvp_operator(d2, v)
        return torch.addmv(d2 * v, self.gram, v, alpha=2 * self.a)

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

    def _no_rows(self) -> None:
        if self.sparse:
            raise NotImplementedError(f"task {self.name!r}: per-example losses are not offered with sparse data "
                                      "(row slices of a CSR matrix per step; the instance has no 'per-example' tag)")

    def inner_loss_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        self._no_rows()
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
        """Dense ``H``: from the Gram matrix, or formed from dense ``X`` up to ``REFERENCE_DENSE_MAX`` weights;
        refused for sparse data and larger ``p`` (use a matrix-free method, e.g. ``cg``)."""
        d2 = torch.diag(2 * self.b * self.penalty_vector(theta.detach()))
        if self.gram is not None:
            return 2 * self.a * self.gram + d2
        n, p = self.design_train.shape
        if p > self.REFERENCE_DENSE_MAX:
            raise ValueError(f"task {self.name!r}: a dense Hessian is refused at p = {p} > "
                             f"{self.REFERENCE_DENSE_MAX}; use a matrix-free method (cg)")
        if self.sparse:  # X^T X from the CSR factors (p x p, never a dense X)
            xtx = self.design_train.scipy()
            xtx = self.tensor((xtx.T @ xtx).toarray())
        else:
            xtx = self.x_train.T @ self.x_train
        return (2 * self.a / n) * xtx + d2

    def _factor(self, theta: torch.Tensor) -> torch.Tensor:
        chol, info = torch.linalg.cholesky_ex(self.hessian(theta))
        if int(info) != 0:
            raise FloatingPointError(
                f"{self.name}: the inner problem is not strictly convex at lam="
                f"{self.space.to_natural(theta.detach()).tolist()} (Hessian not positive definite)"
            )
        return chol

    def reference_route(self) -> str:
        """``"dense"`` or ``"cg"``: what :meth:`solve` and :meth:`reference` use for this instance."""
        if self.reference_mode == "dense":
            return "dense"
        if self.reference_mode == "matrix_free" or self.sparse or self.n_params > self.REFERENCE_DENSE_MAX:
            return "cg"
        return "dense"

    def solve(self, theta: torch.Tensor) -> torch.Tensor:
        if self.reference_route() == "cg":
            return self._mf_cache.get(theta, lambda th: self._cg_solve(th, 2 * self.a * self.xty, None)[0])
        chol = self._factor(theta)
        return torch.cholesky_solve((2 * self.a * self.xty).unsqueeze(1), chol).squeeze(1)

    def solve_from(self, theta: torch.Tensor, w0: torch.Tensor | None) -> torch.Tensor:
        """:meth:`solve`, with the CG route's solve started from ``w0`` (the same ``REFERENCE_RTOL``; the dense
        route factorises and ignores it)."""
        if self.reference_route() != "cg" or w0 is None:
            return self.solve(theta)
        return self._mf_cache.get(theta, lambda th: self._cg_solve(th, 2 * self.a * self.xty, w0.detach())[0])

    def solve_to(self, theta: torch.Tensor, w0: torch.Tensor | None, tol: float) -> torch.Tensor:
        """CG on ``H w = 2a X^T y`` (``= -grad_w h(0)``) to relative residual ``tol``, from ``w0``, uncached; at
        ``tol <= REFERENCE_RTOL``, or on the dense route (a factorisation has no tolerance), :meth:`solve_from`."""
        if self.reference_route() != "cg" or not tol > self.REFERENCE_RTOL:
            return self.solve_from(theta, w0)
        return self._cg_solve(theta.detach(), 2 * self.a * self.xty, None if w0 is None else w0.detach(), tol=tol)[0]

    def _cg_solve(self, theta: torch.Tensor, rhs: torch.Tensor, x0: torch.Tensor | None, tol: float | None = None):
        """Jacobi-preconditioned CG on ``H x = rhs`` to relative residual ``tol`` (default ``REFERENCE_RTOL``)."""
        d2 = 2 * self.b * self.penalty_vector(theta.detach())
        diag = 2 * self.a * self.gram_diag + d2
        if x0 is not None and (x0.shape != rhs.shape or not bool(torch.isfinite(x0).all())):
            x0 = None
        return cg_as_far_as_it_goes(lambda v: self._h_apply(d2, v), rhs, tol=self.REFERENCE_RTOL if tol is None else tol,
                                    max_iter=self.REFERENCE_MAX_ITER, x0=x0, precond=1.0 / diag)

    def reference_mu(self, theta: torch.Tensor) -> float:
        """Certified ``mu`` with ``H >= mu I``: ``2b min(d) (1 - 4 eps)`` plus ``2a lambda_min(G)`` where the Gram
        eigenvalue is known or cheap (a Gram matrix with ``p <= REFERENCE_DENSE_MAX``), else plus 0."""
        d = self.penalty_vector(theta.detach())
        mu = 2 * self.b * float(d.min()) * (1 - 4 * _EPS)
        if self.gram is not None and ("gram_eig_low" in self.__dict__ or self.n_params <= self.REFERENCE_DENSE_MAX):
            mu += 2 * self.a * self.gram_eig_low
        return mu

    def _gram_bound_after(self) -> int:
        """The number of :meth:`reference_bound` calls after which it uses the extended Gram matrices."""
        return max(self.BOUND_GRAM_AFTER, self.design_train.p // 2)

    def reference_bound(self, theta: torch.Tensor, w: torch.Tensor, q: torch.Tensor, v: torch.Tensor) -> float:
        """The certified bound on ``||g - dF/dtheta||_2`` for ``g`` formed from ``w`` and ``q`` (module docstring).

        The residuals ``r_w``, ``r_q`` (and ``c``, ``v(w)``, ``d = d(theta)``) are evaluated in extended precision
        (:meth:`Design.ext`), so their rounding margin is ``gamma`` with the extended eps. On dense data with
        ``n >= p``, after :meth:`_gram_bound_after` calls on the instance, the products with ``X^T X`` use the
        extended Gram matrices of :meth:`Design.ext_gram` (``p^2`` per product instead of ``2 n p``; the same
        margin covers their rounding): at 5000 x 1000 a bound then takes about 25 ms instead of 120 ms.
        """
        theta = theta.detach()
        mu = self.reference_mu(theta)
        if not mu > 0:
            return math.nan
        eps = torch.finfo(w.dtype).eps
        xt, xv = self.design_train, self.design_val
        n, nv = xt.n, xv.n
        mv, rmv, eps_x, ext = xt.ext()
        mv_v, rmv_v, eps_xv, _ = xv.ext()
        block = self.space.blocks[0]

        def npx(t):
            return t.detach().cpu().double().numpy().astype(ext)

        th = npx(theta)
        lam_x = np.exp(th) if block.transform == "log" else th
        d_x = np.full(xt.p, lam_x[0], dtype=ext) if lam_x.shape[0] == 1 else lam_x
        w_x, q_x, y_x, yv_x = npx(w), npx(q), npx(self.y_train), npx(self.y_val)
        a2, b2 = ext(2 * self.a), ext(2 * self.b)
        self._bound_calls += 1
        grams = None
        if self._bound_calls > self._gram_bound_after() and xt.n >= xt.p and xv.n >= xv.p:
            # many bounds on one dense instance (an oracle, a long cell): the extended Gram matrices, once, make
            # each bound ~10x cheaper; past p / 2 calls they have paid for themselves (a count: deterministic)
            grams = (xt.ext_gram(self.y_train), xv.ext_gram(self.y_val))
            grams = None if grams[0] is None or grams[1] is None else grams
        if grams is not None:
            (g_t, xty_t), (g_v, xty_v) = grams
            c_x = a2 * xty_t / n

            def h_x(x):
                return a2 * np.dot(g_t, x) / n + b2 * d_x * x

            v_x = ext(2.0) * (np.dot(g_v, w_x) - xty_v) / nv
        else:
            c_x = a2 * rmv(y_x) / n

            def h_x(x):
                return a2 * rmv(mv(x)) / n + b2 * d_x * x

            v_x = ext(2.0) * rmv_v(mv_v(w_x) - yv_x) / nv
        rw = np.sqrt(np.sum((h_x(w_x) - c_x) ** 2))
        rq = np.sqrt(np.sum((h_x(q_x) - v_x) ** 2))
        at, av = xt.abs(), xv.abs()
        gam = 1.01 * (xt.max_row_nnz + xt.max_col_nnz + 8) * eps_x
        gam_v = 1.01 * (xv.max_row_nnz + xv.max_col_nnz + 8) * eps_xv
        d2 = 2 * self.b * self.penalty_vector(theta)

        def habs(x):
            x = x.abs()
            return at.rmv(at.mv(x)) * (2 * self.a / n) + d2.abs() * x

        nrm = torch.linalg.vector_norm
        c_abs = at.rmv(self.y_train.abs()) * (2 * self.a / n)
        m_w = float(nrm(gam * (habs(w) + 2 * c_abs)))  # the residual's rounding and that of c
        m_v = float(nrm(gam_v * (2.0 / nv) * av.rmv(av.mv(w.abs()) + self.y_val.abs())))
        m_q = float(nrm(gam * (habs(q) + v.abs()))) + m_v
        e_w = (float(rw) + m_w) * (1 + 4 * eps) / mu
        e_q = (float(rq) + m_q + self.outer_lipschitz * e_w) * (1 + 4 * eps) / mu
        lam = torch.exp(theta) if block.transform == "log" else theta
        terms = (2 * self.b) * lam * (w * q)
        if self.space.dim > 1:
            cw, cq = (lam * w).abs().max(), (lam * q).abs().max()
            err = 2 * self.b * (float(cw) * e_q + float(cq) * e_w + float(lam.abs().max()) * e_w * e_q)
            err += 8 * eps * float(nrm(terms))
        else:
            c = float(lam.abs().max())
            err = 2 * self.b * c * (float(nrm(w)) * e_q + float(nrm(q)) * e_w + e_w * e_q)
            err += (w.shape[0] + 8) * eps * float(terms.abs().sum())
        return err * (1 + 16 * eps)

    def reference(self, theta: torch.Tensor, warm=None) -> Reference:
        """``F``, ``dF/dtheta`` and ``w*`` with a certified error bound (module docstring).

        Route ``"dense"``: ONE Cholesky factorisation of ``H`` for ``w*`` and ``q``. Route ``"cg"``: two CG
        solves, started from ``warm = (w, q)`` of a previous call where given (the result's ``warm``).
        """
        theta = theta.detach()
        if self.reference_route() == "cg":
            w0, q0 = warm if isinstance(warm, tuple) and len(warm) == 2 else (None, None)
            # w's error enters the bound times L_v / mu (module docstring): w goes 100 times further than q
            w, _ = self._cg_solve(theta, 2 * self.a * self.xty, w0, tol=self.REFERENCE_RTOL * 1e-2)
            r = self.design_val.mv(w) - self.y_val
            gout = self.design_val.rmv(r * (2.0 / r.shape[0]))
            q, _ = self._cg_solve(theta, gout, q0)
            route, state = "cg", (w, q)
        else:
            chol = self._factor(theta)
            w = torch.cholesky_solve((2 * self.a * self.xty).unsqueeze(1), chol).squeeze(1)
            r = self.design_val.mv(w) - self.y_val
            gout = self.design_val.rmv(r * (2.0 / r.shape[0]))  # scale r, not a copy of X_v^T
            q = torch.cholesky_solve(gout.unsqueeze(1), chol).squeeze(1)
            route, state = "dense", None
        grad = self.chain_to_theta(theta, -2 * self.b * w * q)
        try:
            bound = self.reference_bound(theta, w, q, gout)
        except torch.linalg.LinAlgError:  # non-finite data or iterates (a diverging run): no bound, the row says so
            bound = math.nan
        return Reference(value=float(r @ r) / r.shape[0], grad=grad, w=w, bound=bound, route=route, warm=state)

    def example_quadratic(self, theta: torch.Tensor) -> dict:
        """Per-example structure: ``loss_i = a (x_i . w - y_i)^2 + sum_j d_j w_j^2`` with ``d = b * penalty``.

        Lets :mod:`hpo_bench.tuners.inner` run per-example solvers on scalars for tiny models.
        """
        self._no_rows()
        return {"x": self.x_train, "y": self.y_train, "a": self.a,
                "d": self.b * self.penalty_vector(theta.detach())}

    def example_grad_fn(self, theta: torch.Tensor):
        """Closed form: ``loss_i = a r_i^2 + b d.w^2``, ``grad = 2a x_i r_i + 2b d * w``, ``r_i = x_i.w - y_i``."""
        self._no_rows()
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
        if self.gram is None:
            xt = self.design_train
            return (2 * self.a / xt.n) * xt.rmv(xt.mv(w) - self.y_train) + 2 * self.b * self.penalty_vector(theta) * w
        return 2 * self.a * (self.gram @ w - self.xty) + 2 * self.b * self.penalty_vector(theta) * w

    def outer_grad(self, w: torch.Tensor) -> torch.Tensor:
        r = self.design_val.mv(w) - self.y_val
        return self.design_val.rmv(r * (2.0 / r.shape[0]))  # scale r, not a copy of X_v^T
