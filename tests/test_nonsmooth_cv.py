"""The cross-validated outer criterion of the non-smooth tasks (``criterion = "cv"``, ``folds = K``): the value
is the folds' mean held-out loss, the reference hypergradient the mean of the folds' hypergradients (checked
against finite differences away from support changes), every non-smooth method and inner solver runs on it, and
bad parameters are refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpo_bench import METHODS
from hpo_bench.analysis.check import support_aware_difference
from hpo_bench.tuners.inner import InnerState, run_inner
from hpo_bench.core.records import Budget, rel_error
from hpo_bench.core.registry import TASKS
from hpo_bench.running.suite import load_suite
from hpo_bench.core.task import TaskParamError
from hpo_bench.testing import run_tuner

from _util import theta_points

SMALL = {
    "lasso": {"n": 40, "p": 10, "n_informative": 3, "lam0": 0.1},
    "elastic_net": {"n": 40, "p": 10, "n_informative": 3, "lam0": 0.1},
    "weighted_lasso": {"n": 40, "p": 6, "n_informative": 3, "lam0": 0.1},
    "sparse_logreg": {"n": 60, "p": 8, "n_informative": 3, "lam0": 0.1},
}
NONSMOOTH = list(SMALL)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cv_task(name, **kw):
    return TASKS.get(name)(criterion="cv", **{**SMALL[name], **kw})


@pytest.mark.parametrize("name", NONSMOOTH)
def test_folds_hold_out_every_training_and_validation_row_once(name):
    cv, hold = cv_task(name, folds=4), TASKS.get(name)(**SMALL[name])
    assert cv.params["criterion"] == "cv" and cv.params["folds"] == 4 and len(cv.fold_tasks) == 4
    held = torch.cat([f.y_val for f in cv.fold_tasks])
    union = torch.cat([hold.y_train, hold.y_val])
    assert held.shape == union.shape
    assert torch.equal(torch.sort(held).values, torch.sort(union).values)
    for f in cv.fold_tasks:  # each fold trains on the other rows; the test split is the holdout task's
        assert f.n_train + int(f.y_val.shape[0]) == union.shape[0]
        assert torch.equal(f.y_test, hold.y_test)
    assert cv.n_params == 4 * hold.n_params


@pytest.mark.parametrize("name", NONSMOOTH)
def test_cv_value_and_hypergradient_are_the_folds_means(name):
    task = cv_task(name)
    for theta in theta_points(task, 2, seed=3):
        w = task.solve(theta)
        assert task.duality_gap(w, theta) <= 1e-12
        ws = [f.solve(theta) for f in task.fold_tasks]  # each fold on its own: the same solutions
        for wk, fk in zip(task._split(w), ws):
            assert rel_error(wk, fk) <= 1e-12
        value = sum(float(f.outer_loss(fk)) for f, fk in zip(task.fold_tasks, ws)) / len(ws)
        assert abs(float(task.outer_loss(w)) - value) <= 1e-14 * max(1.0, value)
        test = sum(float(f.test_loss(fk)) for f, fk in zip(task.fold_tasks, ws)) / len(ws)
        assert abs(float(task.test_loss(w)) - test) <= 1e-14 * max(1.0, test)
        mean = sum(f.reference_hypergradient(theta) for f in task.fold_tasks) / len(ws)
        assert rel_error(task.reference_hypergradient(theta), mean) <= 1e-12
        ref = task.reference(theta)
        assert abs(ref.value - value) <= 1e-14 * max(1.0, value)


@pytest.mark.parametrize("name", NONSMOOTH)
def test_cv_reference_hypergradient_matches_finite_differences(name):
    task = cv_task(name)
    for theta in theta_points(task, 3, seed=1):
        assert task.support_margin(theta) > 0
        fd, kinks = support_aware_difference(task, theta, torch.eye(task.space.dim, dtype=task.dtype), 1e-5)
        assert kinks == []
        assert rel_error(task.reference_hypergradient(theta), fd) <= 1e-6


@pytest.mark.parametrize("name", NONSMOOTH)
def test_non_smooth_methods_converge_to_the_cv_reference(name):
    task = cv_task(name)
    theta = theta_points(task, 2, seed=2)[1]
    w = task.solve(theta)
    ref = task.reference_hypergradient(theta)
    assert rel_error(METHODS.get("implicit_support")(task, w, theta).grad, ref) <= 1e-10
    assert rel_error(METHODS.get("implicit_forward")(task, w, theta).grad, ref) <= 1e-8
    for method, solver in (("prox_forward", "cd"), ("prox_forward", "ista"), ("prox_reverse", "ista")):
        errs = [float(rel_error(METHODS.get(method)(task, w, theta, steps=s, solver=solver).grad, ref))
                for s in (20, 400)]
        assert errs[1] <= 1e-5 and (errs[0] > errs[1] or errs[1] <= 1e-12), (method, solver, errs)


@pytest.mark.parametrize("name", ["lasso", "sparse_logreg"])
def test_inner_solvers_reach_the_cv_solution(name):
    task = cv_task(name)
    theta = task.space.init_theta(dtype=task.dtype)
    ref = task.solve(theta)
    for solver, steps in (("ista", 5000), ("cd", 300)):
        state = InnerState.fresh(task.init_params())
        run_inner(task, theta, state, solver=solver, steps=steps, lr=None)
        assert float(torch.linalg.vector_norm(state.w - ref)) <= 1e-8, solver
        assert task.prox_residual(state.w, theta) <= 1e-7, solver


def test_cv_on_sparse_text_like_data():
    task = TASKS.get("lasso")(dataset="text-like", n=80, p=60, density=0.05, n_informative=6, lam0=0.05,
                              criterion="cv", folds=3)
    assert all(f.sparse for f in task.fold_tasks)
    theta = task.space.init_theta(dtype=task.dtype)
    fd, kinks = support_aware_difference(task, theta, torch.eye(1, dtype=task.dtype), 1e-5)
    assert kinks == []
    assert rel_error(task.reference_hypergradient(theta), fd) <= 1e-6


def test_gradient_tuner_and_suite_run_a_cv_cell(tmp_path):
    from hpo_bench.tuners.gradient import GradientTuner

    for params in ({"method": "implicit_support", "inner": "cd", "inner_steps": 20},
                   {"method": "prox_forward", "inner": "cd", "inner_steps": 20},
                   {"method": "implicit_support", "inner": "exact"}):
        rec = run_tuner(GradientTuner(**params, outer="adam", outer_lr=0.2), cv_task("lasso"), Budget(steps=3))
        assert [r["status"] for r in rec.rows] == ["ok"] * 3
        assert all(np.isfinite(r["hypergrad_rel_error"]) for r in rec.rows)
    rec = run_tuner(GradientTuner(method="implicit_support", inner="exact", outer="adam"), cv_task("weighted_lasso"),
                    Budget(steps=2))
    assert max(r["hypergrad_rel_error"] for r in rec.rows) <= 1e-10
    path = tmp_path / "cv.toml"
    path.write_text('name = "cv"\nseeds = [0]\n[budget]\nsteps = 3\n'
                    '[[task]]\nname = "lasso"\nparams = { n = 40, p = 10, n_informative = 3, criterion = "cv", '
                    'folds = 5 }\n[[tuner]]\nname = "gradient"\nparams = { method = "implicit_support", '
                    'inner = "cd" }\n')
    load_suite(str(path))


@pytest.mark.parametrize("kw,needle", [
    ({"criterion": "kfold"}, "`criterion`"),
    ({"folds": 5}, "`folds`"),
    ({"criterion": "cv", "folds": 1}, "`folds`"),
    ({"criterion": "cv", "folds": 2.5}, "`folds`"),
])
def test_bad_criterion_parameters_are_refused_in_one_line(kw, needle):
    with pytest.raises(TaskParamError) as err:
        TASKS.get("lasso")(n=40, p=10, n_informative=3, **kw)
    msg = str(err.value)
    assert needle in msg and "\n" not in msg


def test_holdout_instances_keep_their_parameters():
    assert "criterion" not in TASKS.get("lasso")(**SMALL["lasso"]).params
    assert np.isclose(cv_task("lasso").space.init_theta(dtype=torch.float64).item(),
                      TASKS.get("lasso")(**SMALL["lasso"]).space.init_theta(dtype=torch.float64).item())
