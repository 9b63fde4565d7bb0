"""Hypergradients of non-smooth (composite, l1-penalised) inner problems.

The task is composite (tag ``"prox"``: :class:`hpo_bench.tasks._sparse_linear.CompositeTask`)::

    inner(w, theta) = f(w, theta) + sum_j alpha_j(theta) |w_j|,   f = data(w) + l2(theta)/2 ||w||^2

At a solution with support ``S`` and signs ``s`` the optimality condition on the support is
``grad_S f(w*) + alpha_S s = 0``; off the support ``w* = 0`` does not move while the support is
stable. Differentiating it (Bertrand et al. 2020, "Implicit differentiation of Lasso-type models
for hyperparameter optimization"; 2022 for non-smooth generalised linear models)::

    J_S = dw*_S/dtheta = -H_SS^{-1} B,   B = d/dtheta [grad_S f + alpha_S s],   dF/dtheta = J_S^T grad_S outer

Methods (each declares ``requires = {"prox"}``: the gradient tuner and suite validation pair them
only with composite tasks; every method without it is smooth-only and refused on ``"non-smooth"`` tasks):

* ``implicit_support``: solve ``H_SS q = grad_S outer`` by Cholesky (``|S| x |S|``), ``dF = -B^T q``. Exact
  wherever the support of ``w`` is the solution's and stable (``stats["support_margin"] > 0``).
* ``implicit_forward``: sparse-ho's ImplicitForward: forward-mode Jacobian iterations of coordinate
  descent *restricted to the support* (Gauss-Seidel on ``H_SS J = -B``) until the Jacobian changes by
  less than ``tol`` (relative) or ``iterations`` sweeps; converges geometrically to the implicit one.
* ``prox_forward``: forward-mode differentiation through ``steps`` ISTA or CD iterations from ``w``
  (Deledalle et al. 2014, "Stein Unbiased GrAdient estimator of the Risk"; sparse-ho's Forward): the
  exact derivative of the unrolled map (the step ``lr`` is a constant, not differentiated).
* ``prox_reverse``: reverse mode through the same ISTA iterations (stores the ``T`` iterates).

The Jacobian of soft-thresholding is ``1{|z| > eta alpha}``: derivatives are exact almost everywhere
(everywhere except at iterates lying exactly on a threshold).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..core.options import Option
from ..core.task import Task
from ._base import Hypergradient, hypergradient_method

__all__ = ["implicit_support", "implicit_forward", "prox_forward", "prox_reverse", "NONSMOOTH_REQUIRES",
           "handles_nonsmooth", "UNROLLED_SOLVERS"]

#: What every method here needs of a task: the composite structure (prox, support linearisation).
NONSMOOTH_REQUIRES = frozenset({"prox"})
#: The iterations each unrolled method differentiates (the gradient tuner's ``inner`` must be one of them).
UNROLLED_SOLVERS = {"prox_forward": ("ista", "cd"), "prox_reverse": ("ista",)}


def handles_nonsmooth(fn, opts=None) -> bool:
    """Whether a registered method can run on a ``"non-smooth"`` task: it declares the tag ``"prox"``."""
    return "prox" in fn.info.required_tags(opts or {})


def _need(task: Task, name: str) -> None:
    if "prox" not in getattr(task, "tags", ()):
        raise ValueError(f"method {name!r} needs a composite task (tag 'prox': prox and support linearisation), "
                         f"but task {task.name!r} has tags {sorted(task.tags)}")


@hypergradient_method("implicit_support", kind="implicit", exact=True, knob=None,
                      summary="implicit differentiation on the support (Bertrand et al. 2020): one |S| x |S| "
                              "Cholesky solve", requires=NONSMOOTH_REQUIRES)
def implicit_support(task: Task, w: torch.Tensor, theta: torch.Tensor) -> Hypergradient:
    """``-B^T H_SS^{-1} grad_S outer(w)`` at ``w``; the support and signs are read off ``w`` (exact zeros).

    ``stats``: ``support_size``; ``support_margin`` (positive: stable support; ``<= 0``: a degenerate
    point, the result is the derivative of ``w``'s branch only); ``stationarity``
    (``||grad_S f + alpha_S s||_inf`` at ``w``, zero at an exact solution).
    """
    _need(task, "implicit_support")
    w, theta = w.detach(), theta.detach()
    lin = task.linearize_support(w, theta)
    stats = {"support_size": lin.size, "support_margin": lin.margin(), "stationarity": lin.stationarity(),
             "iterations": 0, "grad_evals": 1, "outer_grad_evals": 1}
    if lin.size == 0:
        return Hypergradient(grad=torch.zeros_like(theta), w=w, stats={**stats, "hvp": 0})
    v = task.outer_grad(w)[lin.support]
    h = lin.hessian()
    chol, info = torch.linalg.cholesky_ex(h)
    q = torch.cholesky_solve(v.unsqueeze(1), chol).squeeze(1) if int(info) == 0 else torch.linalg.solve(h, v)
    return Hypergradient(grad=(-lin.cross_vjp(q)).detach(), w=w, stats={**stats, "hvp": lin.n_hvp})


@hypergradient_method("implicit_forward", kind="implicit", exact=False, knob="iterations",
                      summary="sparse-ho's implicit-forward: CD Jacobian sweeps on the support until converged",
                      options={"iterations": Option(int, low=1), "tol": Option(float, low=0)},
                      requires=NONSMOOTH_REQUIRES)
def implicit_forward(task: Task, w: torch.Tensor, theta: torch.Tensor, *, iterations: int = 1000,
                     tol: float = 1e-14) -> Hypergradient:
    """Gauss-Seidel sweeps ``J_j <- J_j - (H_j,S J + B_j) / H_jj`` over ``j`` in ``S`` from ``J = 0``.

    This is the Jacobian recursion of cyclic coordinate descent once the support is identified
    (sparse-ho, Bertrand et al. 2020, Alg. 2); its fixed point is ``-H_SS^{-1} B``, reached at the linear
    rate of Gauss-Seidel on the positive definite ``H_SS``. Stops when a sweep changes ``J`` by at most
    ``tol`` relative to ``max |J|`` (``converged``) or after ``iterations`` sweeps.
    """
    _need(task, "implicit_forward")
    w, theta = w.detach(), theta.detach()
    lin = task.linearize_support(w, theta)
    m = theta.shape[0]
    if lin.size == 0:
        return Hypergradient(grad=torch.zeros_like(theta), w=w, stats={"hvp": 0, "iterations": 0, "converged": True,
                                                                       "support_size": 0, "grad_evals": 1,
                                                                       "outer_grad_evals": 1})
    h = lin.hessian().double().cpu().numpy()
    b = lin.cross_jacobian().double().cpu().numpy()
    jac = np.zeros((lin.size, m))
    diag = np.diag(h).copy()
    sweeps, change, converged = 0, math.inf, False
    for sweeps in range(1, int(iterations) + 1):
        change = 0.0
        for j in range(lin.size):
            step = (h[j] @ jac + b[j]) / diag[j]
            jac[j] -= step
            change = max(change, float(np.max(np.abs(step))))
        if change <= tol * max(float(np.max(np.abs(jac))), 1e-300):
            converged = True
            break
    v = task.outer_grad(w)[lin.support]
    grad = task.tensor(jac).T @ v
    return Hypergradient(grad=grad.detach(), w=w, stats={
        "hvp": sweeps * m, "iterations": sweeps, "converged": converged, "last_change": change,
        "support_size": lin.size, "support_margin": lin.margin(), "grad_evals": 1, "outer_grad_evals": 1})


def _unrolled_args(task: Task, theta: torch.Tensor, steps, lr, solver: str, name: str):
    _need(task, name)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"`steps >= 1` must hold, but got steps={steps!r}")
    if solver not in UNROLLED_SOLVERS[name]:
        raise ValueError(f"method {name!r}: `solver` must be one of {list(UNROLLED_SOLVERS[name])}, but got "
                         f"{solver!r}")
    eta = 1.0 / task.lipschitz(theta) if lr is None else float(lr)
    if not eta > 0:
        raise ValueError(f"`lr > 0` must hold, but got lr={lr!r}")
    return eta


def _ista_forward(task, w, theta, steps: int, eta: float):
    alpha, l2 = task.penalties(theta)
    ja, jl2 = task.penalty_jacobians(theta)
    jac = torch.zeros(w.shape[0], theta.shape[0], dtype=w.dtype, device=w.device)
    for _ in range(steps):
        z = w - eta * task.smooth_grad(w, theta)
        dz = jac - eta * (task.smooth_hvp(w, theta, jac) + w.unsqueeze(1) * jl2.unsqueeze(0))
        w_next = task.prox(z, eta, theta)
        on = (w_next != 0).to(w.dtype).unsqueeze(1)
        jac = on * (dz - eta * torch.sign(z).unsqueeze(1) * ja)
        w = w_next
    return w, jac


def _cd_forward(task, w, theta, epochs: int):
    """Forward mode through :meth:`CompositeTask.cd_epochs` (the same updates, in the same order).

    Coordinate ``j``: ``z_j = w_j - g_j / L_j``, ``w_j <- ST(z_j, alpha_j / L_j)`` with ``L_j`` the coordinate
    Lipschitz constant (``= c_j + l2``, so it moves with theta through ``l2``); the Jacobian row follows
    by the chain rule, with ``H_j. J`` from the kept products (``G J`` or ``X J``). A cross-validated task
    (``fold_tasks``: a separable sum of the folds' problems) runs fold by fold: no coordinate couples two folds.
    """
    if getattr(task, "folds_k", 0):
        parts = [_cd_forward(f, wk, theta, epochs) for f, wk in zip(task.fold_tasks, task._split(w.detach()))]
        return torch.cat([pt[0] for pt in parts]), torch.cat([pt[1] for pt in parts])
    alpha, l2 = (t.double().cpu().numpy() for t in task.penalties(theta))
    l2 = float(l2)
    ja, jl2 = (t.double().cpu().numpy() for t in task.penalty_jacobians(theta))
    lips = task.coordinate_lipschitz(theta).double().cpu().numpy()
    w = w.detach().double().cpu().numpy().copy()
    p, m = w.shape[0], theta.shape[0]
    jac = np.zeros((p, m))
    if getattr(task, "sparse", False):
        return _cd_forward_sparse(task, w, jac, alpha, l2, ja, jl2, lips, epochs)
    if task.data_kind == "least_squares":
        g, c = task._gram_np, task._c_np
        gw, gj_ = g @ w, g @ jac
        for _ in range(epochs):
            for j in range(p):
                old, lj = w[j], lips[j]
                if lj <= 0.0:  # an empty column: CD leaves it at zero
                    continue
                grad_j = gw[j] + l2 * old - c[j]
                z = old - grad_j / lj
                dgrad = gj_[j] + l2 * jac[j] + old * jl2  # d(grad_j)/dtheta
                dz = jac[j] - dgrad / lj + grad_j / lj ** 2 * jl2
                thr = alpha[j] / lj
                new = z - thr if z > thr else (z + thr if z < -thr else 0.0)
                drow = dz - np.sign(z) * (ja[j] / lj - alpha[j] * jl2 / lj ** 2) if new != 0.0 else np.zeros(m)
                gw += g[:, j] * (new - old)
                gj_ += np.outer(g[:, j], drow - jac[j])
                w[j], jac[j] = new, drow
    else:  # logistic: keep X w and X J
        x, y = task._np
        n = x.shape[0]
        xw, xj = x @ w, x @ jac
        for _ in range(epochs):
            for j in range(p):
                old, lj = w[j], lips[j]
                if lj <= 0.0:  # an empty column: CD leaves it at zero
                    continue
                sig = 1.0 / (1.0 + np.exp(y * xw))  # sigma(-y x.w)
                grad_j = float(x[:, j] @ (-y * sig)) / n + l2 * old
                curv = sig * (1.0 - sig)  # d/d(xw) of -y sigma(-y xw) = sigma'(y xw) (y^2 = 1)
                dgrad = (x[:, j] * curv) @ xj / n + l2 * jac[j] + old * jl2
                z = old - grad_j / lj
                dz = jac[j] - dgrad / lj + grad_j / lj ** 2 * jl2
                thr = alpha[j] / lj
                new = z - thr if z > thr else (z + thr if z < -thr else 0.0)
                drow = dz - np.sign(z) * (ja[j] / lj - alpha[j] * jl2 / lj ** 2) if new != 0.0 else np.zeros(m)
                xw += x[:, j] * (new - old)
                xj += np.outer(x[:, j], drow - jac[j])
                w[j], jac[j] = new, drow
    return task.tensor(w), task.tensor(jac)


def _cd_forward_sparse(task, w, jac, alpha, l2, ja, jl2, lips, epochs: int):
    """:func:`_cd_forward` on a sparse (CSC) design: ``X w`` and ``X J`` are kept (no Gram matrix), so coordinate
    ``j`` reads only the rows where column ``j`` is non-zero. Least squares: per-row gradient ``x.w - y`` and
    curvature 1; logistic: ``-y sigma(-y x.w)`` and ``sigma'(y x.w)``."""
    xc = task._csc
    y = task._np[1]
    n, m = xc.shape[0], jac.shape[1]
    ptr, ind, val = xc.indptr, xc.indices, xc.data
    xw, xj = xc @ w, np.zeros((n, m))
    logistic = task.data_kind == "logistic"
    for _ in range(epochs):
        for j in range(w.shape[0]):
            lj = lips[j]
            if lj <= 0.0:  # an empty column: CD leaves it at zero
                continue
            lo, hi = ptr[j], ptr[j + 1]
            idx, v = ind[lo:hi], val[lo:hi]
            old = w[j]
            if logistic:
                yi = y[idx]
                sig = 1.0 / (1.0 + np.exp(yi * xw[idx]))
                resid, curv = -yi * sig, sig * (1.0 - sig)
            else:
                resid, curv = xw[idx] - y[idx], np.ones(idx.size)
            grad_j = float(v @ resid) / n + l2 * old
            dgrad = (v * curv) @ xj[idx] / n + l2 * jac[j] + old * jl2
            z = old - grad_j / lj
            dz = jac[j] - dgrad / lj + grad_j / lj ** 2 * jl2
            thr = alpha[j] / lj
            new = z - thr if z > thr else (z + thr if z < -thr else 0.0)
            drow = dz - np.sign(z) * (ja[j] / lj - alpha[j] * jl2 / lj ** 2) if new != 0.0 else np.zeros(m)
            xw[idx] += v * (new - old)
            xj[idx] += np.outer(v, drow - jac[j])
            w[j], jac[j] = new, drow
    return task.tensor(w), task.tensor(jac)


@hypergradient_method("prox_forward", kind="unrolled", exact=False, knob="steps",
                      summary="forward mode through T ISTA or CD iterations (Deledalle et al. 2014; sparse-ho "
                              "Forward); p x m Jacobian", requires=NONSMOOTH_REQUIRES)
def prox_forward(task: Task, w: torch.Tensor, theta: torch.Tensor, *, steps: int = 100, lr: float | None = None,
                 solver: str = "ista") -> Hypergradient:
    """``dF/dtheta`` of ``outer(w_T(theta))``, ``w_T`` after ``steps`` ISTA steps (step ``lr``, default
    ``1 / lipschitz``) or CD sweeps (``solver = "cd"``; no step) from ``w`` (a constant)."""
    theta = theta.detach()
    eta = _unrolled_args(task, theta, steps, lr, solver, "prox_forward")
    w = w.detach()
    if solver == "ista":
        w_t, jac = _ista_forward(task, w, theta, steps, eta)
    else:
        w_t, jac = _cd_forward(task, w, theta, steps)
    g = jac.T @ task.outer_grad(w_t)
    m = theta.shape[0]
    return Hypergradient(grad=g.detach(), w=w_t.detach(), stats={
        "hvp": steps * m, "grad_evals": steps, "outer_grad_evals": 1, "iterations": steps, "solver": solver,
        "lr": eta if solver == "ista" else math.nan, "support_size": int((w_t != 0).sum())})


@hypergradient_method("prox_reverse", kind="unrolled", exact=False, knob="steps",
                      summary="reverse mode through T ISTA iterations (Deledalle et al. 2014); memory O(T p)",
                      requires=NONSMOOTH_REQUIRES)
def prox_reverse(task: Task, w: torch.Tensor, theta: torch.Tensor, *, steps: int = 100, lr: float | None = None,
                 solver: str = "ista") -> Hypergradient:
    """The same derivative as ``prox_forward(solver="ista")`` by an adjoint pass over the stored iterates:
    ``a_z = 1{w_{t+1} != 0} a``, ``g -= eta (J_alpha^T (sign(z_t) a_z) + (w_t . a_z) dl2)``,
    ``a <- a_z - eta H(w_t) a_z``."""
    theta = theta.detach()
    eta = _unrolled_args(task, theta, steps, lr, solver, "prox_reverse")
    ja, jl2 = task.penalty_jacobians(theta)
    w_t = w.detach()
    ws, zs, masks = [], [], []
    for _ in range(steps):
        z = w_t - eta * task.smooth_grad(w_t, theta)
        w_next = task.prox(z, eta, theta)
        ws.append(w_t)
        zs.append(z)
        masks.append((w_next != 0).to(w_t.dtype))
        w_t = w_next
    a = task.outer_grad(w_t)
    g = torch.zeros_like(theta)
    for w_s, z, on in zip(reversed(ws), reversed(zs), reversed(masks)):
        a_z = on * a
        g = g - eta * (ja.T @ (torch.sign(z) * a_z) + jl2 * float(w_s @ a_z))
        a = a_z - eta * task.smooth_hvp(w_s, theta, a_z)
    return Hypergradient(grad=g.detach(), w=w_t.detach(), stats={
        "hvp": steps, "grad_evals": steps, "outer_grad_evals": 1, "iterations": steps, "solver": solver, "lr": eta,
        "support_size": int((w_t != 0).sum())})
