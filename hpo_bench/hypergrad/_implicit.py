"""Implicit-differentiation hypergradients.

At a stationary inner point, ``dF/dtheta = -(d^2 inner / dtheta dw) q`` with ``q`` solving
``H q = grad_w outer``. The methods differ only in how they approximate ``q``:

* ``exact``: dense Hessian, Cholesky (LU if not positive definite).
* ``cg``: conjugate gradients, matrix-free (Hestenes-Stiefel 1952), Jacobi-preconditioned
  where the task knows its Hessian diagonal.
* ``neumann``: ``q ~ alpha sum_{i=0}^{K} (I - alpha H)^i v`` (Lorraine et al. 2020).
* ``fixed_point``: ``q_{k+1} = q_k - alpha (H q_k - v)``, ``q_0 = 0`` (K iterations);
  so ``neumann(K) == fixed_point(K + 1)`` for the same ``alpha``.
* ``identity``: ``H^{-1} ~ I`` (the seed notebook's choice): no Hessian at all.

All are pure: no ``.grad`` is written; HVPs go through :meth:`Task.linearize`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..core.options import Option
from ..core.task import Linearization, Task
from ._base import Hypergradient, hypergradient_method

__all__ = ["exact", "cg", "neumann", "fixed_point", "identity", "conjugate_gradient", "power_step", "PRECONDITIONERS"]


def _start(task: Task, w: torch.Tensor, theta: torch.Tensor):
    """Detach the inputs (methods never write ``.grad``), linearize, and take ``grad_w outer``."""
    w, theta = w.detach(), theta.detach()
    return w, theta, task.linearize(w, theta), task.outer_grad(w).detach()


def _finish(task: Task, w: torch.Tensor, lin: Linearization, q: torch.Tensor, stats: dict,
            grad: torch.Tensor | None = None) -> Hypergradient:
    grad = -lin.cross_vjp(q) if grad is None else grad
    stats = {"hvp": lin.n_hvp, "grad_evals": 1, "outer_grad_evals": 1, **stats}
    return Hypergradient(grad=grad.detach(), w=w.detach(), stats=stats, adjoint=q.detach())


def _error_bound(lin: Linearization, v: torch.Tensor, q: torch.Tensor, mu: float, jn: float, hq: torch.Tensor
                 ) -> tuple[torch.Tensor, float, float]:
    """``(g, bound, ||r||)``: ``g = -J^T q`` and the certified relative bound of its error (see :func:`cg`).

    ``bound = E / (||g|| - E)`` with ``E = ||J||_2 ||v - H q|| / mu + 16 eps ||J||_2 ||q||`` (the second
    term: the rounding of the product ``J^T q`` itself); ``inf`` when ``E >= ||g||``.
    """
    rnorm = float(torch.linalg.vector_norm(v - hq))
    grad = -lin.cross_vjp(q)
    gnorm = float(torch.linalg.vector_norm(grad))
    eps = torch.finfo(q.dtype).eps
    err = jn * rnorm / mu + 16 * eps * jn * float(torch.linalg.vector_norm(q))
    bound = 0.0 if err == 0.0 else (err / (gnorm - err) if gnorm > err else math.inf)
    return grad, bound, rnorm


@hypergradient_method("exact", kind="implicit", exact=True, knob=None,
                      summary="dense Hessian solve (Cholesky); p HVPs",
                      dense="p x p: the Hessian and its Cholesky factor")
def exact(task: Task, w: torch.Tensor, theta: torch.Tensor, *, tol: float = 1e-10) -> Hypergradient:
    """Dense solve; where the task certifies ``H >= mu I`` its error bound is reported as :func:`cg`'s is.

    ``converged`` is whether that bound is at most ``tol`` (a direct solve at ``cond(H) eps`` may
    not be); where nothing is certified, ``error_bound`` is NaN and ``exactness = "uncertified"``.
    """
    w, theta, lin, v = _start(task, w, theta)
    h = lin.hessian()
    chol, info = torch.linalg.cholesky_ex(h)
    q = torch.cholesky_solve(v.unsqueeze(1), chol).squeeze(1) if int(info) == 0 else torch.linalg.solve(h, v)
    mu = lin.strong_convexity_bound()
    if not (math.isfinite(mu) and mu > 0):
        return _finish(task, w, lin, q, {"iterations": 0, "converged": True, "exactness": "uncertified",
                                         "error_bound": math.nan})
    grad, bound, _ = _error_bound(lin, v, q, mu, lin.cross_norm_bound(), torch.mv(h, q))
    return _finish(task, w, lin, q, {"iterations": 0, "converged": bound <= tol, "exactness": "certified",
                                     "error_bound": bound, "mu": mu}, grad=grad)


_NUMPY_MAX_N = 256


class _TorchVectors:
    """In-place vector operations of the CG loop on torch tensors (any device)."""

    def __init__(self, matvec) -> None:
        self.matvec = matvec

    def dot(self, a, b) -> float:
        return torch.dot(a, b).item()

    def axpy(self, y, alpha: float, x) -> None:  # y += alpha x
        y.add_(x, alpha=alpha)

    def mul_into(self, out, a, b) -> None:
        torch.mul(a, b, out=out)

    def xpby(self, p, z, beta: float) -> None:  # p <- z + beta p, one op
        torch.add(z, p, alpha=beta, out=p)

    def apply(self, p):
        return self.matvec(p)

    def view(self, t: torch.Tensor):
        return t

    def copy(self, v):
        return v.clone()


class _NumpyVectors:
    """The same operations on NumPy views of CPU tensors, for an explicit small matrix.

    At small p the loop is bound by per-operation dispatch (about 1.3 µs per torch op against
    about 0.5 µs per NumPy op on the same memory); the arithmetic (BLAS gemv and dot) is the same.
    """

    def __init__(self, matrix: np.ndarray, n: int, dtype) -> None:
        self.a = matrix
        self.out = np.empty(n, dtype=dtype)
        self.tmp = np.empty(n, dtype=dtype)

    def dot(self, a, b) -> float:
        return float(a @ b)

    def axpy(self, y, alpha: float, x) -> None:
        np.multiply(x, alpha, out=self.tmp)
        y += self.tmp

    def mul_into(self, out, a, b) -> None:
        np.multiply(a, b, out=out)

    def xpby(self, p, z, beta: float) -> None:
        p *= beta
        p += z

    def apply(self, p):
        return np.dot(self.a, p, out=self.out)

    def view(self, t: torch.Tensor) -> np.ndarray:
        return t.detach().numpy()  # shares memory: in-place updates land in the tensor

    def copy(self, v):
        return v.copy()


def conjugate_gradient(matvec, b: torch.Tensor, *, tol: float, max_iter: int,
                       x0: torch.Tensor | None = None, precond: torch.Tensor | None = None,
                       matrix: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Solve ``A x = b`` for symmetric positive definite ``A`` given as ``matvec``.

    ``precond``: optional diagonal preconditioner, given as the entries of ``M^{-1}``
    (e.g. ``1 / diag(A)``: Jacobi). Preconditioning changes the path, never the answer or
    the stopping rule: the loop stops when the *true* residual has ``||b - A x|| <= tol ||b||``
    (checked before every iteration, so an exact zero residual ends the loop and no
    division by zero happens), or on a non-positive curvature ``p^T A p <= 0`` (reported,
    never divided by). Vectors are updated in place: one mat-vec and a handful of
    fused vector ops per iteration.

    ``matrix``: ``A`` itself, where the caller has it explicitly (then ``matvec`` is not
    called); on CPU, up to ``n = 256``, the loop then runs on NumPy views of the same memory
    (there the cost is per-operation overhead; above it, torch's gemv is as fast, and
    NumPy's BLAS may spin up threads the harness does not control).
    """
    bnorm = float(torch.linalg.vector_norm(b))
    if bnorm == 0.0:
        return torch.zeros_like(b), {"iterations": 0, "residual": 0.0, "converged": True, "hvp_cg": 0,
                                     "cg_status": "converged"}
    if matrix is not None and matrix.device.type == "cpu" and b.device.type == "cpu" and b.shape[0] <= _NUMPY_MAX_N:
        ops = _NumpyVectors(matrix.detach().numpy(), b.shape[0], b.detach().numpy().dtype)
    else:
        ops = _TorchVectors(matvec if matrix is None else (lambda v: torch.mv(matrix, v)))
    if x0 is None:
        x = torch.zeros_like(b)
        r = b.clone()
        n_mv = 0
    else:
        x = x0.detach().clone()
        r = b - (matvec(x) if matrix is None else torch.mv(matrix, x))
        n_mv = 1
    target2 = (tol * bnorm) ** 2
    if precond is None:
        z, lo, hi = r, 1.0, 1.0
    else:
        z = precond * r
        # rz = sum_i m_i r_i^2 brackets rr = ||r||^2: rz / max(m) <= rr <= rz / min(m) (with a
        # rounding margin), so the true-residual test needs its own dot product only inside
        # that bracket, i.e. in the last few iterations
        lo = (1.0 - 1e-12) / precond.max().item()
        hi = (1.0 + 1e-12) / precond.min().item()
    xv, r, z = ops.view(x), ops.view(r), ops.view(z)  # xv shares x's memory
    m = None if precond is None else ops.view(precond)
    rz = ops.dot(r, z)
    p = ops.copy(z)
    it = 0
    status = "max_iter"
    while True:
        if rz * hi <= target2:
            status = "converged"
            break
        if rz * lo <= target2 and ops.dot(r, r) <= target2:
            status = "converged"
            break
        if it >= max_iter:
            break
        ap = ops.apply(p)
        n_mv += 1
        pap = ops.dot(p, ap)
        if not pap > 0.0:  # also catches NaN
            status = "negative_curvature"
            break
        alpha = rz / pap
        ops.axpy(xv, alpha, p)
        ops.axpy(r, -alpha, ap)
        it += 1
        if m is not None:
            ops.mul_into(z, m, r)
        rz_new = ops.dot(r, z)
        ops.xpby(p, z, rz_new / rz)  # rz > 0 here (r != 0 and M^{-1} positive definite)
        rz = rz_new
    rr = ops.dot(r, r)
    return x, {"iterations": it, "residual": math.sqrt(rr) / bnorm, "converged": status == "converged",
               "cg_status": status, "hvp_cg": n_mv}


PRECONDITIONERS = ("auto", "jacobi", "none")

#: ``alpha`` of the Neumann and fixed-point methods: a step on ``H``, ``None`` for ``1/L`` by power iteration.
_ALPHA = Option(float, low=0, low_open=True, optional=True)

#: ``cg``'s options. ``tol`` is a relative residual: ``tol >= 1`` would stop before the first iteration
#: (a zero hypergradient reported as converged), and ``tol <= 0`` could never be met.
CG_OPTIONS = {"tol": Option(float, low=0, high=1, low_open=True, high_open=True),
              "max_iter": Option(int, low=1, optional=True),
              "precond": Option(str, choices=PRECONDITIONERS)}


def _jacobi(lin: Linearization, precond: str, task: Task) -> torch.Tensor | None:
    """``1 / diag(H)`` when the linearization has the diagonal for free (else ``None`` for ``auto``)."""
    if precond not in PRECONDITIONERS:
        raise ValueError(f"`precond` must be one of {list(PRECONDITIONERS)}, but got {precond!r}")
    if precond == "none":
        return None
    diag = lin.diagonal()
    if diag is None:
        if precond == "jacobi":
            raise ValueError(f"`precond='jacobi'` needs a Hessian diagonal, which task {task.name!r} does not "
                             "provide cheaply (Linearization.diagonal); use 'auto' or 'none'")
        return None
    if not bool((diag > 0).all()):
        return None  # not positive definite on the diagonal: plain CG (reported in stats)
    return 1.0 / diag


@hypergradient_method("cg", kind="implicit", exact=True, knob="max_iter",
                      summary="conjugate gradients on H q = grad outer (Jacobi-preconditioned where cheap); stops on a "
                              "certified bound of its hypergradient error (tol, relative)",
                      options=CG_OPTIONS, requires_if={("precond", "jacobi"): frozenset({"hessian-diagonal"})},
                      warm_adjoint=True)
def cg(task: Task, w: torch.Tensor, theta: torch.Tensor, *, tol: float = 1e-10, max_iter: int | None = None,
       x0: torch.Tensor | None = None, precond: str = "auto") -> Hypergradient:
    """CG on ``H q = v`` until a certified bound of the hypergradient error is at most ``tol`` (relative).

    Where the task certifies ``H >= mu I`` (:meth:`Linearization.strong_convexity_bound`), the
    true residual ``r = v - H q`` (recomputed, not CG's recursive one) bounds the solve error,
    ``||q - q*|| <= ||r|| / mu``, so the hypergradient ``g = -J^T q`` has ``||g - g*|| <= E =
    ||J||_2 ||r|| / mu`` (``||J||_2`` bounded by :meth:`Linearization.cross_norm_bound`) and the
    relative error ``||g - g*|| / ||g*|| <= E / (||g|| - E)``: ``stats["error_bound"]``. CG first runs
    to relative residual ``tol``; while the bound exceeds ``tol`` it restarts from ``q`` with the
    residual target the bound needs, until the bound is met (``converged = True``), ``max_iter``
    iterations in all are spent (default ``2 p + 10``), or a round fails to halve the residual (the
    rounding floor: ``cg_status = "stalled"``); then ``converged = False`` and the bound says how
    far it got. The bound holds for the linear solve at the given ``w`` (the error of an unfinished
    inner solve is not in it), in exact arithmetic on the computed residual.

    Where the task certifies no ``mu`` (e.g. a neural network) the old rule stays (relative
    residual ``tol``), ``error_bound`` is NaN and ``stats["exactness"] = "uncertified"``: the
    result is not presented as exact there.

    ``precond``: ``"auto"`` (default) preconditions with the Hessian diagonal when the
    task's linearization has it for free (e.g. ridge: ``2a diag(G) + 2b d``), ``"jacobi"``
    insists on it (an error where the task has none), ``"none"`` is textbook CG.
    Preconditioning changes the path, never the answer or the stopping rule.

    ``x0``: a start for ``q`` (e.g. the previous outer step's :attr:`Hypergradient.adjoint`: the gradient
    tuner passes it with ``warm_start``). The stopping rule is the same from any start; an ``x0`` of the wrong
    shape or with non-finite entries is ignored (a cold start).
    """
    w, theta, lin, v = _start(task, w, theta)
    if x0 is not None:
        x0 = x0.detach().to(dtype=v.dtype, device=v.device)
        if x0.shape != v.shape or not bool(torch.isfinite(x0).all()):
            x0 = None
    max_iter = 2 * v.shape[0] + 10 if max_iter is None else int(max_iter)
    minv = _jacobi(lin, precond, task)
    dense = lin.dense()
    mu = lin.strong_convexity_bound()
    certified = math.isfinite(mu) and mu > 0

    def solve(rtol: float, budget: int, start):
        q_, info_ = conjugate_gradient(lin.hvp, v, tol=rtol, max_iter=budget, x0=start, precond=minv, matrix=dense)
        if dense is not None:
            lin.n_hvp += info_["hvp_cg"]  # the products with the explicit H are HVPs all the same
        return q_, info_

    q, info = solve(tol, max_iter, x0)
    iters = info["iterations"]
    extra: dict = {"precond": "jacobi" if minv is not None else "none"}
    if not certified:
        info.pop("hvp_cg", None)
        return _finish(task, w, lin, q, {**info, **extra, "exactness": "uncertified", "error_bound": math.nan})
    jn = lin.cross_norm_bound()
    vnorm = float(torch.linalg.vector_norm(v))
    status = info["cg_status"]
    prev = math.inf
    rounds = 1
    while True:
        hq = torch.mv(dense, q) if dense is not None else lin.hvp(q)
        if dense is not None:
            lin.n_hvp += 1
        grad, bound, rnorm = _error_bound(lin, v, q, mu, jn, hq)
        gnorm = float(torch.linalg.vector_norm(grad))
        if bound <= tol:
            status = "converged"
            break
        if iters >= max_iter or status == "negative_curvature":
            status = "max_iter" if status != "negative_curvature" else status
            break
        if not rnorm < 0.5 * prev or (rounds > 1 and info["iterations"] == 0):  # no progress: the rounding floor
            status = "stalled"
            break
        prev = rnorm
        # the residual that makes the bound tol, halved for the next round's rounding
        target = 0.5 * tol * mu * gnorm / ((1.0 + tol) * jn * vnorm) if jn > 0 and vnorm > 0 else 0.0
        q, info = solve(max(target, 1e-300), max_iter - iters, q)
        iters += info["iterations"]
        status = info["cg_status"]
        rounds += 1
    stats = {"iterations": iters, "residual": rnorm / vnorm if vnorm > 0 else 0.0, "converged": status == "converged",
             "cg_status": status, **extra, "exactness": "certified", "error_bound": bound, "mu": mu,
             "cross_norm_bound": jn, "rounds": rounds}
    return _finish(task, w, lin, q, stats, grad=grad)


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
                      summary="truncated Neumann series alpha * sum_{i<=K} (I - alpha H)^i; K HVPs",
                      options={"iterations": Option(int, low=0), "alpha": _ALPHA})
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
                      summary="fixed-point iteration q <- q - alpha (H q - v) from q = 0; K - 1 HVPs",
                      options={"iterations": Option(int, low=1), "alpha": _ALPHA})  # K = 0: q = 0, a zero gradient
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
