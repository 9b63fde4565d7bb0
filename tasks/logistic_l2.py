"""L2-regularised logistic regression with one penalty per feature (``logistic_l2``).

Parameters ``w = [beta (p), b]`` (the intercept ``b`` is not penalised); labels ``y in {-1, +1}``::

    inner(w, theta) = 1/n sum_i log(1 + exp(-y_i (x_i . beta + b))) + 1/2 sum_j lam_j beta_j^2

with ``lam = exp(theta)`` (one per feature, or one shared with ``per_feature = false``).
Validation and test losses are the mean logistic losses (no penalty).

Reference inner solve: damped Newton with the analytic Hessian
``H = X1^T diag(p_i (1 - p_i)) X1 / n + diag(lam, 0)`` (``X1 = [X, 1]``) to ``||grad|| <= 1e-12``
plus two polishing steps (:func:`hpo_bench.core.solvers.newton`). Reference hypergradient
(tag ``"reference:implicit-dense"``): the implicit function theorem with that dense
Hessian, ``dF/dtheta_j = -lam_j beta*_j q_j`` with ``H q = grad outer(w*)``.

Data: ``"breast_cancer"`` (scikit-learn's bundled set, 569 x 30, offline), shuffled by the
seed, split 50/25/25 and standardised with training statistics; or ``"synthetic"``: ``n``
training rows of ``p`` standard normal features, ``n_informative`` of them with weights
drawn from ``N(0, signal^2)``, labels drawn from the logistic model; or any other registered
binary set of :mod:`hpo_bench.data` (``"ijcnn1"``, ``"covtype.binary"``, the stand-in
``"ijcnn1-like"``, ...): its canonical split drawn by the seed, the first ``max_train`` rows of
the training split if given, standardised like breast_cancer; the larger class label is ``+1``.
Sparse sets that fit densified (``DENSE_LIMIT_BYTES``) are densified and standardised as before;
larger ones, and ``"text-like"`` (:func:`hpo_bench.data.text_like`: Zipf word frequencies,
``density`` non-zeros, tf-idf rows of unit norm; ``n``, ``p``, ``n_informative``, ``signal``),
stay sparse (torch CSR, never densified, not standardised: centring would densify them).

References (:meth:`LogisticL2.reference`). Route ``"dense"`` (damped Newton with the dense Hessian,
one solve for ``q``) for dense data with ``p <= REFERENCE_DENSE_MAX``; route ``"newton-cg"``
otherwise (or with ``reference = "matrix_free"``): Newton-CG to ``||grad_w|| <= REFERENCE_GTOL *
||grad_w(0)||`` (Jacobi-preconditioned directions) plus ``REFERENCE_POLISH`` (one) polishing step, then
Jacobi-preconditioned CG on ``H q = grad outer(w)`` to ``REFERENCE_RTOL``. Both report a certified bound
on ``||g - dF/dtheta||_2``:

* ``mu``: ``H(w') >= mu I`` on a ball ``B(w, R)``. With ``z_i = x1_i . w`` and ``s(z) = sigma(z)(1 - sigma(z))``
  (even, decreasing in ``|z|``), every ``w'`` in the ball has curvature ``s_i(w') >= s(|z_i| + ||x1_i|| R)
  =: s_i^-``, so ``H(w') >= H^- = X1^T diag(s^-) X1 / n + diag(lam, 0)``. For ``p <= 512`` dense,
  ``mu = lambda_min(H^-)`` (eigensolve less its rounding margin); otherwise, for unit ``(u, t)``
  (``t`` the intercept), ``||X u + t 1||_S >= |t| sqrt(sum s^-) - sqrt(max s^-) ||X||_2 ||u||``
  (triangle inequality in the ``s^-``-weighted norm) gives ``u^T H^- u >= max(0, A cos phi - B sin phi)^2
  + c sin^2 phi`` with ``A^2 = mean(s^-)``, ``B^2 = max(s^-) ||X||_2^2 / n``, ``c = min(lam)``, hence
  ``mu = min(lambda_min([[A^2, -AB], [-AB, B^2 + c]]), c A^2 / (A^2 + B^2))`` (``||X||_2^2 <=
  min(||X||_F^2, ||X||_1 ||X||_inf)``).
* ``w``: with ``R = 4 ||grad_w|| / mu0``: if ``2 ||grad_w|| < mu R`` the minimiser lies in the ball
  (``f`` grows on its boundary) and ``e_w = ||w - w*|| <= ||grad_w|| / mu``; otherwise nothing is certified
  (NaN).
* ``q``: ``H(w*) (q - q*) = r_q + (H(w*) - H(w)) q + v(w) - v(w*)`` with ``r_q = H(w) q - v(w)``;
  ``|s'| <= 1 / (6 sqrt 3)`` gives ``||H(w*) - H(w)|| <= e_w max_i ||x1_i|| ||X1||_2^2 / (6 sqrt(3) n)``
  and ``sigma' <= 1/4`` the outer gradient's Lipschitz constant ``L_v = ||X1_v||_2^2 / (4 n_v)``, so
  ``e_q <= (||r_q|| + ||H(w*) - H(w)|| ||q|| + L_v e_w) / mu``.
* ``g = -lam . beta . q`` (chain rule of ``lam = exp(theta)``): per feature ``||g - g*|| <=
  ||lam w||_inf e_q + ||lam q||_inf e_w + ||lam||_inf e_w e_q``; a shared penalty: ``lam (||w|| e_q +
  ||q|| e_w + e_w e_q)``.
* Block bound (the smaller of the two is reported). ``g`` involves the features only, whose Hessian block
  is ``A = X^T S X / n + Lambda >= Lambda`` (``Lambda = diag(lam)``, ``lam >= c = min lam``), coupled to
  the intercept by ``b = X^T s / n`` with ``||b|| <= ||X1||_2 ||s||_2 / n <= ||X1||_2 / (4 sqrt n) =: beta``
  (``s <= 1/4``). For ``w``, the mean-value Hessian ``Hbar`` on the segment to ``w*`` has that structure and
  ``Hbar (w - w*) = grad_w``; for ``q``, ``H(w*) (q - q*) = rho`` with ``||rho||`` the numerator of ``e_q``.
  The feature rows give ``A d_f = rho_f - b d_0``, and ``Lambda^(1/2) A^-1 Lambda^(1/2) <= I``, so
  ``||Lambda^(1/2) d_f|| <= ||Lambda^(-1/2) (rho_f - b d_0)|| <= (||rho|| + beta e) / sqrt(c) =: E``
  (``|d_0| <= e``, the whole-vector bound). Then ``||lam . d_w . q|| <= ||Lambda^(1/2) q||_inf E_w`` and
  the like: per feature ``||g - g*|| <= ||Lambda^(1/2) w||_inf E_q + ||Lambda^(1/2) q||_inf E_w + E_w E_q``;
  a shared penalty ``sqrt(lam) (||w|| E_q + ||q|| E_w) + E_w E_q``. Where every penalty is large, ``mu`` is
  set by the unpenalised intercept while the features are held by ``lam``: this bound is then smaller by
  about ``(mu + beta) / c`` (at the box's upper corner, ``lam = 1e4``, by four orders of magnitude).

Rounding margins ``gamma = 1.01 (k_r + k_c + 4) eps`` (the lengths of the dot products, as in
:mod:`hpo_bench.tasks._quadratic`) times the entrywise-absolute products are added to ``||grad_w||``,
``||r_q||`` and ``||v||``; the sigmoid's own rounding (a few eps) is inside the ``+4``.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

import scipy.sparse as sp

from hpo_bench import data
from hpo_bench.core.registry import register_task
from hpo_bench.core.solvers import SolveCache, SolveError, newton_cg, newton_or_raise
from hpo_bench.core.space import Block, Space
from hpo_bench.core.task import Linearization, Reference, Task, require

from ._datasets import DENSE_LIMIT_BYTES, DescribesDataset, dataset_rule, task_split, text_like_split
from ._quadratic import REFERENCE_MODES
from ._sparse_ops import Design, cg_as_far_as_it_goes

__all__ = ["LogisticL2", "LogisticLinearization"]

DATASETS = ("synthetic", "breast_cancer", data.TEXT_LIKE)
_S3 = 1.0 / (6.0 * math.sqrt(3.0))  # max |s'(z)| of s = sigma (1 - sigma)


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
        return self.task.hvp_at(self._curv, self._pen, v)

    def diagonal(self) -> torch.Tensor:
        """``diag(X^T S X) / n + pen``: one pass over the data (the Jacobi preconditioner of ``cg``)."""
        return self.task.hessian_diagonal(self._curv, self._pen)

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
        if t.sparse or t.n_params > t.REFERENCE_DENSE_MAX:
            return t.mu_lower(self._curv, self._pen)
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
        d = self.task.design_train
        return d.rmm(self._curv.unsqueeze(1) * d.mm(v)) / d.n + self._pen.unsqueeze(1) * v

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
    #: ``reference = "auto"`` uses the dense route up to this many weights with dense data, Newton-CG above it.
    REFERENCE_DENSE_MAX = 2000
    #: Newton-CG stops at ``||grad_w|| <= REFERENCE_GTOL ||grad_w(0)||`` (then polishes).
    REFERENCE_GTOL = 1e-12
    #: Polishing Newton steps of the matrix-free route (CG to 1e-12 of ``||grad||`` each). One: a second one
    #: left the certified bound unchanged to 3 digits at lam = 1e-2, 1e-4 and 1e-6 on the n = 20000, p = 100000
    #: text-like instance, and cost a fifth of a reference.
    REFERENCE_POLISH = 1
    #: The relative residual of the matrix-free route's CG solve for ``q``.
    REFERENCE_RTOL = 1e-12
    REFERENCE_MAX_ITER = 20000

    def __init__(self, *, dataset: str = "breast_cancer", n: int = 200, p: int = 10, n_informative: int | None = None,
                 signal: float = 2.0, n_val: int | None = None, n_test: int | None = None, per_feature: bool = True,
                 max_train: int | None = None, lam0: float = 0.01, lam_low: float = 1e-6, lam_high: float = 1e4,
                 density: float | None = None, reference: str = "auto", seed: int = 0, dtype="float64",
                 device: str = "cpu") -> None:
        super().__init__(seed=seed, dtype=dtype, device=device)
        nm = self.name
        fits, rule = dataset_rule(DATASETS, "binary")
        require(dataset in fits, nm, "dataset", rule, dataset)
        require(isinstance(per_feature, bool), nm, "per_feature", "true or false", per_feature)
        require(lam_low <= lam0 <= lam_high, nm, "lam0", f"within [lam_low, lam_high] = [{lam_low}, {lam_high}]",
                lam0)
        require(reference in REFERENCE_MODES, nm, "reference", f"one of {list(REFERENCE_MODES)}", reference)
        require(density is None or dataset == data.TEXT_LIKE, nm, "density",
                f"omitted unless dataset = {data.TEXT_LIKE!r}", density)
        self.reference_mode = reference
        rng = np.random.default_rng(seed)
        sparse_x = False
        if dataset == data.TEXT_LIKE:
            require(signal >= 0, nm, "signal", ">= 0", signal)
            x, y, (n, n_val, n_test) = text_like_split(nm, n=n, p=p, density=density, n_informative=n_informative,
                                                       n_val=n_val, n_test=n_test, max_train=max_train, seed=seed,
                                                       target="binary", signal=signal)
            y = (y > 0).astype(np.int64)
            a, b = n, n + n_val
            sparse_x = True
        elif dataset != "synthetic":  # the canonical split (breast_cancer: all rows permuted by the seed, 50/25/25)
            parts = task_split(task=nm, dataset=dataset, fits=fits, seed=seed, max_train=max_train, rule=rule,
                               keep_sparse=True)
            xs = (parts.x_train, parts.x_val, parts.x_test)
            if any(sp.issparse(v) for v in xs):
                need = sum(v.shape[0] for v in xs) * xs[0].shape[1] * 8
                sparse_x = need > DENSE_LIMIT_BYTES  # small sparse sets: densified and standardised as always
                x = sp.vstack([sp.csr_matrix(v) for v in xs], format="csr") if sparse_x else \
                    np.vstack([v.toarray() if sp.issparse(v) else v for v in xs])
            else:
                x = np.vstack(xs)
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
        y = 2.0 * y - 1.0
        t = self.tensor
        ones = np.ones((len(y), 1))
        if sparse_x:
            x1 = sp.csr_matrix(sp.hstack([x, sp.csr_matrix(ones)], format="csr"))
        else:
            mu, sd = x[:a].mean(0), x[:a].std(0)
            x = (x - mu) / np.where(sd > 0, sd, 1.0)
            x1 = np.hstack([x, ones])
        self.sparse = sparse_x
        self.design_train = Design(x1[:a], dtype=self.dtype, device=self.device)
        self.design_val = Design(x1[a:b], dtype=self.dtype, device=self.device)
        self.design_test = Design(x1[b:], dtype=self.dtype, device=self.device)
        self.x1_train, self.y_train = self.design_train.mat, t(y[:a])
        self.x1_val, self.y_val = self.design_val.mat, t(y[a:b])
        self.x1_test, self.y_test = self.design_test.mat, t(y[b:])
        p_eff = x.shape[1]
        if sparse_x:  # per-example and minibatch oracles index rows of a dense X: not offered on CSR
            self.tags = type(self).tags - {"per-example", "minibatch", "fused-oracle"}
        self._space = Space((Block("lam", kind="per_feature" if per_feature else "scalar",
                                   size=p_eff if per_feature else 1, low=lam_low, high=lam_high, transform="log",
                                   init=lam0),))
        if not per_feature:  # an instance tag: it depends on the parameters
            self.tags = self.tags | {"scalar-hyperparameter"}
        if self.reference_route() != "dense":
            self.tags = (self.tags - {"reference:implicit-dense"}) | {"reference:implicit-cg"}
        self._cache = SolveCache()
        self.params = {"dataset": dataset, "per_feature": per_feature, "lam0": lam0, "lam_low": lam_low,
                       "lam_high": lam_high}
        if dataset == "synthetic":
            self.params.update({"n": n, "p": p, "n_informative": n_informative, "signal": signal, "n_val": n_val,
                                "n_test": n_test})
        elif dataset == data.TEXT_LIKE:
            self.params.update({"n": n, "p": p, "density": density, "n_informative": n_informative,
                                "signal": signal, "n_val": n_val, "n_test": n_test})
        elif max_train is not None:
            self.params["max_train"] = max_train
        if reference != "auto":  # only when set: the params of existing instances (and their oracles) stay as they were
            self.params["reference"] = reference

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
        """A lower bound on ``lambda_min(X1^T X1 / n)`` (float64 eigensolve less ``4 p eps ||.||_F``, floored at 0;
        0 for sparse data or above ``REFERENCE_DENSE_MAX`` weights, where no ``p x p`` matrix is formed)."""
        if self.sparse or self.n_params > self.REFERENCE_DENSE_MAX:
            return 0.0
        x1 = self.x1_train.double().cpu()
        g = x1.T @ x1 / x1.shape[0]
        low = float(torch.linalg.eigvalsh(g)[0]) - (4 * g.shape[0] + x1.shape[0]) * 2.0 ** -52 * float(
            torch.linalg.matrix_norm(g))
        return max(low, 0.0)

    def curvature(self, w: torch.Tensor) -> torch.Tensor:
        """``p_i (1 - p_i)`` per training example."""
        pr = torch.sigmoid(self.design_train.mv(w))
        return pr * (1.0 - pr)

    def hessian_at(self, w: torch.Tensor, pen: torch.Tensor) -> torch.Tensor:
        """Dense ``H`` (``p x p``); for sparse data formed from the CSR factors, refused above ``REFERENCE_DENSE_MAX``."""
        if self.sparse:
            if self.n_params > self.REFERENCE_DENSE_MAX:
                raise ValueError(f"task {self.name!r}: a dense Hessian is refused at p = {self.n_params} > "
                                 f"{self.REFERENCE_DENSE_MAX}; use a matrix-free method (cg)")
            x1 = self.design_train.scipy()
            curv = self.curvature(w).cpu().numpy()
            h = self.tensor((x1.T @ sp.diags(curv) @ x1).toarray()) / x1.shape[0]
            return h + torch.diag(pen)
        x1 = self.x1_train
        return (x1.T * self.curvature(w)) @ x1 / x1.shape[0] + torch.diag(pen)

    def hvp_at(self, curv: torch.Tensor, pen: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``H v = X1^T (curv * (X1 v)) / n + pen * v`` (sparse-dense products; no copy of ``X1``)."""
        d = self.design_train
        return torch.addcmul(d.rmv(curv * d.mv(v)) / d.n, pen, v)

    def hessian_diagonal(self, curv: torch.Tensor, pen: torch.Tensor) -> torch.Tensor:
        """``diag(X1^T S X1) / n + pen``."""
        d = self.design_train
        if self.sparse:
            return self._sq_design.rmv(curv) / d.n + pen
        x1 = self.x1_train
        return curv @ (x1 * x1) / x1.shape[0] + pen

    @functools.cached_property
    def _sq_design(self) -> Design:
        """``X1 * X1`` entrywise (sparse data: for the Hessian diagonal)."""
        m = self.design_train.scipy()
        return Design(m.multiply(m).tocsr(), dtype=self.dtype, device=self.device)

    @functools.cached_property
    def _norms(self) -> dict:
        """Certified norms of the designs (``||X||_2^2`` upper bounds, the largest row norm) for the bounds."""
        eps = 2.0 ** -52
        out = {}
        for key, d in (("train", self.design_train), ("val", self.design_val)):
            a = d.abs()
            ones_p = torch.ones(d.p, dtype=self.dtype, device=self.device)
            ones_n = torch.ones(d.n, dtype=self.dtype, device=self.device)
            schur = float(a.rmv(ones_n).max()) * float(a.mv(ones_p).max())
            out[key + "_sq"] = min(d.fro2(), schur) * (1 + (d.max_row_nnz + d.max_col_nnz + 4) * eps)
            out[key + "_rowmax"] = float(d.row_norms().max()) * (1 + (d.max_row_nnz + 4) * eps)
        # ||X||_2^2 of the features alone (the intercept column dropped) for the intercept bound: <= ||X1||_2^2
        return out

    def mu_lower(self, curv: torch.Tensor, pen: torch.Tensor) -> float:
        """Certified ``mu <= lambda_min(X1^T diag(curv) X1 / n + diag(pen, 0))`` without a ``p x p`` matrix
        (the ``(A, B, c)`` bound of the module docstring); NaN when it is not positive."""
        eps = 2.0 ** -52
        a2 = float(curv.mean()) * (1 - 4 * eps)
        b2 = float(curv.max()) * self._norms["train_sq"] / self.design_train.n * (1 + 4 * eps)
        c = float(pen[:-1].min()) * (1 - 4 * eps) if pen.shape[0] > 1 else math.inf
        if not (a2 > 0 and c > 0):
            return math.nan
        tr = a2 + b2 + c
        lam_m = 2 * a2 * c / (tr + math.sqrt(max(tr * tr - 4 * a2 * c, 0.0)))
        mu = min(lam_m, c * a2 / (a2 + b2)) * (1 - 1e-12)
        return mu if mu > 0 else math.nan

    def _mu_ball(self, w: torch.Tensor, pen: torch.Tensor, radius: float) -> float:
        """``mu`` valid on the ball ``B(w, radius)``: the curvature lowered to ``s(|z_i| + ||x1_i|| radius)``."""
        z = self.design_train.mv(w).abs()
        zr = z + self.design_train.row_norms() * radius * (1 + 1e-12) + 1e-300
        pr = torch.sigmoid(zr)
        curv = pr * (1 - pr) * (1 - 8 * 2.0 ** -52)
        if not self.sparse and self.n_params <= 512:
            x1 = self.x1_train.double().cpu()
            cv = curv.double().cpu()
            h = (x1.T * cv) @ x1 / x1.shape[0] + torch.diag(pen.double().cpu())
            a = (x1.abs().T * cv) @ x1.abs() / x1.shape[0] + torch.diag(pen.double().cpu())
            margin = (4 * x1.shape[1] + x1.shape[0]) * 2.0 ** -52 * float(torch.linalg.matrix_norm(a))
            mu = float(torch.linalg.eigvalsh(h)[0]) - margin
            alt = self.mu_lower(curv, pen)
            mu = max(mu, alt) if math.isfinite(alt) else mu
            return mu if mu > 0 else math.nan
        mu = self.mu_lower(curv, pen)
        if not self.sparse and self.n_params <= self.REFERENCE_DENSE_MAX:
            mu = max(mu if math.isfinite(mu) else 0.0, float(curv.min()) * self.gram1_eig_low)
        return mu if mu > 0 else math.nan

    def reference_route(self) -> str:
        """``"dense"`` or ``"newton-cg"``: what :meth:`solve` and :meth:`reference` use for this instance."""
        if self.reference_mode == "dense":
            return "dense"
        if self.reference_mode == "matrix_free" or self.sparse or self.n_params > self.REFERENCE_DENSE_MAX:
            return "newton-cg"
        return "dense"

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
        self._no_rows()
        return (self._data_loss(w, self.x1_train[idx], self.y_train[idx])
                + 0.5 * torch.sum(self.penalty_vector(theta) * w * w))

    def outer_loss(self, w: torch.Tensor) -> torch.Tensor:
        return self._data_loss(w, self.x1_val, self.y_val)

    def _no_rows(self) -> None:
        if self.sparse:
            raise NotImplementedError(f"task {self.name!r}: per-example and minibatch losses are not offered with "
                                      "sparse data (the instance has no 'per-example' / 'minibatch' tags)")

    # ------------------------------------------------ minibatch oracles (closed forms; tag "fused-oracle")
    @property
    def n_val(self) -> int:
        return self.x1_val.shape[0]

    def outer_loss_batch(self, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        self._no_rows()
        return self._data_loss(w, self.x1_val[idx], self.y_val[idx])

    def inner_grad_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        self._no_rows()
        x1, y = self.x1_train[idx], self.y_train[idx]
        return torch.addcmul(-x1.T @ (y * torch.sigmoid(-y * (x1 @ w))) / x1.shape[0],
                             self.penalty_vector(theta.detach()), w)

    def outer_grad_batch(self, w: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        self._no_rows()
        x1, y = self.x1_val[idx], self.y_val[idx]
        return -x1.T @ (y * torch.sigmoid(-y * (x1 @ w))) / x1.shape[0]

    def inner_theta_grad_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The penalty's ``d/dtheta`` (the data term does not depend on theta): the same at every batch."""
        return self.chain_to_theta(theta.detach(), 0.5 * w[:-1] * w[:-1])

    def inner_hvp_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor,
                        v: torch.Tensor) -> torch.Tensor:
        self._no_rows()
        x1 = self.x1_train[idx]
        pr = torch.sigmoid(x1 @ w)
        return torch.addcmul(x1.T @ (pr * (1 - pr) * (x1 @ v)) / x1.shape[0], self.penalty_vector(theta.detach()), v)

    def inner_cross_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor,
                          v: torch.Tensor) -> torch.Tensor:
        return self.chain_to_theta(theta.detach(), (w * v)[:-1])

    def inner_oracle_batch(self, w: torch.Tensor, theta: torch.Tensor, idx: torch.Tensor,
                           v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(grad, H_B v, J v)`` from one pass over the batch rows: ``X_B [w, v]`` in one product."""
        self._no_rows()
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
        d, y = self.design_train, self.y_train
        s = torch.sigmoid(-y * d.mv(w))
        return -d.rmv(y * s) / d.n + self.penalty_vector(theta.detach()) * w

    def outer_grad(self, w: torch.Tensor) -> torch.Tensor:
        d, y = self.design_val, self.y_val
        return -d.rmv(y * torch.sigmoid(-y * d.mv(w))) / d.n

    def linearize(self, w: torch.Tensor, theta: torch.Tensor) -> Linearization:
        return LogisticLinearization(self, w, theta)

    def _solve(self, theta: torch.Tensor, w0: torch.Tensor | None = None, rel_tol: float | None = None) -> torch.Tensor:
        """Newton (dense route) or Newton-CG from ``w0`` to ``||grad|| <= rel_tol ||grad(0)||`` (default
        ``REFERENCE_GTOL`` and ``REFERENCE_POLISH`` polishing steps; a looser ``rel_tol`` polishes none)."""
        pen = self.penalty_vector(theta)
        if self.reference_route() == "dense":
            return newton_or_raise(self.name, lambda v: self.inner_loss(v, theta),
                                   lambda v: self.inner_grad(v, theta), lambda v: self.hessian_at(v, pen),
                                   self.init_params())
        start = self.init_params() if w0 is None or w0.shape != (self.n_params,) else w0.detach()
        scale = float(torch.linalg.vector_norm(self.inner_grad(self.init_params(), theta)))
        gtol = (self.REFERENCE_GTOL if rel_tol is None else rel_tol) * max(scale, 1e-300)
        w, info = newton_cg(lambda v: self.inner_loss(v, theta), lambda v: self.inner_grad(v, theta),
                            lambda v: (lambda u, c=self.curvature(v): self.hvp_at(c, pen, u)), start, gtol=gtol,
                            polish=self.REFERENCE_POLISH if rel_tol is None else 0,
                            precond_at=lambda v: 1.0 / self.hessian_diagonal(self.curvature(v), pen))
        if not info.converged:
            raise SolveError(f"{self.name}: Newton-CG stopped at ||grad|| = {info.grad_norm:.2e} after "
                             f"{info.iterations} iterations (target {gtol:.1e})")
        return w

    def solve(self, theta: torch.Tensor) -> torch.Tensor:
        """Newton to ``||grad|| <= 1e-12`` (+ 2 polishing steps; Newton-CG on the matrix-free route, to
        ``REFERENCE_GTOL`` relative to ``||grad(0)||``, + ``REFERENCE_POLISH``), memoised on ``theta``."""
        return self._cache.get(theta, self._solve)

    def solve_from(self, theta: torch.Tensor, w0: torch.Tensor | None) -> torch.Tensor:
        """:meth:`solve`, with the matrix-free route's Newton-CG started from ``w0`` (the same tolerance; the dense
        route's Newton starts at the init)."""
        if self.reference_route() == "dense" or w0 is None:
            return self.solve(theta)
        return self._cache.get(theta, lambda th: self._solve(th, w0))

    def solve_to(self, theta: torch.Tensor, w0: torch.Tensor | None, tol: float) -> torch.Tensor:
        """Newton-CG from ``w0`` to ``||grad|| <= tol ||grad(0)||``, no polishing, uncached (matrix-free route);
        at ``tol <= REFERENCE_GTOL``, or on the dense route, :meth:`solve_from`."""
        if self.reference_route() == "dense" or not tol > self.REFERENCE_GTOL:
            return self.solve_from(theta, w0)
        return self._solve(theta.detach(), None if w0 is None else w0.detach(), rel_tol=tol)

    def reference_hypergradient(self, theta: torch.Tensor) -> torch.Tensor:
        """Dense implicit differentiation at the Newton solution: ``-lam . beta* . H^{-1} grad outer``."""
        return self.reference(theta).grad

    def reference(self, theta: torch.Tensor, warm=None) -> Reference:
        """``F``, ``dF/dtheta`` and ``w*`` with a certified error bound (module docstring).

        Route ``"dense"``: one Newton solve and one dense solve for ``q``. Route ``"newton-cg"``: Newton-CG
        (started from ``warm[0]``) and CG for ``q`` (from ``warm[1]``); ``warm = (w, q)`` of a previous call.
        """
        theta = theta.detach()
        pen = self.penalty_vector(theta)
        v_w = None
        if self.reference_route() == "dense":
            w = self.solve(theta)
            v_w = self.outer_grad(w)
            q = torch.linalg.solve(self.hessian_at(w, pen), v_w)
            route, state = "dense", None
        else:
            w0, q0 = warm if isinstance(warm, tuple) and len(warm) == 2 else (None, None)
            w = self._cache.get(theta, lambda th: self._solve(th, w0))
            v_w = self.outer_grad(w)
            curv = self.curvature(w)
            diag = self.hessian_diagonal(curv, pen)
            if q0 is not None and (q0.shape != v_w.shape or not bool(torch.isfinite(q0).all())):
                q0 = None
            q, _ = cg_as_far_as_it_goes(lambda u: self.hvp_at(curv, pen, u), v_w, tol=self.REFERENCE_RTOL,
                                        max_iter=self.REFERENCE_MAX_ITER, x0=q0, precond=1.0 / diag)
            route, state = "newton-cg", (w, q)
        grad = -self.chain_to_theta(theta, (w * q)[:-1])
        bound = self.reference_bound(theta, w, q, v_w)
        return Reference(value=float(self.outer_loss(w)), grad=grad, w=w, bound=bound, route=route, warm=state)

    def reference_bound(self, theta: torch.Tensor, w: torch.Tensor, q: torch.Tensor, v: torch.Tensor) -> float:
        """The certified bound on ``||g - dF/dtheta||_2`` for ``g = -lam . beta . q`` (module docstring).

        ``grad_w``, ``r_q`` and ``v(w)`` are evaluated in extended precision (:meth:`Design.ext`).
        """
        theta = theta.detach()
        eps = torch.finfo(w.dtype).eps
        nrm = torch.linalg.vector_norm
        pen = self.penalty_vector(theta)
        dt, dv = self.design_train, self.design_val
        mv, rmv, eps_x, ext = dt.ext()
        mv_v, rmv_v, eps_xv, _ = dv.ext()

        def npx(t):
            return t.detach().cpu().double().numpy().astype(ext)

        lam_x = np.exp(npx(theta))
        pen_x = np.zeros(self.n_params, dtype=ext)
        pen_x[:-1] = lam_x[0] if lam_x.shape[0] == 1 else lam_x
        w_x, q_x, y_x, yv_x = npx(w), npx(q), npx(self.y_train), npx(self.y_val)
        one = ext(1.0)
        z_x = mv(w_x)
        g_x = -rmv(y_x / (one + np.exp(y_x * z_x))) / dt.n + pen_x * w_x
        pr_x = one / (one + np.exp(-z_x))
        hq_x = rmv(pr_x * (one - pr_x) * mv(q_x)) / dt.n + pen_x * q_x
        v_x = -rmv_v(yv_x / (one + np.exp(yv_x * mv_v(w_x)))) / dv.n
        at, av = dt.abs(), dv.abs()
        gam = 1.01 * (dt.max_row_nnz + dt.max_col_nnz + 16) * eps_x
        gam_v = 1.01 * (dv.max_row_nnz + dv.max_col_nnz + 16) * eps_xv
        xw = at.mv(w.abs())
        xq = at.mv(q.abs())
        # rounding of the extended evaluations: the products and the sigmoid's argument (|dz| <= gam |X| |w|)
        m_g = float(nrm(gam * (at.rmv(1.0 + 0.25 * xw) / dt.n + pen * w.abs())))
        m_q = float(nrm(gam * (at.rmv(0.25 * xq + _S3 * xw * xq) / dt.n + pen * q.abs())))
        m_q += float(nrm(gam_v * av.rmv(1.0 + 0.25 * av.mv(w.abs())) / dv.n))
        gn = float(np.sqrt(np.sum(g_x * g_x))) + m_g
        rq = float(np.sqrt(np.sum((hq_x - v_x) ** 2))) + m_q
        mu0 = self._mu_ball(w, pen, 0.0)
        if not mu0 > 0:
            return math.nan
        radius = 4 * gn / mu0
        mu = self._mu_ball(w, pen, radius)
        if not (mu > 0 and 2 * gn < mu * radius):
            return math.nan
        e_w = gn * (1 + 4 * eps) / mu
        nt = self._norms
        dh = _S3 * e_w * nt["train_rowmax"] * nt["train_sq"] / dt.n
        lip_v = nt["val_sq"] / (4 * dv.n)
        rho_q = rq + dh * float(nrm(q)) + lip_v * e_w  # bounds ||H(w*) (q - q*)||
        e_q = rho_q * (1 + 4 * eps) / mu
        lam = pen[:-1]
        wb, qb = w[:-1], q[:-1]
        terms = lam * wb * qb
        # the penalised block (module docstring, "block bound"): errors of the features alone, in the
        # Lambda^(1/2)-weighted norm, from the residuals and the intercept's share of e_w, e_q
        c_min = float(lam.min()) * (1 - 4 * eps)
        beta = math.sqrt(nt["train_sq"] / dt.n) / 4 * (1 + 4 * eps)
        sc = math.sqrt(c_min) * (1 - 4 * eps) if c_min > 0 else 0.0
        big_w = (gn + beta * e_w) * (1 + 4 * eps) / sc if sc > 0 else math.inf
        big_q = (rho_q + beta * e_q) * (1 + 4 * eps) / sc if sc > 0 else math.inf
        if self.space.dim > 1:
            err = (float((lam * wb).abs().max()) * e_q + float((lam * qb).abs().max()) * e_w
                   + float(lam.abs().max()) * e_w * e_q)
            sl = lam.sqrt() * (1 + 4 * eps)
            err_block = (float((sl * wb).abs().max()) * big_q + float((sl * qb).abs().max()) * big_w
                         + big_w * big_q)
            err = min(err, err_block) + 8 * eps * float(nrm(terms))
        else:
            c = float(lam.abs().max())
            err = c * (float(nrm(wb)) * e_q + float(nrm(qb)) * e_w + e_w * e_q)
            sl = math.sqrt(c) * (1 + 4 * eps)
            err_block = sl * (float(nrm(wb)) * big_q + float(nrm(qb)) * big_w) + big_w * big_q
            err = min(err, err_block) + (wb.shape[0] + 8) * eps * float(terms.abs().sum())
        return err * (1 + 16 * eps)
