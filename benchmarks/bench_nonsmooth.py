"""Cost benchmarks of the non-smooth tasks (pytest-benchmark): the implicit hypergradient on the support against
one inner solve, and a lambda path with warm starts against independent solves.

Run and save:

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest benchmarks/bench_nonsmooth.py --benchmark-enable \\
        --benchmark-json results/benchmarks/nonsmooth.json

Targets (ratios of means within a group, same run): ``implicit_support / inner_solve <= 2`` (group
``nonsmooth-implicit-*``) and ``path_warm / independent < 1`` (group ``nonsmooth-path``). In CI the file runs
with ``--benchmark-disable``: each body runs once and checks its result (duality gaps, exactness).
"""

from __future__ import annotations

import pytest
import torch

from hpo_bench import METHODS, get_task
from hpo_bench.core._threads import one_thread
from hpo_bench.core.records import rel_error

PROBLEMS = {"lasso-p200": ("lasso", {"n": 100, "p": 200, "n_informative": 10}),
            "wlasso-p100": ("weighted_lasso", {"n": 100, "p": 100, "n_informative": 10}),
            "logreg-p50": ("sparse_logreg", {"n": 100, "p": 50, "n_informative": 5})}


@pytest.fixture(scope="module", autouse=True)
def one_thread_here():
    with one_thread():
        yield


@pytest.fixture(scope="module", params=sorted(PROBLEMS))
def problem(request):
    name, params = PROBLEMS[request.param]
    task = get_task(name, **params)
    theta = task.space.init_theta(dtype=task.dtype)
    return request.param, task, theta, task.solve(theta), task.reference_hypergradient(theta)


def test_inner_solve(benchmark, problem):
    label, task, theta, w_star, _ = problem
    benchmark.group = f"nonsmooth-implicit-{label}"
    w = benchmark(task.solve_from, theta, None)  # uncached: the reference solve from w = 0
    assert task.duality_gap(w, theta) <= 1e-12
    benchmark.extra_info.update(support=len(task.support(w)), p=task.n_params)


def test_implicit_support(benchmark, problem):
    label, task, theta, w_star, ref = problem
    benchmark.group = f"nonsmooth-implicit-{label}"
    hg = benchmark(METHODS.get("implicit_support"), task, w_star, theta)
    err = rel_error(hg.grad, ref)
    benchmark.extra_info.update(rel_error=err, support=hg.stats["support_size"])
    assert err <= 1e-10


def _grid(task, k=30, decades=3.0):
    _, hi = task.space.theta_bounds(dtype=task.dtype)
    return [t.reshape(1) for t in torch.linspace(float(hi), float(hi) - decades * 2.302585092994046, k,
                                                 dtype=task.dtype)]


@pytest.fixture(scope="module")
def path_task():
    return get_task("lasso", n=100, p=100, n_informative=10)


def test_path_warm(benchmark, path_task):
    benchmark.group = "nonsmooth-path"
    grid = _grid(path_task)
    ws = benchmark(path_task.solve_path, grid)
    assert all(path_task.duality_gap(w, th) <= 1e-12 for w, th in zip(ws, grid))


def test_path_independent(benchmark, path_task):
    benchmark.group = "nonsmooth-path"
    grid = _grid(path_task)
    ws = benchmark(lambda: [path_task.solve_from(th, None) for th in grid])
    assert all(path_task.duality_gap(w, th) <= 1e-12 for w, th in zip(ws, grid))


# ---------------------------------------------- cold reference solve: own homotopy vs skglm + the polish
@pytest.fixture(scope="module")
def cold_task():
    return get_task("lasso", n=500, p=1000, n_informative=20)


@pytest.mark.parametrize("route", ["homotopy", "skglm"])
def test_cold_solve(benchmark, cold_task, route, monkeypatch):
    """A cold lasso reference solve at n = 500, p = 1000 (group ``nonsmooth-cold-lasso-p1000``): the
    homotopy of active sets alone, or skglm's WeightedLasso polished by the active set (the route the task
    takes at ``p >= SKGLM_MIN_P`` when skglm is installed). Both reach the same duality gap; skglm's numba
    compilation happens in a warm-up call, outside the timing."""
    from hpo_bench.tasks import _sparse_linear as sl

    if route == "skglm":
        if not sl.skglm_available():
            pytest.skip("skglm is not installed (pip install skglm)")
        monkeypatch.setattr(sl, "SKGLM_MIN_P", 1)
    else:
        monkeypatch.setattr(sl, "SKGLM_MIN_P", 10**12)
    task = cold_task
    benchmark.group = "nonsmooth-cold-lasso-p1000"
    theta = task.space.init_theta(dtype=task.dtype)
    if route == "skglm":
        task.solve_from(theta, None)  # compile skglm's kernels
    w = benchmark.pedantic(task.solve_from, (theta, None), rounds=3, iterations=1)
    assert task.duality_gap(w, theta) <= 1e-12
    benchmark.extra_info.update(support=len(task.support(w)))
