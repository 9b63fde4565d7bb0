"""Warm starts of the exact inner solve (``Task.solve_from``) and of cg's adjoint solve (``x0``).

A warm start must change the work, never the accuracy: each result is compared with the dense
(Cholesky) answer at a tolerance derived from the solver's stopping rule, and the work (products
with H) is counted.
"""

from __future__ import annotations

import math

import pytest
import torch

from hpo_bench import get_task
from hpo_bench.core.records import Budget, Recorder
from hpo_bench.core.registry import TUNERS
from hpo_bench.hypergrad import get_method


def _ridge(reference: str):
    return get_task("ridge_per_feature", n=60, p=30, seed=3, reference=reference)


def _count_products(task) -> list[int]:
    calls = [0]
    h_apply = task._h_apply

    def counted(d2, v):
        calls[0] += 1
        return h_apply(d2, v)

    task._h_apply = counted
    return calls


def _nearby(task, shift: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    th1 = task.space.init_theta(dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    th2 = th1 + shift * torch.randn(th1.shape, generator=gen, dtype=torch.float64)
    return th1, th2


def test_ridge_solve_from_a_nearby_solution_is_as_accurate_and_from_the_answer_free():
    mf, dense = _ridge("matrix_free"), _ridge("dense")
    assert mf.reference_route() == "cg" and dense.reference_route() == "dense"
    th1, th2 = _nearby(mf)
    calls = _count_products(mf)
    w1 = mf.solve(th1)
    w_cold = _ridge("matrix_free").solve(th2)
    w_warm = mf.solve_from(th2, w1)
    w_star = dense.solve(th2)
    h = dense.hessian(th2)
    mu = float(torch.linalg.eigvalsh(h)[0])
    rhs = 2 * dense.a * dense.xty
    # CG stops at ||H w - rhs|| <= RTOL ||rhs||, so ||w - w*|| <= RTOL ||rhs|| / mu; the Cholesky answer's
    # own error is about cond(H) eps ||w*||
    cond = float(torch.linalg.cond(h))
    tol = mf.REFERENCE_RTOL * float(rhs.norm()) / mu + 64 * cond * 2.2e-16 * float(w_star.norm())
    for w in (w_cold, w_warm):
        assert float((w - w_star).norm()) <= tol
    # started at an answer that already meets the stopping rule, CG only checks its residual: one product
    again = _ridge("matrix_free")
    again_calls = _count_products(again)
    assert float((again.solve_from(th2, w_warm) - w_warm).abs().max()) == 0.0 and again_calls[0] == 1
    assert calls[0] > 2


def test_solve_from_none_is_solve_and_the_dense_route_ignores_the_start():
    mf, dense = _ridge("matrix_free"), _ridge("dense")
    th1, th2 = _nearby(mf)
    assert torch.equal(mf.solve_from(th2, None), _ridge("matrix_free").solve(th2))  # the same path: bitwise
    assert torch.equal(dense.solve_from(th2, dense.solve(th1)), dense.solve(th2))


def test_logistic_solve_from_a_nearby_solution_is_as_accurate():
    mf = get_task("logistic_l2", n=80, p=12, seed=2, per_feature=True, reference="matrix_free")
    dense = get_task("logistic_l2", n=80, p=12, seed=2, per_feature=True, reference="dense")
    th1, th2 = _nearby(mf, 0.2)
    w_warm = mf.solve_from(th2, mf.solve(th1))
    w_star = dense.solve(th2)
    # both stop at ||grad|| <= 1e-12 ||grad(0)|| (then polish); ||w - w*|| <= ||grad|| / mu, mu >= min penalty
    mu = float(dense.penalty_vector(th2)[:-1].min())
    g0 = float(dense.inner_grad(dense.init_params(), th2).norm())
    assert float((w_warm - w_star).norm()) <= 2 * 1e-12 * g0 / mu + 1e-13 * float(w_star.norm())


def test_cg_from_the_previous_adjoint_meets_the_same_certified_bound():
    task = _ridge("matrix_free")
    cg = get_method("cg")
    assert cg.info.warm_adjoint
    th1, th2 = _nearby(task)
    hg1 = cg(task, task.solve(th1), th1)
    assert hg1.adjoint is not None and hg1.adjoint.shape == (task.n_params,)
    w2 = task.solve(th2)
    cold = cg(task, w2, th2)
    warm = cg(task, w2, th2, x0=hg1.adjoint)
    ref = task.reference(th2)
    for hg in (cold, warm):
        assert hg.stats["converged"] and hg.stats["error_bound"] <= 1e-10
        # within cg's certified bound plus the reference's own certified error
        err = float((hg.grad - ref.grad).norm())
        assert err <= hg.stats["error_bound"] * 1.01 * float(hg.grad.norm()) + ref.bound
    # from its own answer the bound already holds: one product for the residual, no iteration
    again = cg(task, w2, th2, x0=warm.adjoint)
    assert again.stats["iterations"] == 0 and torch.equal(again.adjoint, warm.adjoint)


@pytest.mark.parametrize("bad", ["shape", "nan"])
def test_cg_ignores_an_unusable_start(bad):
    task = _ridge("matrix_free")
    th = task.space.init_theta(dtype=torch.float64)
    w = task.solve(th)
    x0 = torch.ones(task.n_params + 1, dtype=torch.float64) if bad == "shape" else torch.full(
        (task.n_params,), math.nan, dtype=torch.float64)
    cold, ignored = get_method("cg")(task, w, th), get_method("cg")(task, w, th, x0=x0)
    assert torch.equal(cold.grad, ignored.grad) and cold.stats["hvp"] == ignored.stats["hvp"]


def _run(warm: bool, steps: int = 12):
    """Rows of a gradient-cg run, with the ``w0`` of every ``solve_from`` and the ``x0`` of every cg call."""
    task = _ridge("matrix_free")
    seen: dict[str, list] = {"w0": [], "w": [], "x0": [], "q": []}
    solve_from = task.solve_from

    def spy_solve_from(theta, w0):
        seen["w0"].append(w0)
        w = solve_from(theta, w0)
        seen["w"].append(w)
        return w

    task.solve_from = spy_solve_from
    tuner = TUNERS.get("gradient")(method="cg", inner="exact", outer="adam", outer_lr=0.05, warm_start=warm)
    method = tuner.method

    def spy_method(task_, w, theta, **opts):
        seen["x0"].append(opts.get("x0"))
        hg = method(task_, w, theta, **opts)
        seen["q"].append(hg.adjoint)
        return hg

    spy_method.info, spy_method.method_name = method.info, method.method_name
    tuner.method = spy_method
    rec = Recorder(task, Budget(steps=steps))
    tuner.run(task, rec)
    return torch.tensor([r["theta"] for r in rec.rows], dtype=torch.float64), rec.rows, seen


def test_the_gradient_tuner_starts_each_solve_from_the_previous_one_and_keeps_its_path():
    th_warm, rows_warm, warm = _run(True)
    th_cold, rows_cold, cold = _run(False)
    assert th_warm.shape == th_cold.shape == (12, 30)
    # the warm run hands each solve the previous step's answer; the cold one starts every solve afresh
    assert warm["w0"][0] is None and warm["x0"][0] is None
    assert all(torch.equal(a, b) for a, b in zip(warm["w0"][1:], warm["w"][:-1]))
    assert all(torch.equal(a, b) for a, b in zip(warm["x0"][1:], warm["q"][:-1]))
    assert all(x is None for x in cold["w0"] + cold["x0"])
    # every hypergradient is certified to 1e-10 relative and every w solved to a 1e-12 residual, so the two
    # paths agree far below Adam's per-coordinate step (0.05) over 12 steps
    assert all(r["hypergrad_error_bound"] <= 1e-10 for r in rows_warm + rows_cold)
    assert float((th_warm - th_cold).abs().max()) <= 1e-6
