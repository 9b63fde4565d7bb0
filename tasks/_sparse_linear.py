"""Shared maths of the non-smooth (l1-penalised) tasks: the composite contract, prox, solvers, gaps, data
(:func:`make_task_data`: synthetic, text-like, registered sets; sparse ones as CSR designs without a Gram
matrix) and the cross-validated outer criterion (:class:`CrossValMixin`).

Every non-smooth task here is *composite*::

    inner(w, theta) = f(w, theta) + sum_j alpha_j(theta) |w_j|,
    f(w, theta)     = data(w) + l2(theta) / 2 ||w||^2

with a smooth convex data term (least squares ``1/(2n) ||X w - y||^2`` or the mean logistic loss),
``alpha(theta) > 0`` the l1 weights and ``l2(theta) >= 0`` an optional ridge weight (elastic net).

Optimality is not ``grad_w inner = 0`` but a fixed point of the proximal-gradient map::

    w* = prox_{eta g}(w* - eta grad f(w*)),   prox_{eta g}(z)_j = sign(z_j) max(|z_j| - eta alpha_j, 0)

for any step ``eta > 0`` (:meth:`CompositeTask.prox_residual` measures it). On the support
``S = {j : w*_j != 0}`` with signs ``s = sign(w*_S)`` the solution is smooth in ``theta`` as long as
the support is *stable* (every ``j`` outside ``S`` has ``|grad_j f| < alpha_j`` strictly), and
differentiating ``grad_S f(w*) + alpha_S s = 0`` gives the closed-form hypergradient
(Bertrand et al. 2020, "Implicit differentiation of Lasso-type models")::

    H_SS q = grad_S outer(w*),        H_SS = d^2 f / dw_S^2
    dF/dtheta = -B^T q,               B = d/dtheta [grad_S f(w*, theta) + alpha_S(theta) s]

(zero on coordinates outside the support). For least squares ``H_SS = G_SS + l2 I`` with
``G = X^T X / n``; for lasso this is ``w_S = (X_S^T X_S)^{-1} (X_S^T y - n lam s)``.

Reference solver (own code, float64, NumPy): a primal active-set method (:func:`active_set`),
warm-started along a geometric path of l1 weights from where ``w* = 0`` down to the requested ones
(:meth:`CompositeTask._homotopy`, 10 steps per decade): with the support and signs fixed, solve the
optimality system on the support exactly (a linear solve for least squares, Newton for the logistic
loss), drop a coordinate whose sign flips, add the worst KKT violator, repeat. Should it not finish,
cyclic coordinate descent (CD) runs and the active set restarts from its iterate. The result has a duality gap at rounding
level (``<= 1e-12`` is checked; :class:`FloatingPointError` if not).
Why own code, and where skglm comes in: skglm's solvers stop on a tolerance (at ``tol = 1e-12`` their
duality gap is 1e-11 to 2e-10, not the reference's 1e-12), so the active-set polish is needed for a
rounding-level reference in any case, and their numba kernels compile on the first call in every process
(about 4 s here). At the suite's sizes (p <= 200) the homotopy above takes 10-15 ms, which is what a
first skglm call costs many times over. It grows badly with the support, though: 7.7 s for a cold lasso
at n = 1000, p = 2000, where skglm takes 0.1 s. So for least squares without a ridge term (``lasso``,
``weighted_lasso``) at ``p >= SKGLM_MIN_P``, a cold solve starts with skglm's ``WeightedLasso`` (when the
optional ``skglm`` package is installed: ``pip install skglm``, or the project's ``fast`` extra) and the
active set polishes its result to the same 1e-12 gap, the same check; without skglm, or below that size,
the homotopy runs. Head to head: ``benchmarks/bench_nonsmooth.py::test_cold_solve`` (group
``nonsmooth-cold-lasso-p1000``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from hpo_bench import data as _data
from hpo_bench.core.space import Space
from hpo_bench.core.task import Reference, Task, require

from ._datasets import dataset_names, dataset_rule, task_split, text_like_split
from ._sparse_ops import Design

__all__ = ["CompositeTask", "SupportLinearization", "soft_threshold", "make_sparse_data", "lasso_gap",
           "logistic_gap", "cd_quadratic", "cd_logistic", "REFERENCE_GAP"]

#: the duality gap the reference solve must reach (absolute; the losses are O(1) by construction)
REFERENCE_GAP = 1e-12

#: least-squares tasks with at least this many weights start a cold reference solve from skglm, when installed
SKGLM_MIN_P = 1000


def skglm_available() -> bool:
    """Whether the optional ``skglm`` package imports (looked up once per process)."""
    global _SKGLM
    if _SKGLM is None:
        try:
            import skglm  # noqa: F401
            _SKGLM = True
        except ImportError:
            _SKGLM = False
    return _SKGLM


_SKGLM: bool | None = None


def soft_threshold(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``prox`` of ``sum_j t_j |w_j|``: ``sign(z) max(|z| - t, 0)`` (exact zeros below the threshold)."""
    return torch.sign(z) * torch.clamp(z.abs() - t, min=0.0)


def _st(z: float, t: float) -> float:
    return z - t if z > t else (z + t if z < -t else 0.0)


# ---------------------------------------------------------------------------------------------- data
def make_sparse_data(*, task: str, n: int, p: int, n_informative: int, snr: float, rho: float,
                     n_val: int | None, n_test: int | None, seed: int, classification: bool = False):
    """Seeded synthetic data with a known sparse truth: ``(x_tr, y_tr, x_va, y_va, x_te, y_te, w_true)``.

    Features are Gaussian with Toeplitz correlation ``rho^|i-j|``; ``n_informative`` true weights
    (positions drawn from the seed) are ``+-1`` times a uniform magnitude in [1, 2]; the noise has
    standard deviation ``std(X w_true) / snr`` (``snr = inf``: noiseless). Classification labels
    are ``sign(X w_true + noise)`` in ``{-1, +1}``. Three splits: train (``n``), validation and test.
    """
    for key, val in (("n", n), ("p", p)):
        require(isinstance(val, int) and val >= 2, task, key, "an integer >= 2", val)
    require(isinstance(n_informative, int) and 1 <= n_informative <= p, task, "n_informative",
            f"an integer in [1, p={p}]", n_informative)
    require(snr > 0, task, "snr", "> 0 (inf: noiseless)", snr)
    require(0 <= rho < 1, task, "rho", "0 <= rho < 1", rho)
    n_val = n if n_val is None else n_val
    n_test = n if n_test is None else n_test
    require(isinstance(n_val, int) and n_val >= 2, task, "n_val", "an integer >= 2", n_val)
    require(isinstance(n_test, int) and n_test >= 2, task, "n_test", "an integer >= 2", n_test)
    rng = np.random.default_rng(seed)
    idx = np.arange(p)
    chol = np.linalg.cholesky(rho ** np.abs(idx[:, None] - idx[None, :]))
    w_true = np.zeros(p)
    support = np.sort(rng.choice(p, size=n_informative, replace=False))
    w_true[support] = rng.choice([-1.0, 1.0], size=n_informative) * rng.uniform(1.0, 2.0, size=n_informative)
    total = n + n_val + n_test
    x = rng.standard_normal((total, p)) @ chol.T
    clean = x @ w_true
    sd = 0.0 if math.isinf(snr) else float(np.std(clean)) / snr
    y = clean + sd * rng.standard_normal(total)
    if classification:
        y = np.where(y >= 0, 1.0, -1.0)
    tr, va, te = slice(0, n), slice(n, n + n_val), slice(n + n_val, None)
    return x[tr], y[tr], x[va], y[va], x[te], y[te], w_true


# ----------------------------------------------------------------------------------- duality gaps
def lasso_gap(x: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: np.ndarray, l2: float) -> float:
    """Duality gap of ``1/(2n) ||X w - y||^2 + sum alpha_j |w_j| + l2/2 ||w||^2`` at ``w``.

    The ridge term is the lasso of the augmented data ``[X; sqrt(n l2) I], [y; 0]``; the dual point
    is the rescaled residual ``r / n`` made feasible (``|x~_j^T theta| <= alpha_j``). Evaluated in
    extended precision (``np.longdouble``): at a solution ``|x_j^T r| / n = alpha_j`` on the support,
    and in float64 the ratio's rounding (``eps ||x_j|| ||r|| / (n alpha_j)``, 1e-12 for weights of
    1e-4) would dominate the gap of an exact solution.
    """
    x = _ext(x)
    y, w, alpha = (np.asarray(a, dtype=np.longdouble) for a in (y, w, alpha))
    n = x.shape[0]
    r = y - x @ w
    corr = x.T @ r - n * l2 * w  # x~_j^T r~ of the augmented problem
    primal = 0.5 * (r @ r) / n + float(alpha @ np.abs(w)) + 0.5 * l2 * (w @ w)
    scale = max(1.0, float(np.max(np.abs(corr) / (n * alpha))))
    th_r, th_w = r / (n * scale), -math.sqrt(n * l2) * w / (n * scale)
    # dual of 1/(2n)||y~ - X~ w||^2 + g: D = 1/(2n)||y||^2 - n/2 ||theta - y~/n||^2
    dual = 0.5 * (y @ y) / n - 0.5 * n * (((th_r - y / n) ** 2).sum() + (th_w ** 2).sum())
    return float(primal - dual)


def _ext(x):
    """``x`` in extended precision: a dense array, or a CSR copy of a ``scipy.sparse`` one (never densified)."""
    if sp.issparse(x):
        return sp.csr_matrix(x).astype(np.longdouble)
    return np.asarray(x, dtype=np.longdouble)


def _xlogx(u: np.ndarray) -> np.ndarray:
    out = np.zeros_like(u)
    pos = u > 0
    out[pos] = u[pos] * np.log(u[pos])
    return out


def logistic_gap(x: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: np.ndarray) -> float:
    """Duality gap of ``mean log(1 + exp(-y x.w)) + sum alpha_j |w_j|`` at ``w``.

    Dual: ``D(u) = -1/n sum [H(n u_i)]`` with ``H(t) = t log t + (1-t) log(1-t)`` over the feasible
    set ``|(diag(y) X)^T u|_j <= alpha_j``; ``u = sigma(-y x.w) / n`` rescaled to feasibility.
    """
    x = _ext(x)  # as lasso_gap
    y, w, alpha = (np.asarray(a, dtype=np.longdouble) for a in (y, w, alpha))
    n = x.shape[0]
    z = y * (x @ w)
    primal = float(np.mean(np.logaddexp(0.0, -z))) + float(alpha @ np.abs(w))
    u = 1.0 / (1.0 + np.exp(z)) / n
    corr = x.T @ (y * u)
    u = u / max(1.0, float(np.max(np.abs(corr) / alpha)))
    t = n * u
    dual = -float(np.sum(_xlogx(t) + _xlogx(1.0 - t))) / n
    return primal - dual


# ------------------------------------------------------------------------------------------ solvers
def cd_quadratic(gram: np.ndarray, c: np.ndarray, alpha: np.ndarray, l2: float, w: np.ndarray,
                 epochs: int) -> np.ndarray:
    """``epochs`` sweeps of cyclic CD (exact coordinate minimisation) on ``1/2 w^T G w - c^T w + l2/2 ||w||^2
    + sum alpha_j |w_j|``, from ``w`` (copied). ``G w`` is kept up to date, so a sweep costs ``O(p^2)``."""
    w = np.array(w, dtype=np.float64)
    gw = gram @ w
    diag = np.diag(gram) + l2
    p = w.shape[0]
    for _ in range(epochs):
        for j in range(p):
            if diag[j] <= 0.0:  # an empty column: its coordinate stays at zero
                continue
            old = w[j]
            gj = gw[j] + l2 * old - c[j]
            new = _st(old - gj / diag[j], alpha[j] / diag[j])
            if new != old:
                gw += gram[:, j] * (new - old)
                w[j] = new
    return w


def cd_logistic(x: np.ndarray, y: np.ndarray, alpha: np.ndarray, l2: float, w: np.ndarray,
                epochs: int, lips: np.ndarray) -> np.ndarray:
    """``epochs`` sweeps of cyclic proximal coordinate gradient on the l1 logistic loss with coordinate
    Lipschitz constants ``lips`` (``||x_j||^2 / (4n) + l2``), from ``w`` (copied); ``X w`` is kept."""
    w = np.array(w, dtype=np.float64)
    n = x.shape[0]
    xw = x @ w
    for _ in range(epochs):
        for j in range(w.shape[0]):
            if lips[j] <= 0.0:  # an empty column: its coordinate stays at zero
                continue
            old = w[j]
            gj = float(x[:, j] @ (-y / (1.0 + np.exp(y * xw)))) / n + l2 * old
            new = _st(old - gj / lips[j], alpha[j] / lips[j])
            if new != old:
                xw += x[:, j] * (new - old)
                w[j] = new
    return w


def cd_quadratic_sparse(xc: sp.csc_matrix, y: np.ndarray, alpha: np.ndarray, l2: float, w: np.ndarray,
                        epochs: int) -> np.ndarray:
    """:func:`cd_quadratic` for a sparse ``X`` (CSC): the residual ``X w - y`` is kept instead of ``G w``, so a
    coordinate costs its column's non-zeros and no Gram matrix is formed. Empty columns stay at zero."""
    w = np.array(w, dtype=np.float64)
    n = xc.shape[0]
    r = xc @ w - y
    ptr, ind, val = xc.indptr, xc.indices, xc.data
    diag = np.asarray(xc.multiply(xc).sum(0)).ravel() / n + l2
    for _ in range(epochs):
        for j in range(w.shape[0]):
            if diag[j] <= 0.0:
                continue
            lo, hi = ptr[j], ptr[j + 1]
            idx, v = ind[lo:hi], val[lo:hi]
            old = w[j]
            gj = float(v @ r[idx]) / n + l2 * old
            new = _st(old - gj / diag[j], alpha[j] / diag[j])
            if new != old:
                r[idx] += v * (new - old)
                w[j] = new
    return w


def cd_logistic_sparse(xc: sp.csc_matrix, y: np.ndarray, alpha: np.ndarray, l2: float, w: np.ndarray,
                       epochs: int, lips: np.ndarray) -> np.ndarray:
    """:func:`cd_logistic` for a sparse ``X`` (CSC): a coordinate reads only its column's rows of ``X w``."""
    w = np.array(w, dtype=np.float64)
    n = xc.shape[0]
    xw = xc @ w
    ptr, ind, val = xc.indptr, xc.indices, xc.data
    for _ in range(epochs):
        for j in range(w.shape[0]):
            if lips[j] <= 0.0:
                continue
            lo, hi = ptr[j], ptr[j + 1]
            idx, v = ind[lo:hi], val[lo:hi]
            yi = y[idx]
            old = w[j]
            gj = float(v @ (-yi / (1.0 + np.exp(yi * xw[idx])))) / n + l2 * old
            new = _st(old - gj / lips[j], alpha[j] / lips[j])
            if new != old:
                xw[idx] += v * (new - old)
                w[j] = new
    return w


def spectral_norm_sq(x) -> float:
    """``||X||_2^2`` (dense: LAPACK; sparse: Lanczos on ``X^T X`` to 1e-10, then raised by 1e-8 relative so
    that a ``1 / L`` step stays safe)."""
    if not sp.issparse(x):
        return float(np.linalg.norm(x, 2) ** 2)
    from scipy.sparse.linalg import svds

    if min(x.shape) <= 2:
        return float(np.linalg.norm(x.toarray(), 2) ** 2)
    s = svds(sp.csr_matrix(x), k=1, tol=1e-10, return_singular_vectors=False, random_state=0)
    return float(s[0]) ** 2 * (1 + 1e-8)


class SupportLinearization:
    """Second-order information of the composite inner problem *on the support* of ``w``.

    Attributes:
        support: indices ``S`` of the non-zero entries of ``w`` (long tensor, ascending).
        signs: ``sign(w_S)``.
        grad: ``grad_w f`` (the smooth part) at ``w``, shape ``(p,)``.
        n_hvp, n_cross: products computed so far (a dense ``H_SS`` counts ``|S|``).

    The optimality condition restricted to ``S`` is ``grad_S f(w, theta) + alpha_S(theta) s = 0``;
    :meth:`hvp` is its derivative in ``w_S`` (``H_SS v``), :meth:`cross_vjp` the transpose of its
    derivative in ``theta`` (``B^T q``), :meth:`cross_jacobian` ``B`` itself (``|S| x m``).
    """

    def __init__(self, task: CompositeTask, w: torch.Tensor, theta: torch.Tensor) -> None:
        self.task = task
        self.w = w.detach()
        self.theta = theta.detach()
        self.support = torch.nonzero(self.w != 0).reshape(-1)
        self.signs = torch.sign(self.w[self.support])
        self.alpha, self.l2 = task.penalties(self.theta)
        self.grad = task.smooth_grad(self.w, self.theta)
        self._h: torch.Tensor | None = None
        self._ja, self._jl2 = task.penalty_jacobians(self.theta)
        self.n_hvp = 0
        self.n_cross = 0

    @property
    def size(self) -> int:
        return int(self.support.shape[0])

    def hessian(self) -> torch.Tensor:
        """Dense ``H_SS`` (``|S| x |S|``)."""
        if self._h is None:
            self._h = self.task.support_hessian(self.w, self.theta, self.support)
            self.n_hvp += self.size
        return self._h

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """``H_SS v`` for ``v`` of shape ``(|S|,)`` or ``(|S|, k)``."""
        self.n_hvp += 1 if v.ndim == 1 else v.shape[1]
        return self.hessian() @ v

    def cross_jacobian(self) -> torch.Tensor:
        """``B = d/dtheta [grad_S f + alpha_S s]``, shape ``(|S|, m)``: rows ``s_j dalpha_j + w_j dl2`` (d/dtheta)."""
        s = self.support
        return self.signs.unsqueeze(1) * self._ja[s] + self.w[s].unsqueeze(1) * self._jl2.unsqueeze(0)

    def cross_vjp(self, q: torch.Tensor) -> torch.Tensor:
        """``B^T q`` for ``q`` of shape ``(|S|,)``: how the support's optimality condition moves with theta."""
        self.n_cross += 1
        s = self.support
        return self._ja[s].T @ (self.signs * q) + self._jl2 * float(self.w[s] @ q)

    def stationarity(self) -> float:
        """``||grad_S f + alpha_S s||_inf``: zero at an exact solution with this support."""
        s = self.support
        if self.size == 0:
            return 0.0
        return float((self.grad[s] + self.alpha[s] * self.signs).abs().max())

    def margin(self) -> float:
        """Relative distance to a support change: ``min_{j not in S} (alpha_j - |grad_j f|) / alpha_j``.

        Positive: the support is stable (it stays the same in a neighbourhood of theta). Zero or
        negative (``|grad_j f| = alpha_j`` for some inactive ``j``): a degenerate point where the
        hypergradient is one-sided only. ``inf`` when every coordinate is active.
        """
        off = torch.ones_like(self.w, dtype=torch.bool)
        off[self.support] = False
        if not bool(off.any()):
            return math.inf
        return float(((self.alpha[off] - self.grad[off].abs()) / self.alpha[off]).min())


class CompositeTask(Task):
    """Base of the l1-penalised tasks: ``inner = data(w) + l2/2 ||w||^2 + sum alpha_j |w_j|``.

    The non-smooth variant of the task contract (:mod:`hpo_bench.core.task`). Beyond :class:`Task` it
    guarantees:

    * :meth:`penalties` ``(alpha, l2)`` and their Jacobians in theta (:meth:`penalty_jacobians`);
    * :meth:`smooth_loss`, :meth:`smooth_grad`, :meth:`smooth_hvp` of ``f`` (the smooth part);
    * :meth:`prox` (soft-thresholding) and :meth:`prox_residual`, the optimality measure
      ``||w - prox(w - eta grad f(w))|| / eta`` (zero exactly at a solution);
    * :meth:`solve`: reference solution with duality gap ``<= 1e-12`` (:meth:`duality_gap`) plus the gap's
      float64 floor (:meth:`gap_floor`, negligible unless an active l1 weight is tiny), exact zeros off the
      support;
    * :meth:`linearize_support` (:class:`SupportLinearization`) and the closed-form
      :meth:`reference_hypergradient` on the support; :meth:`support_margin` says how far the support
      is from changing;
    * :meth:`lipschitz` (of ``grad f``) and :meth:`coordinate_lipschitz` for ISTA/FISTA/CD steps.

    Tags ``"non-smooth"`` (smooth-only inner solvers and methods are refused) and ``"prox"`` (the
    structure above: what the ``ista``/``fista``/``cd`` inner solvers and the non-smooth methods need).
    """

    tags = frozenset({"non-smooth", "prox", "convex", "closed-form"})
    check_params: dict[str, Any] = {"n": 40, "p": 10, "n_informative": 3, "lam0": 0.1}
    _CACHE = 16

    # ------------------------------------------------------------------ subclass hooks
    def penalties(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha, l2)``: l1 weights (shape ``(p,)``, positive) and the ridge weight (0-dim, >= 0)."""
        raise NotImplementedError

    def data_loss(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def data_grad(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def data_hvp(self, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``(d^2 data / dw^2) v`` for ``v`` of shape ``(p,)`` or ``(p, k)``."""
        raise NotImplementedError

    def data_support_hessian(self, w: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def data_lipschitz(self) -> float:
        raise NotImplementedError

    def data_coordinate_lipschitz(self) -> torch.Tensor:
        raise NotImplementedError

    def _reference_solve(self, alpha: np.ndarray, l2: float, w0: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def _gap_np(self, w: np.ndarray, alpha: np.ndarray, l2: float) -> float:
        raise NotImplementedError

    def duality_gap(self, w: torch.Tensor, theta: torch.Tensor) -> float:
        """The duality gap of the inner problem at ``w`` (float64; zero exactly at the solution)."""
        alpha, l2 = self.penalties(theta.detach())
        return self._gap_np(w.detach().double().cpu().numpy(), alpha.double().cpu().numpy(), float(l2))

    def _cd_numpy(self, alpha: np.ndarray, l2: float, w: np.ndarray, epochs: int) -> np.ndarray:
        raise NotImplementedError

    def cd_epochs(self, w: torch.Tensor, theta: torch.Tensor, epochs: int) -> torch.Tensor:
        """``epochs`` sweeps of cyclic coordinate descent from ``w`` (the ``cd`` inner solver; float64 NumPy).

        Least squares: exact coordinate minimisation; logistic: a proximal coordinate-gradient step with
        the coordinate Lipschitz constant. Both keep the iterate's exact zeros.
        """
        alpha, l2 = self.penalties(theta.detach())
        out = self._cd_numpy(alpha.double().cpu().numpy(), float(l2), w.detach().double().cpu().numpy(), epochs)
        return self.tensor(out)

    # ------------------------------------------------------------------ setup
    def _setup_data(self, x_tr, y_tr, x_va, y_va, x_te, y_te, w_true, space: Space) -> None:
        """``x_*`` dense arrays, or ``scipy.sparse`` matrices (held as CSR designs, never densified)."""
        t = self.tensor
        self.sparse = sp.issparse(x_tr)
        self.design_train, self.design_val, self.design_test = (
            Design(x, dtype=self.dtype, device=self.device) for x in (x_tr, x_va, x_te))
        self.x_train, self.y_train = self.design_train.mat, t(y_tr)
        self.x_val, self.y_val = self.design_val.mat, t(y_va)
        self.x_test, self.y_test = self.design_test.mat, t(y_te)
        self.w_true = None if w_true is None else t(w_true)
        x_np = sp.csr_matrix(x_tr, dtype=np.float64) if self.sparse else np.asarray(x_tr, dtype=np.float64)
        self._np = (x_np, np.asarray(y_tr, dtype=np.float64))
        self._csc = x_np.tocsc() if self.sparse else None
        self._space = space
        self._cache: OrderedDict[bytes, torch.Tensor] = OrderedDict()
        if space.dim == 1:
            self.tags = type(self).tags | {"scalar-hyperparameter"}

    # ------------------------------------------------------------------ contract
    @property
    def space(self) -> Space:
        return self._space

    @property
    def n_params(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    def init_params(self) -> torch.Tensor:
        return torch.zeros(self.n_params, dtype=self.dtype, device=self.device)

    def penalty_jacobians(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d alpha / dtheta, d l2 / dtheta)``, shapes ``(p, m)`` and ``(m,)`` (autograd of :meth:`penalties`)."""
        th = theta.detach()
        # forward mode: m basis vectors (m = dim theta), not one per output (p + 1, a (p+1)^2 basis at large p)
        ja, jl2 = torch.autograd.functional.jacobian(lambda t: self.penalties(t), th, vectorize=True,
                                                     strategy="forward-mode")
        return ja, jl2.reshape(-1)

    def smooth_loss(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        _, l2 = self.penalties(theta)
        return self.data_loss(w) + 0.5 * l2 * (w @ w)

    def smooth_grad(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        _, l2 = self.penalties(theta.detach())
        return self.data_grad(w) + l2 * w

    def smooth_hvp(self, w: torch.Tensor, theta: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _, l2 = self.penalties(theta.detach())
        return self.data_hvp(w, v) + l2 * v

    def support_hessian(self, w: torch.Tensor, theta: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        _, l2 = self.penalties(theta.detach())
        h = self.data_support_hessian(w, support)
        return h + l2 * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)

    def lipschitz(self, theta: torch.Tensor) -> float:
        """A Lipschitz constant of ``grad f`` (ISTA's step is ``1 / lipschitz``)."""
        return self.data_lipschitz() + float(self.penalties(theta.detach())[1])

    def coordinate_lipschitz(self, theta: torch.Tensor) -> torch.Tensor:
        """Per-coordinate Lipschitz constants of ``grad f`` (CD's steps; exact curvature for least squares)."""
        return self.data_coordinate_lipschitz() + self.penalties(theta.detach())[1]

    def inner_loss(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        alpha, _ = self.penalties(theta)
        return self.smooth_loss(w, theta) + torch.sum(alpha * w.abs())

    def prox(self, z: torch.Tensor, step: float, theta: torch.Tensor) -> torch.Tensor:
        """``prox_{step g}(z)``, ``g = sum alpha_j |w_j|``: soft-thresholding at ``step alpha``."""
        alpha, _ = self.penalties(theta.detach())
        return soft_threshold(z, step * alpha)

    def prox_residual(self, w: torch.Tensor, theta: torch.Tensor, step: float | None = None) -> float:
        """``||w - prox(w - eta grad f(w))||_2 / eta`` (``eta = 1 / lipschitz`` by default): zero at a solution."""
        eta = 1.0 / self.lipschitz(theta) if step is None else float(step)
        w = w.detach()
        nxt = self.prox(w - eta * self.smooth_grad(w, theta), eta, theta)
        return float(torch.linalg.vector_norm(w - nxt)) / eta

    def support(self, w: torch.Tensor) -> tuple[int, ...]:
        """The indices of the non-zero entries of ``w`` (a hashable tuple, for comparisons)."""
        return tuple(torch.nonzero(w.detach() != 0).reshape(-1).tolist())

    def _key(self, theta: torch.Tensor) -> bytes:
        return theta.detach().double().cpu().numpy().tobytes()

    def solve(self, theta: torch.Tensor) -> torch.Tensor:
        """Reference ``w*(theta)``: CD then the active-set polish; duality gap ``<= 1e-12`` (checked).

        Raises:
            FloatingPointError: the gap could not be brought to ``1e-12`` (never seen on these tasks).
        """
        key = self._key(theta)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit.clone()
        w = self.solve_from(theta, None)
        self._cache[key] = w
        if len(self._cache) > self._CACHE:
            self._cache.popitem(last=False)
        return w.clone()

    def solve_from(self, theta: torch.Tensor, w0: torch.Tensor | None) -> torch.Tensor:
        """The reference solve warm-started at ``w0`` (uncached; what :meth:`solve_path` chains)."""
        alpha, l2 = self.penalties(theta.detach())
        a = alpha.double().cpu().numpy()
        if w0 is None:
            w = self._cold_solve(a, float(l2))
        else:
            w = self._reference_solve(a, float(l2), w0.detach().double().cpu().numpy())
        gap = self._gap_np(w, a, float(l2))  # in float64, before any cast to the task's dtype
        out = self.tensor(w)
        floor = self.gap_floor(w, a, float(l2))
        if not gap <= REFERENCE_GAP + floor:
            raise FloatingPointError(f"{self.name}: reference solve reached duality gap {gap:.2e} > "
                                     f"{REFERENCE_GAP:g} + its rounding floor {floor:.1e} at "
                                     f"{self.space.to_natural(theta.detach()).tolist()}")
        return out

    def _grad_at_zero(self) -> np.ndarray:
        raise NotImplementedError

    def _loss_at_zero(self) -> float:
        raise NotImplementedError

    def gap_floor(self, w: np.ndarray, alpha: np.ndarray, l2: float) -> float:
        """What float64 can certify of the duality gap at ``w``: the rounding of ``w`` leaves a residual of
        about ``4 eps (L ||w||_1 + ||grad f(0)||_inf)`` in the support's optimality condition, so the dual point
        is feasible only to that over ``min_S alpha_j`` (relative), times the loss scale ``f(0)``. Negligible
        (< 1e-13) unless an active weight is tiny (e.g. ``1e-4 lambda_max``)."""
        on = w != 0
        if not on.any():
            return 0.0
        eps = np.finfo(np.float64).eps
        resid = 4 * eps * ((self.data_lipschitz() + l2) * float(np.abs(w).sum())
                           + float(np.max(np.abs(self._grad_at_zero()))))
        return resid / float(np.min(alpha[on])) * self._loss_at_zero()

    def _cold_solve(self, alpha: np.ndarray, l2: float) -> np.ndarray:
        """A solve from nothing: the homotopy (:meth:`_homotopy`); least squares may start from skglm."""
        return self._homotopy(alpha, l2)

    def _homotopy(self, alpha: np.ndarray, l2: float, per_decade: int = 10) -> np.ndarray:
        """A cold solve along the path ``t alpha``, ``t`` from ``t0`` (where ``w* = 0``) down to 1, warm-started.

        ``t0 = max_j |grad_j f(0)| / alpha_j``; ``per_decade`` geometric steps per decade. Each step
        starts the active set next to its solution, so it adds a few coordinates at a time, never a
        singular face (a cold start at a tiny lambda with ``p > n`` would).
        """
        p = alpha.shape[0]
        t0 = float(np.max(np.abs(self._grad_at_zero()) / alpha))
        w = np.zeros(p)
        if t0 <= 1.0:
            return w
        k = max(1, int(math.ceil(per_decade * math.log10(t0))))
        for t in np.geomspace(t0, 1.0, k + 1)[1:]:
            w = self._reference_solve(alpha * float(t), l2, w)
        return w

    def solve_path(self, thetas: list[torch.Tensor]) -> list[torch.Tensor]:
        """Reference solutions along ``thetas`` (e.g. a lambda grid from large to small), warm-started."""
        out, w = [], None
        for th in thetas:
            w = self.solve_from(th, w)
            out.append(w)
        return out

    def linearize_support(self, w: torch.Tensor, theta: torch.Tensor) -> SupportLinearization:
        return SupportLinearization(self, w, theta)

    def support_margin(self, theta: torch.Tensor) -> float:
        """:meth:`SupportLinearization.margin` at the reference solution (``<= 0``: degenerate support)."""
        return self.linearize_support(self.solve(theta), theta).margin()

    def reference_hypergradient(self, theta: torch.Tensor) -> torch.Tensor:
        """Closed form on the support: ``-B^T H_SS^{-1} grad_S outer(w*)`` (module docstring).

        Exact wherever the support is stable (:meth:`support_margin` ``> 0``); at a degenerate point it is
        the derivative of the branch with the reference solution's support (one-sided).
        """
        theta = theta.detach()
        w = self.solve(theta)
        lin = self.linearize_support(w, theta)
        if lin.size == 0:
            return torch.zeros(self.space.dim, dtype=self.dtype, device=self.device)
        v = self.outer_grad(w)[lin.support]
        q = torch.linalg.solve(lin.hessian(), v)
        return -lin.cross_vjp(q)

    def _columns(self, support) -> np.ndarray:
        """The training columns ``X[:, support]`` as a dense ``n x |S|`` array (from CSC for sparse data)."""
        if self.sparse:
            return self._csc[:, np.asarray(support, dtype=np.int64)].toarray()
        return self._np[0][:, np.asarray(support, dtype=np.int64)]

    def outer_grad(self, w: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            w_ = w.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.outer_loss(w_), w_)
        return g

    def reference(self, theta: torch.Tensor, warm: Any = None) -> Reference:
        """One reference solve for ``F``, ``dF/dtheta`` and ``w*``, warm-started at ``warm`` (the previous
        call's ``w*``): the active set then starts next to the new solution instead of running the homotopy
        from zero. The solve's gate is the same either way (duality gap ``<= 1e-12``), so the start changes
        the work, not the solution. ``route`` ``"dense"``: the support system is factorised."""
        theta = theta.detach()
        key = self._key(theta)
        w = self._cache.get(key)
        if w is None:
            start = warm if isinstance(warm, torch.Tensor) and warm.shape == (self.n_params,) else None
            w = self.solve_from(theta, start)
            self._cache[key] = w
            if len(self._cache) > self._CACHE:
                self._cache.popitem(last=False)
        grad = self.reference_hypergradient(theta).detach()
        w = w.clone()
        return Reference(value=float(self.outer_loss(w)), grad=grad, w=w, bound=math.nan, route="dense", warm=w)


def _kkt_violation(grad: np.ndarray, alpha: np.ndarray, on: np.ndarray) -> tuple[int, float]:
    """The inactive coordinate whose ``|grad_j| - alpha_j`` most exceeds its rounding slack, and that excess
    in units of the slack (``<= 1``: the KKT conditions hold up to rounding)."""
    slack = _KKT_SLACK * alpha + 64 * np.finfo(np.float64).eps * max(float(np.max(np.abs(grad))), float(np.max(alpha)))
    excess = np.where(on, -np.inf, (np.abs(grad) - alpha) / slack)
    j = int(np.argmax(excess))
    return j, float(excess[j])


#: relative KKT slack of the polish: ``|grad_j| <= alpha_j (1 + _KKT_SLACK)`` off the support, plus the
#: rounding of ``grad`` itself (64 eps of its largest entry): tiny weights would otherwise chase rounding
_KKT_SLACK = 1e-12


def active_set(target, grad_fn, alpha: np.ndarray, w: np.ndarray, max_iter: int | None = None) -> np.ndarray | None:
    """Primal active-set method (Osborne, Presnell & Turlach 2000) for ``f(w) + sum alpha_j |w_j|`` from ``w``.

    With the support ``S`` and signs ``s`` fixed the problem is smooth: ``target(S, s, w)`` returns its
    minimiser on ``S`` (a linear solve for least squares, Newton for the logistic loss). If a sign
    flips on the way, move along the segment to the first coordinate that hits zero, drop it and
    repeat (the objective decreases, by convexity); once the signs hold, add the inactive coordinate
    that violates the KKT condition ``|grad_j f| <= alpha_j`` most (with the sign ``-sign(grad_j)``,
    which the new minimiser keeps), until none does. Returns ``None`` when it does not finish in
    ``max_iter`` steps or a face problem is singular (the caller runs more CD and retries).
    """
    p = w.shape[0]
    w = np.array(w, dtype=np.float64)
    on = w != 0
    signs = np.sign(w)
    for _ in range(max_iter or 4 * p + 20):
        s_idx = np.flatnonzero(on)
        new = np.zeros(p)
        if s_idx.size:
            try:
                new[s_idx] = target(s_idx, signs[s_idx], w)
            except np.linalg.LinAlgError:
                return None
            if not np.all(np.isfinite(new)):
                return None
            flips = s_idx[np.sign(new[s_idx]) != signs[s_idx]]
            if flips.size:
                d = new - w
                with np.errstate(divide="ignore", invalid="ignore"):
                    ts = np.where(d[flips] != 0, -w[flips] / d[flips], 0.0)
                k = int(np.argmin(ts))
                w = w + max(float(ts[k]), 0.0) * d
                w[flips[k]] = 0.0
                on[flips[k]] = False
                w[~on] = 0.0
                continue
        w = new
        j, excess = _kkt_violation(grad_fn(w), alpha, on)
        if excess <= 1.0:
            return w
        on[j], signs[j] = True, -np.sign(grad_fn(w)[j])
    return None


class LeastSquaresComposite(CompositeTask):
    """``data(w) = 1/(2n) ||X w - y||^2``; validation and test losses are mean squared errors."""

    data_kind = "least_squares"

    def _setup_data(self, *args, **kw) -> None:
        super()._setup_data(*args, **kw)
        x, y = self._np
        n = x.shape[0]
        self._c_np = np.asarray(x.T @ y).ravel() / n
        self.xty = self.tensor(self._c_np)
        if self.sparse:  # no p x p Gram matrix: products go through X (CSR) and X^T (its own CSR)
            self._gram_np = None
            self._diag = np.asarray(x.multiply(x).sum(0)).ravel() / n
            self._lip = spectral_norm_sq(x) / n * (1 + 1e-12)
            return
        self._gram_np = x.T @ x / n
        self.gram = self.tensor(self._gram_np)
        self._diag = np.diag(self._gram_np).copy()
        self._lip = float(np.linalg.eigvalsh(self._gram_np)[-1]) * (1 + 1e-12)

    def lambda_max(self) -> float:
        """``||X^T y||_inf / n``: the smallest l1 weight with ``w* = 0`` (for ``l2 = 0`` and equal weights)."""
        return float(np.max(np.abs(self._c_np)))

    def data_loss(self, w):
        r = self.design_train.mv(w) - self.y_train
        return 0.5 * (r @ r) / r.shape[0]

    def data_grad(self, w):
        if self.sparse:
            return self.design_train.rmv(self.design_train.mv(w) - self.y_train) / self.n_train
        return self.gram @ w - self.xty

    def data_hvp(self, w, v):
        if self.sparse:
            d = self.design_train
            return (d.rmv(d.mv(v)) if v.ndim == 1 else d.rmm(d.mm(v))) / self.n_train
        return self.gram @ v

    def data_support_hessian(self, w, support):
        if self.sparse:
            xs = self._columns(support.cpu().numpy())
            return self.tensor(xs.T @ xs / self.n_train)
        return self.gram[support][:, support]

    def data_lipschitz(self) -> float:
        return self._lip

    def data_coordinate_lipschitz(self):
        return self.tensor(self._diag.copy())

    def outer_loss(self, w):
        r = self.design_val.mv(w) - self.y_val
        return (r @ r) / r.shape[0]

    def test_loss(self, w):
        r = self.design_test.mv(w) - self.y_test
        return (r @ r) / r.shape[0]

    def outer_grad(self, w):
        r = self.design_val.mv(w.detach()) - self.y_val
        return self.design_val.rmv(r * (2.0 / r.shape[0]))

    def _gap_np(self, w, alpha, l2) -> float:
        x, y = self._np
        return lasso_gap(x, y, w, alpha, l2)

    def _cd_numpy(self, alpha, l2, w, epochs):
        if self.sparse:
            return cd_quadratic_sparse(self._csc, self._np[1], alpha, l2, w, epochs)
        return cd_quadratic(self._gram_np, self._c_np, alpha, l2, w, epochs)

    def _grad_at_zero(self):
        return -self._c_np

    def _loss_at_zero(self):
        y = self._np[1]
        return 0.5 * float(y @ y) / y.shape[0]

    def _polish(self, alpha: np.ndarray, l2: float, w: np.ndarray) -> np.ndarray | None:
        g, c = self._gram_np, self._c_np
        if self.sparse:  # G_SS from the support's columns, grad f through X and X^T (no p x p matrix)
            x, y = self._np
            n = x.shape[0]

            def g_ss(s_idx):
                xs = self._columns(s_idx)
                return xs.T @ xs / n

            def grad(v):
                return np.asarray(x.T @ (x @ v - y)).ravel() / n + l2 * v
        else:
            def g_ss(s_idx):
                return g[np.ix_(s_idx, s_idx)]

            def grad(v):
                return g @ v - c + l2 * v

        def target(s_idx, signs, w_now):
            h = g_ss(s_idx) + l2 * np.eye(s_idx.size)
            chol = np.linalg.cholesky(h)  # LinAlgError on a singular face (|S| > rank X): the caller falls back
            return np.linalg.solve(chol.T, np.linalg.solve(chol, c[s_idx] - alpha[s_idx] * signs))

        return active_set(target, grad, alpha, w)

    def _cold_solve(self, alpha: np.ndarray, l2: float) -> np.ndarray:
        """From skglm's ``WeightedLasso`` (tol 1e-10) polished by the active set, for ``l2 = 0`` at
        ``p >= SKGLM_MIN_P`` when skglm is installed; otherwise the homotopy. The gap check of
        :meth:`solve_from` applies to both."""
        x, y = self._np
        if l2 != 0.0 or x.shape[1] < SKGLM_MIN_P or not skglm_available():
            return self._homotopy(alpha, l2)
        import warnings

        from skglm import WeightedLasso

        est = WeightedLasso(alpha=1.0, weights=alpha, fit_intercept=False, tol=1e-10, max_iter=1000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its ConvergenceWarning: the polish below decides
            est.fit(x, y)
        start = np.asarray(est.coef_, dtype=np.float64)
        if not np.all(np.isfinite(start)):
            return self._homotopy(alpha, l2)
        return self._reference_solve(alpha, l2, start)

    def _reference_solve(self, alpha, l2, w0):
        x, y = self._np
        w = np.zeros(x.shape[1]) if w0 is None else np.array(w0, dtype=np.float64)
        polished = self._polish(alpha, l2, w)  # from 0 (or a warm start) the active set grows one coordinate a step
        if polished is not None and lasso_gap(x, y, polished, alpha, l2) <= REFERENCE_GAP + self.gap_floor(
                polished, alpha, l2):
            return polished
        epochs, done = 20, 0
        while done < 20_000:  # fallback: CD, then the polish again
            w = self._cd_numpy(alpha, l2, w, epochs)
            done += epochs
            polished = self._polish(alpha, l2, w)
            if polished is not None and lasso_gap(x, y, polished, alpha, l2) <= REFERENCE_GAP + self.gap_floor(
                polished, alpha, l2):
                return polished
            epochs = min(2 * epochs, 5000)
        return w


class LogisticComposite(CompositeTask):
    """``data(w) = mean log(1 + exp(-y x.w))``, labels in ``{-1, +1}``; held-out losses are logistic losses."""

    data_kind = "logistic"

    def _setup_data(self, *args, **kw) -> None:
        super()._setup_data(*args, **kw)
        x, _ = self._np
        n = x.shape[0]
        self._lip = spectral_norm_sq(x) / (4 * n) * (1 + 1e-12)
        self._coord_lip = (np.asarray(x.multiply(x).sum(0)).ravel() if self.sparse else (x ** 2).sum(0)) / (4 * n)

    def lambda_max(self) -> float:
        """``||X^T y||_inf / (2n)``: the smallest l1 weight with ``w* = 0`` (no intercept)."""
        x, y = self._np
        return float(np.max(np.abs(x.T @ y))) / (2 * x.shape[0])

    @staticmethod
    def _logistic(design, y, w):
        return torch.nn.functional.softplus(-y * design.mv(w)).mean()

    def data_loss(self, w):
        return self._logistic(self.design_train, self.y_train, w)

    def data_grad(self, w):
        z = self.y_train * self.design_train.mv(w)
        return self.design_train.rmv(-self.y_train * torch.sigmoid(-z)) / z.shape[0]

    def _curv(self, w):
        z = self.y_train * self.design_train.mv(w)
        s = torch.sigmoid(z)
        return s * (1 - s) / z.shape[0]

    def data_hvp(self, w, v):
        d, x = self._curv(w), self.design_train
        return x.rmm(d.unsqueeze(1) * x.mm(v)) if v.ndim == 2 else x.rmv(d * x.mv(v))

    def data_support_hessian(self, w, support):
        xs = self.tensor(self._columns(support.cpu().numpy())) if self.sparse else self.x_train[:, support]
        return xs.T @ (self._curv(w).unsqueeze(1) * xs)

    def data_lipschitz(self) -> float:
        return self._lip

    def data_coordinate_lipschitz(self):
        return self.tensor(self._coord_lip)

    def outer_loss(self, w):
        return self._logistic(self.design_val, self.y_val, w)

    def test_loss(self, w):
        return self._logistic(self.design_test, self.y_test, w)

    def outer_grad(self, w):
        z = self.y_val * self.design_val.mv(w.detach())
        return self.design_val.rmv(-self.y_val * torch.sigmoid(-z)) / z.shape[0]

    def _gap_np(self, w, alpha, l2) -> float:
        if l2 != 0.0:
            raise NotImplementedError("the logistic duality gap has no l2 term here")
        x, y = self._np
        return logistic_gap(x, y, w, alpha)

    def _cd_numpy(self, alpha, l2, w, epochs):
        x, y = self._np
        if self.sparse:
            return cd_logistic_sparse(self._csc, y, alpha, l2, w, epochs, self._coord_lip + l2)
        return cd_logistic(x, y, alpha, l2, w, epochs, self._coord_lip + l2)

    def _grad_at_zero(self):
        x, y = self._np
        return np.asarray(x.T @ (-0.5 * y)).ravel() / x.shape[0]

    def _loss_at_zero(self):
        return math.log(2.0)

    def _polish(self, alpha: np.ndarray, w: np.ndarray) -> np.ndarray | None:
        x, y = self._np
        n = x.shape[0]

        def face_loss(xs, ws, a_s):
            return float(np.mean(np.logaddexp(0.0, -y * (xs @ ws)))) + float(a_s @ ws)

        def target(s_idx, signs, w_now):
            """Damped Newton on the face ``sign(w_S) = signs`` (a smooth convex problem)."""
            xs, a_s = self._columns(s_idx), alpha[s_idx] * signs
            ws = w_now[s_idx].copy()
            for _ in range(200):
                z = y * (xs @ ws)
                sig = 1.0 / (1.0 + np.exp(z))
                grad = xs.T @ (-y * sig) / n + a_s
                h = xs.T @ ((sig * (1 - sig))[:, None] * xs) / n
                step = np.linalg.solve(h, grad)
                f0, t = face_loss(xs, ws, a_s), 1.0
                while t > 1e-10 and face_loss(xs, ws - t * step, a_s) > f0 + 1e-16 * abs(f0):
                    t *= 0.5
                ws = ws - t * step
                if np.linalg.norm(t * step) <= 1e-15 * (1.0 + np.linalg.norm(ws)):
                    break
            return ws

        return active_set(target, lambda v: np.asarray(x.T @ (-y / (1.0 + np.exp(y * (x @ v))))).ravel() / n,
                          alpha, w)

    def _reference_solve(self, alpha, l2, w0):
        x, y = self._np
        w = np.zeros(x.shape[1]) if w0 is None else np.array(w0, dtype=np.float64)
        polished = self._polish(alpha, w)
        if polished is not None and logistic_gap(x, y, polished, alpha) <= REFERENCE_GAP + self.gap_floor(
                polished, alpha, l2):
            return polished
        epochs, done = 20, 0
        while done < 20_000:  # fallback: CD, then the polish again
            w = self._cd_numpy(alpha, l2, w, epochs)
            done += epochs
            polished = self._polish(alpha, w)
            if polished is not None and logistic_gap(x, y, polished, alpha) <= REFERENCE_GAP + self.gap_floor(
                polished, alpha, l2):
                return polished
            epochs = min(2 * epochs, 5000)
        return w


def l1_block(task: CompositeTask, *, name: str, size: int, lam_max: float, lam0: float, lam_low: float,
             lam_high: float):
    """A log-transformed block of l1 weights with bounds and start given as fractions of ``lam_max``."""
    from hpo_bench.core.space import Block

    require(0 < lam_low < lam_high, task.name, "lam_low", f"in (0, lam_high={lam_high})", lam_low)
    require(lam_low <= lam0 <= lam_high, task.name, "lam0", f"within [lam_low={lam_low}, lam_high={lam_high}]",
            lam0)
    return Block(name, kind="scalar" if size == 1 else "per_feature", size=size, low=lam_low * lam_max,
                 high=lam_high * lam_max, transform="log", init=lam0 * lam_max)


CRITERIA = ("holdout", "cv")


class CrossValMixin:
    """The outer criterion ``criterion = "cv"`` with ``folds = K`` (sparse-ho's ``CrossVal``).

    The training and validation rows together are split into ``K`` folds (scikit-learn's ``KFold``, shuffled by
    the task seed); fold ``k`` trains on the other folds and is validated on its own rows. The inner variable
    stacks the folds' weights, ``w = [w_1; ...; w_K]`` (``K p`` entries), and the inner problem is the sum of the
    folds' problems: it is separable, so its solution is each fold's own solution, its prox map is the folds'
    prox maps, and its support is the union of the folds' supports (each fold on its own block). The outer loss
    is ``F = 1/K sum_k outer_k(w_k)`` (held-out MSE, or held-out logistic loss), so every composite method's
    hypergradient is the mean of the folds' hypergradients, each on its own support (``H_SS`` is block
    diagonal). The test split stays separate: ``test_loss`` is the mean over the folds' models of the test loss.
    ``holdout`` (the default) is the plain train / validation split. Each fold is a full task of the same
    class on its rows (``self.fold_tasks``): solves, gaps and CD sweeps run fold by fold. A task's
    :meth:`~CompositeTask.penalties` returns ``n_params`` l1 weights: per-feature ones repeat once per fold.
    """

    folds_k: int = 0

    def _setup_problem(self, data, space: Space, criterion: str = "holdout", folds: int | None = None) -> None:
        """The task's data and space, with the outer criterion (``holdout`` or ``cv``)."""
        if not self._setup_cv(criterion, folds, data, space):
            self._setup_data(*data, space=space)

    def _setup_cv(self, criterion: str, folds: int | None, data, space: Space) -> bool:
        """Build the fold tasks when ``criterion == "cv"``; returns whether it did."""
        require(criterion in CRITERIA, self.name, "criterion", f"one of {list(CRITERIA)}", criterion)
        if criterion == "holdout":
            require(folds is None, self.name, "folds", "omitted unless criterion = 'cv'", folds)
            return False
        k = 5 if folds is None else folds
        x_tr, y_tr, x_va, y_va, x_te, y_te, _ = data
        n_all = x_tr.shape[0] + x_va.shape[0]
        require(isinstance(k, int) and not isinstance(k, bool) and 2 <= k <= n_all // 2, self.name, "folds",
                f"an integer in [2, {n_all // 2}] (two rows per fold)", folds)
        from sklearn.model_selection import KFold

        if sp.issparse(x_tr):
            x_all = sp.vstack([sp.csr_matrix(x_tr), sp.csr_matrix(x_va)], format="csr")
        else:
            x_all = np.vstack([x_tr, x_va])
        y_all = np.concatenate([y_tr, y_va])
        self.fold_tasks = []
        for tr, va in KFold(k, shuffle=True, random_state=self.seed).split(np.zeros(n_all)):
            fold = type(self).__new__(type(self))
            Task.__init__(fold, seed=self.seed, dtype=self.dtype, device=self.device)
            fold.params = {}
            fold._setup_data(x_all[tr], y_all[tr], x_all[va], y_all[va], x_te, y_te, None, space=space)
            self.fold_tasks.append(fold)
        self.folds_k = k
        self._p = x_tr.shape[1]
        super()._setup_data(x_all, y_all, x_all, y_all, x_te, y_te, None, space=space)
        self.params.update({"criterion": "cv", "folds": k})
        return True

    # the stacked problem, fold by fold
    def _split(self, v: torch.Tensor) -> list[torch.Tensor]:
        return list(v.reshape(self.folds_k, self._p, *v.shape[1:]).unbind(0))

    def _np_split(self, v: np.ndarray) -> list[np.ndarray]:
        return list(np.asarray(v).reshape(self.folds_k, self._p))

    @property
    def n_params(self) -> int:
        return self.folds_k * self._p if self.folds_k else super().n_params

    def _stack(self, name, w, *args):
        if not self.folds_k:
            return getattr(super(), name)(w, *args)
        return torch.cat([getattr(f, name)(wk, *args) for f, wk in zip(self.fold_tasks, self._split(w))])

    def data_loss(self, w):
        if not self.folds_k:
            return super().data_loss(w)
        return sum(f.data_loss(wk) for f, wk in zip(self.fold_tasks, self._split(w)))

    def data_grad(self, w):
        return self._stack("data_grad", w)

    def data_hvp(self, w, v):
        if not self.folds_k:
            return super().data_hvp(w, v)
        return torch.cat([f.data_hvp(wk, vk) for f, wk, vk in zip(self.fold_tasks, self._split(w), self._split(v))])

    def data_support_hessian(self, w, support):
        if not self.folds_k:
            return super().data_support_hessian(w, support)
        blocks = []
        for k, (f, wk) in enumerate(zip(self.fold_tasks, self._split(w))):
            local = support[(support >= k * self._p) & (support < (k + 1) * self._p)] - k * self._p
            blocks.append(f.data_support_hessian(wk, local))
        return torch.block_diag(*blocks)

    def data_lipschitz(self) -> float:
        return max(f.data_lipschitz() for f in self.fold_tasks) if self.folds_k else super().data_lipschitz()

    def data_coordinate_lipschitz(self):
        if not self.folds_k:
            return super().data_coordinate_lipschitz()
        return torch.cat([f.data_coordinate_lipschitz() for f in self.fold_tasks])

    def _mean(self, name, w):
        return sum(getattr(f, name)(wk) for f, wk in zip(self.fold_tasks, self._split(w))) / self.folds_k

    def outer_loss(self, w):
        return self._mean("outer_loss", w) if self.folds_k else super().outer_loss(w)

    def test_loss(self, w):
        return self._mean("test_loss", w) if self.folds_k else super().test_loss(w)

    def outer_grad(self, w):
        if not self.folds_k:
            return super().outer_grad(w)
        return self._stack("outer_grad", w) / self.folds_k

    def _gap_np(self, w, alpha, l2) -> float:
        if not self.folds_k:
            return super()._gap_np(w, alpha, l2)
        return sum(f._gap_np(wk, ak, l2) for f, wk, ak in zip(self.fold_tasks, self._np_split(w),
                                                                self._np_split(alpha)))

    def gap_floor(self, w, alpha, l2) -> float:
        if not self.folds_k:
            return super().gap_floor(w, alpha, l2)
        return sum(f.gap_floor(wk, ak, l2) for f, wk, ak in zip(self.fold_tasks, self._np_split(w),
                                                                  self._np_split(alpha)))

    def _cd_numpy(self, alpha, l2, w, epochs):
        if not self.folds_k:
            return super()._cd_numpy(alpha, l2, w, epochs)
        return np.concatenate([f._cd_numpy(ak, l2, wk, epochs) for f, wk, ak in
                               zip(self.fold_tasks, self._np_split(w), self._np_split(alpha))])

    def _cold_solve(self, alpha, l2):
        if not self.folds_k:
            return super()._cold_solve(alpha, l2)
        return np.concatenate([f._cold_solve(ak, l2) for f, ak in zip(self.fold_tasks, self._np_split(alpha))])

    def _reference_solve(self, alpha, l2, w0):
        if not self.folds_k:
            return super()._reference_solve(alpha, l2, w0)
        w0s = [None] * self.folds_k if w0 is None else self._np_split(w0)
        return np.concatenate([f._reference_solve(ak, l2, wk) for f, wk, ak in
                               zip(self.fold_tasks, w0s, self._np_split(alpha))])

    def _grad_at_zero(self):
        if not self.folds_k:
            return super()._grad_at_zero()
        return np.concatenate([f._grad_at_zero() for f in self.fold_tasks])

    def _loss_at_zero(self):
        return sum(f._loss_at_zero() for f in self.fold_tasks) if self.folds_k else super()._loss_at_zero()


#: the datasets every non-smooth task names first (then every registered set of its kind: :func:`dataset_fits`)
CLASSIC_DATASETS = ("synthetic", _data.TEXT_LIKE)

#: a registered set stored sparse stays a CSR design when its density is at most this (denser ones, e.g.
#: ijcnn1 at 0.59, are densified and standardised like the dense sets)
SPARSE_MAX_DENSITY = 0.1


def dataset_fits(classification: bool) -> tuple[list[str], str]:
    """``(accepted names, rule text)`` of ``dataset``: sparse_logreg takes binary sets; the least-squares tasks
    take regression sets and binary sets (labels as ``+-1`` regression targets, as sparse-ho's lasso on rcv1)."""
    if classification:
        return dataset_rule((*CLASSIC_DATASETS, "breast_cancer"), "binary")
    fits, rule = dataset_rule((*CLASSIC_DATASETS, "diabetes"), "regression")
    binary = [n for n in dataset_names("binary") if n not in fits]
    return [*fits, *binary], f"{rule}, or a binary set ({', '.join(binary)}; labels as +-1 targets)"


def make_task_data(*, task: str, dataset: str, classification: bool, n: int, p: int, n_informative: int,
                   snr: float, rho: float, n_val: int | None, n_test: int | None, seed: int,
                   max_train: int | None = None, density: float | None = None):
    """``(x_tr, y_tr, x_va, y_va, x_te, y_te, w_true)`` of ``dataset`` (``w_true``: ``None`` unless synthetic).

    * ``"synthetic"``: :func:`make_sparse_data` (dense, known sparse truth).
    * ``"text-like"``: :func:`hpo_bench.data.text_like` rows (sparse CSR, ``n``/``n_val``/``n_test`` rows, ``p``
      words, ``density``, ``n_informative`` informative words); regression targets with noise ``1 / snr``
      (standardised with training statistics), binary labels at the generator's default signal.
    * a registered set: its canonical split drawn by ``seed`` (``max_train`` keeps the first training rows).
      Sets stored sparse with density ``<= SPARSE_MAX_DENSITY`` stay CSR and unscaled (centring would densify);
      the others are dense, standardised with training statistics. Regression targets are standardised; a binary
      set's labels become ``+-1`` (the larger label ``+1``), as targets for the least-squares tasks too.
    """
    fits, rule = dataset_fits(classification)
    require(dataset in fits, task, "dataset", rule, dataset)
    require(density is None or dataset == _data.TEXT_LIKE, task, "density",
            f"omitted unless dataset = {_data.TEXT_LIKE!r}", density)
    if dataset == "synthetic":
        require(max_train is None, task, "max_train", "omitted with dataset = 'synthetic' (use `n`)", max_train)
        return make_sparse_data(task=task, n=n, p=p, n_informative=n_informative, snr=snr, rho=rho, n_val=n_val,
                                n_test=n_test, seed=seed, classification=classification)
    if dataset == _data.TEXT_LIKE:
        require(snr > 0, task, "snr", "> 0 (inf: noiseless)", snr)
        kw = {"target": "binary"} if classification else {"target": "regression", "noise": 1.0 / snr}
        x, y, (n, n_val, n_test) = text_like_split(task, n=n, p=p, density=density, n_informative=n_informative,
                                                   n_val=n_val, n_test=n_test, max_train=max_train, seed=seed, **kw)
        if not classification:
            y = (y - y[:n].mean()) / (y[:n].std() or 1.0)
        a, b = n, n + n_val
        return x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:], None
    split = task_split(task=task, dataset=dataset, fits=fits, seed=seed, max_train=max_train, rule=rule,
                       keep_sparse=True)
    xs = [split.x_train, split.x_val, split.x_test]
    ys = [np.asarray(v, dtype=np.float64).ravel() for v in (split.y_train, split.y_val, split.y_test)]
    keep_sparse = False
    if sp.issparse(xs[0]):
        nnz, size = sum(v.nnz for v in xs), sum(v.shape[0] for v in xs) * xs[0].shape[1]
        keep_sparse = nnz <= SPARSE_MAX_DENSITY * size
        if not keep_sparse:
            xs = [v.toarray() for v in xs]
    if keep_sparse:
        xs = [sp.csr_matrix(v, dtype=np.float64) for v in xs]
    else:
        mu, sd = xs[0].mean(0), xs[0].std(0)
        sd = np.where(sd > 0, sd, 1.0)
        xs = [(v - mu) / sd for v in xs]
    kind = _data.get(dataset).task
    if kind == "binary":
        classes = np.unique(np.concatenate(ys))
        require(len(classes) == 2, task, "dataset", "a set with exactly two labels",
                f"{dataset} with labels {classes[:5].tolist()}")
        ys = [np.where(v == classes[1], 1.0, -1.0) for v in ys]
    else:
        ym, ysd = ys[0].mean(), ys[0].std() or 1.0
        ys = [(v - ym) / ysd for v in ys]
    return xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], None


class SyntheticSparseMixin:
    """The data parameters every non-smooth task shares (stored in ``params``: the synthetic ones as before, the
    dataset's own otherwise) and the description of a registered dataset."""

    def _data(self, *, n, p, n_informative, snr, rho, n_val, n_test, seed, classification=False,
              dataset: str = "synthetic", max_train: int | None = None, density: float | None = None):
        data = make_task_data(task=self.name, dataset=dataset, classification=classification, n=n, p=p,
                              n_informative=n_informative, snr=snr, rho=rho, n_val=n_val, n_test=n_test, seed=seed,
                              max_train=max_train, density=density)
        if dataset == "synthetic":  # the params of existing instances (and their oracles) stay as they were
            self.params = {"n": n, "p": p, "n_informative": n_informative, "snr": snr, "rho": rho, "n_val": n_val,
                           "n_test": n_test}
        elif dataset == _data.TEXT_LIKE:
            self.params = {"dataset": dataset, "n": n, "p": p, "n_informative": n_informative, "snr": snr,
                           "density": 1e-3 if density is None else density, "n_val": n_val, "n_test": n_test}
        else:
            self.params = {"dataset": dataset}
            if max_train is not None:
                self.params["max_train"] = max_train
        return data

    def describe(self) -> dict:
        out = super().describe()
        dataset = self.params.get("dataset", "synthetic")
        if dataset != "synthetic":
            out.update(_data.describe(dataset))
        return out

    @staticmethod
    def _lam_max_ls(x, y) -> float:
        return float(np.max(np.abs(np.asarray(x.T @ y).ravel()))) / x.shape[0]

    def _setup_l1_least_squares(self, *, size: int, lam0: float, lam_low: float, lam_high: float,
                                criterion: str = "holdout", folds: int | None = None, **data_kw: Any) -> None:
        """The data, then ``size`` l1 penalties (1: lasso, p: weighted lasso; ``size=None``: one per feature of
        the data) in fractions of ``lambda_max = max|X^T y| / n`` (the smallest penalty with ``w* = 0``)."""
        data = self._data(**data_kw)
        x, y = data[0], data[1]
        lam_max = self._lam_max_ls(x, y)
        size = x.shape[1] if size is None else size
        space = Space((l1_block(self, name="lam", size=size, lam_max=lam_max, lam0=lam0, lam_low=lam_low,
                                lam_high=lam_high),))
        self._setup_problem(data, space, criterion, folds)
        self.params.update({"lam0": lam0, "lam_low": lam_low, "lam_high": lam_high})
