"""The simulated quadratic bilevel problem of benchopt's benchmark_bilevel (``quadratic_bilevel``).

Both levels are averages of random quadratics in ``(z, x)`` (``z = w``: the inner variable of size
``d_inner``; ``x = theta``: the outer variable of size ``d_outer``, untransformed)::

    inner(z, x) = 1/n sum_i  1/2 z^T A_i z + x^T B_i z + a_i^T z
    outer(z)    = 1/m sum_j  1/2 z^T C_j z + c_j^T z + kappa,     kappa = 1/2 c^T C^{-1} c  (min_z outer = 0)

The means are drawn first: ``A = mean A_i`` has its eigenvalues log-spaced on ``[mu, L]`` (both
ends included), ``C = mean C_j`` on ``[mu_outer, L]``, ``B = mean B_i`` has spectral norm
``cross_norm``. The linear terms are ``a = -A z0`` and ``c = -C zo`` with ``z0, zo ~ N(0, I / d_inner)``:
the inner solution at ``x = 0`` is ``z0`` and the outer loss is smallest at ``z = zo``, both of norm
about 1 whatever ``mu``. Each example deviates from the mean by a centred random term scaled by
``noise`` (every random factor has norm about 1, so ``noise`` is the relative size of a deviation)::

    A_i = A + noise L (U_i U_i^T - mean_k U_k U_k^T),   U_i: d_inner x rank, entries N(0, 1/d_inner)
    B_i = B + noise cross_norm (g_i h_i^T - mean_k g_k h_k^T),   a_i = a + noise (e_i - mean_k e_k)

(``g_i``, ``h_i``, ``e_i`` Gaussian of norm about 1; alike for ``C_j``, ``c_j``), so the means are exactly
``A``, ``B``, ``a``, ``C``, ``c`` and every quantity of the problem has a closed form:

    z*(x) = -A^{-1} (B^T x + a),   F(x) = outer(z*(x)),   dF/dx = -B A^{-1} (C z*(x) + c)

and the minimiser ``x*`` of ``F`` (:meth:`QuadraticBilevel.optimum`) solves a ``d_outer`` square system.
Per-example Hessians may be indefinite when ``noise L rank / d_inner`` exceeds ``mu``; the mean is
always in ``[mu, L]``.

Scaling. The value function's Hessian is ``M^T C M`` with ``M = A^{-1} B^T``; for ``B`` in general
position ``||M x||^2 ~ cross_norm^2 mean_i(1 / lambda_i^2) ||x||^2 ~ cross_norm^2 / (2 mu^2 ln(L / mu))``,
so ``cross_norm`` defaults to ``10 mu``. At ``mu = 0.01`` that is benchmark_bilevel's ``L_cross = 0.1``;
at every ``mu`` it keeps the curvature of ``F`` of order ``L`` (``[0.42, 6.8]`` at the issue's sizes and
``mu = 0.01``, ``[0.076, 4.0]`` at ``mu = 1e-4``) and ``||dF(0)||^2`` of order 1, so the targets
``||dF||^2 <= 1e-2 ... 1e-6`` mean the same at both ``mu``; the inner problem keeps its condition number
``L / mu``. A fixed ``cross_norm`` makes ``F``'s curvature grow as ``(cross_norm / mu)^2`` (up to ``7e2`` at
``cross_norm = 1, mu = 0.01``), so the outer step must shrink with it.

Forms (``form``): ``"dense"`` stores one ``d_inner x d_inner`` matrix per example (and the
``d_outer x d_inner`` cross matrices), as benchmark_bilevel does: ``n d_inner^2`` numbers, about
2.9 GB in float64 at ``n = 32768, d_inner = 100``; a batch oracle averages ``b`` of them in one pass
(``O(b d_inner^2)``). ``"factored"`` stores the factors ``U_i, g_i, h_i, e_i`` (``n (d_inner rank + d_outer +
2 d_inner)`` numbers) and applies ``A_i`` as ``A_0 + noise L U_i U_i^T``: the same problem (same seed, same
matrices up to rounding) at ``O(d_inner^2 + b d_inner rank)`` per product (``A_0`` is dense), for large
``d_inner``. Both implement the fused
minibatch oracle in closed form (tag ``"fused-oracle"``).

There is no held-out split: ``test_loss`` is the outer loss.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hpo_bench.core.registry import register_task
from hpo_bench.core.space import Block, Space
from hpo_bench.core.task import Linearization, Task, require

__all__ = ["QuadraticBilevel", "QuadraticBilevelLinearization"]

FORMS = ("dense", "factored")


class QuadraticBilevelLinearization(Linearization):
    """The inner Hessian is the constant ``A`` and the cross derivative the constant ``B``."""

    def __init__(self, task: QuadraticBilevel, w: torch.Tensor, theta: torch.Tensor) -> None:
        self.task = task
        self._w = w.detach()
        self._theta = theta.detach()
        self.grad = task.inner_grad(self._w, self._theta)
        self.n_hvp = 0
        self.n_cross = 0

    def dense(self) -> torch.Tensor:
        return self.task.hess_mean

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        self.n_hvp += 1
        return torch.mv(self.task.hess_mean, v)

    def hvp_batch(self, v: torch.Tensor) -> torch.Tensor:
        self.n_hvp += v.shape[1]
        return self.task.hess_mean @ v

    def diagonal(self) -> torch.Tensor:
        return torch.diagonal(self.task.hess_mean).clone()

    def strong_convexity_bound(self) -> float:
        """``mu`` less a rounding margin ``4 d eps L`` (the spectrum of ``A`` is built, then rounded)."""
        t = self.task
        return t.mu - 4 * t.d_inner * 2.0 ** -52 * t.L

    def cross_norm_bound(self) -> float:
        return float(torch.linalg.matrix_norm(self.task.cross_mean, ord=2))

    def cross_vjp(self, v: torch.Tensor) -> torch.Tensor:
        self.n_cross += 1
        return torch.mv(self.task.cross_mean, v)

    def cross_jacobian(self) -> torch.Tensor:
        self.n_cross += self._w.shape[0]
        return self.task.cross_mean.T.clone()

    def hessian(self) -> torch.Tensor:
        self.n_hvp += self._w.shape[0]
        return self.task.hess_mean.clone()


def _spectrum_matrix(rng: np.random.Generator, d: int, low: float, high: float) -> np.ndarray:
    q, _ = torch.linalg.qr(torch.from_numpy(rng.standard_normal((d, d))))  # torch's LAPACK: numpy's is slow here
    s = torch.from_numpy(np.geomspace(low, high, d) if d > 1 else np.array([low]))
    return ((q * s) @ q.T).numpy()


def _outer_products(u: np.ndarray) -> np.ndarray:
    """``U_i U_i^T`` for every ``i`` (batched BLAS through torch)."""
    t = torch.from_numpy(u)
    return torch.matmul(t, t.transpose(1, 2)).numpy()


@register_task
class QuadraticBilevel(Task):
    """benchmark_bilevel's simulated quadratic bilevel problem; every metric in closed form (module docstring)."""

    name = "quadratic_bilevel"
    tags = frozenset({"closed-form", "per-example", "minibatch", "fused-oracle", "convex"})
    check_params = {"n": 64, "m": 32, "d_inner": 6, "d_outer": 3, "mu": 0.1}

    def __init__(self, *, n: int = 32768, m: int = 1024, d_inner: int = 100, d_outer: int = 10, mu: float = 0.01,
                 L: float = 1.0, mu_outer: float = 0.1, cross_norm: float | None = None, noise: float = 0.5,
                 rank: int = 4, form: str = "factored", x_bound: float | None = None, seed: int = 0,
                 dtype="float64", device: str = "cpu") -> None:
        super().__init__(seed=seed, dtype=dtype, device=device)
        nm = self.name
        for key, val in (("n", n), ("m", m), ("d_inner", d_inner), ("d_outer", d_outer), ("rank", rank)):
            require(isinstance(val, int) and val >= 1, nm, key, "an integer >= 1", val)
        require(0 < mu <= L, nm, "mu", f"in (0, L={L}]", mu)
        require(0 < mu_outer <= L, nm, "mu_outer", f"in (0, L={L}]", mu_outer)
        require(cross_norm is None or cross_norm > 0, nm, "cross_norm", "> 0 or omitted (10 mu)", cross_norm)
        cross_norm = 10.0 * mu if cross_norm is None else cross_norm
        require(noise >= 0, nm, "noise", ">= 0", noise)
        require(form in FORMS, nm, "form", f"one of {list(FORMS)}", form)
        require(x_bound is None or x_bound > 0, nm, "x_bound", "> 0 or omitted", x_bound)
        d, q, r = d_inner, d_outer, rank
        rng = np.random.default_rng(seed)
        a_mean = _spectrum_matrix(rng, d, mu, L)
        c_mean = _spectrum_matrix(rng, d, mu_outer, L)
        b_mean = rng.standard_normal((q, d))
        b_mean *= cross_norm / np.linalg.norm(b_mean, 2)
        # a = -A z0 and c = -C zo: the inner solution at x = 0 and the outer's minimiser in z are z0, zo ~ N(0, I/d)
        z0, zo = rng.standard_normal(d) / math.sqrt(d), rng.standard_normal(d) / math.sqrt(d)
        lin_in, lin_out = -a_mean @ z0, -c_mean @ zo
        s_a, s_b, s_c = noise * L, noise * cross_norm, noise
        u = rng.standard_normal((n, d, r)) / math.sqrt(d)
        g = rng.standard_normal((n, q)) / math.sqrt(q)
        h = rng.standard_normal((n, d)) / math.sqrt(d)
        e = rng.standard_normal((n, d)) / math.sqrt(d)
        uo = rng.standard_normal((m, d, r)) / math.sqrt(d)
        eo = rng.standard_normal((m, d)) / math.sqrt(d)
        u2 = u.transpose(1, 0, 2).reshape(d, n * r)
        uo2 = uo.transpose(1, 0, 2).reshape(d, m * r)
        # the per-example terms are centred: A_i = A0 + s_a U_i U_i^T with A0 = A - s_a mean U U^T, etc.
        a0 = a_mean - s_a * _outer_products(u2[None])[0] / n
        b0 = b_mean - s_b * (g.T @ h) / n
        lin0 = lin_in - s_c * e.mean(0)
        c0 = c_mean - s_a * _outer_products(uo2[None])[0] / m
        linc0 = lin_out - s_c * eo.mean(0)
        t = self.tensor
        self.d_inner, self.d_outer, self.rank, self.form = d, q, r, form
        self.mu, self.L = float(mu), float(L)
        self.s_a, self.s_b, self.s_c = float(s_a), float(s_b), float(s_c)
        self.hess_mean, self.cross_mean, self.lin_mean = t(a_mean), t(b_mean), t(lin_in)
        self.outer_hess_mean, self.outer_lin_mean = t(c_mean), t(lin_out)
        self.hess0, self.cross0, self.lin0 = t(a0), t(b0), t(lin0)
        self.outer_hess0, self.outer_lin0 = t(c0), t(linc0)
        self.outer_const = float(0.5 * lin_out @ np.linalg.solve(c_mean, lin_out))
        self._n, self._m = n, m
        if form == "dense":
            a_i = a0[None] + s_a * _outer_products(u)
            b_i = b0[None] + s_b * g[:, :, None] * h[:, None, :]
            lin_i = lin0[None] + s_c * e
            self.inner_pack = t(np.concatenate([a_i.reshape(n, d * d), b_i.reshape(n, q * d), lin_i], axis=1))
            c_j = c0[None] + s_a * _outer_products(uo)
            self.outer_pack = t(np.concatenate([c_j.reshape(m, d * d), linc0[None] + s_c * eo], axis=1))
            del a_i, b_i, c_j
        else:
            # U_i stored as its r rows of length d, in a tensor of their own: a gathered batch of factors is one
            # contiguous (b r, d) matrix with no copy (two plain GEMMs); the other factors are packed together
            self.inner_u = t(np.ascontiguousarray(u.transpose(0, 2, 1).reshape(n, r * d)))
            self.inner_pack = t(np.concatenate([g, h, e], axis=1))
            self.outer_u = t(np.ascontiguousarray(uo.transpose(0, 2, 1).reshape(m, r * d)))
            self.outer_pack = t(eo)
        self._chol = torch.linalg.cholesky(self.hess_mean)
        x_star, f_star = self._optimum()
        self._x_star, self._f_star = x_star, f_star
        bound = float(x_bound) if x_bound is not None else 2.0 ** math.ceil(
            math.log2(max(1.0, 2.0 * float(x_star.abs().max()))))
        self._space = Space((Block("x", kind="per_feature", size=q, low=-bound, high=bound, transform="none",
                                   init=0.0),))
        self.params = {"n": n, "m": m, "d_inner": d, "d_outer": q, "mu": mu, "L": L, "mu_outer": mu_outer,
                       "cross_norm": cross_norm, "noise": noise, "rank": r, "form": form, "x_bound": x_bound}

    # -------------------------------------------------------------- closed forms
    def _a_solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """``A^{-1} rhs`` for a vector or a matrix of columns."""
        if rhs.ndim == 1:
            return torch.cholesky_solve(rhs.unsqueeze(1), self._chol).squeeze(1)
        return torch.cholesky_solve(rhs, self._chol)

    def _optimum(self) -> tuple[torch.Tensor, float]:
        m_mat = -self._a_solve(self.cross_mean.T)          # dz*/dx, (d, q)
        m0 = -self._a_solve(self.lin_mean)                  # z*(0)
        hess = m_mat.T @ self.outer_hess_mean @ m_mat
        rhs = -m_mat.T @ (self.outer_hess_mean @ m0 + self.outer_lin_mean)
        x = torch.linalg.solve(0.5 * (hess + hess.T), rhs)
        return x, float(self.outer_loss(m_mat @ x + m0))

    def optimum(self) -> tuple[torch.Tensor, float]:
        """``(x*, F(x*))``: the minimiser of the value function (unconstrained; inside the bounds by construction
        unless ``x_bound`` is set smaller)."""
        return self._x_star.clone(), self._f_star

    # -------------------------------------------------------------- contract
    @property
    def space(self) -> Space:
        return self._space

    @property
    def n_params(self) -> int:
        return self.d_inner

    @property
    def n_train(self) -> int:
        return self._n

    @property
    def n_val(self) -> int:
        return self._m

    def init_params(self) -> torch.Tensor:
        return torch.zeros(self.d_inner, dtype=self.dtype, device=self.device)

    def inner_loss(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return 0.5 * w @ (self.hess_mean @ w) + theta @ (self.cross_mean @ w) + self.lin_mean @ w

    def outer_loss(self, w: torch.Tensor) -> torch.Tensor:
        return 0.5 * w @ (self.outer_hess_mean @ w) + self.outer_lin_mean @ w + self.outer_const

    def test_loss(self, w: torch.Tensor) -> torch.Tensor:
        return self.outer_loss(w)

    def inner_grad(self, w: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        return self.hess_mean @ w + self.cross_mean.T @ theta.detach() + self.lin_mean

    def outer_grad(self, w: torch.Tensor) -> torch.Tensor:
        return self.outer_hess_mean @ w + self.outer_lin_mean

    def solve(self, theta: torch.Tensor) -> torch.Tensor:
        """``z*(x) = -A^{-1} (B^T x + a)`` (Cholesky of ``A``, cached)."""
        return -self._a_solve(self.cross_mean.T @ theta.detach() + self.lin_mean)

    def reference_adjoint(self, theta: torch.Tensor) -> torch.Tensor:
        """``A^{-1} (C z* + c)``."""
        return self._a_solve(self.outer_grad(self.solve(theta)))

    def reference_hypergradient(self, theta: torch.Tensor) -> torch.Tensor:
        """``dF/dx = -B A^{-1} (C z*(x) + c)``."""
        return -self.cross_mean @ self.reference_adjoint(theta)

    def linearize(self, w: torch.Tensor, theta: torch.Tensor) -> Linearization:
        return QuadraticBilevelLinearization(self, w, theta)

    # -------------------------------------------------------------- minibatch oracles
    def _ones(self, b: int) -> torch.Tensor:
        """``ones(b) / b`` (cached per batch size): a batch mean is one gemv."""
        cache = self.__dict__.setdefault("_ones_cache", {})
        if b not in cache:
            cache[b] = torch.full((b,), 1.0 / b, dtype=self.dtype, device=self.device)
        return cache[b]

    def _batch_mean(self, pack: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The mean of ``pack``'s rows ``idx`` (repeats counted): one fused gather-and-average
        (``embedding_bag``), which never materialises the ``(b, row)`` copy that a gather then a mean makes;
        the dense form's rows are ``d_inner^2`` long, so that copy is most of a batch oracle's memory traffic."""
        offsets = self.__dict__.setdefault("_bag_offsets", torch.zeros(1, dtype=torch.long, device=self.device))
        return torch.nn.functional.embedding_bag(idx, pack, offsets, mode="mean")[0]

    def _inner_batch(self, idx: torch.Tensor):
        """``(A_B as an operator on (d, k) matrices, B_B as (q, d) operators, a_B)`` for the batch ``idx``."""
        d, q, r = self.d_inner, self.d_outer, self.rank
        if self.form == "dense":
            mean = self._batch_mean(self.inner_pack, idx)
            a_b = mean[:d * d].view(d, d)
            b_b = mean[d * d:d * d + q * d].view(q, d)
            lin_b = mean[d * d + q * d:]
            return (lambda z: a_b @ z), (lambda x: b_b.T @ x), (lambda v: b_b @ v), lin_b, a_b, b_b
        rows = torch.index_select(self.inner_pack, 0, idx)
        b = rows.shape[0]
        u = torch.index_select(self.inner_u, 0, idx).view(b * r, d)   # the rows of every U_i^T
        g = rows[:, :q]
        h = rows[:, q:q + d]
        e = rows[:, q + d:]
        s_a, s_b = self.s_a / b, self.s_b / b

        def a_op(z):
            # A_B z = A0 z + s_a / b sum_i U_i (U_i^T z) = A0 z + s_a / b U^T (U z), U the (b r, d) stack
            return torch.addmm(self.hess0 @ z, u.T, u @ z, alpha=s_a) if z.ndim == 2 else \
                torch.addmv(self.hess0 @ z, u.T, u @ z, alpha=s_a)

        def bt_op(x):
            return torch.add(self.cross0.T @ x, h.T @ (g @ x), alpha=s_b)

        def b_op(v):
            return torch.add(self.cross0 @ v, g.T @ (h @ v), alpha=s_b)

        lin_b = torch.addmv(self.lin0, e.T, self._ones(b), alpha=self.s_c)  # a gemv: cheaper than a strided mean
        return a_op, bt_op, b_op, lin_b, None, None

    def inner_loss_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        a_op, bt_op, _, lin_b, _, _ = self._inner_batch(idx)
        return 0.5 * w @ a_op(w) + bt_op(theta) @ w + lin_b @ w

    def outer_loss_batch(self, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        c_op, lin_c = self._outer_batch(idx)
        return 0.5 * w @ c_op(w) + lin_c @ w + self.outer_const

    def _outer_batch(self, idx: torch.Tensor):
        d, r = self.d_inner, self.rank
        if self.form == "dense":
            mean = self._batch_mean(self.outer_pack, idx)
            c_b = mean[:d * d].view(d, d)
            return (lambda z: c_b @ z), mean[d * d:]
        e = torch.index_select(self.outer_pack, 0, idx)
        b = e.shape[0]
        u = torch.index_select(self.outer_u, 0, idx).view(b * r, d)

        def c_op(z):
            return torch.addmv(self.outer_hess0 @ z, u.T, u @ z, alpha=self.s_a / b)

        return c_op, torch.addmv(self.outer_lin0, e.T, self._ones(b), alpha=self.s_c)

    def inner_grad_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        a_op, bt_op, _, lin_b, _, _ = self._inner_batch(idx)
        return a_op(w) + bt_op(theta.detach()) + lin_b

    def outer_grad_batch(self, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        c_op, lin_c = self._outer_batch(idx)
        return c_op(w) + lin_c

    def inner_theta_grad_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return self._inner_batch(idx)[2](w)

    def inner_hvp_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor,
                        v: torch.Tensor) -> torch.Tensor:
        """``A_B v``, gathering only the Hessian part of the batch's rows."""
        d, r = self.d_inner, self.rank
        if self.form == "dense":
            rows = torch.index_select(self.inner_pack[:, :d * d], 0, idx)
            return torch.mv(torch.mv(rows.T, self._ones(rows.shape[0])).view(d, d), v)
        u = torch.index_select(self.inner_u, 0, idx).view(-1, d)
        return torch.addmv(torch.mv(self.hess0, v), u.T, torch.mv(u, v), alpha=self.s_a / idx.shape[0])

    def inner_cross_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor,
                          v: torch.Tensor) -> torch.Tensor:
        return self._inner_batch(idx)[2](v)

    def inner_oracle_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor,
                           v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(A_B z + B_B^T x + a_B, A_B v, B_B v)``: one gather of the batch's rows; ``A_B`` applied to ``z`` and
        ``v`` as matrix-vector products (a two-column matrix product costs 3-4x two of them through MKL at
        ``d_inner = 1000``)."""
        a_op, bt_op, b_op, lin_b, _, _ = self._inner_batch(idx)
        grad = a_op(w).add_(bt_op(theta.detach())).add_(lin_b)
        return grad, a_op(v), b_op(v)
