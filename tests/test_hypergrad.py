"""Every hypergradient method against finite differences, the closed form and its defining identities."""

from __future__ import annotations

import pytest
import torch

from _util import fd_grad, rel, theta_points
from hpo_bench import METHODS, TASKS, get_task
from hpo_bench.hypergrad import (cg, conjugate_gradient, exact, fixed_point, forward, identity, neumann,
                                 reverse, truncated)
from hpo_bench.tuners.inner import InnerState, run_inner

CORE = ("ridge", "ridge_per_feature", "seed_toy")


def small(name, **kw):
    return TASKS.get(name)(**{**TASKS.get(name).check_params, "seed": 2, **kw})


def unrolled_response(task, w0, steps, lr):
    """theta -> outer(w_T(theta)) for T gradient steps from w0: what unrolled methods differentiate."""
    def f(theta):
        state = InnerState.fresh(w0)
        run_inner(task, theta, state, solver="gd", steps=steps, lr=lr)
        return task.outer_loss(state.w)
    return f


def test_registry_declares_every_method():
    assert set(METHODS.names()) >= {"exact", "cg", "neumann", "fixed_point", "identity", "reverse", "truncated",
                                    "forward"}
    for name, fn in METHODS.items():
        assert fn.info.kind in ("implicit", "unrolled")
    assert [n for n, f in METHODS.items() if f.info.exact] == ["cg", "exact", "implicit_support"]


@pytest.mark.parametrize("name", CORE)
def test_exact_and_converged_cg_match_closed_form(name):
    task = small(name)
    for theta in theta_points(task):
        w = task.solve(theta)
        ref = task.reference_hypergradient(theta)
        fd = fd_grad(task.response, theta)
        for method in (exact, cg):
            hg = method(task, w, theta)
            assert rel(hg.grad, ref) <= 1e-8, method.method_name
            assert rel(hg.grad, fd) <= 1e-6, method.method_name
        assert cg(task, w, theta).stats["converged"]


@pytest.mark.parametrize("name", CORE)
def test_neumann_and_fixed_point_converge_to_reference(name):
    """Approximations: the error shrinks with K and vanishes in the limit (geometric rate)."""
    task = small(name)
    theta = theta_points(task)[1]
    w = task.solve(theta)
    ref = task.reference_hypergradient(theta)
    errs = [rel(neumann(task, w, theta, iterations=k).grad, ref) for k in (5, 50, 3000)]
    assert errs[0] >= errs[1] >= errs[2] and errs[2] <= 1e-8
    assert rel(fixed_point(task, w, theta, iterations=3000).grad, ref) <= 1e-8


@pytest.mark.parametrize("name", CORE)
@pytest.mark.parametrize("k", [1, 4, 15])
def test_neumann_k_equals_fixed_point_k_plus_one(name, k):
    task = small(name)
    theta = theta_points(task)[2]
    w = task.solve(theta) + 0.01  # the identity holds at any point, converged or not
    a = neumann(task, w, theta, iterations=k, alpha=0.01)
    b = fixed_point(task, w, theta, iterations=k + 1, alpha=0.01)
    assert rel(a.grad, b.grad) <= 1e-12
    assert a.stats["hvp"] == b.stats["hvp"] == k


@pytest.mark.parametrize("name", CORE)
@pytest.mark.parametrize("k", [1, 5, 20])
def test_truncated_k_equals_fixed_point_k_on_converged_inner_run(name, k):
    task = small(name)
    theta = theta_points(task)[1]
    w_star = task.solve(theta)
    lr = 0.5 / float(torch.linalg.eigvalsh(task.linearize(w_star, theta).hessian()).max())
    a = truncated(task, w_star, theta, steps=k + 3, truncate=k, lr=lr)  # starts at w*: every step stays there
    b = fixed_point(task, w_star, theta, iterations=k, alpha=lr)
    assert rel(a.grad, b.grad) <= 1e-10


@pytest.mark.parametrize("name", CORE)
def test_unrolled_methods_are_exact_derivatives_of_the_unrolled_map(name):
    task = small(name)
    theta = theta_points(task)[1]
    w0 = task.init_params()
    steps = 25
    lr = 0.5 / float(torch.linalg.eigvalsh(task.linearize(w0, theta).hessian()).max())
    fd = fd_grad(unrolled_response(task, w0, steps, lr), theta)
    g_rev = reverse(task, w0, theta, steps=steps, lr=lr).grad
    g_fwd = forward(task, w0, theta, steps=steps, lr=lr).grad
    g_trunc_full = truncated(task, w0, theta, steps=steps, truncate=steps, lr=lr).grad
    assert rel(g_rev, fd) <= 1e-6
    assert rel(g_fwd, g_rev) <= 1e-10
    assert rel(g_trunc_full, g_rev) <= 1e-12


@pytest.mark.parametrize("name", CORE)
def test_reverse_approaches_reference_as_T_grows(name):
    task = small(name)
    theta = theta_points(task)[1]
    w0 = task.init_params()
    ref = task.reference_hypergradient(theta)
    lr = 1.0 / float(torch.linalg.eigvalsh(task.linearize(w0, theta).hessian()).max())
    errs = [rel(reverse(task, w0, theta, steps=t, lr=lr).grad, ref) for t in (10, 100, 1000, 20000)]
    assert all(a >= b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] <= 1e-8


def test_identity_differs_where_gram_is_not_diagonal(ridge_pf, seed_toy):
    for task in (ridge_pf, seed_toy):
        gram = task.gram
        assert float((gram - torch.diag(torch.diag(gram))).abs().max()) > 1e-3
        theta = task.space.init_theta()
        w = task.solve(theta)
        assert rel(identity(task, w, theta).grad, task.reference_hypergradient(theta)) > 0.5


def test_identity_is_exact_when_hessian_is_identity(seed_toy):
    """H = 2 G + 2 λ I = I exactly when G = (1/2 - λ) I: build such data and check the identity method."""
    task = seed_toy
    lam = 0.1
    task.gram = (0.5 - lam) * torch.eye(2, dtype=torch.float64)
    theta = torch.tensor([lam], dtype=torch.float64)
    w = task.solve(theta)
    assert rel(identity(task, w, theta).grad, exact(task, w, theta).grad) <= 1e-14


def test_methods_are_pure(ridge):
    theta = ridge.space.init_theta().requires_grad_(True)
    w = ridge.solve(theta.detach()).requires_grad_(True)
    for name, fn in METHODS.items():
        if not fn.info.required_tags({}) <= ridge.tags:
            continue  # e.g. the non-smooth methods (tag "prox"): tests/test_nonsmooth_methods.py
        fn(ridge, w if fn.info.kind == "implicit" else ridge.init_params(), theta)
        assert theta.grad is None and w.grad is None, name


def test_conjugate_gradient_stops_cleanly():
    a = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    b = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    x, info = conjugate_gradient(lambda v: a @ v, b, tol=0.0, max_iter=50)  # tol 0: only an exact zero stops it
    assert torch.isfinite(x).all() and info["iterations"] <= 50
    assert rel(a @ x, b) <= 1e-14
    x, info = conjugate_gradient(lambda v: a @ v, torch.zeros(3, dtype=torch.float64), tol=1e-10, max_iter=5)
    assert torch.equal(x, torch.zeros(3, dtype=torch.float64)) and info["converged"]
    eye = torch.eye(3, dtype=torch.float64)
    x, info = conjugate_gradient(lambda v: eye @ v, b, tol=1e-12, max_iter=10)  # exact after one step
    assert info["iterations"] == 1 and torch.equal(x, b) and info["converged"]
    x, info = conjugate_gradient(lambda v: -v, b, tol=1e-12, max_iter=10)
    assert info["cg_status"] == "negative_curvature" and torch.isfinite(x).all()


def _spd(n, spread, seed=0):
    """An SPD matrix whose diagonal spans ``spread**2``: what features of scales 1..spread give."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4 * n, n, generator=gen, dtype=torch.float64) * torch.logspace(0, torch.log10(
        torch.tensor(float(spread))).item(), n, dtype=torch.float64)
    return x.T @ x / (4 * n) + 1e-3 * torch.eye(n, dtype=torch.float64)


def _residual_gap(a, x, b, k, precond=None):
    """Bound on ``| ||b - A x_k|| - ||r_k|| | / ||b||`` after ``k`` CG steps: the recursive residual
    drifts from the true one by rounding, ``<= c k ε ||A|| max_j ||x_j||`` (Greenbaum, *Iterative
    Methods for Solving Linear Systems*, §7.3), with ``c = 2``. From ``x_0 = 0`` CG's iterates grow
    monotonically in norm (Hestenes & Stiefel 1952, Thm 6:3), in the ``M``-norm when preconditioned
    with ``M^{-1} = diag(m)``, so ``max_j ||x_j|| <= sqrt(max m / min m) ||x_k||``."""
    eps = torch.finfo(b.dtype).eps
    spread = 1.0 if precond is None else float((precond.max() / precond.min()).sqrt())
    return 2 * (k + 1) * eps * spread * float(torch.linalg.matrix_norm(a, 2) * torch.linalg.vector_norm(x)
                                              / torch.linalg.vector_norm(b))


def test_jacobi_preconditioning_changes_the_path_not_the_answer():
    a = _spd(40, 30.0)
    b = torch.randn(40, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    exact_x = torch.linalg.solve(a, b)
    plain, info_p = conjugate_gradient(lambda v: a @ v, b, tol=1e-12, max_iter=500)
    pre, info_j = conjugate_gradient(lambda v: a @ v, b, tol=1e-12, max_iter=500, precond=1 / torch.diagonal(a))
    assert info_p["converged"] and info_j["converged"]
    assert info_j["iterations"] < info_p["iterations"]  # a badly scaled diagonal is what Jacobi fixes
    for x, info, m in ((plain, info_p, None), (pre, info_j, 1 / torch.diagonal(a))):
        true_res = float(torch.linalg.vector_norm(b - a @ x) / torch.linalg.vector_norm(b))
        # the stopping rule is on the unpreconditioned residual, preconditioned or not: the loop's
        # recursive residual meets tol, and the true one differs from it by rounding only
        assert info["residual"] <= 1e-12
        assert true_res <= info["residual"] + _residual_gap(a, x, b, info["iterations"], m)
        assert info["residual"] == pytest.approx(true_res, abs=1e-13)  # recursive r drifts from b - Ax by rounding only
        assert rel(x, exact_x) <= 1e-8


@pytest.mark.parametrize("tol", [1e-2, 1e-5, 1e-9])
def test_preconditioned_cg_stops_at_the_first_iterate_meeting_tol(tol):
    """The bracket rr in [rz/max(m), rz/min(m)] may skip a dot product, never the stop: no earlier iterate met tol."""
    a = _spd(30, 10.0, seed=3)
    b = torch.randn(30, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    minv = 1 / torch.diagonal(a)
    _, info = conjugate_gradient(lambda v: a @ v, b, tol=tol, max_iter=200, precond=minv)
    k = info["iterations"]
    assert info["converged"] and info["residual"] <= tol
    if k > 0:
        x_prev, info_prev = conjugate_gradient(lambda v: a @ v, b, tol=0.0, max_iter=k - 1, precond=minv)
        assert info_prev["residual"] > tol


def test_cg_precond_options(ridge_pf):
    theta = ridge_pf.space.init_theta() + 0.3
    w = ridge_pf.solve(theta)
    ref = ridge_pf.reference_hypergradient(theta)
    auto, none = cg(ridge_pf, w, theta), cg(ridge_pf, w, theta, precond="none")
    assert auto.stats["precond"] == "jacobi" and none.stats["precond"] == "none"
    assert rel(auto.grad, ref) <= 1e-8 and rel(none.grad, ref) <= 1e-8
    assert cg(ridge_pf, w, theta, precond="jacobi").stats["precond"] == "jacobi"
    with pytest.raises(ValueError, match="precond"):
        cg(ridge_pf, w, theta, precond="ilu")
    from hpo_bench.core.task import Linearization

    generic = get_task("ridge_per_feature", n=60, p=6, rho=0.6, seed=3)
    generic.linearize = lambda w_, t_: Linearization(generic, w_, t_)  # double-backward HVPs, no free diagonal
    g_auto = cg(generic, w, theta)
    assert g_auto.stats["precond"] == "none" and rel(g_auto.grad, ref) <= 1e-8
    with pytest.raises(ValueError, match="diagonal"):
        cg(generic, w, theta, precond="jacobi")


def test_quadratic_linearization_structure_matches_autograd(ridge_pf):
    """The Gram-matrix HVP (dense and fused paths), the free diagonal, and the lazy grad agree with autograd."""
    from hpo_bench.core.task import Linearization

    theta = ridge_pf.space.init_theta() + 0.2 * torch.randn(ridge_pf.space.dim, dtype=torch.float64,
                                                            generator=torch.Generator().manual_seed(0))
    w = torch.randn(ridge_pf.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fast, slow = ridge_pf.linearize(w, theta), Linearization(ridge_pf, w, theta)
    v = torch.randn(ridge_pf.n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert rel(fast.grad, slow.grad) <= 1e-12
    assert rel(fast.hvp(v), slow.hvp(v)) <= 1e-12 and fast._h is not None  # small p: materialised
    assert rel(fast.hvp(2 * v), slow.hvp(2 * v)) <= 1e-12
    fused = ridge_pf.linearize(w, theta)
    fused.DENSE_MAX = 0
    assert rel(fused.hvp(v), slow.hvp(v)) <= 1e-12 and fused._h is None
    assert rel(fast.diagonal(), torch.diagonal(slow.hessian())) <= 1e-12
    assert fast.n_hvp == 2 and fused.n_hvp == 1


def test_cg_respects_max_iter_and_reports_it(ridge_pf):
    theta = ridge_pf.space.init_theta()
    w = ridge_pf.solve(theta)
    hg = cg(ridge_pf, w, theta, max_iter=2, tol=1e-14)
    # 2 CG products + 1 for the true residual that the certified error bound is computed from
    assert hg.stats["iterations"] == 2 and not hg.stats["converged"] and hg.stats["hvp"] == 3
    assert hg.stats["cg_status"] == "max_iter" and hg.stats["error_bound"] > 1e-10


@pytest.mark.parametrize("bad", [dict(steps=0), dict(lr=-1.0), dict(steps=5, truncate=6)])
def test_unrolled_bad_options(ridge, bad):
    fn = truncated if "truncate" in bad else reverse
    with pytest.raises(ValueError, match="must hold"):
        fn(ridge, ridge.init_params(), ridge.space.init_theta(), **bad)


@pytest.mark.parametrize("name", ["ridge", "seed_toy", "logistic_l2", "kernel_ridge"])
def test_free_hessian_diagonals_are_the_diagonal(name):
    """Where a linearization offers diag(H) (CG's Jacobi preconditioner), it is the dense Hessian's diagonal."""
    task = small(name)
    theta = task.space.init_theta()
    w = task.solve(theta) + 0.1
    lin = task.linearize(w, theta)
    d = lin.diagonal()
    assert d is not None and rel(d, torch.diagonal(lin.hessian())) <= 1e-12
    assert cg(task, task.solve(theta), theta).stats["precond"] == "jacobi"


@pytest.mark.parametrize("n", [30, 300])
def test_cg_with_an_explicit_matrix_is_the_matvec_path(n):
    """matrix= (NumPy loop up to n = 256, torch gemv above) takes the same steps as matvec=.

    The two loops run the same recurrence with different kernels (NumPy's BLAS vs torch's), so
    they agree to rounding, not bitwise. While the residual is far above rounding level, two
    evaluations of CG differing by O(ε) per operation stay within about ``k n ε κ`` of each other
    after ``k`` steps (κ = cond(A)); that is checked on the first steps. Once CG has lost
    orthogonality (here after about n steps) the step at which ``||r|| <= tol ||b||`` first holds
    depends on rounding, so the two counts may differ by a step or two (seen: 41 vs 42 on one
    CPU, equal on another); both must still stop by the same rule, on the true residual.
    """
    a = _spd(n, 10.0, seed=5)
    b = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    minv = 1 / torch.diagonal(a)
    kappa = float(torch.linalg.cond(a))
    eps = torch.finfo(torch.float64).eps
    for pre in (None, minv):
        for k in (1, 3, 8):  # the same steps, to rounding
            y1, j1 = conjugate_gradient(lambda v: a @ v, b, tol=0.0, max_iter=k, precond=pre)
            y2, j2 = conjugate_gradient(None, b, tol=0.0, max_iter=k, precond=pre, matrix=a)
            assert j1["iterations"] == j2["iterations"] == k and j1["hvp_cg"] == j2["hvp_cg"] == k
            assert rel(y1, y2) <= 10 * k * n * eps * kappa
        x1, i1 = conjugate_gradient(lambda v: a @ v, b, tol=1e-11, max_iter=10 * n, precond=pre)
        x2, i2 = conjugate_gradient(None, b, tol=1e-11, max_iter=10 * n, precond=pre, matrix=a)
        assert i1["converged"] and i2["converged"]
        assert abs(i1["iterations"] - i2["iterations"]) <= 2
        assert i1["hvp_cg"] == i1["iterations"] and i2["hvp_cg"] == i2["iterations"]  # x0 = 0: one product a step
        assert rel(x1, x2) <= 1e-10 and x2.dtype == b.dtype
        for x, i in ((x1, i1), (x2, i2)):  # the stopping rule: the residual meets tol (to rounding)
            assert i["residual"] <= 1e-11
            assert rel(a @ x, b) <= i["residual"] + _residual_gap(a, x, b, i["iterations"], pre)


def test_cg_counts_products_with_the_dense_hessian(ridge_pf):
    theta = ridge_pf.space.init_theta()
    w = ridge_pf.solve(theta)
    hg = cg(ridge_pf, w, theta)
    assert ridge_pf.linearize(w, theta).dense() is not None
    # x0 = 0: one product per iteration, plus per round the true residual of the certified bound (one) and,
    # for each restart from q, the restart's own initial residual (one)
    k = hg.stats["rounds"]
    assert hg.stats["hvp"] == hg.stats["iterations"] + k + (k - 1) and hg.stats["iterations"] >= 1
