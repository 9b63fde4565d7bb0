"""Every hypergradient method against finite differences, the closed form and its defining identities."""

from __future__ import annotations

import pytest
import torch

from _util import fd_grad, rel, theta_points
from hpo_bench import METHODS, TASKS
from hpo_bench.hypergrad import (cg, conjugate_gradient, exact, fixed_point, forward, identity, neumann,
                                 reverse, truncated)
from hpo_bench.inner import InnerState, run_inner

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
    assert [n for n, f in METHODS.items() if f.info.exact] == ["cg", "exact"]


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


def test_cg_respects_max_iter_and_reports_it(ridge_pf):
    theta = ridge_pf.space.init_theta()
    w = ridge_pf.solve(theta)
    hg = cg(ridge_pf, w, theta, max_iter=2, tol=1e-14)
    assert hg.stats["iterations"] == 2 and not hg.stats["converged"] and hg.stats["hvp"] == 2


@pytest.mark.parametrize("bad", [dict(steps=0), dict(lr=-1.0), dict(steps=5, truncate=6)])
def test_unrolled_bad_options(ridge, bad):
    fn = truncated if "truncate" in bad else reverse
    with pytest.raises(ValueError, match="must hold"):
        fn(ridge, ridge.init_params(), ridge.space.init_theta(), **bad)
