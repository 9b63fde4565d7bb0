"""Non-smooth tasks (lasso, elastic net, weighted lasso, sparse logistic regression): references, inner
solvers, support identification, suite validation, the conformance kit's non-smooth checks, `check`'s kinks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hpo_bench import get_task
from hpo_bench.analysis.check import check_task, finite_difference, support_aware_difference
from hpo_bench.tuners.inner import InnerState, run_inner
from hpo_bench.core.records import Budget, rel_error
from hpo_bench.core.registry import TASKS
from hpo_bench.running.suite import SuiteError, load_suite
from hpo_bench.tasks._sparse_linear import soft_threshold
from hpo_bench.tasks.lasso import Lasso
from hpo_bench.testing import (
    ConformanceError, check_object, check_task_inner_stationary, check_task_linearization,
    check_task_reference_fd, run_tuner,
)

from _runs import invoke, one_error_line
from _util import theta_points

NONSMOOTH = ["lasso", "elastic_net", "weighted_lasso", "sparse_logreg"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small(name, **kw):
    cls = TASKS.get(name)
    return cls(**{**cls.check_params, **kw})


# ---------------------------------------------------------------------------------------- references
@pytest.mark.parametrize("name", NONSMOOTH)
def test_reference_solution_has_a_tiny_duality_gap_and_is_a_prox_fixed_point(name):
    task = small(name)
    for k, theta in enumerate(theta_points(task, 3)):
        w = task.solve(theta)
        assert task.duality_gap(w, theta) <= 1e-12
        assert task.prox_residual(w, theta) <= 1e-10
        assert task.support_margin(theta) > 0
        if k == 0:  # at the check instance's start: exact zeros and a non-empty support
            assert 0 < len(task.support(w)) < task.n_params


@pytest.mark.parametrize("name", NONSMOOTH)
def test_reference_hypergradient_matches_central_differences_away_from_kinks(name):
    task = small(name)
    for theta in theta_points(task, 3, seed=1):
        dirs = torch.eye(task.space.dim, dtype=task.dtype)
        fd, kinks = support_aware_difference(task, theta, dirs, 1e-5)
        assert kinks == []  # these points are away from support changes
        assert rel_error(task.reference_hypergradient(theta), fd) <= 1e-6


def dense_prox_fixed_point_hypergradient(task, theta):
    """The reference by another route: dense implicit differentiation of the full p-dimensional fixed point
    ``w = prox(w - eta grad f(w))`` (no support extraction): ``(I - D (I - eta H)) J = -eta D (C + sign(z) J_alpha)``,
    ``D = diag(1{|z| > eta alpha})``, all matrices dense ``p x p`` (or ``p x m``)."""
    w = task.solve(theta)
    eta = 0.5 / task.lipschitz(theta)
    alpha, _ = task.penalties(theta)
    z = w - eta * task.smooth_grad(w, theta)
    d = torch.diag((z.abs() > eta * alpha).to(task.dtype))
    p = task.n_params
    eye = torch.eye(p, dtype=task.dtype)
    h = task.smooth_hvp(w, theta, eye)
    ja, jl2 = task.penalty_jacobians(theta)
    c = w.unsqueeze(1) * jl2.unsqueeze(0)
    jac = torch.linalg.solve(eye - d @ (eye - eta * h), -eta * d @ (c + torch.sign(z).unsqueeze(1) * ja))
    return jac.T @ task.outer_grad(w)


@pytest.mark.parametrize("name", NONSMOOTH)
def test_reference_matches_a_dense_reformulation(name):
    task = small(name)
    for theta in theta_points(task, 3, seed=2):
        assert rel_error(task.reference_hypergradient(theta), dense_prox_fixed_point_hypergradient(task, theta)) <= 1e-8


def test_lasso_support_formula_is_the_textbook_closed_form():
    """w_S = (X_S^T X_S)^{-1} (X_S^T y - n lam s) on the reference solution's support and signs."""
    task = small("lasso")
    theta = task.space.init_theta(dtype=task.dtype)
    w = task.solve(theta)
    s = torch.tensor(task.support(w))
    x, y, n = task.x_train[:, s], task.y_train, task.n_train
    lam = float(task.space.to_natural(theta))
    w_s = torch.linalg.solve(x.T @ x, x.T @ y - n * lam * torch.sign(w[s]))
    assert rel_error(w[s], w_s) <= 1e-12


def test_support_is_identified_on_noiseless_data():
    """Noiseless, uncorrelated, n >> p: the lasso and its inner solvers recover the true support exactly."""
    task = Lasso(n=200, p=20, n_informative=4, snr=math.inf, rho=0.0, lam0=0.05, seed=3)
    truth = tuple(torch.nonzero(task.w_true).reshape(-1).tolist())
    theta = task.space.init_theta(dtype=task.dtype)
    assert task.support(task.solve(theta)) == truth
    for solver, steps in (("ista", 300), ("fista", 150), ("cd", 30)):
        state = InnerState.fresh(task.init_params())
        run_inner(task, theta, state, solver=solver, steps=steps, lr=None)
        assert task.support(state.w) == truth, solver
    noisy = Lasso(n=200, p=20, n_informative=4, snr=1.0, rho=0.0, lam0=0.001, seed=3)  # the contrast
    assert task.support(noisy.solve(noisy.space.init_theta(dtype=noisy.dtype))) != truth


@pytest.mark.parametrize("name", ["lasso", "sparse_logreg"])
def test_inner_solvers_converge_to_the_reference(name):
    task = small(name)
    theta = theta_points(task, 2)[1]
    ref = task.solve(theta)
    for solver, grid in (("ista", (50, 200, 2000)), ("fista", (50, 200, 1000)), ("cd", (5, 20, 200))):
        errs = []
        for steps in grid:
            state = InnerState.fresh(task.init_params())
            assert run_inner(task, theta, state, solver=solver, steps=steps, lr=None) == steps
            errs.append(float(torch.linalg.vector_norm(state.w - ref)))
        assert errs[0] > errs[1] > errs[2] or errs[2] <= 1e-12, (solver, errs)
        assert errs[-1] <= 1e-8, (solver, errs)


def test_path_with_warm_starts_gives_the_cold_solutions():
    task = small("lasso")
    lo, hi = task.space.theta_bounds(dtype=task.dtype)
    grid = [t.reshape(1) for t in torch.linspace(float(hi), float(lo), 12, dtype=task.dtype)]
    for th, w in zip(grid, task.solve_path(grid)):
        assert task.duality_gap(w, th) <= 1e-12
        assert task.support(w) == task.support(task.solve_from(th, None))


@pytest.mark.parametrize("name", ["lasso", "weighted_lasso"])
def test_skglm_start_gives_the_homotopy_reference(name, monkeypatch):
    """The skglm route of a cold solve (forced here at a small p) ends on the same face as the homotopy: the
    same support and, both being the face's linear solve, the same w up to its rounding (1e-10 relative)."""
    from hpo_bench.tasks import _sparse_linear as sl

    if not sl.skglm_available():
        pytest.skip("skglm is not installed (the `fast` extra)")
    task = small(name)
    for th in theta_points(task, 3, seed=1):
        monkeypatch.setattr(sl, "SKGLM_MIN_P", 10**12)
        w_h = task.solve_from(th, None)
        monkeypatch.setattr(sl, "SKGLM_MIN_P", 1)
        w_s = task.solve_from(th, None)
        assert task.duality_gap(w_s, th) <= 1e-12
        assert task.support(w_s) == task.support(w_h)
        assert float(torch.linalg.norm(w_s - w_h)) <= 1e-10 * max(float(torch.linalg.norm(w_h)), 1e-300)


@pytest.mark.parametrize("name", ["elastic_net", "sparse_logreg"])
def test_skglm_route_is_only_for_least_squares_without_ridge(name, monkeypatch):
    from hpo_bench.tasks import _sparse_linear as sl

    calls = []
    monkeypatch.setattr(sl, "SKGLM_MIN_P", 1)
    monkeypatch.setattr(sl, "skglm_available", lambda: calls.append(1) or False)
    task = small(name)
    th = task.space.init_theta(dtype=task.dtype)
    assert task.duality_gap(task.solve_from(th, None), th) <= 1e-12
    assert calls == []  # a ridge term or a logistic loss: the homotopy, skglm never asked


def test_float32_task_keeps_a_float64_reference_solve():
    task = small("lasso", dtype="float32")
    w = task.solve(task.space.init_theta(dtype=task.dtype))
    assert w.dtype == torch.float32 and torch.isfinite(w).all()


def test_task_parameters_are_checked():
    with pytest.raises(ValueError, match="`n_informative` must be an integer in"):
        Lasso(n=20, p=5, n_informative=9)
    with pytest.raises(ValueError, match="`lam0` must be within"):
        Lasso(n=20, p=5, n_informative=2, lam0=3.0)


# ------------------------------------------------------------------------------------- validation
SUITE = """
name = "t"
seeds = [0]
[budget]
steps = 3
[[task]]
name = "{task}"
params = {task_params}
[[tuner]]
name = "gradient"
params = {params}
"""


def write_suite(tmp_path, params, task="lasso", task_params="{ n = 40, p = 10, n_informative = 3 }"):
    path = tmp_path / "s.toml"
    path.write_text(SUITE.format(task=task, task_params=task_params, params=params))
    return path


@pytest.mark.parametrize("params, missing", [
    ('{ method = "cg", inner = "gd" }', "inner = 'gd' and method = 'cg'"),
    ('{ method = "implicit_support", inner = "adam", inner_lr = 0.01 }', "inner = 'adam'"),
    ('{ method = "exact", inner = "cd" }', "method = 'exact'"),
    ('{ method = "reverse", inner = "gd" }', "inner = 'gd' and method = 'reverse'"),
])
def test_validation_refuses_smooth_only_solvers_and_methods_on_non_smooth_tasks(tmp_path, params, missing):
    with pytest.raises(SuiteError) as exc:
        load_suite(str(write_suite(tmp_path, params)))
    msg = str(exc.value)
    assert "\n" not in msg
    assert "tuner 'gradient'" in msg and "task 'lasso'" in msg and "tagged 'non-smooth'" in msg and missing in msg


def test_validation_refuses_proximal_solvers_on_smooth_tasks(tmp_path):
    path = write_suite(tmp_path, '{ method = "cg", inner = "ista" }', task="ridge", task_params="{ n = 20, p = 3 }")
    with pytest.raises(SuiteError, match="needs task tag 'prox', which task 'ridge'"):
        load_suite(str(path))


def test_validation_accepts_the_non_smooth_pairs(tmp_path):
    for params in ('{ method = "implicit_support", inner = "cd" }', '{ method = "implicit_forward", inner = "fista" }',
                   '{ method = "implicit_support", inner = "exact", outer = "lbfgs" }',
                   '{ method = "prox_forward", inner = "cd" }', '{ method = "prox_reverse", inner = "ista" }'):
        load_suite(str(write_suite(tmp_path, params)))


def test_unrolled_methods_refuse_an_inner_solver_they_do_not_differentiate(tmp_path):
    with pytest.raises(SuiteError, match=r"`inner` must be one of \['ista'\] for the unrolled method 'prox_reverse'"):
        load_suite(str(write_suite(tmp_path, '{ method = "prox_reverse", inner = "cd" }')))


def test_cli_refusal_is_one_line(monkeypatch, capsys, tmp_path):
    code, _, err = invoke(monkeypatch, capsys, "run", str(write_suite(tmp_path, '{ method = "cg", inner = "gd" }')),
                          "--out", str(tmp_path / "out"))
    assert code == 2
    assert "tagged 'non-smooth'" in one_error_line(err)


def test_shipped_sparse_suite_is_valid():
    suite = load_suite("sparse")
    assert {t.name for t in suite.tasks} == set(NONSMOOTH)


# ------------------------------------------------------------------------------------------ tuners
@pytest.mark.parametrize("params", [
    {"method": "implicit_support", "inner": "cd", "inner_steps": 20},
    {"method": "prox_forward", "inner": "cd", "inner_steps": 20},
    {"method": "prox_reverse", "inner": "ista", "inner_steps": 100},
])
def test_gradient_tuner_runs_on_a_non_smooth_task(params):
    from hpo_bench.tuners.gradient import GradientTuner

    task = small("lasso")
    rec = run_tuner(GradientTuner(**params, outer="adam", outer_lr=0.2), task, Budget(steps=4))
    assert [r["status"] for r in rec.rows] == ["ok"] * 4
    assert all(math.isfinite(r["hypergrad_rel_error"]) for r in rec.rows)


def test_gradient_tuner_with_an_exact_inner_solve_gets_the_reference():
    from hpo_bench.tuners.gradient import GradientTuner

    task = small("weighted_lasso")
    rec = run_tuner(GradientTuner(method="implicit_support", inner="exact", outer="adam"), task, Budget(steps=3))
    assert max(r["hypergrad_rel_error"] for r in rec.rows) <= 1e-10


# ------------------------------------------------------------------------------------------------ kit
@pytest.mark.parametrize("name", NONSMOOTH)
def test_the_kit_passes_every_non_smooth_task(name):
    assert all(res == "pass" for _, res in check_object(TASKS.get(name)))


class WrongProxLasso(Lasso):
    """A deliberately broken prox: the threshold's sign is flipped (it inflates instead of shrinking)."""

    name = "wrong_prox_lasso"

    def prox(self, z, step, theta):
        alpha, _ = self.penalties(theta.detach())
        return soft_threshold(z, -step * alpha)


class WrongCrossLasso(Lasso):
    """A deliberately broken support linearisation: the cross derivative's sign is flipped."""

    name = "wrong_cross_lasso"

    def linearize_support(self, w, theta):
        lin = super().linearize_support(w, theta)
        lin.signs = -lin.signs
        return lin


def test_the_kit_fails_a_broken_prox_and_a_broken_support_linearisation():
    with pytest.raises(ConformanceError, match="not a prox fixed point"):
        check_task_inner_stationary(WrongProxLasso)
    with pytest.raises(ConformanceError, match="on the support differs from autograd|face problem"):
        check_task_linearization(WrongCrossLasso)
    with pytest.raises(ConformanceError, match="disagrees with finite differences"):
        check_task_reference_fd(WrongCrossLasso)


# ------------------------------------------------------------------------------------------- check
def test_check_detects_a_support_change_inside_the_fd_step_and_never_averages_across_it():
    """At lam = lambda_max (the box's upper corner) w* = 0 on one side and one coordinate enters on the other:
    a kink. A plain central difference there averages the two one-sided slopes (half the left slope); check
    reports the kink instead of a failure."""
    task = small("lasso")
    _, hi = task.space.theta_bounds(dtype=task.dtype)
    dirs = torch.eye(1, dtype=task.dtype)
    fd, kinks = support_aware_difference(task, hi, dirs, 1e-5)
    assert kinks == [0] and math.isnan(float(fd[0]))
    left = float(task.reference_hypergradient(hi - 1e-3))  # the slope just inside the box
    naive = float(finite_difference(task, hi, dirs, 1e-5)[0])
    assert naive == pytest.approx(left / 2, rel=1e-2)  # what averaging across the kink would report
    rows = check_task(task, methods=["implicit_support"], n_points=3)
    at_corner = [r for r in rows if r.method == "reference" and r.hp[0] == pytest.approx(float(torch.exp(hi)))]
    assert at_corner and at_corner[0].verdict == "skipped"
    assert "support of w* changes within the FD step" in at_corner[0].note
    assert all(r.verdict != "FAIL" for r in rows), [(r.point, r.method, r.verdict, r.note) for r in rows]


def test_check_passes_exact_non_smooth_methods_and_skips_smooth_only_ones():
    task = small("elastic_net")
    rows = check_task(task, methods=["implicit_support", "cg", "exact", "prox_forward"], n_points=2, box=False)
    verdicts = {(r.method, r.verdict) for r in rows}
    assert ("implicit_support", "pass") in verdicts and ("prox_forward", "approx") in verdicts
    assert {r.verdict for r in rows if r.method in ("cg", "exact")} == {"skipped"}
    assert all("assumes a smooth inner objective" in r.note for r in rows if r.method in ("cg", "exact"))
    assert all(r.verdict == "pass" for r in rows if r.method == "reference")


def test_check_skips_non_smooth_methods_on_smooth_tasks():
    task = get_task("ridge", n=30, p=4)
    rows = check_task(task, methods=["implicit_support", "exact"], n_points=1)
    mine = [r for r in rows if r.method == "implicit_support"]
    assert mine and mine[0].verdict == "skipped" and "needs task tag 'prox'" in mine[0].note
    assert [r.verdict for r in rows if r.method == "exact"] == ["pass"]


def test_duality_gaps_are_zero_at_the_solution_and_positive_elsewhere():
    from hpo_bench.tasks._sparse_linear import lasso_gap, logistic_gap

    rng = np.random.default_rng(0)
    x, y, w = rng.standard_normal((30, 5)), rng.standard_normal(30), rng.standard_normal(5)
    alpha = np.full(5, 0.1)
    assert lasso_gap(x, y, w, alpha, 0.3) > 1e-3 and logistic_gap(x, np.sign(y), w, alpha) > 1e-3
