"""Newton-CG's inner CG loop (hpo_bench.core.solvers._cg_direction, newton_cg): its Jacobi preconditioner
and its stop on a stalled residual, on problems whose answers are known in closed form (float64)."""

from __future__ import annotations

import torch

from hpo_bench.core.solvers import _cg_direction, newton_cg

F64 = torch.float64


def _spd(p: int, seed: int = 0, low: float = -13.8, k: int = 20) -> torch.Tensor:
    """A per-feature ridge Hessian on text-like data: ``diag(lam) + A^T A / n`` where only the first ``k``
    features occur in the ``n = 3k`` rows (the rest are rare words: empty columns), ``lam`` log-uniform over
    ``[exp(low), 1]``, so ``H`` has about ``p`` distinct eigenvalues."""
    g = torch.Generator().manual_seed(seed)
    lam = torch.exp(torch.empty(p, dtype=F64).uniform_(low, 0.0, generator=g))
    a = torch.zeros(3 * k, p, dtype=F64)
    a[:, :k] = torch.randn(3 * k, k, generator=g, dtype=F64)
    return torch.diag(lam) + a.T @ a / (3 * k)


def test_jacobi_preconditioning_removes_an_iteration_per_distinct_small_eigenvalue():
    h = _spd(400)
    g = torch.randn(400, generator=torch.Generator().manual_seed(1), dtype=F64)
    exact = -torch.linalg.solve(h, g)
    tol = 1e-8 * float(g.norm())  # well above the drift of CG's recursive residual (~eps kappa ||g||)
    plain, k_plain, neg_plain = _cg_direction(lambda v: h @ v, g, tol, 4000)
    jac, k_jac, neg_jac = _cg_direction(lambda v: h @ v, g, tol, 4000, precond=1.0 / torch.diagonal(h))
    assert not neg_plain and not neg_jac
    # the true residual bounds the error: ||d - d*|| <= ||H d + g|| / lambda_min(H)
    lam_min = float(torch.linalg.eigvalsh(h)[0])
    res = float((h @ jac + g).norm())
    assert res <= 2 * tol and float((jac - exact).norm()) <= res / lam_min * (1 + 1e-6)
    # the empty columns' block is exactly I after Jacobi: about k + 1 iterations instead of one per distinct lam_j
    assert k_jac <= 40 and k_plain > 200


def test_an_unreachable_tolerance_stops_on_the_stall_not_at_max_iter():
    """A polishing step may ask for more than rounding allows (here: a zero residual): the loop stops once
    its residual is at rounding level instead of running max_iter HVPs, and returns the solution."""
    h = _spd(200, low=-9.2)
    g = torch.randn(200, generator=torch.Generator().manual_seed(2), dtype=F64)
    for precond in (None, 1.0 / torch.diagonal(h)):
        d, k, neg = _cg_direction(lambda v: h @ v, g, 0.0, 100_000, precond=precond)
        assert not neg and k < 2000  # the tolerance 0 is never met
        exact = -torch.linalg.solve(h, g)
        assert float((d - exact).norm()) <= 1e-8 * float(exact.norm())


def test_newton_cg_with_jacobi_reaches_the_closed_form_minimiser():
    h = _spd(300, seed=3, low=-9.2)
    b = torch.randn(300, generator=torch.Generator().manual_seed(4), dtype=F64)
    w_star = torch.linalg.solve(h, b)

    def loss(w):
        return 0.5 * w @ (h @ w) - b @ w

    def grad(w):
        return h @ w - b

    hvps = []
    for precond_at in (None, lambda w: 1.0 / torch.diagonal(h)):
        w, info = newton_cg(loss, grad, lambda w: (lambda v: h @ v), torch.zeros(300, dtype=F64),
                            gtol=1e-10 * float(b.norm()), precond_at=precond_at, polish=1)
        assert info.converged
        lam_min = float(torch.linalg.eigvalsh(h)[0])
        assert float((w - w_star).norm()) <= float(grad(w).norm()) / lam_min * (1 + 1e-6) + 1e-15
        hvps.append(info.hvps)
    assert hvps[1] < 200 and hvps[0] > 3 * hvps[1]
