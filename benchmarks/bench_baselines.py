"""Baseline benchmarks (pytest-benchmark): time-to-target, and the eigendecomposition grid vs scikit-learn.

Run and save (the ratios in docs/issue3-notes.md come from this command):

    .venv/bin/pytest benchmarks/bench_baselines.py --benchmark-enable \
        --benchmark-json results/benchmarks/baselines.json

In CI the same file runs with ``--benchmark-disable`` (each body once), so every benchmark
also checks its result. Everything runs with one torch / BLAS thread (small dense problems
are fastest that way, and both sides of a comparison get the same).

1. Time-to-target on ``ridge_per_feature`` (n = 300, p = 50, seed 0): the gradient tuner with
   CG hypergradients and 100 warm-started gd inner steps vs TPE, random search and the
   (shared-λ) grid, each until its incumbent is within 1% of the oracle gap (the report's
   definition: the incumbent's validation loss at the reference inner solve) or out of
   budget. ``extra_info`` holds the tuner seconds to the target (``None``: not reached),
   evaluations and cost units.
2. Scalar ridge (n = 1000, p = 100, noise 5) over the same 200-point λ grid: one eigendecomposition
   (:func:`hpo_bench.baselines.grid.ridge_eig_grid`) vs refitting scikit-learn's ``Ridge`` at
   every point (``GridSearchCV`` with a ``PredefinedSplit`` of the same train/validation rows);
   the argmin must be the same grid point.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, PredefinedSplit
from threadpoolctl import threadpool_limits

from hpo_bench import TUNERS, Budget, get_task
from hpo_bench.baselines.grid import grid_values, ridge_eig_grid
from hpo_bench.oracle import compute_oracle
from hpo_bench.target import TargetRecorder

TARGET = 0.01  # fraction of the oracle gap


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def pf50():
    task = get_task("ridge_per_feature", n=300, p=50, seed=0)
    orc = compute_oracle(task, starts=4)
    return task, orc


#: The settings the paper suite's tune step chose for ridge_pf-synth50 (results/paper/tune/choices.json),
#: and one budget for all: 500 evaluations / outer steps or 10 tuner seconds, whichever comes first.
BUDGET = Budget(steps=500, seconds=10.0)
TIME_TO_TARGET = {
    "gradient-cg": ("gradient", {"method": "cg", "inner": "gd", "inner_steps": 100, "outer": "adam",
                                 "outer_lr": 0.05}),
    "tpe": ("tpe", {"n_startup_trials": 20}),
    "random": ("random", {}),
    "grid": ("grid", {"space": "block"}),
}


def _to_target(task, orc, name, params, budget):
    rec = TargetRecorder(task, budget, meta={}, f_star=orc.val_loss, threshold=TARGET * orc.gap)
    rec.start()
    TUNERS.get(name)(**params).run(task, rec, seed=0)
    return rec


@pytest.mark.parametrize("label", list(TIME_TO_TARGET))
def test_time_to_target_ridge_per_feature_p50(benchmark, pf50, label):
    task, orc = pf50
    name, params = TIME_TO_TARGET[label]
    budget = BUDGET
    rec = benchmark.pedantic(_to_target, args=(task, orc, name, params, budget), rounds=3, iterations=1)
    hit = rec.reached_at
    n_params = task.n_params
    benchmark.extra_info.update(
        reached=hit is not None, target=f"{TARGET:.0%} of the oracle gap",
        time_to_target_s=hit["time_s"] if hit else None,
        evals_to_target=hit["step"] + 1 if hit else None,
        cost_units_to_target=(hit["grad_evals"] + hit["hvps"] + n_params * hit["inner_solves"]) if hit else None,
        evals=len(rec.rows), tuner_seconds=rec.time_s, params=json.dumps(params, sort_keys=True),
        final_regret=min(r["val_loss_ref"] for r in rec.rows) - orc.val_loss)
    assert rec.rows and all(r["status"] == "ok" for r in rec.rows)
    assert len(rec.rows) <= budget.steps
    if hit is None:  # out of budget: by steps or by seconds, never silently
        assert rec.stop_reason in ("budget_steps", "budget_seconds", "search space exhausted")
    else:
        assert hit["val_loss_ref"] - orc.val_loss <= TARGET * orc.gap
    if label == "gradient-cg":
        assert hit is not None, "hypergradient descent reaches 1% of the gap on this convex-ish problem"


# ------------------------------------------------------------------ eig grid vs scikit-learn
N_GRID = 200


@pytest.fixture(scope="module")
def scalar_ridge():
    task = get_task("ridge", n=1000, p=100, n_val=500, noise=5.0, seed=0)  # noisy: the best λ is inside the grid
    lo, hi = task.space.blocks[0].theta_bounds
    thetas = torch.tensor(grid_values(lo, hi, N_GRID), dtype=torch.float64)
    return task, thetas


def _eig_grid(task, thetas):
    w, val, feasible = ridge_eig_grid(task, thetas)
    return int(torch.argmin(val)), val


def _sklearn_grid(task, thetas):
    x = np.vstack([task.x_train.numpy(), task.x_val.numpy()])
    y = np.concatenate([task.y_train.numpy(), task.y_val.numpy()])
    n = task.x_train.shape[0]
    fold = np.r_[np.full(n, -1), np.zeros(task.x_val.shape[0], dtype=int)]  # -1: always train; 0: validation
    # hpo-bench's inner loss 1/(2n)||Xw - y||^2 + λ/2 ||w||^2 is scikit-learn's ||Xw - y||^2 + α||w||^2 at α = nλ
    alphas = n * torch.exp(thetas).numpy()
    search = GridSearchCV(Ridge(fit_intercept=False, solver="cholesky"), {"alpha": alphas},
                          cv=PredefinedSplit(fold), scoring="neg_mean_squared_error", refit=False, n_jobs=1)
    search.fit(x, y)
    mse = -search.cv_results_["mean_test_score"]
    return int(np.argmin(mse)), mse


def test_scalar_ridge_grid_eig(benchmark, scalar_ridge):
    task, thetas = scalar_ridge
    best, val = benchmark(_eig_grid, task, thetas)
    ref_best, mse = _sklearn_grid(task, thetas)
    benchmark.extra_info.update(grid=N_GRID, n=task.n_train, p=task.n_params, argmin=best)
    assert 0 < best < N_GRID - 1  # an interior optimum, so agreeing on it means something
    assert best == ref_best
    assert np.allclose(val.numpy(), mse, rtol=1e-6)


def test_scalar_ridge_grid_sklearn(benchmark, scalar_ridge):
    task, thetas = scalar_ridge
    best, mse = benchmark.pedantic(_sklearn_grid, args=(task, thetas), rounds=5, iterations=1)
    ref_best, val = _eig_grid(task, thetas)
    benchmark.extra_info.update(grid=N_GRID, n=task.n_train, p=task.n_params, argmin=best)
    assert best == ref_best
    assert np.allclose(mse, val.numpy(), rtol=1e-6)
