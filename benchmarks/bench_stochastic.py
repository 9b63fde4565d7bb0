"""Stochastic-solver cost benchmarks (pytest-benchmark), the speed targets of docs/stochastic.md.

Run (ratios side by side in one run: group ``soba-d100`` / ``soba-d1000`` hold the solver's iteration and a
bare NumPy loop of the same updates on the same packed data; group ``recorder`` a cell with and without
the recorder at ``eval_every = 256``, interleaved, in its ``extra_info``):

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest benchmarks/bench_stochastic.py --benchmark-enable \
        --benchmark-json results/benchmarks/stochastic.json

The time-to-target table of the docs is ``scripts/stochastic_table.py``.

In CI the file runs with ``--benchmark-disable`` (each body once): every benchmark also checks that its
result is right (the NumPy loop reproduces the solver's iterates on the same batches).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest
import torch

from hpo_bench.core._threads import one_thread
from hpo_bench.core.records import Budget, Recorder
from hpo_bench.core.registry import TUNERS
from hpo_bench.tasks.quadratic_bilevel import QuadraticBilevel

ITERS = 64


@pytest.fixture(scope="module", autouse=True)
def one_thread_here():
    with one_thread():
        yield


def quadratic(d: int) -> QuadraticBilevel:
    """d = 100: the dense form (one d x d matrix per example, as benchmark_bilevel stores them); d = 1000: the
    factored form (dense would store n 10^6 numbers). ``n`` is small: an iteration's cost does not depend on it."""
    form = "dense" if d <= 100 else "factored"
    return QuadraticBilevel(n=256, m=128, d_inner=d, d_outer=10, mu=0.01, form=form, seed=0)


def soba(task: QuadraticBilevel, batch: int = 64):
    solver = TUNERS.get("soba")(batch_size=batch, step_size=0.1, outer_ratio=100.0)
    solver.setup(task, seed=0)
    return solver


class NumpySOBA:
    """SOBA on quadratic_bilevel in bare NumPy: the same packed per-example rows, the same batches."""

    def __init__(self, task: QuadraticBilevel, solver) -> None:
        self.d, self.q, self.r, self.form = task.d_inner, task.d_outer, task.rank, task.form
        self.inner, self.outer = task.inner_pack.numpy(), task.outer_pack.numpy()
        if self.form == "factored":  # the U factors are stored apart (a gathered batch of them is contiguous)
            self.inner_u, self.outer_u = task.inner_u.numpy(), task.outer_u.numpy()
        self.a0, self.b0, self.l0 = task.hess0.numpy(), task.cross0.numpy(), task.lin0.numpy()
        self.c0, self.lc0, self.s = task.outer_hess0.numpy(), task.outer_lin0.numpy(), (task.s_a, task.s_b, task.s_c)
        self.w, self.theta, self.v = solver.w.numpy().copy(), solver.theta.numpy().copy(), solver.v.numpy().copy()
        self.lo, self.hi = solver.lo.numpy(), solver.hi.numpy()
        self.rho, self.gamma = solver.inner_lr, solver.outer_lr

    def _dense(self, idx, jdx):
        d, q = self.d, self.q
        mean = self.inner[idx].mean(0)
        a_b, b_b, lin_b = mean[:d * d].reshape(d, d), mean[d * d:d * d + q * d].reshape(q, d), mean[d * d + q * d:]
        omean = self.outer[jdx].mean(0)
        c_b, linc_b = omean[:d * d].reshape(d, d), omean[d * d:]
        g = a_b @ self.w + b_b.T @ self.theta + lin_b
        return g, a_b @ self.v - (c_b @ self.w + linc_b), -(b_b @ self.v)

    def _factored(self, idx, jdx):
        d, q, r = self.d, self.q, self.r
        s_a, s_b, s_c = self.s
        rows, b = self.inner[idx], len(idx)
        u = self.inner_u[idx].reshape(b * r, d)
        g_, h_, e_ = rows[:, :q], rows[:, q:q + d], rows[:, q + d:]
        a_z = self.a0 @ self.w + (s_a / b) * (u.T @ (u @ self.w))  # matrix-vector products: a two-column
        a_v = self.a0 @ self.v + (s_a / b) * (u.T @ (u @ self.v))  # product is 2.4x slower at d = 1000
        bt_x = self.b0.T @ self.theta + (s_b / b) * (h_.T @ (g_ @ self.theta))
        b_v = self.b0 @ self.v + (s_b / b) * (g_.T @ (h_ @ self.v))
        grad = a_z + bt_x + self.l0 + s_c * e_.mean(0)
        uo = self.outer_u[jdx].reshape(len(jdx) * r, d)
        go = self.c0 @ self.w + (s_a / len(jdx)) * (uo.T @ (uo @ self.w)) + self.lc0 + s_c * self.outer[jdx].mean(0)
        return grad, a_v - go, -b_v

    def step(self, idx: np.ndarray, jdx: np.ndarray) -> None:
        g, d_v, d_theta = (self._dense if self.form == "dense" else self._factored)(idx, jdx)
        self.w -= self.rho * g
        self.v -= self.rho * d_v
        self.theta = np.clip(self.theta - self.gamma * d_theta, self.lo, self.hi)


def _batches(task, solver, k):
    return [(solver.inner_sampler.draw().numpy(), solver.outer_sampler.draw().numpy()) for _ in range(k)]


@pytest.mark.parametrize("d", [100, 1000], ids=["d100", "d1000"])
def test_soba_iteration(benchmark, d):
    """``ITERS`` SOBA iterations at batch 64 (the solver: sampler, fused oracle, in-place updates)."""
    task = quadratic(d)
    solver = soba(task)
    benchmark.group = f"soba-d{d}"

    def run():
        for _ in range(ITERS):
            solver.compute()
            solver.apply()
            solver.iteration += 1

    benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=1)
    assert bool(torch.isfinite(solver.w).all())


@pytest.mark.parametrize("d", [100, 1000], ids=["d100", "d1000"])
def test_soba_iteration_numpy(benchmark, d):
    """The same iterations as a bare NumPy loop (batches drawn beforehand: the loop pays no sampling)."""
    task = quadratic(d)
    solver = soba(task)
    ref = NumpySOBA(task, solver)
    batches = _batches(task, solver, ITERS)
    benchmark.group = f"soba-d{d}"

    def run():
        for idx, jdx in batches:
            ref.step(idx, jdx)

    benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=1)
    assert np.isfinite(ref.w).all()


@pytest.mark.parametrize("lib", ["torch", "numpy"])
def test_gemv_d1000(benchmark, lib):
    """One ``d x d`` matrix-vector product at d = 1000, torch (its BLAS: MKL in the CPU wheel) vs NumPy (its
    own BLAS) on the same matrix: three of them are most of a factored SOBA iteration at d_inner = 1000
    (``A0 z``, ``A0 v`` and ``C0 z``), so their ratio is about the best the soba-d1000 ratio can be."""
    task = quadratic(1000)
    a, z = task.hess0, task.lin0
    benchmark.group = "gemv-d1000"
    an, zn = a.numpy(), z.numpy()
    out = benchmark(torch.mv, a, z).numpy() if lib == "torch" else benchmark(np.matmul, an, zn)
    other = (an @ zn) if lib == "torch" else torch.mv(a, z).numpy()
    # two BLAS, two summation orders: each within d eps (|A| |z|) of the exact product
    assert np.all(np.abs(out - other) <= 2 * 1000 * 2.0 ** -52 * (np.abs(an) @ np.abs(zn)))


@pytest.mark.parametrize("form", ["dense", "factored"])
def test_numpy_loop_is_the_solver(form):
    """The NumPy loop of the benchmark reproduces SOBA's iterates on the same batches (so the ratio compares
    like with like)."""
    task = QuadraticBilevel(n=64, m=32, d_inner=20, d_outer=3, mu=0.01, form=form, seed=0)
    solver, twin = soba(task, batch=8), soba(task, batch=8)
    ref = NumpySOBA(task, solver)
    for idx, jdx in _batches(task, twin, 30):
        ref.step(idx, jdx)
    for _ in range(30):
        solver.compute()
        solver.apply()
    assert np.allclose(solver.w.numpy(), ref.w, rtol=1e-10, atol=1e-12)
    assert np.allclose(solver.theta.numpy(), ref.theta, rtol=1e-10, atol=1e-12)


def _soba_cell(task: QuadraticBilevel, recorded: bool) -> None:
    """A SOBA cell of 4 rows at ``eval_every = 256`` through the recorder (reference off: its measurements are
    paused anyway), or the same ``3 x 256 + 1`` iterations in a bare loop."""
    solver = TUNERS.get("soba")(batch_size=64, step_size=0.1, outer_ratio=100.0, eval_every=256)
    if recorded:
        rec = Recorder(task, Budget(steps=4), meta={}, reference=False)
        rec.start()
        solver.run(task, rec, seed=0)
        assert len(rec.rows) == 4 and all(r["status"] == "ok" for r in rec.rows)
    else:
        solver.setup(task, seed=0)
        for _ in range(3 * 256 + 1):
            solver.compute()
            solver.apply()
            solver.iteration += 1


def test_recorder_overhead(benchmark):
    """What recording costs the tuner's clock: each round runs the recorded cell, then the bare loop, so both see
    the same load; ``extra_info`` holds both sides' minimum and median over the rounds and their ratios."""
    task = QuadraticBilevel(n=1024, m=256, d_inner=100, d_outer=10, mu=0.01, form="factored", seed=0)
    benchmark.group = "recorder"
    times: dict[str, list[float]] = {"recorder": [], "bare": []}

    def both():
        for side in ("recorder", "bare"):
            t0 = time.perf_counter()
            _soba_cell(task, side == "recorder")
            times[side].append(time.perf_counter() - t0)

    benchmark.pedantic(both, rounds=10, iterations=1, warmup_rounds=1)
    for side, ts in times.items():
        benchmark.extra_info[f"{side}_min_s"] = min(ts)
        benchmark.extra_info[f"{side}_median_s"] = statistics.median(ts)
    med = {side: statistics.median(ts) for side, ts in times.items()}
    benchmark.extra_info["overhead_min"] = min(times["recorder"]) / min(times["bare"]) - 1
    benchmark.extra_info["overhead_median"] = med["recorder"] / med["bare"] - 1
