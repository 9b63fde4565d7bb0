"""Core cost benchmarks (pytest-benchmark): every hypergradient method, one gradient-tuner outer step.

Run and save (numbers in the issue notes come from this command):

    .venv/bin/pytest benchmarks/bench_core.py --benchmark-enable \
        --benchmark-json results/benchmarks/core.json

In CI the same file runs with ``--benchmark-disable`` (each body once), so every benchmark
also checks that its result is right. Sizes: ridge_per_feature with p = 100 and 1000,
n = 10 p, float64. ``forward`` costs m HVPs per inner step (m = p hyperparameters here), so
it is benchmarked at p = 100 only.
"""

from __future__ import annotations

import pytest
import torch

from hpo_bench import METHODS, TUNERS, get_task
from hpo_bench.records import Budget, Recorder, rel_error

SIZES = (100, 1000)


@pytest.fixture(scope="module", params=SIZES, ids=[f"p{p}" for p in SIZES])
def problem(request):
    p = request.param
    task = get_task("ridge_per_feature", n=10 * p, p=p, n_val=2 * p, n_test=10, seed=0)
    theta = task.space.init_theta() + 0.5 * torch.randn(p, dtype=torch.float64,
                                                        generator=torch.Generator().manual_seed(0))
    w_star = task.solve(theta)
    return task, theta, w_star, task.reference_hypergradient(theta)


OPTS = {"cg": {"tol": 1e-10}, "neumann": {"iterations": 20}, "fixed_point": {"iterations": 20},
        "reverse": {"steps": 100}, "truncated": {"steps": 100, "truncate": 10}, "forward": {"steps": 100}}


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_hypergradient_cost(benchmark, problem, method):
    task, theta, w_star, ref = problem
    fn = METHODS.get(method)
    if method == "forward" and task.space.dim > 100:
        pytest.skip("forward mode: m HVPs per step; benchmarked at p = 100 only")
    opts = dict(OPTS.get(method, {}))
    w = w_star if fn.info.kind == "implicit" else task.init_params()
    if fn.info.kind == "unrolled":
        opts["lr"] = 1.0 / float(torch.linalg.eigvalsh(task.hessian(theta)).max())
    hg = benchmark(fn, task, w, theta, **opts)
    err = rel_error(hg.grad, ref)
    benchmark.extra_info.update(rel_error=err, hvp=hg.stats.get("hvp"), p=task.space.dim)
    assert torch.isfinite(hg.grad).all()
    if fn.info.exact:
        assert err <= 1e-8


@pytest.mark.parametrize("p", [100])
def test_gradient_tuner_outer_step(benchmark, p):
    """One outer step: 100 inner gd steps (warm), CG hypergradient, Adam on log λ, plus the record."""
    task = get_task("ridge_per_feature", n=10 * p, p=p, seed=0)
    tuner = TUNERS.get("gradient")(method="cg", inner="gd", inner_steps=100, inner_lr=None)

    def one_step():
        rec = Recorder(task, Budget(steps=1), reference=False)
        rec.start()
        tuner.run(task, rec)
        return rec

    rec = benchmark(one_step)
    assert rec.rows[0]["status"] == "ok" and rec.rows[0]["inner_steps"] == 100
