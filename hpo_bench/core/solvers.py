"""Tight reference inner solvers for tasks without a closed form.

Two line-search Newton methods (Nocedal & Wright, *Numerical Optimization*, 2nd ed.):

* :func:`newton` (Alg. 3.1 with a modified-Cholesky fallback): the dense Hessian is
  factored by Cholesky; when it is not positive definite a multiple of the identity is
  added until it is (Alg. 3.3). For problems of up to a few thousand parameters.
* :func:`newton_cg` (Alg. 7.1, line-search Newton-CG): matrix-free; each step solves
  ``H d = -g`` by conjugate gradients to the forcing tolerance ``min(0.5, sqrt(||g||)) ||g||``
  and stops CG on negative curvature (then the steepest-descent direction or the CG
  iterate so far is used). Scales to GPUs and large networks.

Both stop when ``||g|| <= gtol`` and then take ``polish`` further full Newton steps, which
drive the gradient to rounding level: reference solutions must be accurate enough that
central finite differences of ``F(theta) = outer(w*(theta))`` with ``h = 1e-5`` are
accurate to ~1e-8, i.e. ``w*`` to ~1e-14. Near the solution the loss decrease is below
rounding, so there the line search judges steps by the gradient norm instead of Armijo's
condition (see :func:`_line_search`).

:class:`SolveCache` memoises ``solve(theta)`` on the exact bytes of ``theta`` (a pure
function: same input, same output), so a recorder asking for ``response(theta)`` and then
``reference_hypergradient(theta)`` pays for one solve.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["SolveInfo", "newton", "newton_or_raise", "newton_cg", "continuation", "SolveCache", "SolveError"]


class SolveError(FloatingPointError):
    """A reference inner solve did not reach its tolerance (a ``FloatingPointError``, so
    :class:`hpo_bench.core.records.Recorder` reports it instead of failing the cell)."""


@dataclass
class SolveInfo:
    iterations: int
    grad_norm: float
    converged: bool
    hvps: int = 0
    shifts: int = 0


def _line_search(loss: Callable[[torch.Tensor], torch.Tensor], grad: Callable[[torch.Tensor], torch.Tensor],
                 w: torch.Tensor, f0: float, g: torch.Tensor, d: torch.Tensor, *, c1: float = 1e-4,
                 max_halvings: int = 60) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Backtracking from step 1; returns ``(w, f, grad)`` at the accepted point.

    Far from the solution a step must satisfy Armijo's ``f(w + t d) <= f0 + c1 t g^T d``.
    Once the predicted decrease ``-g^T d`` is below ``1e-10 max(1, |f0|)`` the loss cannot
    resolve it (rounding), so a step is accepted when it lowers ``||grad||`` instead.
    """
    slope = float(g @ d)
    flat = -slope <= 1e-10 * max(1.0, abs(f0))
    gn0 = float(torch.linalg.vector_norm(g))
    t = 1.0
    for _ in range(max_halvings):
        w_new = w + t * d
        if flat:
            g_new = grad(w_new)
            if float(torch.linalg.vector_norm(g_new)) < gn0:
                return w_new, float(loss(w_new)), g_new
        else:
            f_new = float(loss(w_new))
            if math.isfinite(f_new) and f_new <= f0 + c1 * t * slope:
                return w_new, f_new, grad(w_new)
        t *= 0.5
    return w, f0, g


def newton(loss: Callable[[torch.Tensor], torch.Tensor], grad: Callable[[torch.Tensor], torch.Tensor],
           hessian: Callable[[torch.Tensor], torch.Tensor], w0: torch.Tensor, *, gtol: float = 1e-12,
           max_iter: int = 200, polish: int = 2) -> tuple[torch.Tensor, SolveInfo]:
    """Damped Newton with a dense Hessian.

    Args:
        loss, grad, hessian: the objective, its gradient ``(p,)`` and Hessian ``(p, p)``.
        w0: starting point (not modified).
        gtol: stop when ``||grad|| <= gtol``, then take ``polish`` full Newton steps.
        max_iter: iteration limit (the returned info says whether ``gtol`` was reached).
    """
    w = w0.detach().clone()
    f = float(loss(w))
    shifts = 0
    it = 0
    converged = False
    extra = 0
    g = grad(w)
    while it < max_iter:
        gn = float(torch.linalg.vector_norm(g))
        if not math.isfinite(gn):
            break
        if gn <= gtol:
            converged = True
            if extra >= polish:
                break
            extra += 1
        h = hessian(w)
        h = 0.5 * (h + h.T)
        chol, info = torch.linalg.cholesky_ex(h)
        tau = 0.0
        if int(info) != 0:  # Alg. 3.3: H + tau I with tau growing until Cholesky succeeds
            tau = max(1e-3 * float(h.diagonal().abs().max()), 1e-10)
            eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
            while int(info) != 0:
                chol, info = torch.linalg.cholesky_ex(h + tau * eye)
                tau *= 4.0
            shifts += 1
        d = -torch.cholesky_solve(g.unsqueeze(1), chol).squeeze(1)
        w, f, g = _line_search(loss, grad, w, f, g, d)
        it += 1
    gn = float(torch.linalg.vector_norm(g))
    return w, SolveInfo(iterations=it, grad_norm=gn, converged=converged and gn <= gtol, shifts=shifts)


def newton_or_raise(name: str, loss: Callable[[torch.Tensor], torch.Tensor],
                    grad: Callable[[torch.Tensor], torch.Tensor], hessian: Callable[[torch.Tensor], torch.Tensor],
                    w0: torch.Tensor, *, gtol: float = 1e-12, max_iter: int = 200) -> torch.Tensor:
    """:func:`newton` for a reference solve: the solution, or :class:`SolveError` naming the task."""
    w, info = newton(loss, grad, hessian, w0, gtol=gtol, max_iter=max_iter)
    if not info.converged:
        raise SolveError(f"{name}: Newton stopped at ||grad|| = {info.grad_norm:.2e} after "
                         f"{info.iterations} iterations (target {gtol:g})")
    return w


#: A CG loop stops once its residual is at rounding level: ``||r|| <= CG_FLOOR * eps * (h_max ||d|| + ||g||)``
#: with ``h_max`` the largest curvature ``p^T H p / p^T p`` it has seen (a lower estimate of ``||H||``):
#: a residual below that cannot be told from rounding in ``H d``. A polishing step asks for 1e-12 of a
#: gradient that may already be at its own rounding level; at p = 1e5 (sparse logistic, per-feature
#: penalties) one such loop had run 7500 HVPs of its 1,000,050 allowed when it was stopped.
CG_FLOOR = 64.0


def _cg_direction(hvp: Callable[[torch.Tensor], torch.Tensor], g: torch.Tensor, tol: float,
                  max_iter: int, precond: torch.Tensor | None = None) -> tuple[torch.Tensor, int, bool]:
    """Approximately solve ``H d = -g`` (Alg. 7.1's inner loop); returns (d, HVPs, hit negative curvature).

    ``precond``: the inverse of a positive diagonal preconditioner (``1 / diag(H)``, Jacobi), or ``None``.
    Per-feature penalties on sparse data give ``H`` thousands of distinct tiny eigenvalues on the rare
    features (each ``lam_j`` plus little data); Jacobi maps each such isolated diagonal entry to one, so
    plain CG's iteration per distinct eigenvalue goes away. ``tol`` bounds CG's recursive residual, which
    drifts from the true ``||H d + g||`` by about ``eps cond(H) ||g||``.
    ``p^T H p <= 0`` once the residual is already below ``1e-3 ||g||`` is rounding in a
    direction of tiny curvature, not evidence of a saddle: the iterate is returned as is. A residual
    at rounding level (:data:`CG_FLOOR`) ends the loop as if ``tol`` were met.
    """
    z = torch.zeros_like(g)
    r = g.clone()
    y = r if precond is None else precond * r
    p = -y
    ry = float(r @ y)
    gn = float(torch.linalg.vector_norm(g))
    rn = gn
    h_max = 0.0
    eps = torch.finfo(g.dtype).eps
    n_hvp = 0
    for j in range(max_iter):
        hp = hvp(p)
        n_hvp += 1
        php = float(p @ hp)
        if not php > 0:
            if j > 0 and rn <= 1e-3 * gn:
                return z, n_hvp, False
            return (-g if j == 0 else z), n_hvp, True
        h_max = max(h_max, php / max(float(p @ p), 1e-300))
        alpha = ry / php
        z = z + alpha * p
        r = r + alpha * hp
        rn = float(torch.linalg.vector_norm(r))
        if rn <= max(tol, CG_FLOOR * eps * (h_max * float(torch.linalg.vector_norm(z)) + gn)):
            return z, n_hvp, False
        y = r if precond is None else precond * r
        ry_new = float(r @ y)
        p = -y + (ry_new / ry) * p
        ry = ry_new
    return z, n_hvp, False


def newton_cg(loss: Callable[[torch.Tensor], torch.Tensor], grad: Callable[[torch.Tensor], torch.Tensor],
              hvp_at: Callable[[torch.Tensor], Callable[[torch.Tensor], torch.Tensor]], w0: torch.Tensor, *,
              gtol: float = 1e-12, max_iter: int = 500, polish: int = 2, cg_max_iter: int | None = None,
              local: bool = False, precond_at: Callable[[torch.Tensor], torch.Tensor] | None = None,
              ) -> tuple[torch.Tensor, SolveInfo]:
    """Line-search Newton-CG; ``hvp_at(w)`` returns ``v -> H(w) v`` (built once per outer iteration),
    ``precond_at(w)`` (optional) the inverse diagonal of a Jacobi preconditioner for its CG loops.

    Polishing steps solve ``H d = -g`` to ``1e-12 ||g||``; a point where CG meets negative
    curvature is not a strict local minimum and is never reported as converged.

    With ``local = True`` (a *corrector* from a nearby start) every step is a full Newton step
    with CG to ``1e-6 ||g||`` and the solve gives up (``converged = False``) at the first
    negative curvature or when ``||grad||`` grows: no line search decides anything, so the
    result is a continuous function of the start and of the objective.
    """
    w = w0.detach().clone()
    f = float(loss(w))
    cg_max = cg_max_iter if cg_max_iter is not None else 10 * w.shape[0] + 50
    it = n_hvp = 0
    extra = 0
    converged = False
    g = grad(w)
    neg = False
    while it < max_iter:
        gn = float(torch.linalg.vector_norm(g))
        if not math.isfinite(gn):
            break
        polishing = gn <= gtol and not neg
        if polishing:
            converged = True
            if extra >= polish:
                break
            extra += 1
        eta = 1e-12 if polishing else (1e-6 if local else min(0.5, math.sqrt(gn)))
        d, k, neg = _cg_direction(hvp_at(w), g, eta * gn, cg_max,
                                  None if precond_at is None else precond_at(w))
        n_hvp += k
        if local:
            if neg:
                break
            w = w + d
            g = grad(w)
            if float(torch.linalg.vector_norm(g)) > 10 * max(gn, gtol):
                neg = True  # diverging: not in the basin of a strict minimum
                break
        else:
            w, f, g = _line_search(loss, grad, w, f, g, d)
        it += 1
    gn = float(torch.linalg.vector_norm(g))
    return w, SolveInfo(iterations=it, grad_norm=gn, converged=converged and gn <= gtol and not neg, hvps=n_hvp)


def continuation(correct: Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor | None],
                 theta_anchor: torch.Tensor, w_anchor: torch.Tensor, theta: torch.Tensor, *,
                 max_step: float = 0.5,
                 tangent: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 locality: float = 0.5, max_depth: int = 3,
                 jump: Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor | None] | None = None,
                 ) -> torch.Tensor:
    """Follow a branch of local minima from ``(theta_anchor, w_anchor)`` to ``theta``.

    For non-convex inner problems "the" solution from a fixed starting point is not a
    continuous function of ``theta``: a line search or a truncated CG that decides
    differently at ``theta + h u`` and ``theta - h u`` can land in another basin, and finite
    differences become meaningless. Following the segment ``theta_anchor -> theta`` defines
    ``w*(theta)`` as the branch of strict local minima through ``w_anchor``, which is smooth
    in ``theta`` wherever that branch does not fold.

    Predictor-corrector (Allgower & Georg, *Numerical Continuation Methods*, 1990, ch. 2):
    ``k = ceil(max|theta - theta_anchor| / max_step)`` equal steps; each is predicted along
    the tangent ``dw = -H^{-1} (d grad_w inner / dtheta) dtheta`` and corrected by
    ``correct(theta_i, w_start, final)`` (a converging solver, or ``None`` on failure). A
    corrected point farther than ``locality * ||dw||`` from the prediction may sit in
    another basin; such a step is halved, recursively, up to ``max_depth`` times. Strict
    minima are isolated, so two corrections that stay that close to the same branch end at
    the same minimum: the result is continuous in ``theta``. Where the branch genuinely
    folds (the smallest Hessian eigenvalue reaches 0) no step is local enough; after
    ``max_depth`` halvings the corrected point is accepted (the path *jumps* to the minimum
    the corrector reaches, or, when the corrector fails, the one ``jump`` -- a globalised
    solver with a larger iteration budget -- reaches) and followed from there, so
    ``w*(theta)`` is piecewise smooth, with jumps only across folds. When both fail,
    :class:`SolveError` is raised.
    """

    def advance(th_a, w_a, th_b, final, depth):
        dw = tangent(th_a, w_a, th_b - th_a) if tangent is not None else torch.zeros_like(w_a)
        w_start = w_a + dw
        w = correct(th_b, w_start, final)
        if w is not None and (tangent is None or float(torch.linalg.vector_norm(w - w_start))
                              <= locality * float(torch.linalg.vector_norm(dw)) + 1e-9):
            return w
        if depth >= max_depth:
            if w is None and jump is not None:
                w = jump(th_b, w_start, final)
            if w is None:
                raise SolveError("continuation: the corrector failed to converge at "
                                 f"{float((th_b - th_a).abs().max()):.2e} from the last point on the branch")
            return w  # across a fold: jump to the minimum the corrector reached
        th_mid = th_a + 0.5 * (th_b - th_a)
        w_mid = advance(th_a, w_a, th_mid, False, depth + 1)
        return advance(th_mid, w_mid, th_b, final, depth + 1)

    diff = theta - theta_anchor
    k = max(1, math.ceil(float(diff.abs().max()) / max_step))
    w, th_prev = w_anchor, theta_anchor
    for i in range(1, k + 1):
        th = theta if i == k else theta_anchor + diff * (i / k)
        w = advance(th_prev, w, th, i == k, 0)
        th_prev = th
    return w


class SolveCache:
    """A small LRU memo of ``theta -> w*`` keyed on the exact bytes of ``theta`` (and its dtype/device)."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._store: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    @staticmethod
    def _key(theta: torch.Tensor) -> tuple:
        t = theta.detach()
        return (str(t.dtype), str(t.device), tuple(t.shape), t.cpu().numpy().tobytes())

    def get(self, theta: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        key = self._key(theta)
        if key in self._store:
            self._store.move_to_end(key)
            return self._store[key].clone()
        w = compute(theta.detach()).detach()
        self._store[key] = w
        if len(self._store) > self.size:
            self._store.popitem(last=False)
        return w.clone()
