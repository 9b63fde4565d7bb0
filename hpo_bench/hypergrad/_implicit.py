"""Implicit-differentiation hypergradients.

At a stationary inner point, ``dF/dtheta = -(d^2 inner / dtheta dw) q`` with ``q`` solving
``H q = grad_w outer``. The methods differ only in how they approximate ``q``:

* ``exact``: dense Hessian, Cholesky (LU if not positive definite).
* ``cg``: conjugate gradients, matrix-free (Hestenes-Stiefel 1952).
* ``neumann``: ``q ~ alpha sum_{i=0}^{K} (I - alpha H)^i v`` (Lorraine et al. 2020).
* ``fixed_point``: ``q_{k+1} = q_k - alpha (H q_k - v)``, ``q_0 = 0`` (K iterations);
  so ``neumann(K) == fixed_point(K + 1)`` for the same ``alpha``.
* ``identity``: ``H^{-1} ~ I`` (the seed notebook's choice): no Hessian at all.

All are pure: no ``.grad`` is written; HVPs go through :meth:`Task.linearize`.
"""

from __future__ import annotations

import math

import torch

from ..task import Linearization, Task
from ._base import Hypergradient, hypergradient_method

__all__ = ["exact", "cg", "neumann", "fixed_point", "identity", "conjugate_gradient", "power_step"]


def _start(task: Task, w: torch.Tensor, theta: torch.Tensor):
    """Detach the inputs (methods never write ``.grad``), linearize, and take ``grad_w outer``."""
    w, theta = w.detach(), theta.detach()
    return w, theta, task.linearize(w, theta), task.outer_grad(w).detach()


def _finish(task: Task, w: torch.Tensor, lin: Linearization, q: torch.Tensor, stats: dict) -> Hypergradient:
    grad = -lin.cross_vjp(q)
    stats = {"hvp": lin.n_hvp, "grad_evals": 1, "outer_grad_evals": 1, **stats}
    return Hypergradient(grad=grad.detach(), w=w.detach(), stats=stats)


@hypergradient_method("exact", kind="implicit", exact=True, knob=None,
                      summary="dense Hessian solve (Cholesky); p HVPs")
def exact(task: Task, w: torch.Tensor, theta: torch.Tensor) -> Hypergradient:
    w, theta, lin, v = _start(task, w, theta)
    h = lin.hessian()
    chol, info = torch.linalg.cholesky_ex(h)
    q = torch.cholesky_solve(v.unsqueeze(1), chol).squeeze(1) if int(info) == 0 else torch.linalg.solve(h, v)
    return _finish(task, w, lin, q, {"iterations": 0, "converged": True})


def conjugate_gradient(matvec, b: torch.Tensor, *, tol: float, max_iter: int,
                       x0: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Solve ``A x = b`` for symmetric positive definite ``A`` given as ``matvec``.

    Stops when ``||r|| <= tol * ||b||`` (checked before every iteration, so an exact
    zero residual ends the loop and no division by ``r^T r = 0`` ever happens), or on a
    non-positive curvature ``p^T A p <= 0`` (reported, never divided by).
    """
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - matvec(x) if x0 is not None else b.clone()
    n_mv = 1 if x0 is not None else 0
    bnorm = float(torch.linalg.vector_norm(b))
    target = tol * bnorm
    rs = float(r @ r)
    p = r.clone()
    it = 0
    status = "max_iter"
    if bnorm == 0.0:
        return torch.zeros_like(b), {"iterations": 0, "residual": 0.0, "converged": True, "hvp_cg": n_mv}
    while True:
        if math.sqrt(rs) <= target:
            status = "converged"
            break
        if it >= max_iter:
            break
        ap = matvec(p)
        n_mv += 1
        pap = float(p @ ap)
        if not pap > 0.0:  # also catches NaN
            status = "negative_curvature"
            break
        alpha = rs / pap
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = float(r @ r)
        it += 1
        p = r + (rs_new / rs) * p  # rs > target**2 >= 0 here, so rs > 0 unless b == 0 (handled)
        rs = rs_new
    return x, {"iterations": it, "residual": math.sqrt(rs) / bnorm, "converged": status == "converged",
               "cg_status": status}


@hypergradient_method("cg", kind="implicit", exact=True, knob="max_iter",
                      summary="conjugate gradients on H q = grad outer; matrix-free, stops at tol")
def cg(task: Task, w: torch.Tensor, theta: torch.Tensor, *, tol: float = 1e-10, max_iter: int | None = None,
       x0: torch.Tensor | None = None) -> Hypergradient:
    """CG to relative residual ``tol`` (default 1e-10) or ``max_iter`` (default ``2 p + 10``)."""
    w, theta, lin, v = _start(task, w, theta)
    max_iter = 2 * v.shape[0] + 10 if max_iter is None else int(max_iter)
    q, info = conjugate_gradient(lin.hvp, v, tol=tol, max_iter=max_iter, x0=x0)
    info.pop("hvp_cg", None)
    return _finish(task, w, lin, q, info)


def power_step(lin: Linearization, n: int, *, iters: int = 30, seed: int = 0) -> float:
    """``1 / L`` with ``L`` the largest Hessian eigenvalue (power iteration, ``iters`` HVPs)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=gen, dtype=lin.grad.dtype).to(lin.grad.device)
    x = x / torch.linalg.vector_norm(x)
    lam = 0.0
    for _ in range(iters):
        y = lin.hvp(x)
        lam = float(x @ y)
        nrm = float(torch.linalg.vector_norm(y))
        if nrm == 0.0:
            break
        x = y / nrm
    return 1.0 / (1.05 * lam) if lam > 0 else 1.0  # 5% margin: power iteration underestimates L


def _step_size(lin: Linearization, alpha: float | None, n: int) -> tuple[float, dict]:
    if alpha is None:
        a = power_step(lin, n)
        return a, {"alpha": a, "alpha_from": "power_iteration"}
    if not alpha > 0:
        raise ValueError(f"`alpha > 0` must hold, but got alpha={alpha}")
    return float(alpha), {"alpha": float(alpha), "alpha_from": "given"}


@hypergradient_method("neumann", kind="implicit", exact=False, knob="iterations",
                      summary="truncated Neumann series alpha * sum_{i<=K} (I - alpha H)^i; K HVPs")
def neumann(task: Task, w: torch.Tensor, theta: torch.Tensor, *, iterations: int = 20,
            alpha: float | None = None) -> Hypergradient:
    """``K = iterations`` HVPs; ``alpha`` defaults to ``1/L`` by power iteration (HVPs counted)."""
    w, theta, lin, v = _start(task, w, theta)
    a, info = _step_size(lin, alpha, v.shape[0])
    term = v.clone()
    acc = v.clone()
    for _ in range(int(iterations)):
        term = term - a * lin.hvp(term)
        acc = acc + term
    return _finish(task, w, lin, a * acc, {"iterations": int(iterations), **info})


@hypergradient_method("fixed_point", kind="implicit", exact=False, knob="iterations",
                      summary="fixed-point iteration q <- q - alpha (H q - v) from q = 0; K - 1 HVPs")
def fixed_point(task: Task, w: torch.Tensor, theta: torch.Tensor, *, iterations: int = 20,
                alpha: float | None = None) -> Hypergradient:
    """``K = iterations`` iterations from ``q_0 = 0`` (the first needs no HVP: ``q_1 = alpha v``)."""
    w, theta, lin, v = _start(task, w, theta)
    a, info = _step_size(lin, alpha, v.shape[0])
    q = torch.zeros_like(v)
    for k in range(int(iterations)):
        q = a * v if k == 0 else q - a * (lin.hvp(q) - v)
    return _finish(task, w, lin, q, {"iterations": int(iterations), **info})


@hypergradient_method("identity", kind="implicit", exact=False, knob=None,
                      summary="H^{-1} ~ I (the seed notebook's formula); no HVP")
def identity(task: Task, w: torch.Tensor, theta: torch.Tensor) -> Hypergradient:
    w, theta, lin, v = _start(task, w, theta)
    return _finish(task, w, lin, v, {"iterations": 0})
