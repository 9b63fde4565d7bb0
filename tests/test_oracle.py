"""The oracle against closed-form optima, its cache, and the derived metrics (regret, targets)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.polynomial import polynomial as P
from scipy.optimize import brentq

from hpo_bench import get_task
from hpo_bench.analysis import oracle as oracle_mod
from hpo_bench.analysis.oracle import compute_oracle, oracle_for, oracle_key
from hpo_bench.report.metrics import add_derived, cell_metrics


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small dense solves: one thread is much faster on a busy 2-core machine (results are the same)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def eig_parts(task):
    """Closed form of a scalar-penalty quadratic task, in numpy: ``w(λ) = V diag(a/(a s + b λ)) V^T c``."""
    g, c = task.gram.numpy(), task.xty.numpy()
    s, v = np.linalg.eigh(g)
    z = v.T @ c
    b = task.x_val.numpy() @ v
    y = task.y_val.numpy()
    ratio = task.b / task.a  # H = 2a G + 2b λ I  =>  w = V diag(1 / (s + (b/a) λ)) z
    return s, z, b, y, ratio


def f_closed(task, lam):
    s, z, b, y, ratio = eig_parts(task)
    r = b @ (z / (s + ratio * lam)) - y
    return float(r @ r / len(y))


def test_seed_toy_oracle_is_the_root_of_the_closed_form_polynomial(seed_toy):
    """seed_toy (p = 2, raw λ): F(λ) = ||N(λ)||² / (m D(λ)²) with polynomials N (vector) and D,
    so dF/dλ = 0  <=>  (N·N') D - ||N||² D' = 0: its real roots (and the bounds) are every
    candidate, and the best one is the exact optimum."""
    s, z, b, y, ratio = eig_parts(seed_toy)
    assert ratio == 1.0 and len(s) == 2
    d = P.polymul([s[0], 1.0], [s[1], 1.0])  # (s1 + λ)(s2 + λ)
    n = [P.polysub(P.polyadd(P.polymul([b[k, 0] * z[0]], [s[1], 1.0]), P.polymul([b[k, 1] * z[1]], [s[0], 1.0])),
                   P.polymul([y[k]], d)) for k in range(len(y))]
    nn = np.zeros(1)
    nnp = np.zeros(1)
    for nk in n:
        nn = P.polyadd(nn, P.polymul(nk, nk))
        nnp = P.polyadd(nnp, P.polymul(nk, P.polyder(nk)))
    stationary = P.polysub(P.polymul(nnp, d), P.polymul(nn, P.polyder(d)))
    lo, hi = seed_toy.space.blocks[0].low, seed_toy.space.blocks[0].high
    roots = [r.real for r in P.polyroots(stationary) if abs(r.imag) < 1e-9 and lo <= r.real <= hi
             and r.real > -s.min()]  # the inner problem needs s + λ > 0
    cands = roots + [hi] + ([lo] if lo > -s.min() else [])
    best = min(cands, key=lambda lam: f_closed(seed_toy, lam))
    orc = compute_oracle(seed_toy)
    assert orc.method == "grid+lbfgsb"
    assert orc.hp[0] == pytest.approx(best, rel=1e-6)
    assert orc.val_loss == pytest.approx(f_closed(seed_toy, best), rel=1e-12)
    assert orc.init_val_loss == pytest.approx(f_closed(seed_toy, 3.0), rel=1e-12)  # lam0 = 3
    assert orc.gap > 0


@pytest.mark.parametrize("seed", [0, 3])
def test_ridge_oracle_is_the_root_of_the_closed_form_hypergradient(seed):
    task = get_task("ridge", n=50, p=30, seed=seed)
    s, z, b, y, ratio = eig_parts(task)

    def dfdlog(t):  # dF/d(log λ), closed form: λ * (2/m) r · (-B z ratio / (s + ratio λ)^2)
        lam = math.exp(t)
        r = b @ (z / (s + ratio * lam)) - y
        return lam * 2.0 / len(y) * float(r @ (b @ (-ratio * z / (s + ratio * lam) ** 2)))

    lo, hi = task.space.blocks[0].theta_bounds
    ts = np.linspace(lo, hi, 4001)
    g = np.array([dfdlog(t) for t in ts])
    roots = [brentq(dfdlog, ts[i], ts[i + 1], xtol=1e-14) for i in range(len(ts) - 1) if g[i] < 0 < g[i + 1]]
    cands = roots + [lo, hi]
    best = min(cands, key=lambda t: f_closed(task, math.exp(t)))
    orc = compute_oracle(task)
    assert roots, "this instance has an interior optimum"
    assert orc.theta[0] == pytest.approx(best, abs=1e-6)
    assert orc.val_loss == pytest.approx(f_closed(task, math.exp(best)), rel=1e-12)


def test_per_feature_oracle_is_stationary_and_beats_the_shared_penalty(ridge_pf, ridge):
    """More than 2 hyperparameters: multi-start L-BFGS-B. Its point is a KKT point of the box and,
    since one shared λ is a special per-feature point, it is at least as good as the scalar oracle."""
    orc = compute_oracle(ridge_pf, starts=3)
    assert orc.method == "lbfgsb-multistart" and orc.starts == 3
    th = torch.tensor(orc.theta, dtype=torch.float64)
    g = ridge_pf.reference_hypergradient(th)
    lo, hi = ridge_pf.space.theta_bounds()
    at_lo, at_hi = th <= lo + 1e-8, th >= hi - 1e-8
    free = ~(at_lo | at_hi)
    assert float(g[free].abs().max()) < 1e-6  # stationary in the free coordinates
    assert bool((g[at_lo] >= -1e-8).all()) and bool((g[at_hi] <= 1e-8).all())  # pushing outwards at the bounds
    assert orc.val_loss == pytest.approx(float(ridge_pf.response(th)), rel=1e-12)
    assert orc.val_loss <= compute_oracle(ridge).val_loss + 1e-12


def test_the_oracle_reports_the_projected_gradient_at_its_point(ridge_pf):
    """``stationarity`` is max |P(dF/dθ)| at θ*, recomputed here from the reference gradient (entries at a
    bound pointing out of the box count 0): near 0 for a converged oracle, large for one cut short by its
    count budget, and carried through the polish."""
    lo, hi = (b.numpy() for b in ridge_pf.space.theta_bounds(dtype=torch.float64))

    def projected(theta):
        th = np.asarray(theta, dtype=np.float64)
        g = ridge_pf.reference(torch.tensor(th, dtype=torch.float64)).grad.numpy().copy()
        g[(th <= lo) & (g > 0)] = 0.0
        g[(th >= hi) & (g < 0)] = 0.0
        return float(np.abs(g).max())

    full = compute_oracle(ridge_pf, starts=3)
    cut = compute_oracle(ridge_pf, starts=1, max_evals=4)
    for res in (full, cut):
        want = projected(res.theta)
        assert res.stationarity == pytest.approx(want, rel=1e-8, abs=1e-14)
        assert res.best_bound is not None and 0 <= res.best_bound < 1e-6
    assert full.stationarity < 1e-6 < cut.stationarity
    polished = oracle_mod.polish_oracle(ridge_pf, cut, [("the full oracle's point", full.theta)], polish_evals=3)
    assert polished.val_loss <= full.val_loss and polished.stationarity == pytest.approx(
        projected(polished.theta), rel=1e-8, abs=1e-14)
    md = __import__("hpo_bench.report.tables", fromlist=["oracle_table"]).oracle_table([("t", full)]).markdown()
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert "‖P∇F‖∞" in lines[0] and len({ln.count("|") for ln in lines}) == 1  # one column, table intact


def test_an_lbfgsb_run_that_stops_early_is_restarted_from_its_best_point(ridge_pf, monkeypatch):
    """L-BFGS-B stops on a small relative reduction or a failed line search far from a stationary point
    on badly conditioned problems. Here every call is cut to 25 iterations: the oracle restarts each run
    from its best point until its projected gradient converges, and reaches the uncut oracle's F*."""
    full = compute_oracle(ridge_pf, starts=1)
    calls = []
    real = oracle_mod.minimize

    def cut(fun, x0, **kw):
        kw["options"] = {**kw["options"], "maxiter": 25}
        res = real(fun, x0, **kw)
        calls.append(str(res.message))
        return res

    monkeypatch.setattr(oracle_mod, "minimize", cut)
    res = compute_oracle(ridge_pf, starts=1)
    assert len(calls) >= 2 and "ITERATIONS" in calls[0].upper()  # the first run was cut, then restarted
    assert not res.notes, res.notes  # converged: no run was stopped by its share of the budget
    assert res.val_loss == pytest.approx(full.val_loss, rel=1e-9) and res.stationarity < 1e-6
    # a run that converges by its projected-gradient test is not restarted
    calls.clear()
    monkeypatch.setattr(oracle_mod, "minimize", lambda fun, x0, **kw: calls.append(1) or real(fun, x0, **kw))
    compute_oracle(get_task("ridge", n=50, p=30, seed=0))
    assert len(calls) <= 5  # the grid's local-minimum polishes and the whole-box run, once each


def test_two_hyperparameters_use_the_dense_grid_and_polish():
    task = get_task("seed_toy", per_weight=True, transform="log")
    orc = compute_oracle(task, grid_points=41)
    assert orc.method == "grid+lbfgsb" and orc.grid_points == 41 and orc.n_hyper == 2
    lo, hi = [x.numpy() for x in task.space.theta_bounds()]
    grid_best = min(float(task.response(torch.tensor([a, b], dtype=torch.float64)))
                    for a in np.linspace(lo[0], hi[0], 41) for b in np.linspace(lo[1], hi[1], 41))
    assert orc.val_loss <= grid_best
    finer = compute_oracle(task, grid_points=81)
    assert orc.val_loss == pytest.approx(finer.val_loss, rel=1e-9)


def test_oracle_cache_is_keyed_by_task_params_and_seed(tmp_path, monkeypatch):
    params = {"name": "ridge", "n": 40, "p": 5}
    first = oracle_for(params, 2, tmp_path)
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1 and files[0].name.startswith("ridge-seed2-")
    assert json.loads(files[0].read_text())["key"] == first.key == oracle_key(params, 2)

    def boom(*a, **k):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(oracle_mod, "compute_oracle", boom)
    again = oracle_for(params, 2, tmp_path)
    assert again.val_loss == first.val_loss and again.theta == first.theta
    assert oracle_key(params, 3) != first.key and oracle_key({**params, "p": 6}, 2) != first.key
    monkeypatch.undo()
    other = oracle_for(params, 3, tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 2 and other.val_loss != first.val_loss


def _records(rows):
    base = {"task": "ridge", "tuner": "random", "tuner_label": "random", "tuner_params": "{}", "status": "ok",
            "grad_evals": 0, "hvps": 0, "hp": [1.0], "test_loss": 1.0}
    df = pd.DataFrame([{**base, **r} for r in rows])
    return df.sort_values(["cell_id", "step"]).reset_index(drop=True)


def test_regret_incumbent_and_targets_on_hand_made_records():
    params = json.dumps({"name": "ridge", "n": 40, "p": 5})

    class FakeOracle:
        val_loss, gap, n_params, hp, transforms = 1.0, 100.0, 5, [2.0], ["log"]

    orc = {(params, 0): FakeOracle()}
    # val_loss: what the tuner observed; val_loss_ref: F at the reference solve of its λ
    rows = [
        {"cell_id": "a", "step": 0, "time_s": 0.1, "inner_solves": 1, "val_loss": 30.0, "val_loss_ref": 30.0},
        {"cell_id": "a", "step": 1, "time_s": 0.2, "inner_solves": 2, "val_loss": 1.5, "val_loss_ref": 1.5},
        {"cell_id": "a", "step": 2, "time_s": 0.3, "inner_solves": 3, "val_loss": 1.05, "val_loss_ref": 1.05},
        {"cell_id": "a", "step": 3, "time_s": 0.4, "inner_solves": 4, "val_loss": 9.0, "val_loss_ref": 9.0},
        # an inexact solve that *looks* better than it is: the incumbent follows val_loss, regret uses F
        {"cell_id": "b", "step": 0, "time_s": 0.1, "inner_solves": 0, "grad_evals": 10, "val_loss": 0.5,
         "val_loss_ref": 2.5},
        {"cell_id": "b", "step": 1, "time_s": 0.2, "inner_solves": 0, "grad_evals": 20, "val_loss": 0.9,
         "val_loss_ref": 1.01},
    ]
    df = add_derived(_records([{**r, "task_params": params, "seed": 0} for r in rows]), orc)
    a = df[df["cell_id"] == "a"]
    assert a["regret"].tolist() == pytest.approx([29.0, 0.5, 0.05, 8.0])
    assert a["val_loss_gap_own_w"].tolist() == pytest.approx([29.0, 0.5, 0.05, 8.0])  # exact solves: the same
    assert a["incumbent_regret"].tolist() == pytest.approx([29.0, 0.5, 0.05, 0.05])
    assert a["cost_units"].tolist() == [5, 10, 15, 20]  # n_params per inner solve
    b = df[df["cell_id"] == "b"]
    # regret is F(λ) - F* (the reference solve), never the tuner's own val_loss: it cannot beat the oracle
    assert b["regret"].tolist() == pytest.approx([1.5, 0.01])
    assert b["val_loss_gap_own_w"].tolist() == pytest.approx([-0.5, -0.1])  # val_loss - F*: may be negative
    assert b["incumbent_regret"].tolist() == pytest.approx([1.5, 1.5])  # incumbent stays step 0 (val 0.5)
    cells = cell_metrics(df, orc).set_index("cell_id")
    # 1% of the gap = 1.0: cell a gets there at step 1; 0.1% = 0.1: at step 2
    assert cells.loc["a", "reached_1pct"] and cells.loc["a", "time_to_1pct"] == 0.2
    assert cells.loc["a", "cost_to_1pct"] == 10 and cells.loc["a", "time_to_0_1pct"] == 0.3
    assert cells.loc["a", "final_regret"] == pytest.approx(0.05)
    assert not cells.loc["b", "reached_1pct"] and math.isnan(cells.loc["b", "time_to_1pct"])
    assert math.isnan(cells.loc["b", "cost_to_0_1pct"]) and cells.loc["b", "final_regret"] == pytest.approx(1.5)


def test_rows_without_a_reference_are_counted_per_cell_and_listed_in_the_summary():
    """Issue 12 item 7: points where the task has no reference (an MLP fold) are counted and shown."""
    from hpo_bench.report.summary_doc import _no_reference_lines

    params = json.dumps({"name": "ridge", "n": 40, "p": 5})

    class FakeOracle:
        val_loss, gap, n_params, hp, transforms = 1.0, 100.0, 5, [2.0], ["log"]

    orc = {(params, 0): FakeOracle()}
    nan = float("nan")
    rows = [
        {"cell_id": "a", "step": 0, "time_s": 0.1, "inner_solves": 1, "val_loss": 3.0, "val_loss_ref": 3.0,
         "message": ""},
        {"cell_id": "a", "step": 1, "time_s": 0.2, "inner_solves": 2, "val_loss": 2.0, "val_loss_ref": nan,
         "message": "reference unavailable: weight_decay_mlp: no reference: the branch folds"},
        {"cell_id": "b", "step": 0, "time_s": 0.1, "inner_solves": 1, "val_loss": 3.0, "val_loss_ref": 3.0,
         "message": ""},
    ]
    cells = cell_metrics(add_derived(_records([{**r, "task_params": params, "seed": 0} for r in rows]), orc), orc)
    assert cells.set_index("cell_id")["no_ref_rows"].to_dict() == {"a": 1, "b": 0}
    text = "\n".join(_no_reference_lines(cells))
    assert "1 of 3 recorded rows, in 1 cells" in text and "| ridge | random | 0 | 1 | 2 |" in text
    assert "Every recorded row has a reference" in "\n".join(_no_reference_lines(cells[cells["cell_id"] == "b"]))


def test_count_budget_keeps_the_best_point_seen_and_says_so(ridge_pf, ridge):
    """The budget is a count of evaluations (issue 12, item 3): a small one stops the optimiser runs
    and thins the grid, deterministically, and the notes say so."""
    res = compute_oracle(ridge_pf, max_evals=30)
    assert res.n_evals <= 30 + 1 and res.max_evals == 30  # + the init
    assert any("max_evals=30" in n for n in res.notes), res.notes
    assert res.val_loss <= res.init_val_loss and math.isfinite(res.val_loss)
    thin = compute_oracle(ridge, max_evals=50)
    assert any("grid thinned" in n for n in thin.notes) and thin.grid_points == 25  # 25 points: half the budget
    full = compute_oracle(ridge)
    assert not full.notes and full.val_loss <= thin.val_loss and full.complete


def test_best_known_takes_a_better_record_and_keeps_the_cache_untouched(tmp_path):
    from hpo_bench.report.metrics import with_records

    params = {"name": "ridge", "n": 40, "p": 5}
    orc = oracle_for(params, 0, tmp_path)
    key = (json.dumps(params), 0)
    rows = pd.DataFrame({"task_params": [key[0]] * 2, "seed": [0, 0], "cell_id": ["c", "c"], "step": [0, 1],
                         "val_loss_ref": [orc.val_loss + 1.0, orc.val_loss - 0.5], "theta": [[0.0], [1.0]],
                         "hp": [[1.0], [math.e]]})
    better = with_records({key: orc}, rows)[key]
    assert better.val_loss == orc.val_loss - 0.5 and better.hp == [math.e] and better.method.endswith("+records")
    assert better.init_val_loss == orc.init_val_loss and "cell c (step 1)" in better.notes[-1]
    same = with_records({key: orc}, rows.iloc[:1])[key]
    assert same is orc
    assert oracle_for(params, 0, tmp_path).val_loss == orc.val_loss  # the cached computation is unchanged


class _SlowFirstCall:
    """A task whose first evaluation pays a one-off cost (as allocation and dispatch caches do)."""

    def __init__(self, task, first_cost_s: float) -> None:
        self._task, self._cost = task, first_cost_s

    def __getattr__(self, name):
        return getattr(self._task, name)

    def response(self, theta):
        if self._cost:  # busy, not asleep: the oracle's budget counts CPU seconds
            import time

            end = time.process_time() + self._cost
            while time.process_time() < end:
                pass
            self._cost = 0.0
        return self._task.response(theta)


def test_a_slow_first_evaluation_does_not_thin_a_cheap_grid():
    """The grid is thinned on the median time of several evaluations, not on the first one's: a cheap
    one-hyperparameter task keeps its full, machine-independent grid (issue 10, item 11)."""
    task = get_task("ridge", n=40, p=5)
    full = compute_oracle(task, max_seconds=None)
    # 2001 points x 0.3 s would be 600 s, far beyond the 20 s budget, had the first call been the measure
    res = compute_oracle(_SlowFirstCall(task, 0.3), max_seconds=20.0)
    assert not any("thinned" in n for n in res.notes), res.notes
    assert res.grid_points == full.grid_points == oracle_mod.GRID_POINTS[1]
    assert res.val_loss == full.val_loss and res.theta == full.theta  # the same computation, bitwise


def test_oracles_in_parallel_equal_the_serial_ones_and_report_each(tmp_path):
    """``jobs`` changes where oracles are computed, not what they are; each instance is reported once."""
    from hpo_bench.report.metrics import oracles_for_records

    df = pd.DataFrame([{"cell_id": f"c{i}", "task": lab, "task_params": json.dumps(p), "seed": s, "step": 0,
                        "measure_s": 0.01 * i}
                       for i, (lab, p, s) in enumerate([("r", {"name": "ridge", "n": 30, "p": 4}, 0),
                                                        ("r", {"name": "ridge", "n": 30, "p": 4}, 1),
                                                        ("toy", {"name": "seed_toy"}, 0)])])
    events = []
    serial = oracles_for_records(df, tmp_path / "a", jobs=1, max_seconds=None, on_oracle=events.append)
    assert sorted((e.label, e.seed, e.cached) for e in events) == [("r", 0, False), ("r", 1, False),
                                                                    ("toy", 0, False)]
    assert [e.done for e in events] == [1, 2, 3] and {e.total for e in events} == {3}
    assert [e.seed for e in events][0] == 0 and events[0].label == "toy"  # the costliest (measure_s) first
    par = oracles_for_records(df, tmp_path / "b", jobs=2, max_seconds=None)
    assert serial.keys() == par.keys()
    for k in serial:
        assert par[k].val_loss == serial[k].val_loss and par[k].theta == serial[k].theta  # the same computation
    events.clear()
    oracles_for_records(df, tmp_path / "a", jobs=2, max_seconds=None, on_oracle=events.append)
    assert len(events) == 3 and all(e.cached for e in events) and "cached" in events[0].line()


class _WaitsEachCall:
    """A task that waits (sleeps, no CPU) at every evaluation, as on a machine busy with other work."""

    def __init__(self, task, wait_s: float) -> None:
        self._task, self._wait = task, wait_s

    def __getattr__(self, name):
        return getattr(self._task, name)

    def response(self, theta):
        import time

        time.sleep(self._wait)
        return self._task.response(theta)

    def reference(self, theta, warm=None):  # what the optimiser's evaluations call
        import time

        time.sleep(self._wait)
        return self._task.reference(theta, warm=warm)


def test_waiting_for_the_cpu_changes_nothing_bitwise(ridge_pf):
    """A slow (busy) machine gives the same oracle, bitwise: the budget counts evaluations, and the
    wall-clock backstop, far from reached, changes nothing (same path, so bitwise is right)."""
    full = compute_oracle(ridge_pf)
    res = compute_oracle(_WaitsEachCall(ridge_pf, 0.001), max_seconds=600.0)
    assert res.complete and not res.notes, res.notes
    assert res.val_loss == full.val_loss and res.theta == full.theta and res.n_evals == full.n_evals


def test_a_wall_clock_backstop_ends_a_runaway_oracle_and_marks_it_incomplete(ridge_pf):
    res = compute_oracle(_WaitsEachCall(ridge_pf, 0.02), max_seconds=0.5)  # 0.5 s wall: ~25 evaluations
    assert not res.complete and any(n.startswith("INCOMPLETE: the wall-clock backstop") for n in res.notes), res.notes
    assert math.isfinite(res.val_loss) and res.val_loss <= res.init_val_loss


_PARENT_WITH_A_THREAD_TEAM = r'''
import json, sys
import pandas as pd
import torch
torch.set_num_threads(2)
x = torch.randn(1500, 1500, dtype=torch.float64)
(x @ x).sum()  # this process now holds an OpenMP thread team, as a test run or a CLI process may
from hpo_bench.report.metrics import oracles_for_records
df = pd.DataFrame([{"cell_id": f"c{s}", "task": "r", "task_params": json.dumps({"name": "ridge", "n": 30, "p": 4}),
                    "seed": s, "step": 0, "measure_s": 0.01} for s in (0, 1)])
res = oracles_for_records(df, sys.argv[1], jobs=2, max_seconds=None)
print(len(res))
'''


def test_parallel_oracles_do_not_hang_after_the_parent_ran_torch_on_two_threads(tmp_path):
    """Oracle worker processes are never plainly forked from a process with an OpenMP thread team
    (a forked child inherits the team without its threads and hangs at its first parallel op)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    proc = subprocess.run([sys.executable, "-c", _PARENT_WITH_A_THREAD_TEAM, str(tmp_path / "cache")], env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "2"


# ------------------------------------------------------------------ shipped oracles
def _tiny_ridge_oracle(tmp_path):
    from hpo_bench.analysis.oracle import oracle_for

    params = {"name": "ridge", "n": 30, "p": 4}
    return params, oracle_for(params, 0, tmp_path / "computed")


def test_a_verified_shipped_oracle_is_used_and_a_stale_one_is_recomputed(tmp_path, monkeypatch):
    import dataclasses

    import hpo_bench.analysis.oracle as oracle_mod
    from hpo_bench.analysis.oracle import store_oracle, verify_oracle
    from hpo_bench.report.metrics import oracles_for_records

    params, res = _tiny_ridge_oracle(tmp_path)
    assert verify_oracle(res) is None
    shipped = tmp_path / "shipped"
    store_oracle(res, shipped)
    monkeypatch.setattr(oracle_mod, "SHIPPED_DIR", shipped)
    df = pd.DataFrame([{"cell_id": "c0", "task": "r", "task_params": json.dumps(params), "seed": 0, "step": 0,
                        "measure_s": 0.01}])
    seen = []
    got = oracles_for_records(df, tmp_path / "run1", polish=False, on_oracle=seen.append)
    assert [p.where for p in seen] == ["shipped"] and list(got.values())[0].val_loss == res.val_loss
    assert any((tmp_path / "run1").glob("ridge-seed0-*.json"))  # copied into the run folder's cache

    # a shipped value the current code does not give back (a changed task, say) is never used
    stale = dataclasses.replace(res, val_loss=res.val_loss * (1 - 1e-6))
    assert "F*" in verify_oracle(stale)
    store_oracle(stale, shipped)
    seen.clear()
    got = oracles_for_records(df, tmp_path / "run2", polish=False, on_oracle=seen.append)
    assert [p.where for p in seen] == ["computed"] and list(got.values())[0].val_loss == res.val_loss
    seen.clear()
    oracles_for_records(df, tmp_path / "run3", polish=False, on_oracle=seen.append, use_shipped=False)
    assert [p.where for p in seen] == ["computed"]


def test_every_shipped_oracle_is_current_complete_and_matches_this_code():
    """The package's shipped oracles (hpo_bench/oracles/): current version, keys that match their
    settings, complete, and F at both of their points recomputed by this code (verify_oracle)."""
    from hpo_bench.analysis.oracle import ORACLE_VERSION, SHIPPED_DIR, OracleResult, oracle_key, verify_oracle

    files = sorted(SHIPPED_DIR.glob("*.json"))
    assert files, "no shipped oracles: run scripts/ship_oracles.py (see hpo_bench/oracles/README.md)"
    for path in files:
        res = OracleResult(**json.loads(path.read_text()))
        assert res.version == ORACLE_VERSION and res.complete and res.source == "oracle", path.name
        assert res.key == oracle_key({"name": res.task, **res.params}, res.seed, max_evals=res.max_evals), path.name
        assert path.name == f"{res.task}-seed{res.seed}-{res.key}.json"
        assert verify_oracle(res) is None, (path.name, verify_oracle(res))
