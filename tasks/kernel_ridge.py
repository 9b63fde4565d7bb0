"""RBF kernel ridge regression (``kernel_ridge``): tune log λ and log bandwidth(s).

Model ``f(x) = sum_i alpha_i k(x, x_i)`` with ``k(x, x') = exp(-sum_j (x_j - x'_j)^2 / (2 sigma_j^2))``
(one bandwidth, or one per feature with ``per_feature_bandwidth = true``). Kernel ridge
``min_f 1/(2n) sum_i (f(x_i) - y_i)^2 + lam/2 ||f||_H^2`` has ``alpha* = (K + n lam I)^{-1} y``.

The task contract has a validation loss of ``w`` alone, but predictions depend on the
bandwidth. So ``w = [alpha (n), u (m)]`` also holds scaled predictions ``u`` at the ``m``
validation-then-test points, and the inner objective is::

    inner(w, theta) = 1/2 alpha^T (K/n + lam I) alpha - alpha^T y / n + 1/2 ||u - K_E alpha / s||^2

with ``K_E`` the kernel between evaluation and training points and ``s = sqrt(n m)`` (so
``||K_E / s|| <= 1`` and the Hessian stays well conditioned). Its minimiser is exactly
``alpha*`` and ``u* = K_E alpha* / s``: the first term is the dual of kernel ridge, the
second is zero at the optimum. Validation and test losses are mean squared errors of the
predictions ``s u``.

Reference hypergradient (tag ``"closed-form"``): the implicit function theorem on the exact
solution. With ``M = K + n lam I``, ``r = K_va alpha* - y_va``, ``q = M^{-1} (2/n_va) K_va^T r``::

    dF/dlog lam     = -n lam q . alpha*
    dF/dlog sigma_j = (2/n_va) r^T (dK_va/dlog sigma_j) alpha* - q^T (dK/dlog sigma_j) alpha*

with ``dk/dlog sigma_j = k (x_j - x'_j)^2 / sigma_j^2``; the tests check it against autograd
through ``torch.linalg.solve`` and against finite differences.

Data: ``"diabetes"`` (scikit-learn's bundled set, split and standardised as in ``ridge``)
or ``"synthetic"``: ``n`` rows of ``p`` standard normal features, ``y = sum_{j < k}
sin(2 x_j) / sqrt(k) + noise * N(0, 1)`` over ``k = n_informative`` features.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hpo_bench.core.registry import register_task
from hpo_bench.core.space import Block, Space
from hpo_bench.core.task import Linearization, Task, require

from .ridge import make_regression_data

__all__ = ["KernelRidge", "KernelRidgeLinearization", "rbf_kernel"]

DATASETS = ("synthetic", "diabetes")


def rbf_kernel(xa: torch.Tensor, xb: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``exp(-||(a - b) / sigma||^2 / 2)`` for all rows of ``xa`` x rows of ``xb``; ``sigma`` of shape ``(p,)``."""
    za, zb = xa / sigma, xb / sigma
    d2 = (za * za).sum(1)[:, None] + (zb * zb).sum(1)[None, :] - 2.0 * (za @ zb.T)
    return torch.exp(-0.5 * d2.clamp_min(0.0))


def _dkernel_bilinear(xa: torch.Tensor, xb: torch.Tensor, k: torch.Tensor, sigma: torch.Tensor,
                      a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[a^T (dK/dlog sigma_j) b]_j`` for ``K = rbf_kernel(xa, xb, sigma)``, shape ``(p,)``.

    ``sum_ik a_i K_ik b_k (xa_ij - xb_kj)^2 / sigma_j^2``, expanded so that no ``(n, n, p)``
    tensor is formed.
    """
    kb, kta = k @ b, k.T @ a
    t1 = (a * kb) @ (xa * xa)
    t2 = (b * kta) @ (xb * xb)
    t3 = ((a[:, None] * xa) * (k @ (b[:, None] * xb))).sum(0)
    return (t1 + t2 - 2.0 * t3) / (sigma * sigma)


class KernelRidgeLinearization(Linearization):
    """Second-order oracle from the cached kernels (no autograd graph)."""

    def __init__(self, task: KernelRidge, w: torch.Tensor, theta: torch.Tensor) -> None:
        self.task = task
        self._w = w.detach()
        self._theta = theta.detach()
        self._lam, self._sigma = task.unpack(self._theta)
        self._k, self._ke = task.kernels(self._theta)
        self._alpha, self._u = self._w[:task.n_train], self._w[task.n_train:]
        self._ru = self._u - self._ke @ self._alpha / task.s
        self.grad = self._grad()
        self.n_hvp = 0
        self.n_cross = 0

    def _grad(self) -> torch.Tensor:
        t, a = self.task, self._alpha
        ga = self._k @ a / t.n_train + self._lam * a - t.y_train / t.n_train - self._ke.T @ self._ru / t.s
        return torch.cat([ga, self._ru])

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        self.n_hvp += 1
        t = self.task
        va, vu = v[:t.n_train], v[t.n_train:]
        c = self._ke @ va / t.s - vu
        return torch.cat([self._k @ va / t.n_train + self._lam * va + self._ke.T @ c / t.s, -c])

    def diagonal(self) -> torch.Tensor:
        """``[diag(K)/n + lam + colsum(Ke^2)/s^2, 1]`` (the Jacobi preconditioner of ``cg``)."""
        t = self.task
        da = torch.diagonal(self._k) / t.n_train + self._lam + (self._ke * self._ke).sum(0) / t.s ** 2
        return torch.cat([da, torch.ones_like(self._u)])

    def strong_convexity_bound(self) -> float:
        """``2 lam / ((1 + lam + beta) + sqrt((1 + lam + beta)^2 - 4 lam))``, ``beta = ||K_E / s||_F^2``.

        With ``B = K_E / s``, ``w = (a, u)``: ``w^T H w = a^T (K/n) a + lam ||a||^2 + ||B a - u||^2
        >= lam ||a||^2 + ||B a - u||^2`` (``K`` is positive semi-definite). In the singular
        vectors of ``B`` that form splits into 2 x 2 blocks ``[[lam + sigma^2, -sigma], [-sigma, 1]]``
        (determinant ``lam``) whose smaller eigenvalue falls as ``sigma`` grows; ``sigma^2 <=
        ||B||_F^2 = beta`` gives the bound (about ``lam / (1 + beta)`` for small ``lam``; ``beta <= 1``
        since kernel entries are in ``[0, 1]``). Less a relative rounding margin of ``1e-12``.
        """
        lam = float(self._lam)
        beta = float((self._ke * self._ke).sum()) / self.task.s ** 2
        c = 1.0 + lam + beta
        mu = 2.0 * lam / (c + math.sqrt(max(c * c - 4.0 * lam, 0.0)))
        return mu * (1.0 - 1e-12) if mu > 0 else math.nan

    def cross_norm_bound(self) -> float:
        """``||J||_F`` of the analytic cross Jacobian (one column per hyperparameter)."""
        n_cross = self.n_cross
        bound = float(torch.linalg.matrix_norm(self.cross_jacobian()))
        self.n_cross = n_cross + self._theta.shape[0]  # m analytic columns, not p products
        return bound

    def cross_vjp(self, v: torch.Tensor) -> torch.Tensor:
        self.n_cross += 1
        t = self.task
        va, vu = v[:t.n_train], v[t.n_train:]
        a, s = self._alpha, t.s
        g_lam = (self._lam * (va @ a)).reshape(1)
        g_sig = (_dkernel_bilinear(t.x_train, t.x_train, self._k, self._sigma, va, a) / t.n_train
                 + _dkernel_bilinear(t.x_eval, t.x_train, self._ke, self._sigma, self._ke @ va / s ** 2 - vu / s, a)
                 - _dkernel_bilinear(t.x_eval, t.x_train, self._ke, self._sigma, self._ru, va) / s)
        return torch.cat([g_lam, t.chain_sigma(g_sig)])

    def hvp_batch(self, v: torch.Tensor) -> torch.Tensor:
        self.n_hvp += v.shape[1]
        t = self.task
        va, vu = v[:t.n_train], v[t.n_train:]
        c = self._ke @ va / t.s - vu
        return torch.cat([self._k @ va / t.n_train + self._lam * va + self._ke.T @ c / t.s, -c])

    def cross_jacobian(self) -> torch.Tensor:
        """Columns ``d grad_w / dlog lam`` and ``d grad_w / dlog sigma_j`` (summed for one bandwidth)."""
        t = self.task
        self.n_cross += self._w.shape[0]
        a, s = self._alpha, t.s
        cols = [torch.cat([self._lam * a, torch.zeros_like(self._ru)])]
        sig_cols = []
        for j in range(t.x_train.shape[1]):
            xj, ej = t.x_train[:, j], t.x_eval[:, j]
            dk = self._k * (xj[:, None] - xj[None, :]) ** 2 / self._sigma[j] ** 2
            dke = self._ke * (ej[:, None] - xj[None, :]) ** 2 / self._sigma[j] ** 2
            dke_a = dke @ a
            top = dk @ a / t.n_train - dke.T @ self._ru / s + self._ke.T @ dke_a / s ** 2
            sig_cols.append(torch.cat([top, -dke_a / s]))
        sig = torch.stack(sig_cols, dim=1)
        if t.space.blocks[1].size == 1:
            sig = sig.sum(1, keepdim=True)
        return torch.cat([cols[0].unsqueeze(1), sig], dim=1)

    def hessian(self) -> torch.Tensor:
        t = self.task
        self.n_hvp += self._w.shape[0]
        n, m = t.n_train, t.n_eval
        h = torch.zeros(n + m, n + m, dtype=self._w.dtype, device=self._w.device)
        h[:n, :n] = self._k / n + self._ke.T @ self._ke / t.s ** 2
        h[:n, :n].diagonal().add_(self._lam)
        h[:n, n:] = -self._ke.T / t.s
        h[n:, :n] = -self._ke / t.s
        h[n:, n:].diagonal().add_(1.0)
        return h


@register_task
class KernelRidge(Task):
    """RBF kernel ridge; hyperparameters log λ and log bandwidth (one, or one per feature)."""

    name = "kernel_ridge"
    tags = frozenset({"closed-form", "quadratic", "convex", "hessian-diagonal"})
    check_params = {"dataset": "synthetic", "n": 30, "p": 3, "n_val": 15, "n_test": 10}

    def __init__(self, *, dataset: str = "diabetes", n: int = 200, p: int = 5, noise: float = 0.1,
                 n_informative: int | None = None, n_val: int | None = None, n_test: int | None = None,
                 per_feature_bandwidth: bool = False, lam0: float = 0.1, bandwidth0: float | None = None,
                 lam_low: float = 1e-8, lam_high: float = 1e4, bandwidth_low: float = 1e-2,
                 bandwidth_high: float = 1e3, seed: int = 0, dtype="float64", device: str = "cpu") -> None:
        super().__init__(seed=seed, dtype=dtype, device=device)
        nm = self.name
        require(dataset in DATASETS, nm, "dataset", f"one of {list(DATASETS)}", dataset)
        require(isinstance(per_feature_bandwidth, bool), nm, "per_feature_bandwidth", "true or false",
                per_feature_bandwidth)
        if dataset == "diabetes":
            x_tr, y_tr, x_va, y_va, x_te, y_te = make_regression_data(
                task=nm, dataset="diabetes", n=0, p=0, noise=0.0, rho=0.0, scale_spread=1.0, n_informative=None,
                n_val=None, n_test=None, seed=seed)
        else:
            x_tr, y_tr, x_va, y_va, x_te, y_te = self._synthetic(n, p, noise, n_informative, n_val, n_test, seed)
        p_eff = x_tr.shape[1]
        if bandwidth0 is None:
            bandwidth0 = math.sqrt(p_eff)
        require(bandwidth_low <= bandwidth0 <= bandwidth_high, nm, "bandwidth0",
                f"within [bandwidth_low, bandwidth_high] = [{bandwidth_low}, {bandwidth_high}]", bandwidth0)
        require(lam_low <= lam0 <= lam_high, nm, "lam0", f"within [lam_low, lam_high] = [{lam_low}, {lam_high}]",
                lam0)
        t = self.tensor
        self.x_train, self.y_train = t(x_tr), t(y_tr).reshape(-1)
        self.x_val, self.y_val = t(x_va), t(y_va).reshape(-1)
        self.x_test, self.y_test = t(x_te), t(y_te).reshape(-1)
        self.x_eval = torch.cat([self.x_val, self.x_test])
        self.n_eval = self.x_eval.shape[0]
        self.s = math.sqrt(self.n_train * self.n_eval)
        self._space = Space((
            Block("lam", kind="scalar", size=1, low=lam_low, high=lam_high, transform="log", init=lam0),
            Block("bandwidth", kind="per_feature" if per_feature_bandwidth else "scalar",
                  size=p_eff if per_feature_bandwidth else 1, low=bandwidth_low, high=bandwidth_high,
                  transform="log", init=bandwidth0),
        ))
        self._kcache: tuple | None = None
        self.params = {"dataset": dataset, "per_feature_bandwidth": per_feature_bandwidth, "lam0": lam0,
                       "bandwidth0": bandwidth0, "lam_low": lam_low, "lam_high": lam_high,
                       "bandwidth_low": bandwidth_low, "bandwidth_high": bandwidth_high}
        if dataset == "synthetic":
            self.params.update({"n": n, "p": p, "noise": noise, "n_informative": n_informative, "n_val": n_val,
                                "n_test": n_test})

    @staticmethod
    def _synthetic(n, p, noise, n_informative, n_val, n_test, seed):
        nm = KernelRidge.name
        for key, val in (("n", n), ("p", p)):
            require(isinstance(val, int) and val >= 1, nm, key, "an integer >= 1", val)
        require(noise >= 0, nm, "noise", ">= 0", noise)
        k = p if n_informative is None else n_informative
        require(isinstance(k, int) and 1 <= k <= p, nm, "n_informative", f"an integer in [1, p={p}]", k)
        n_val = max(n // 2, 10) if n_val is None else n_val
        n_test = max(n // 2, 10) if n_test is None else n_test
        require(isinstance(n_val, int) and n_val >= 1, nm, "n_val", "an integer >= 1", n_val)
        require(isinstance(n_test, int) and n_test >= 1, nm, "n_test", "an integer >= 1", n_test)
        rng = np.random.default_rng(seed)
        total = n + n_val + n_test
        x = rng.standard_normal((total, p))
        y = np.sin(2.0 * x[:, :k]).sum(1) / math.sqrt(k) + noise * rng.standard_normal(total)
        a, b = n, n + n_val
        return x[:a], y[:a], x[a:b], y[a:b], x[b:], y[b:]

    # -------------------------------------------------------------- structure
    def unpack(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lam, sigma)`` in natural units; ``sigma`` broadcast to shape ``(p,)``."""
        nat = self.space.to_natural(theta)
        sig = nat[1:]
        return nat[0], sig.expand(self.x_train.shape[1]) if sig.shape[0] == 1 else sig

    def chain_sigma(self, g_logsig: torch.Tensor) -> torch.Tensor:
        """Per-feature ``d/dlog sigma_j`` onto the bandwidth block (summed for one bandwidth)."""
        return g_logsig.sum().reshape(1) if self.space.blocks[1].size == 1 else g_logsig

    def kernels(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(K_train, K_eval_train)`` at ``theta`` (last one memoised; no graph)."""
        theta = theta.detach()
        key = (theta.cpu().numpy().tobytes(), str(theta.dtype))
        if self._kcache is not None and self._kcache[0] == key:
            return self._kcache[1], self._kcache[2]
        _, sig = self.unpack(theta)
        k = rbf_kernel(self.x_train, self.x_train, sig)
        ke = rbf_kernel(self.x_eval, self.x_train, sig)
        self._kcache = (key, k, ke)
        return k, ke

    def _factor(self, theta: torch.Tensor) -> torch.Tensor:
        lam, _ = self.unpack(theta.detach())
        k, _ = self.kernels(theta)
        m = k + self.n_train * lam * torch.eye(self.n_train, dtype=self.dtype, device=self.device)
        chol, info = torch.linalg.cholesky_ex(m)
        if int(info) != 0:
            raise FloatingPointError(f"{self.name}: K + n lam I is not positive definite at "
                                     f"hp={self.space.to_natural(theta.detach()).tolist()}")
        return chol

    # -------------------------------------------------------------- contract
    @property
    def space(self) -> Space:
        return self._space

    @property
    def n_params(self) -> int:
        return self.n_train + self.n_eval

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]

    def init_params(self) -> torch.Tensor:
        return torch.zeros(self.n_params, dtype=self.dtype, device=self.device)

    def inner_loss(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        lam, sig = self.unpack(theta)
        n = self.n_train
        a, u = w[:n], w[n:]
        k = rbf_kernel(self.x_train, self.x_train, sig)
        ke = rbf_kernel(self.x_eval, self.x_train, sig)
        r = u - ke @ a / self.s
        return 0.5 * (a @ (k @ a)) / n + 0.5 * lam * (a @ a) - (a @ self.y_train) / n + 0.5 * (r @ r)

    def _predictions(self, w: torch.Tensor) -> torch.Tensor:
        return self.s * w[self.n_train:]

    def outer_loss(self, w: torch.Tensor) -> torch.Tensor:
        r = self._predictions(w)[:self.x_val.shape[0]] - self.y_val
        return (r @ r) / r.shape[0]

    def test_loss(self, w: torch.Tensor) -> torch.Tensor:
        r = self._predictions(w)[self.x_val.shape[0]:] - self.y_test
        return (r @ r) / r.shape[0]

    def solve(self, theta: torch.Tensor) -> torch.Tensor:
        chol = self._factor(theta)
        alpha = torch.cholesky_solve(self.y_train.unsqueeze(1), chol).squeeze(1)
        _, ke = self.kernels(theta)
        return torch.cat([alpha, ke @ alpha / self.s])

    def reference_hypergradient(self, theta: torch.Tensor) -> torch.Tensor:
        """Implicit function theorem on the exact ``alpha* = (K + n lam I)^{-1} y`` (module docstring)."""
        theta = theta.detach()
        lam, sig = self.unpack(theta)
        chol = self._factor(theta)
        k, ke = self.kernels(theta)
        n, n_va = self.n_train, self.x_val.shape[0]
        alpha = torch.cholesky_solve(self.y_train.unsqueeze(1), chol).squeeze(1)
        k_va = ke[:n_va]
        r = k_va @ alpha - self.y_val
        q = torch.cholesky_solve((2.0 / n_va * (k_va.T @ r)).unsqueeze(1), chol).squeeze(1)
        g_lam = (-n * lam * (q @ alpha)).reshape(1)
        g_sig = (2.0 / n_va) * _dkernel_bilinear(self.x_val, self.x_train, k_va, sig, r, alpha) \
            - _dkernel_bilinear(self.x_train, self.x_train, k, sig, q, alpha)
        return torch.cat([g_lam, self.chain_sigma(g_sig)])

    def linearize(self, w: torch.Tensor, theta: torch.Tensor) -> Linearization:
        return KernelRidgeLinearization(self, w, theta)

    def inner_grad(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return KernelRidgeLinearization(self, w, theta).grad

    def outer_grad(self, w: torch.Tensor) -> torch.Tensor:
        n, n_va = self.n_train, self.x_val.shape[0]
        g = torch.zeros_like(w)
        r = self._predictions(w)[:n_va] - self.y_val
        g[n:n + n_va] = 2.0 * self.s * r / n_va
        return g
