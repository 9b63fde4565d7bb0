"""Design matrices as operators: dense tensors or sparse CSR, with the products the tasks need.

:class:`Design` holds ``X`` (``n x p``) either as a dense torch tensor or, for ``scipy.sparse``
input, as a torch sparse CSR tensor (float64 by default) *and* a CSR copy of ``X^T``: torch's
product of a transposed CSR view with a vector is about 60 times slower than a CSR product (it
converts on every call), so ``X^T u`` gets its own CSR (twice the non-zeros, never ``n x p``).
Every product is sparse-dense; nothing here densifies a sparse ``X`` (:meth:`Design.dense` refuses).

The module is our own because no library offers this pair of CSR operators on torch tensors
with the rounding quantities (largest non-zeros per row and column) that the certified
reference bounds of :mod:`hpo_bench.tasks._quadratic` and :mod:`hpo_bench.tasks.logistic_l2` need.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.sparse as sp
import torch

from hpo_bench.hypergrad import conjugate_gradient

__all__ = ["Design", "is_sparse_input", "to_torch_csr", "cg_as_far_as_it_goes", "EXT", "EXT_MAX_DENSE"]

#: The extended precision of the certified residuals (80-bit x87 on x86-64 Linux; where numpy's longdouble
#: is float64 the bounds use float64's eps instead, so they stay valid, only looser).
EXT = np.longdouble
#: Dense designs with more entries than this keep no extended copy (its residuals are float64 then).
EXT_MAX_DENSE = 20_000_000


def is_sparse_input(x) -> bool:
    """Whether ``x`` is a ``scipy.sparse`` matrix or a torch sparse tensor."""
    return sp.issparse(x) or (isinstance(x, torch.Tensor) and x.layout != torch.strided)


def to_torch_csr(m: sp.spmatrix, *, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A torch sparse CSR tensor with the structure and values of scipy matrix ``m`` (canonical: sorted, summed)."""
    m = sp.csr_matrix(m, dtype=np.float64)
    m.sum_duplicates()
    m.sort_indices()
    with warnings.catch_warnings():  # torch says sparse CSR is "beta"; the products used here are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                       torch.from_numpy(m.indices.astype(np.int64)),
                                       torch.from_numpy(m.data), size=m.shape, dtype=dtype, device=device,
                                       check_invariants=False)


class Design:
    """``X`` as an operator: ``mv`` (``X v``), ``rmv`` (``X^T u``), their batched forms, and the norms
    and non-zero counts the error bounds use.

    Args:
        x: a dense array (numpy or torch) or a ``scipy.sparse`` matrix.
        dtype, device: of the tensors held.
    """

    def __init__(self, x, *, dtype: torch.dtype, device: torch.device) -> None:
        self.dtype, self.device = dtype, torch.device(device)
        self.sparse = sp.issparse(x)
        if self.sparse:
            m = sp.csr_matrix(x, dtype=np.float64)
            m.sum_duplicates()
            m.sort_indices()
            self._sp = m
            self.mat = to_torch_csr(m, dtype=dtype, device=self.device)
            self._mat_t = to_torch_csr(m.T.tocsr(), dtype=dtype, device=self.device)
            self.shape = tuple(m.shape)
            self.nnz = int(m.nnz)
            counts_r = np.diff(m.indptr)
            counts_c = np.bincount(m.indices, minlength=m.shape[1]) if m.nnz else np.zeros(m.shape[1], int)
            self.max_row_nnz = int(counts_r.max()) if counts_r.size else 0
            self.max_col_nnz = int(counts_c.max()) if counts_c.size else 0
        else:
            self.mat = torch.as_tensor(x, dtype=dtype, device=self.device)
            if self.mat.ndim != 2:
                raise ValueError(f"a design matrix must be 2-D, but got shape {tuple(self.mat.shape)}")
            self._mat_t = None
            self.shape = tuple(self.mat.shape)
            self.nnz = self.shape[0] * self.shape[1]
            self.max_row_nnz, self.max_col_nnz = self.shape[1], self.shape[0]
        self._abs: Design | None = None

    @property
    def n(self) -> int:
        return self.shape[0]

    @property
    def p(self) -> int:
        return self.shape[1]

    # ------------------------------------------------------------------ products
    def mv(self, v: torch.Tensor) -> torch.Tensor:
        """``X v``."""
        return self.mat @ v if self.sparse else torch.mv(self.mat, v)

    def rmv(self, u: torch.Tensor) -> torch.Tensor:
        """``X^T u`` (the CSR of ``X^T``, or BLAS gemv on the transposed view: no copy of ``X``)."""
        return self._mat_t @ u if self.sparse else torch.mv(self.mat.T, u)

    def mm(self, v: torch.Tensor) -> torch.Tensor:
        """``X V`` for a dense ``V`` of shape ``(p, k)``."""
        return self.mat @ v

    def rmm(self, u: torch.Tensor) -> torch.Tensor:
        """``X^T U`` for a dense ``U`` of shape ``(n, k)``."""
        return self._mat_t @ u if self.sparse else self.mat.T @ u

    # ------------------------------------------------------------------ structure
    def abs(self) -> Design:
        """``|X|`` (entrywise), the operator of the rounding margins (built once)."""
        if self._abs is None:
            if self.sparse:
                self._abs = Design(abs(self._sp), dtype=self.dtype, device=self.device)
            else:
                self._abs = Design(self.mat.abs(), dtype=self.dtype, device=self.device)
        return self._abs

    def col_sq_norms(self) -> torch.Tensor:
        """``sum_i X_ij^2`` per column (``diag(X^T X)``)."""
        if self.sparse:
            return torch.as_tensor(np.asarray(self._sp.multiply(self._sp).sum(axis=0)).ravel(), dtype=self.dtype,
                                   device=self.device)
        return (self.mat * self.mat).sum(0)

    def row_norms(self) -> torch.Tensor:
        """``||x_i||_2`` per row."""
        if self.sparse:
            return torch.as_tensor(np.sqrt(np.asarray(self._sp.multiply(self._sp).sum(axis=1)).ravel()),
                                   dtype=self.dtype, device=self.device)
        return torch.linalg.vector_norm(self.mat, dim=1)

    def fro2(self) -> float:
        """``||X||_F^2``: a certified upper bound on ``||X||_2^2``."""
        if self.sparse:
            return float(np.dot(self._sp.data, self._sp.data))
        return float(torch.sum(self.mat * self.mat))

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """The rows ``idx`` as a tensor (dense rows; for sparse data a CSR tensor of ``len(idx)`` rows)."""
        if self.sparse:
            sub = self._sp[np.asarray(idx.detach().cpu().numpy(), dtype=np.int64)]
            return to_torch_csr(sub, dtype=self.dtype, device=self.device)
        return self.mat[idx]

    # ------------------------------------------------------------------ extended precision
    def ext(self):
        """``(mv, rmv, eps)`` in extended precision on numpy arrays (``X`` copied once as :data:`EXT`); where no
        extended copy is kept (a dense design above :data:`EXT_MAX_DENSE` entries) float64 products and eps."""
        if getattr(self, "_ext", None) is None:
            if self.sparse:
                m = self._sp.astype(EXT)
                mt = m.T.tocsr()
                self._ext = (lambda v: m @ v, lambda u: mt @ u, float(np.finfo(EXT).eps), EXT)
            elif self.n * self.p <= EXT_MAX_DENSE:
                m = self.mat.detach().cpu().numpy().astype(EXT)
                # numpy has no BLAS for long double: np.dot's row loop and einsum's column sums run about 2x
                # faster than `@` on it (5000 x 1000: 18 and 26 ms against 34 and 55 ms); any summation order
                # is within the rounding margin the bounds add (gamma with the extended eps)
                self._ext = (lambda v: np.dot(m, v), lambda u: np.einsum("ij,i->j", m, u), float(np.finfo(EXT).eps),
                             EXT)
            else:
                m = self.mat.detach().cpu().double().numpy()
                self._ext = (lambda v: m @ v, lambda u: u @ m, float(np.finfo(np.float64).eps), np.float64)
        return self._ext

    def ext_gram(self, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
        """``(X^T X, X^T y)`` in extended precision for a dense design that keeps an extended copy (:meth:`ext`),
        computed once (``n p^2`` long-double operations, 25-50 s at 5000 x 1000 on 2 cores) and cached; ``None``
        for sparse data or without an extended copy. A product with ``X^T X`` then costs ``p^2`` instead of ``2 n p``.

        Rounding: each entry of either is an ``n``-term sum, so a product ``(X^T X) x`` is within
        ``gamma_{n+p} (|X|^T |X|) |x|`` of the exact one: the margin the certified bounds already add for
        ``X^T (X x)`` (``gamma`` of ``max_row_nnz + max_col_nnz`` with the extended eps).
        """
        if self.sparse or self.n * self.p > EXT_MAX_DENSE:
            return None
        if getattr(self, "_ext_gram", None) is None:
            m = self.mat.detach().cpu().numpy().astype(EXT)
            self._ext_gram = (np.dot(np.ascontiguousarray(m.T), m), {})
        gram, xty = self._ext_gram
        key = y.detach().cpu().double().numpy().tobytes()  # X^T y per right-hand side (one per design in practice)
        if key not in xty:
            xty[key] = self.ext()[1](y.detach().cpu().double().numpy().astype(EXT))
        return gram, xty[key]

    def dense(self) -> torch.Tensor:
        """``X`` as a dense tensor; refused for sparse data (it would densify ``n x p``)."""
        if self.sparse:
            raise ValueError(f"refusing to densify a sparse {self.n} x {self.p} design matrix "
                             f"({self.n * self.p * 8 / 2 ** 30:.1f} GiB as float64); use the operator products")
        return self.mat

    def scipy(self) -> sp.csr_matrix:
        """The scipy CSR matrix (sparse data only)."""
        if not self.sparse:
            raise ValueError("a dense design has no scipy CSR form")
        return self._sp


def cg_as_far_as_it_goes(matvec, b: torch.Tensor, *, tol: float, max_iter: int, x0: torch.Tensor | None = None,
                         precond: torch.Tensor | None = None, chunk: int | None = None) -> tuple[torch.Tensor, dict]:
    """:func:`hpo_bench.hypergrad.conjugate_gradient` in restarted chunks, stopping where the true residual
    stalls (two chunks without halving it: the rounding floor) instead of running to ``max_iter``.

    Returns ``(x, info)``; ``info["cg_status"]`` is ``"converged"``, ``"stalled"``, ``"max_iter"`` or
    ``"negative_curvature"``, and ``info["hvp_cg"]`` counts every product.
    """
    chunk = chunk or max(100, min(b.shape[0], 2000))
    x, total, n_mv, best, idle = x0, 0, 0, math.inf, 0
    info: dict = {}
    while True:
        x, info = conjugate_gradient(matvec, b, tol=tol, max_iter=min(chunk, max_iter - total), x0=x,
                                     precond=precond)
        total += info["iterations"]
        n_mv += info["hvp_cg"]
        if info["cg_status"] in ("converged", "negative_curvature") or total >= max_iter:
            break
        if info["residual"] > 0.5 * best:
            idle += 1
            if idle >= 2:
                info["cg_status"] = "stalled"
                break
        else:
            idle = 0
        best = min(best, info["residual"])
    return x, {**info, "iterations": total, "hvp_cg": n_mv}
